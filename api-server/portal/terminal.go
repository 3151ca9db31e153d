package portal

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// The browser terminal: the server page's script opens a websocket to
// the portal (same origin, the session cookie), and the portal asks the
// compute API for a one-time serial console URL with the user's token and
// joins the two websockets. The console's token never reaches the
// browser, the page's Content-Security-Policy stays 'self', and the API
// decides (policy, state) exactly as for `openstack console url show`.

// Close codes the terminal's websocket ends with when the console cannot
// be opened: 4000 + the API's HTTP status, the API's message as reason.
const closeAPIBase = 4000

// sameOrigin checks a websocket's Origin against the portal's own host:
// a cookie-authenticated websocket is not subject to the same-origin
// policy, so this stands in for the forms' CSRF token.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// consoleURL asks the compute API for a serial console URL (2.6).
func (s *Server) consoleURL(ctx context.Context, sess *session, id string) (string, error) {
	var out struct {
		RemoteConsole struct {
			URL string `json:"url"`
		} `json:"remote_console"`
	}
	body := map[string]any{"remote_console": map[string]string{"protocol": "serial", "type": "serial"}}
	_, err := s.up.doAt(ctx, "compute", "2.6", sess.Token, http.MethodPost, s.ep.Compute+"/servers/"+url.PathEscape(id)+"/remote-consoles", body, &out)
	if err != nil {
		return "", err
	}
	if out.RemoteConsole.URL == "" {
		return "", errors.New("compute answered a console without a URL")
	}
	return s.reachable(out.RemoteConsole.URL), nil
}

// reachable is the console URL as the portal reaches it: the proxy
// shares the compute API's listener, which the portal calls at a local
// address (the URL's public host may not resolve where the portal runs).
func (s *Server) reachable(raw string) string {
	cu, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	api, err := url.Parse(s.ep.Compute)
	if err != nil || api.Host == "" {
		return raw
	}
	cu.Host = api.Host
	cu.Scheme = "ws"
	if api.Scheme == "https" {
		cu.Scheme = "wss"
	}
	return cu.String()
}

var terminalUpgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
	// The handler checks the origin itself (sameOrigin) before upgrading,
	// to answer a refused one with a plain 403.
	CheckOrigin: func(*http.Request) bool { return true },
}

// terminal is the terminal's websocket: GET /servers/{id}/terminal.
func (s *Server) terminal(w http.ResponseWriter, r *http.Request) {
	sess := s.session(r)
	if sess == nil {
		http.Error(w, "Your session has ended: log in again.", http.StatusUnauthorized)
		return
	}
	if !sameOrigin(r) {
		http.Error(w, "A console is opened from the portal's own pages.", http.StatusForbidden)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "The console is a websocket.", http.StatusBadRequest)
		return
	}
	ws, err := terminalUpgrader.Upgrade(hijacker(w), r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer ws.Close()
	// The listener's timeouts are for requests, not for a session.
	_ = ws.NetConn().SetDeadline(time.Time{})
	id := r.PathValue("id")
	closeWith := func(code int, msg string) {
		if len(msg) > 120 {
			msg = msg[:120]
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, msg), time.Now().Add(time.Second))
	}
	ctx, cancel := context.WithTimeout(r.Context(), 45*time.Second)
	target, err := s.consoleURL(ctx, sess, id)
	if err != nil {
		cancel()
		st, msg := statusOf(err), messageOf(err)
		if st < 400 || st > 599 {
			st = http.StatusBadGateway
		}
		closeWith(closeAPIBase+st, msg)
		return
	}
	d := websocket.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 30 * time.Second}
	if tr, ok := s.up.client.Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
		d.TLSClientConfig = tr.TLSClientConfig
	}
	up, resp, err := d.DialContext(ctx, target, nil)
	cancel()
	if err != nil {
		st := http.StatusBadGateway
		if resp != nil && resp.StatusCode >= 400 {
			st = resp.StatusCode
		}
		s.log.Warn("portal: console connect", "server", id, "err", err)
		closeWith(closeAPIBase+st, "The server's console could not be reached; try again.")
		return
	}
	defer up.Close()
	s.log.Info("portal: console opened", "user", sess.User, "project", sess.Project, "server", id)
	joinWebsockets(ws, up)
	s.log.Info("portal: console closed", "user", sess.User, "project", sess.Project, "server", id)
}

// hijacker is the writer under w's wrappers (the access log's) that can
// hand the connection over to the websocket.
func hijacker(w http.ResponseWriter) http.ResponseWriter {
	for {
		if _, ok := w.(http.Hijacker); ok {
			return w
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// joinWebsockets copies messages both ways until either side ends, then
// passes the ending side's close reason (the proxy's "console
// unavailable: ..." or "console ended") on to the other.
func joinWebsockets(browser, console *websocket.Conn) {
	done := make(chan struct{}, 2)
	copyTo := func(dst, src *websocket.Conn) {
		defer func() { done <- struct{}{} }()
		for {
			_, data, err := src.ReadMessage()
			if err != nil {
				code, reason := websocket.CloseNormalClosure, "console ended"
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code != websocket.CloseNoStatusReceived && ce.Code != websocket.CloseAbnormalClosure {
					code, reason = ce.Code, ce.Text
				}
				_ = dst.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
				return
			}
			if err := dst.WriteMessage(websocket.BinaryMessage, data); err != nil {
				return
			}
		}
	}
	go copyTo(console, browser)
	go copyTo(browser, console)
	<-done
	_ = browser.Close()
	_ = console.Close()
	<-done
}
