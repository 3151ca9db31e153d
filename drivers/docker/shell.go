package docker

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
)

var _ drivers.Consoler = (*Driver)(nil)

// consoleShell is what a serial console runs in the server: the image's
// POSIX shell, interactive on the terminal dockerd allocates.
var consoleShell = []string{"/bin/sh", "-i"}

// OpenConsole implements drivers.Consoler with a docker exec of a shell
// on a TTY in the server's workload container, attached: the stream
// carries the terminal's bytes unframed (a TTY exec is not multiplexed).
func (d *Driver) OpenConsole(ctx context.Context, id string) (io.ReadWriteCloser, error) {
	st, err := d.Status(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.Power != drivers.PowerRunning {
		return nil, fmt.Errorf("console of instance %s (power state %d): %w", id, st.Power, drivers.ErrInvalidState)
	}
	ex, err := d.cli.ContainerExecCreate(ctx, ContainerName(id), container.ExecOptions{Cmd: consoleShell,
		Tty: true, AttachStdin: true, AttachStdout: true, AttachStderr: true, Env: []string{"TERM=xterm"}})
	if err != nil {
		return nil, fmt.Errorf("console of instance %s: exec: %w", id, err)
	}
	att, err := d.cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{Tty: true})
	if err != nil {
		return nil, fmt.Errorf("console of instance %s: attach: %w", id, err)
	}
	return &execStream{conn: att.Conn, r: att.Reader}, nil
}

// execStream is an attached exec: reads from the hijacked response's
// buffer (it may hold the first bytes), writes to its connection.
type execStream struct {
	conn net.Conn
	r    io.Reader
}

func (e *execStream) Read(p []byte) (int, error)  { return e.r.Read(p) }
func (e *execStream) Write(p []byte) (int, error) { return e.conn.Write(p) }
func (e *execStream) Close() error                { return e.conn.Close() }
