package compute

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
)

// An oversized body gets Nova's 413 overLimit fault.
func TestTooLargeIsNovaFault(t *testing.T) {
	h := httpapi.LimitBody(http.NotFoundHandler(), 10, (&Service{}).TooLarge, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2.1/servers", strings.NewReader(strings.Repeat("x", 100))))
	var body map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != 413 || err != nil || body["overLimit"]["code"] != float64(413) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
