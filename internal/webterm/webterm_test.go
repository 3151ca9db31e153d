package webterm_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/internal/webterm"
)

// TestHandler: the script is served as JavaScript to GET (HEAD: headers
// only), and it knows both of its hosts' websockets (the portal's
// /terminal and a console page's data-ws); other methods are 405.
func TestHandler(t *testing.T) {
	h := webterm.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/static/terminal.js", nil))
	body := rec.Body.String()
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/javascript; charset=utf-8" || body != string(webterm.Script()) {
		t.Fatalf("GET: %d %q (%d bytes)", rec.Code, rec.Header().Get("Content-Type"), len(body))
	}
	for _, want := range []string{`"/terminal"`, `"data-ws"`, `"data-once"`, `"data-autoconnect"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the script lacks %s", want)
		}
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/static/terminal.js", nil))
	if rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/static/terminal.js", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", rec.Code)
	}
}
