package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
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

// TestProxy: a URL opens a websocket joined to the stream the host's
// agent dials back with (here an echo that upper-cases), once; an expired
// or forged token opens nothing, nor does a dial-back with a wrong secret.
func TestProxy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.DB.Create(&store.Instance{ID: "i-1", ProjectID: "p", Host: "h1", VMState: lifecycle.Active}).Error; err != nil {
		t.Fatal(err)
	}
	b := bus.NewMem()
	defer b.Close()
	now := time.Now()
	var proxy *console.Proxy
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { proxy.ServeHTTP(w, r) }))
	defer srv.Close()
	base := strings.TrimPrefix(srv.URL, "http://")
	proxy = console.New(console.Options{Store: st, Bus: b, PublicURL: "ws://" + base + console.PathPrefix,
		InternalURL: srv.URL + console.PathPrefix, TokenTTL: time.Minute, AttachTimeout: 5 * time.Second,
		Now: func() time.Time { return now }})

	// The fake agent: a wrong secret is refused, the right one streams.
	wrongRefused := make(chan error, 1)
	err = b.Consume(ctx, bus.ComputeQueue("h1"), func(ctx context.Context, m bus.Message) (any, error) {
		var req protocol.ConsoleAttach
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		_, werr := stream.DialBack(ctx, req.URL, "not-the-secret", nil)
		wrongRefused <- werr
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

	url, err := proxy.Issue(ctx, "i-1", "p", console.TypeSerial)
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != "binary" {
		t.Errorf("subprotocol %q, want binary", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	if err := <-wrongRefused; err == nil {
		t.Error("a dial-back with a wrong secret was accepted")
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "HELLO" {
		t.Errorf("read %q, %v; want HELLO", got, err)
	}
	ws.Close()

	refused := func(what, u string) {
		t.Helper()
		_, resp, err := d.Dial(u, nil)
		if err == nil {
			t.Fatalf("%s: the websocket opened", what)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v %v, want 401", what, resp, err)
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, resp.Body)
		}
	}
	refused("second use", url)
	refused("forged token", "ws://"+base+console.PathPrefix+"/serial?token=00ff")
	url2, err := proxy.Issue(ctx, "i-1", "p", console.TypeSerial)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	refused("expired", url2)
}
