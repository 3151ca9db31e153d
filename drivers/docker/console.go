package docker

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/docker/docker/pkg/stdcopy"
)

// DefaultConsoleMaxBytes is the most of a console log one request reads,
// Nova's MAX_CONSOLE_BYTES (its libvirt driver's cap): a server that
// writes gigabytes to its console must not make its agent, the bus or the
// API hold them.
const DefaultConsoleMaxBytes = 100 << 10

// demux turns a logs stream into text, keeping its last max bytes. Without
// a TTY Docker multiplexes stdout and stderr in framed chunks; both go
// into one buffer so lines keep their order.
func demux(r io.Reader, tty bool, max int) (string, error) {
	buf := &tailBuffer{max: max}
	if tty {
		if _, err := io.Copy(buf, r); err != nil {
			return "", fmt.Errorf("read logs: %w", err)
		}
		return buf.String(), nil
	}
	if _, err := stdcopy.StdCopy(buf, buf, r); err != nil {
		return "", fmt.Errorf("demultiplex logs: %w", err)
	}
	return buf.String(), nil
}

// tailBuffer keeps the last max bytes written to it, in at most 2*max of
// memory.
type tailBuffer struct {
	buf   bytes.Buffer
	max   int
	total int64
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.total += int64(n)
	if len(p) > t.max {
		t.buf.Reset()
		p = p[len(p)-t.max:]
	}
	t.buf.Write(p)
	if t.buf.Len() > 2*t.max {
		t.buf.Next(t.buf.Len() - t.max)
		rest := bytes.Clone(t.buf.Bytes())
		t.buf.Reset()
		t.buf.Write(rest)
	}
	return n, nil
}

// String is the kept tail, cut at the first line start when the log was
// longer than max (no half line at the top).
func (t *tailBuffer) String() string {
	b := t.buf.Bytes()
	if t.total <= int64(t.max) {
		return string(b)
	}
	b = b[len(b)-min(len(b), t.max):]
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
		b = b[i+1:]
	}
	return string(b)
}

// ansiEscape matches terminal escape sequences (CSI such as colours and
// cursor moves, and OSC such as window titles).
var ansiEscape = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]`)

// CleanConsole makes console text safe to show and store: valid UTF-8,
// no terminal escapes, no control characters but newline and tab, and
// CRLF line ends turned into LF.
func CleanConsole(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = ansiEscape.ReplaceAllString(s, "")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}
