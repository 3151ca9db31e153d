package compute

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/capsule-cloud/capsule/errdefs"
)

// Each kind answers with Nova's status and fault name and the safe
// message; an unclassified error is a 500 that tells nothing.
func TestFailMapsKinds(t *testing.T) {
	s := New(nil, nil, Options{})
	for _, c := range []struct {
		err        error
		status     int
		fault, msg string
	}{
		{errdefs.InvalidArgument("bad"), 400, "badRequest", "bad"},
		{errdefs.Unauthenticated("who"), 401, "unauthorized", "who"},
		{errdefs.Forbidden("no"), 403, "forbidden", "no"},
		{errdefs.QuotaExceeded("Quota exceeded for instances"), 403, "forbidden", "Quota exceeded for instances"},
		{fmt.Errorf("load: %w", errdefs.NotFound("Instance x could not be found.")), 404, "itemNotFound", "Instance x could not be found."},
		{errdefs.Conflict("busy"), 409, "conflictingRequest", "busy"},
		{errdefs.FailedPrecondition("not now"), 409, "conflictingRequest", "not now"},
		{errdefs.NotSupported("nope"), 501, "notImplemented", "nope"},
		{errdefs.Unavailable("later"), 503, "serviceUnavailable", "later"},
		{errdefs.Internal("Failed to attach x."), 500, "computeFault", "Failed to attach x."},
		{errdefs.Wrap(errors.New("db down"), errdefs.ErrUnavailable, "The scheduler is unreachable."), 503, "serviceUnavailable", "The scheduler is unreachable."},
		{errors.New("pq: connection refused"), 500, "computeFault", "Unexpected API Error."},
	} {
		rec := httptest.NewRecorder()
		s.fail(rec, httptest.NewRequest(http.MethodGet, "/v2.1/servers", nil), c.err)
		var body map[string]map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%v: body %q: %v", c.err, rec.Body.String(), err)
		}
		f := body[c.fault]
		if rec.Code != c.status || f == nil || f["message"] != c.msg || f["code"] != float64(c.status) {
			t.Errorf("%v: %d %s, want %d {%s: %s}", c.err, rec.Code, rec.Body.String(), c.status, c.fault, c.msg)
		}
	}
}
