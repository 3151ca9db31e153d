// Package fuzzhttp helps the API packages' native fuzz targets: it sends
// one request straight to a handler (no listener, so a fuzz iteration
// costs microseconds) and checks the invariant every API keeps: a bad
// request is a 4xx in that API's JSON error format, never a 5xx or a
// panic.
package fuzzhttp

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// Do sends method target with body and headers (name, value pairs) to h.
// A panic in h fails the fuzz run as it is (with its stack).
func Do(h http.Handler, method, target, token string, body []byte, hdr ...string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req, err := http.NewRequest(method, "http://api.test"+target, bytes.NewReader(body))
	if err != nil { // no client could send it: what a server answers to a bad request line
		rec.WriteHeader(http.StatusBadRequest)
		rec.WriteString(`{"error":"unsendable request"}`)
		return rec
	}
	req.RemoteAddr = "192.0.2.1:1234"
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	h.ServeHTTP(rec, req)
	return rec
}

// Check fails t when the answer is a 5xx (other than one of allowed: a
// documented answer, such as Neutron's 503 when the tenant VLANs are
// exhausted), or an error whose body is not a JSON object (each API's
// error format is one).
func Check(t testing.TB, rec *httptest.ResponseRecorder, what string, allowed ...int) {
	t.Helper()
	if rec.Code >= 500 && !slices.Contains(allowed, rec.Code) {
		t.Fatalf("%s: %d %s", what, rec.Code, rec.Body.String())
	}
	for k, vs := range rec.Header() {
		for _, v := range vs {
			if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
				// A client drops the connection on such a header (net/http:
				// "malformed MIME header line"): the answer is lost.
				t.Fatalf("%s: header %s has a control character: %q", what, k, v)
			}
		}
	}
	if rec.Code >= 400 && rec.Code != http.StatusMethodNotAllowed {
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || len(m) == 0 {
			t.Fatalf("%s: %d with a body that is not an error document: %q", what, rec.Code, rec.Body.String())
		}
	}
}
