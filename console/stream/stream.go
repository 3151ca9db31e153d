// Package stream is the byte stream between the console proxy and a
// compute agent: the proxy asks the agent over the bus to dial back to it
// with a one-time secret, and the agent opens an HTTP connection to the
// proxy, presents the secret and upgrades it to a raw stream (DialBack
// here, Accept on the proxy's side). It is apart from package console so
// agents, which hold no database access, need not import the proxy.
package stream

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Upgrade is the token of the HTTP upgrade from an agent's dial-back
// request to the console's raw byte stream.
const Upgrade = "capsule-console"

// BufferedConn is a connection whose first bytes were read into a buffer
// while its HTTP exchange was parsed.
type BufferedConn struct {
	net.Conn
	r *bufio.Reader
}

// NewBufferedConn is conn whose reads start with what r buffered.
func NewBufferedConn(conn net.Conn, r *bufio.Reader) *BufferedConn {
	return &BufferedConn{Conn: conn, r: r}
}

func (c *BufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// DialBack connects an agent to the proxy at rawURL (http or https; tc
// holds the CAs an https proxy is checked against, nil for the system's),
// authenticates with secret and returns the raw stream.
func DialBack(ctx context.Context, rawURL, secret string, tc *tls.Config) (net.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("console dial-back: bad proxy URL %q", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("console dial-back to %s: %w", host, err)
	}
	if u.Scheme == "https" {
		c := &tls.Config{}
		if tc != nil {
			c = tc.Clone()
		}
		c.ServerName = u.Hostname()
		tconn := tls.Client(conn, c)
		if err := tconn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("console dial-back to %s: TLS: %w", host, err)
		}
		conn = tconn
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nAuthorization: Bearer %s\r\n\r\n",
		u.RequestURI(), u.Host, Upgrade, secret)
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("console dial-back to %s: %w", host, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("console dial-back to %s: %w", host, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), Upgrade) {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		conn.Close()
		return nil, fmt.Errorf("console dial-back to %s: proxy answered %s: %s", host, resp.Status, strings.TrimSpace(string(b)))
	}
	_ = conn.SetDeadline(time.Time{})
	return &BufferedConn{Conn: conn, r: br}, nil
}

// Accept answers an agent's dial-back request on w (already
// authenticated by the caller) with the upgrade and returns the raw
// stream.
func Accept(w http.ResponseWriter) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("console stream: take the connection: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	_, err = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + Upgrade + "\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("console stream: upgrade: %w", err)
	}
	return &BufferedConn{Conn: conn, r: brw.Reader}, nil
}
