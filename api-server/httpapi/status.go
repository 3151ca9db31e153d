package httpapi

import (
	"net/http"

	"github.com/capsule-cloud/capsule/errdefs"
)

// StatusOf is the one table from an error kind to an HTTP status that
// every OpenStack API shares. The APIs differ in one place only: the
// status of a quota refusal, which each passes as quotaExceeded (Nova and
// Keystone answer 403, Neutron's OverQuota 409, Glance 413). An unknown
// kind, or none, is a 500.
func StatusOf(k errdefs.Kind, quotaExceeded int) int {
	switch k {
	case errdefs.ErrInvalidArgument:
		return http.StatusBadRequest
	case errdefs.ErrUnauthenticated:
		return http.StatusUnauthorized
	case errdefs.ErrForbidden:
		return http.StatusForbidden
	case errdefs.ErrQuotaExceeded:
		return quotaExceeded
	case errdefs.ErrNotFound:
		return http.StatusNotFound
	case errdefs.ErrConflict, errdefs.ErrFailedPrecondition:
		// A state that forbids the request is a conflict in every
		// OpenStack API (Nova's InstanceInvalidState, Neutron's InUse).
		return http.StatusConflict
	case errdefs.ErrNotSupported:
		return http.StatusNotImplemented
	case errdefs.ErrUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
