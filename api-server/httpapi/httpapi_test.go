package httpapi_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
)

var reqID = regexp.MustCompile(`^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestRequestID(t *testing.T) {
	var seen string
	h := httpapi.WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = httpapi.RequestID(r.Context())
		w.WriteHeader(http.StatusTeapot)
	}), "x-compute-request-id")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	id := rec.Header().Get("x-openstack-request-id")
	if !reqID.MatchString(id) || seen != id || rec.Header().Get("x-compute-request-id") != id {
		t.Fatalf("id %q, context %q, compute %q", id, seen, rec.Header().Get("x-compute-request-id"))
	}
	rec2 := httptest.NewRecorder()
	h.ServeHTTP(rec2, httptest.NewRequest("GET", "/", nil))
	if rec2.Header().Get("x-openstack-request-id") == id {
		t.Fatal("request ids repeat")
	}
	// Nested: the outer id wins everywhere.
	outer := httpapi.WithRequestID(h)
	rec3 := httptest.NewRecorder()
	outer.ServeHTTP(rec3, httptest.NewRequest("GET", "/", nil))
	if got := rec3.Header().Get("x-openstack-request-id"); got != seen || got != rec3.Header().Get("x-compute-request-id") {
		t.Fatalf("nested ids differ: %q %q", got, seen)
	}
	if httpapi.RequestID(context.Background()) != "" {
		t.Fatal("id from an empty context")
	}
}

func TestTrimSlash(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v3", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("v3")) })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("root")) })
	h := httpapi.TrimSlash(mux)
	for path, want := range map[string]string{"/v3": "v3", "/v3/": "v3", "/v3//": "v3", "/": "root"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || rec.Body.String() != want {
			t.Fatalf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
}

func TestWriteAndReadJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	httpapi.WriteJSON(rec, http.StatusCreated, map[string]int{"a": 1})
	if rec.Code != 201 || rec.Body.String() != `{"a":1}` || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	rec = httptest.NewRecorder()
	httpapi.WriteJSON(rec, http.StatusNoContent, map[string]int{"a": 1})
	if rec.Code != 204 || rec.Body.Len() != 0 {
		t.Fatalf("204 with body %q", rec.Body.String())
	}
	var v map[string]any
	for body, ok := range map[string]bool{`{"x":1}`: true, ``: false, `{"x":`: false, `{"x":1} {}`: false, `[1]`: false} {
		err := httpapi.ReadJSON(httptest.NewRequest("POST", "/", strings.NewReader(body)), &v)
		if (err == nil) != ok {
			t.Fatalf("ReadJSON(%q) = %v", body, err)
		}
	}
	big := `{"x":"` + strings.Repeat("a", httpapi.MaxBodyBytes) + `"}`
	if err := httpapi.ReadJSON(httptest.NewRequest("POST", "/", strings.NewReader(big)), &v); err == nil {
		t.Fatal("oversized body accepted")
	}
}

func TestURLs(t *testing.T) {
	r := httptest.NewRequest("GET", "http://10.0.0.5:5000/v3", nil)
	if got := httpapi.BaseURL(r); got != "http://10.0.0.5:5000" {
		t.Fatal(got)
	}
	if got := httpapi.PublicURL(r, 8774); got != "http://10.0.0.5:8774" {
		t.Fatal(got)
	}
	r.Header.Set("X-Forwarded-Proto", "https")
	if got := httpapi.PublicURL(r, 0); got != "https://10.0.0.5:5000" {
		t.Fatal(got)
	}
	r6 := httptest.NewRequest("GET", "http://[fd00::1]:5000/", nil)
	if got := httpapi.PublicURL(r6, 9292); got != "http://[fd00::1]:9292" {
		t.Fatal(got)
	}
	if got := httpapi.HostURL("http", "fd00::1", 9696); got != "http://[fd00::1]:9696" {
		t.Fatal(got)
	}
}

func TestAccessLogOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	inner := httpapi.WithRequestID(httpapi.AccessLog(log, "inner", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})))
	// The outer logger runs before any id exists, as a server may wrap it.
	h := httpapi.AccessLog(log, "outer", inner)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x?y=1", nil))
	out := buf.String()
	if strings.Count(out, "http request") != 1 || !strings.Contains(out, "service=outer") || !strings.Contains(out, "status=404") ||
		!strings.Contains(out, "request_id="+rec.Header().Get("x-openstack-request-id")) {
		t.Fatalf("log %q", out)
	}
}

func TestStatusOf(t *testing.T) {
	for _, c := range []struct {
		kind  errdefs.Kind
		quota int
		want  int
	}{
		{errdefs.ErrInvalidArgument, 403, 400},
		{errdefs.ErrUnauthenticated, 403, 401},
		{errdefs.ErrForbidden, 409, 403},
		{errdefs.ErrQuotaExceeded, 403, 403},
		{errdefs.ErrQuotaExceeded, 409, 409},
		{errdefs.ErrQuotaExceeded, 413, 413},
		{errdefs.ErrNotFound, 403, 404},
		{errdefs.ErrConflict, 403, 409},
		{errdefs.ErrFailedPrecondition, 403, 409},
		{errdefs.ErrNotSupported, 403, 501},
		{errdefs.ErrUnavailable, 403, 503},
		{errdefs.ErrInternal, 403, 500},
		{"", 403, 500},
		{"SomethingNew", 403, 500},
	} {
		if got := httpapi.StatusOf(c.kind, c.quota); got != c.want {
			t.Errorf("StatusOf(%q, quota %d) = %d, want %d", c.kind, c.quota, got, c.want)
		}
	}
}
