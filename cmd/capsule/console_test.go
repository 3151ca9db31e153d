package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAttachConsole: keys go to the console, its output to the terminal,
// and Ctrl-] ends the session without sending itself or what follows.
func TestAttachConsole(t *testing.T) {
	got := make(chan string, 10)
	up := websocket.Upgrader{Subprotocols: []string{"binary"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			got <- string(b)
			_ = ws.WriteMessage(websocket.BinaryMessage, []byte("out:"+strings.ToUpper(string(b))))
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pr, pw := io.Pipe()
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- attachConsole(ws, pr, out) }()
	_, _ = pw.Write([]byte("ls\n"))
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "out:LS\n" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if out.String() != "out:LS\n" {
		t.Fatalf("terminal shows %q", out.String())
	}
	_, _ = pw.Write([]byte("x\x1dsecret\n"))
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("attach ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Ctrl-] did not end the session")
	}
	ws.Close()
	var sent []string
	for s := range got {
		sent = append(sent, s)
	}
	if strings.Join(sent, "|") != "ls\n|x" {
		t.Errorf("console got %q, want ls and x only", sent)
	}
}
