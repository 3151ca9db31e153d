package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/capsule-cloud/capsule/console/stream"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/protocol"
)

// WithConsoleTLS is the TLS configuration (the CAs) the agent checks an
// https console proxy with when it dials back (nil: the system's roots).
func WithConsoleTLS(tc *tls.Config) Option { return func(a *Agent) { a.consoleTLS = tc } }

// consoleAttach opens a shell on a terminal in the server and connects it
// to the console proxy that asked, which holds the user's websocket. The
// session lives until either side closes; it is not state to repair: an
// agent restart ends it and the user opens a new URL.
func (a *Agent) consoleAttach(ctx context.Context, req protocol.ConsoleAttach) (protocol.ConsoleAttachReply, error) {
	if req.InstanceID == "" || req.URL == "" || req.Secret == "" {
		return protocol.ConsoleAttachReply{}, errors.New("agent: console attach without instance, URL or secret")
	}
	c, ok := a.drv.(drivers.Consoler)
	if !ok {
		return protocol.ConsoleAttachReply{}, fmt.Errorf("serial console of instance %s: driver %s has none: %w",
			req.InstanceID, a.drv.Name(), drivers.ErrNotSupported)
	}
	ctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	// The shell outlives this request: its own context, ended by the
	// streams' closing.
	tty, err := c.OpenConsole(context.WithoutCancel(ctx), req.InstanceID)
	if err != nil {
		return protocol.ConsoleAttachReply{}, fmt.Errorf("serial console of instance %s on host %s: %w", req.InstanceID, a.cfg.Host, err)
	}
	conn, err := stream.DialBack(ctx, req.URL, req.Secret, a.consoleTLS)
	if err != nil {
		tty.Close()
		return protocol.ConsoleAttachReply{}, fmt.Errorf("serial console of instance %s: %w", req.InstanceID, err)
	}
	a.log.Info("serial console session", "instance", req.InstanceID)
	go joinStreams(tty, conn)
	return protocol.ConsoleAttachReply{}, nil
}

// joinStreams copies both ways between the terminal and the proxy until
// either ends, then closes both.
func joinStreams(tty io.ReadWriteCloser, conn net.Conn) {
	var once sync.Once
	closeBoth := func() { _ = tty.Close(); _ = conn.Close() }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(conn, tty); once.Do(closeBoth) }()
	go func() { defer wg.Done(); _, _ = io.Copy(tty, conn); once.Do(closeBoth) }()
	wg.Wait()
}
