package compute

import (
	"encoding/json"
	"net/http"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
)

// faultNames are Nova's error body keys by status (wsgi.Fault._fault_names).
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
	409: "conflictingRequest", 413: "overLimit", 415: "badMediaType", 429: "overLimit",
	501: "notImplemented", 503: "serviceUnavailable",
}

// statusOf maps an error kind to the Compute API's status (the shared
// table; Nova's QuotaError is a Forbidden); the fault body's name follows
// from the status (faultNames), as in Nova.
func statusOf(k errdefs.Kind) int { return httpapi.StatusOf(k, http.StatusForbidden) }

// unexpectedError is Nova's message for a failure it does not classify.
const unexpectedError = "Unexpected API Error."

// fail answers err as a Nova fault: a classified error (package errdefs)
// with its kind's status and its safe message; anything else is logged
// and answered 500 without details.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	if k := errdefs.KindOf(err); k == "" || k == errdefs.ErrInternal {
		s.log.ErrorContext(r.Context(), "compute request failed", "error", err, "method", r.Method, "path", r.URL.Path)
	}
	writeFault(w, err)
}

// writeFault writes err as a Nova fault, through the kind table, without
// logging: for errors the handler itself classified.
func writeFault(w http.ResponseWriter, err error) {
	writeError(w, statusOf(errdefs.KindOf(err)), clientMessage(err))
}

// clientMessage is what a client is told of err: its safe message, or
// Nova's generic text for an unclassified error.
func clientMessage(err error) string {
	if msg := errdefs.Message(err); msg != "" {
		return msg
	}
	return unexpectedError
}

// writeError writes a Nova fault body: {"<faultName>": {"code", "message"}}.
func writeError(w http.ResponseWriter, status int, msg string) {
	name, ok := faultNames[status]
	if !ok {
		name = "computeFault"
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{name: map[string]any{"code": status, "message": msg}})
}

// TooLarge answers a request body over the listener's limit: Nova's 413
// overLimit fault.
func (s *Service) TooLarge(w http.ResponseWriter, _ *http.Request, msg string) {
	writeError(w, http.StatusRequestEntityTooLarge, msg)
}
