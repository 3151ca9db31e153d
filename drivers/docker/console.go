package docker

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/docker/docker/pkg/stdcopy"
)

// demux turns a logs stream into text. Without a TTY Docker multiplexes
// stdout and stderr in framed chunks; both go into one buffer so lines
// keep their order.
func demux(r io.Reader, tty bool) (string, error) {
	var buf bytes.Buffer
	if tty {
		if _, err := io.Copy(&buf, r); err != nil {
			return "", fmt.Errorf("read logs: %w", err)
		}
		return buf.String(), nil
	}
	if _, err := stdcopy.StdCopy(&buf, &buf, r); err != nil {
		return "", fmt.Errorf("demultiplex logs: %w", err)
	}
	return buf.String(), nil
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
