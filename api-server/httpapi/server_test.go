package httpapi_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
)

// serve runs srv on a loopback port until the test ends.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// A client that sends its headers a byte at a time (slowloris) is cut off
// after ReadHeaderTimeout instead of holding the connection forever.
func TestNewServerCutsSlowHeaders(t *testing.T) {
	srv := httpapi.NewServer(httpapi.Listener{Limits: httpapi.Limits{ReadHeaderTimeout: 300 * time.Millisecond},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
	addr := serve(t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Keep trickling a header; the server must close anyway.
	closed := make(chan time.Duration, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.ReadAll(c)
		closed <- time.Since(start)
	}()
	for i := 0; i < 40; i++ {
		if _, err := io.WriteString(c, "X"); err != nil {
			break
		}
		select {
		case d := <-closed:
			if d > 2*time.Second {
				t.Fatalf("connection closed after %v, want about 300ms", d)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case d := <-closed:
		if d > 2*time.Second {
			t.Fatalf("connection closed after %v, want about 300ms", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a client trickling its headers kept the connection open")
	}
}

func TestNewServerDefaults(t *testing.T) {
	srv := httpapi.NewServer(httpapi.Listener{Handler: http.NotFoundHandler()})
	d := httpapi.DefaultLimits()
	if srv.ReadHeaderTimeout != d.ReadHeaderTimeout || srv.ReadTimeout != d.ReadTimeout || srv.WriteTimeout != d.WriteTimeout ||
		srv.IdleTimeout != d.IdleTimeout || srv.MaxHeaderBytes != d.MaxHeaderBytes {
		t.Fatalf("server limits %v %v %v %v %v, want the defaults %+v", srv.ReadHeaderTimeout, srv.ReadTimeout,
			srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes, d)
	}
	for _, v := range []time.Duration{d.ReadHeaderTimeout, d.ReadTimeout, d.WriteTimeout, d.IdleTimeout} {
		if v <= 0 {
			t.Fatalf("a default timeout is unset: %+v", d)
		}
	}
}

// jsonTooLarge answers like an API would, so the test sees the API's own
// format come out.
func jsonTooLarge(w http.ResponseWriter, _ *http.Request, msg string) {
	httpapi.WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"overLimit": map[string]any{"code": 413, "message": msg}})
}

func TestBodyLimit(t *testing.T) {
	var handled int
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled++
		var v any
		if err := httpapi.ReadJSON(r, &v); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, v)
	})
	srv := httpapi.NewServer(httpapi.Listener{Handler: echo, Limits: httpapi.Limits{MaxBodyBytes: 100},
		TooLarge: jsonTooLarge, Streaming: func(r *http.Request) bool { return r.URL.Path == "/data" }})
	base := "http://" + serve(t, srv)
	big := `{"a":"` + strings.Repeat("x", 200) + `"}`

	check413 := func(t *testing.T, resp *http.Response) {
		t.Helper()
		defer resp.Body.Close()
		var body struct {
			OverLimit struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"overLimit"`
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d (%s), want 413", resp.StatusCode, b)
		}
		if !reqID.MatchString(resp.Header.Get(httpapi.RequestIDHeader)) {
			t.Errorf("413 without a request id: %v", resp.Header)
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.OverLimit.Code != 413 ||
			!strings.Contains(body.OverLimit.Message, "100 bytes") {
			t.Fatalf("413 body %+v (%v), want the API's format", body, err)
		}
	}
	t.Run("content-length", func(t *testing.T) {
		handled = 0
		resp, err := http.Post(base+"/x", "application/json", strings.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		check413(t, resp)
		if handled != 0 {
			t.Fatal("the handler ran for a body its Content-Length put over the limit")
		}
	})
	t.Run("chunked", func(t *testing.T) {
		// No Content-Length: the limit is found while the handler reads,
		// and its answer (a 400 for the truncated JSON) becomes the 413.
		pr, pw := io.Pipe()
		go func() { _, _ = io.WriteString(pw, big); _ = pw.Close() }()
		req, _ := http.NewRequest(http.MethodPost, base+"/x", pr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		check413(t, resp)
	})
	t.Run("within", func(t *testing.T) {
		resp, err := http.Post(base+"/x", "application/json", strings.NewReader(`{"a":"b"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != `{"a":"b"}` {
			t.Fatalf("status %d body %s", resp.StatusCode, b)
		}
	})
	t.Run("streaming route is exempt", func(t *testing.T) {
		resp, err := http.Post(base+"/data", "application/json", strings.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d for a streaming route's large body, want 200", resp.StatusCode)
		}
	})
}

// A handler that reads past the limit itself (not through ReadJSON) gets
// an error, and its answer is replaced by the 413.
func TestBodyLimitReplacesAnswer(t *testing.T) {
	h := httpapi.LimitBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if err == nil {
			t.Error("reading past the limit did not fail")
		}
		w.WriteHeader(http.StatusNoContent)
	}), 10, jsonTooLarge, nil)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	base := "http://" + serve(t, srv)
	pr, pw := io.Pipe()
	go func() { _, _ = io.WriteString(pw, strings.Repeat("y", 50)); _ = pw.Close() }()
	req, _ := http.NewRequest(http.MethodPut, base+"/", pr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
}

// Headers over MaxHeaderBytes are refused by net/http (431).
func TestNewServerHeaderLimit(t *testing.T) {
	srv := httpapi.NewServer(httpapi.Listener{Limits: httpapi.Limits{MaxHeaderBytes: 1 << 10},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
	addr := serve(t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

// A streaming route (image data) outlives the read timeout that cuts a
// slow body elsewhere.
func TestStreamingRouteHasNoReadTimeout(t *testing.T) {
	srv := httpapi.NewServer(httpapi.Listener{Limits: httpapi.Limits{ReadTimeout: 300 * time.Millisecond, MaxBodyBytes: 1 << 20},
		Streaming: func(r *http.Request) bool { return r.URL.Path == "/data" },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})})
	base := "http://" + serve(t, srv)
	slow := func(path string) (int, error) {
		pr, pw := io.Pipe()
		go func() {
			for range 8 {
				time.Sleep(100 * time.Millisecond)
				if _, err := io.WriteString(pw, "chunk"); err != nil {
					return
				}
			}
			_ = pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPut, base+path, pr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := slow("/data"); err != nil || st != http.StatusNoContent {
		t.Fatalf("slow upload on the streaming route: %d %v, want 204", st, err)
	}
	if st, err := slow("/json"); err == nil && st == http.StatusNoContent {
		t.Fatal("a slow body on an ordinary route outlived the read timeout")
	}
}
