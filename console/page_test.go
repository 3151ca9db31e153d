package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/console"
	"github.com/capsule-cloud/capsule/console/stream"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// pageFixture is a proxy on a sqlite store with one running instance
// (i-1 "web-1" on h1) and one stopped (i-2), and a fake agent on h1 that
// echoes upper-cased.
type pageFixture struct {
	ctx   context.Context
	st    *store.Store
	proxy *console.Proxy
	srv   *httptest.Server
	now   time.Time
}

func newPageFixture(t *testing.T) *pageFixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, in := range []store.Instance{
		{ID: "i-1", Name: "web-1", ProjectID: "p", Host: "h1", VMState: lifecycle.Active},
		{ID: "i-2", Name: "<b>down</b>", ProjectID: "p", Host: "h1", VMState: lifecycle.Stopped},
	} {
		if err := st.DB.Create(&in).Error; err != nil {
			t.Fatal(err)
		}
	}
	b := bus.NewMem()
	t.Cleanup(func() { b.Close() })
	f := &pageFixture{ctx: ctx, st: st, now: time.Now()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.proxy.ServeHTTP(w, r) }))
	t.Cleanup(f.srv.Close)
	f.proxy = console.New(console.Options{Store: st, Bus: b, PublicURL: "ws://" + strings.TrimPrefix(f.srv.URL, "http://") + console.PathPrefix,
		InternalURL: f.srv.URL + console.PathPrefix, TokenTTL: 5 * time.Minute, AttachTimeout: 5 * time.Second,
		Now: func() time.Time { return f.now }})
	err = b.Consume(ctx, bus.ComputeQueue("h1"), func(ctx context.Context, m bus.Message) (any, error) {
		var req protocol.ConsoleAttach
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		conn, err := stream.DialBack(ctx, req.URL, req.Secret, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			defer conn.Close()
			buf := make([]byte, 1024)
			for {
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				if _, err := conn.Write([]byte(strings.ToUpper(string(buf[:n])))); err != nil {
					return
				}
			}
		}()
		return protocol.ConsoleAttachReply{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *pageFixture) get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var wsAttr = regexp.MustCompile(`data-ws="([^"]+)"`)

// TestConsolePage: a novnc URL is an http:// URL of the proxy's console
// page, in noVNC's form (path=%3Ftoken%3D...); loading it spends the
// token (a second load is 401) and serves a page that loads the shared
// terminal script and opens its own single-use websocket to the serial
// console; the novnc token does not open a websocket itself, nor does a
// serial token open the page; an expired URL, a forged one and a stopped
// server's are refused.
func TestConsolePage(t *testing.T) {
	f := newPageFixture(t)
	u, err := f.proxy.Issue(f.ctx, "i-1", "p", console.TypeNoVNC)
	if err != nil {
		t.Fatal(err)
	}
	prefix := f.srv.URL + console.PathPrefix + "/novnc/vnc_auto.html?path=%3Ftoken%3D"
	if !strings.HasPrefix(u, prefix) || len(u) != len(prefix)+64 {
		t.Fatalf("novnc URL %q, want %s<64 hex>", u, prefix)
	}
	resp, page := f.get(t, u)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), page)
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
		"Content-Security-Policy": "script-src 'self'"} {
		if !strings.Contains(resp.Header.Get(h), want) {
			t.Errorf("page header %s = %q, want %q in it", h, resp.Header.Get(h), want)
		}
	}
	for _, want := range []string{`id="terminal"`, `data-id="i-1"`, `data-once`, `data-autoconnect`, `web-1`,
		`src="../static/terminal.js"`, `href="../static/console.css"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s:\n%s", want, page)
		}
	}
	// The script and style the page loads (no other origin).
	pageURL, _ := url.Parse(u)
	for _, rel := range []string{"../static/terminal.js", "../static/console.css"} {
		r, body := f.get(t, pageURL.ResolveReference(&url.URL{Path: rel}).String())
		if r.StatusCode != 200 || len(body) < 100 {
			t.Errorf("%s: %d (%d bytes)", rel, r.StatusCode, len(body))
		}
	}
	if r, _ := f.get(t, f.srv.URL+console.PathPrefix+"/static/nope.js"); r.StatusCode != 404 {
		t.Errorf("unknown static file: %d", r.StatusCode)
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the page refers to another origin:\n%s", page)
	}

	// The page's websocket: relative to the page, a serial token, once.
	m := wsAttr.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no data-ws in the page:\n%s", page)
	}
	wsURL := pageURL.ResolveReference(mustParse(t, strings.ReplaceAll(m[1], "&amp;", "&")))
	wsURL.Scheme = "ws"
	d := websocket.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(wsURL.String(), nil)
	if err != nil {
		t.Fatalf("the page's websocket %s: %v", wsURL, err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("hostname")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "HOSTNAME" {
		t.Errorf("read %q, %v; want HOSTNAME", got, err)
	}
	ws.Close()
	expect401 := func(what, u string) {
		t.Helper()
		_, resp, err := d.Dial(u, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v %v, want 401", what, resp, err)
		}
	}
	expect401("the page's websocket a second time", wsURL.String())

	// The URL works once.
	resp, page = f.get(t, u)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "already used or expired") || strings.Contains(page, "data-ws") {
		t.Errorf("second load: %d\n%s", resp.StatusCode, page)
	}
	// A forged token, none, a serial token on the page.
	if r, body := f.get(t, prefix+strings.Repeat("0", 64)); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged token: %d %s", r.StatusCode, body)
	}
	if r, body := f.get(t, f.srv.URL+console.PathPrefix+"/novnc/vnc_auto.html"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %d %s", r.StatusCode, body)
	}
	su, err := f.proxy.Issue(f.ctx, "i-1", "p", console.TypeSerial)
	if err != nil {
		t.Fatal(err)
	}
	serialToken := su[strings.Index(su, "token=")+len("token="):]
	if r, body := f.get(t, f.srv.URL+console.PathPrefix+"/novnc/vnc_auto.html?token="+serialToken); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("serial token on the page: %d %s", r.StatusCode, body)
	}
	// A novnc token does not open a websocket by itself.
	nu, err := f.proxy.Issue(f.ctx, "i-1", "p", console.TypeNoVNC)
	if err != nil {
		t.Fatal(err)
	}
	nt := nu[len(prefix):]
	expect401("a novnc token on the websocket", "ws://"+strings.TrimPrefix(f.srv.URL, "http://")+console.PathPrefix+"/serial?token="+nt)

	// token= works as well as noVNC's path=; expired URLs are refused.
	nu, err = f.proxy.Issue(f.ctx, "i-1", "p", console.TypeNoVNC)
	if err != nil {
		t.Fatal(err)
	}
	if r, body := f.get(t, f.srv.URL+console.PathPrefix+"/novnc/vnc_auto.html?token="+nu[len(prefix):]); r.StatusCode != 200 {
		t.Errorf("token= form: %d %s", r.StatusCode, body)
	}
	nu, err = f.proxy.Issue(f.ctx, "i-1", "p", console.TypeNoVNC)
	if err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(6 * time.Minute)
	if r, body := f.get(t, nu); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired URL: %d %s", r.StatusCode, body)
	}

	// A stopped server: 409, its name not rendered as markup.
	du, err := f.proxy.Issue(f.ctx, "i-2", "p", console.TypeNoVNC)
	if err != nil {
		t.Fatal(err)
	}
	if r, body := f.get(t, du); r.StatusCode != http.StatusConflict || !strings.Contains(body, "is not ready") || strings.Contains(body, "<b>") {
		t.Errorf("stopped server's page: %d %s", r.StatusCode, body)
	}
	// Only novnc and serial.
	if _, err := f.proxy.Issue(f.ctx, "i-1", "p", "spice-html5"); err == nil {
		t.Error("a spice URL was issued")
	}
	// POST is not a page load.
	nu, err = f.proxy.Issue(f.ctx, "i-1", "p", console.TypeNoVNC)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := http.Post(nu, "text/plain", nil); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST to the page: %v %v", r, err)
	} else {
		r.Body.Close()
	}
	if r, _ := f.get(t, nu); r.StatusCode != 200 {
		t.Errorf("the URL after a refused POST: %d, want it unspent", r.StatusCode)
	}
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
