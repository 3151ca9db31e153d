package compute

import (
	"encoding/json"
	"net/http"
)

// faultNames are Nova's error body keys by status (wsgi.Fault._fault_names).
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
	409: "conflictingRequest", 413: "overLimit", 415: "badMediaType", 429: "overLimit",
	501: "notImplemented", 503: "serviceUnavailable",
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
