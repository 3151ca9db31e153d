package image_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/api-server/image"
)

// The listener's JSON body limit answers 413 in Glance's format, and the
// image data route is not under it (an upload is larger than any JSON).
func TestBodyLimitSparesImageData(t *testing.T) {
	data := &memData{blobs: map[string][]byte{}}
	e := newEnv(t, data)
	ids := identity.New(e.st, identity.Options{Logger: quiet()})
	svc := image.New(e.st, image.Options{Validator: ids, Data: data, Logger: quiet()})
	srv := httptest.NewServer(httpapi.LimitBody(svc.Handler(), 512, svc.TooLarge, image.IsDataTransfer))
	t.Cleanup(srv.Close)
	do := func(method, path string, body []byte) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("X-Auth-Token", e.alice)
		req.Header.Set("Content-Type", "application/octet-stream")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	big, _ := json.Marshal(map[string]any{"name": strings.Repeat("n", 1000), "container_format": "docker", "disk_format": "raw"})
	status, body := do("POST", "/v2/images", big)
	if status != http.StatusRequestEntityTooLarge || body["code"] != float64(413) || body["title"] == nil || body["message"] == nil {
		t.Fatalf("oversized create: %d %v, want Glance's 413", status, body)
	}
	small, _ := json.Marshal(map[string]any{"name": "up", "container_format": "docker", "disk_format": "raw"})
	status, body = do("POST", "/v2/images", small)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, body)
	}
	id := body["id"].(string)
	payload := bytes.Repeat([]byte("d"), 4096)
	if status, body = do("PUT", "/v2/images/"+id+"/file", payload); status != http.StatusNoContent {
		t.Fatalf("upload of %d bytes over a %d-byte JSON limit: %d %v", len(payload), 512, status, body)
	}
	if got := data.blobs[id]; !bytes.Equal(got, payload) {
		t.Fatalf("stored %d bytes, want %d", len(got), len(payload))
	}
}

func TestIsDataTransfer(t *testing.T) {
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{"PUT", "/v2/images/abc/file", true},
		{"PUT", "/v2/images/abc/file/", true},
		{"GET", "/v2/images/abc/file", true},
		{"PATCH", "/v2/images/abc/file", false},
		{"PUT", "/v2/images/abc/tags/file", false},
		{"POST", "/v2/images", false},
		{"PUT", "/v2/images//file", false},
	} {
		if got := image.IsDataTransfer(httptest.NewRequest(c.method, c.path, nil)); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.method, c.path, got, c.want)
		}
	}
}
