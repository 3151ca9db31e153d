package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// detachKey ends a console session from the terminal (Ctrl-]), as telnet.
const detachKey = 0x1d

// serverConsole attaches the terminal to a server's serial console: it
// asks the compute API for a console URL (remote-consoles, 2.6) and joins
// the websocket to stdin/stdout, the terminal in raw mode so keys reach
// the server's shell as typed.
func (c *cli) serverConsole(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: capsule console SERVER")
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	s, err := findServer(ctx, cc, args[0])
	if err != nil {
		return err
	}
	var out struct {
		RemoteConsole struct {
			URL string `json:"url"`
		} `json:"remote_console"`
	}
	body := map[string]any{"remote_console": map[string]any{"protocol": "serial", "type": "serial"}}
	_, err = cc.Post(ctx, cc.ServiceURL("servers", s.ID, "remote-consoles"), body, &out, &gophercloud.RequestOpts{
		OkCodes: []int{200}, MoreHeaders: map[string]string{"X-OpenStack-Nova-API-Version": "2.6"}})
	if err != nil {
		return fmt.Errorf("console URL of %s: %w", s.Name, err)
	}
	d := websocket.Dialer{Subprotocols: []string{"binary"}}
	if tr, ok := c.pc.HTTPClient.Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
		d.TLSClientConfig = tr.TLSClientConfig
	}
	ws, _, err := d.DialContext(ctx, out.RemoteConsole.URL, nil)
	if err != nil {
		return fmt.Errorf("open the console of %s: %w", s.Name, err)
	}
	defer ws.Close()
	if restore, err := rawTerminal(int(os.Stdin.Fd())); err == nil {
		defer restore()
		fmt.Fprintf(os.Stderr, "Connected to the console of %s; Ctrl-] ends the session.\r\n", s.Name)
	}
	return attachConsole(ws, os.Stdin, os.Stdout)
}

// attachConsole copies in to the websocket (up to a Ctrl-]) and the
// websocket's messages to out, until either ends.
func attachConsole(ws *websocket.Conn, in io.Reader, out io.Writer) error {
	done := make(chan error, 2)
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					err = nil
				}
				done <- err
				return
			}
			if _, err := out.Write(b); err != nil {
				done <- err
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := in.Read(buf)
			for i := 0; i < n; i++ {
				if buf[i] == detachKey {
					n = i
					err = io.EOF
					break
				}
			}
			if n > 0 {
				if werr := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
					done <- werr
					return
				}
			}
			if err != nil {
				done <- nil
				return
			}
		}
	}()
	return <-done
}

// rawTerminal puts the terminal fd in raw mode and returns what restores
// it; an error when fd is not a terminal (the session then runs as a
// pipe).
func rawTerminal(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
