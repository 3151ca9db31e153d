package portal

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestTerminalWebsocketChecks: the terminal's websocket needs a session
// and the portal's own origin (a cookie-authenticated websocket has no
// same-origin protection of its own); an API refusal of the console URL
// ends it with 4000+status and the API's message.
func TestTerminalWebsocketChecks(t *testing.T) {
	e := newEnv(t)
	wsURL := "ws" + strings.TrimPrefix(e.portal.URL, "http") + "/servers/srv-1/terminal"
	dial := func(origin string, withCookie bool) (*websocket.Conn, *http.Response, error) {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		if withCookie {
			d.Jar = e.client.Jar
		}
		return d.Dial(wsURL, h)
	}
	if _, resp, err := dial(e.portal.URL, false); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no session: %v %v, want 401", resp, err)
	}
	e.login("demo")
	u, _ := url.Parse(e.portal.URL)
	if len(e.client.Jar.Cookies(u)) == 0 {
		t.Fatal("no session cookie after login")
	}
	for _, origin := range []string{"", "http://evil.example", "null"} {
		if _, resp, err := dial(origin, true); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: %v %v, want 403", origin, resp, err)
		}
	}
	ws, _, err := dial(e.portal.URL, true)
	if err != nil {
		t.Fatalf("same origin: %v", err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != closeAPIBase+http.StatusNotFound {
		t.Fatalf("console of an unknown server: %v, want close %d", err, closeAPIBase+http.StatusNotFound)
	}
}
