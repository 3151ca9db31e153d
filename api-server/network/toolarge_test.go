package network_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/network"
)

// An oversized body gets a NeutronError 413.
func TestTooLargeIsNeutronError(t *testing.T) {
	h := httpapi.LimitBody(http.NotFoundHandler(), 10, network.New(nil).TooLarge, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2.0/ports", strings.NewReader(strings.Repeat("x", 100))))
	var body map[string]map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != 413 || err != nil ||
		body["NeutronError"]["type"] != "HTTPRequestEntityTooLarge" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
