package identity_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
)

// An oversized body gets Keystone's 413 error body.
func TestTooLargeIsKeystoneError(t *testing.T) {
	h := httpapi.LimitBody(http.NotFoundHandler(), 10, identity.New(nil, identity.Options{}).TooLarge, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v3/auth/tokens", strings.NewReader(strings.Repeat("x", 100))))
	var body map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != 413 || err != nil || body["error"]["code"] != float64(413) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
