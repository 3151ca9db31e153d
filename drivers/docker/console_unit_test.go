package docker

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/docker/docker/pkg/stdcopy"
)

// A console log far larger than the cap comes back as its last whole
// lines within the cap, read in bounded memory.
func TestDemuxKeepsTheTail(t *testing.T) {
	var log strings.Builder
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&log, "line %06d\n", i)
	}
	for _, tty := range []bool{true, false} {
		var stream bytes.Buffer
		if tty {
			stream.WriteString(log.String())
		} else {
			w := stdcopy.NewStdWriter(&stream, stdcopy.Stdout)
			for _, chunk := range strings.SplitAfter(log.String(), "\n") {
				_, _ = w.Write([]byte(chunk))
			}
		}
		out, err := demux(&stream, tty, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > 1000 || !strings.HasSuffix(out, "line 099999\n") || !strings.HasPrefix(out, "line ") {
			t.Fatalf("tty %v: %d bytes, starts %q ends %q", tty, len(out), out[:min(20, len(out))], out[max(0, len(out)-20):])
		}
	}
	short, err := demux(strings.NewReader("a\nb\n"), true, 1000)
	if err != nil || short != "a\nb\n" {
		t.Fatalf("short log %q %v", short, err)
	}
}

func TestTailBufferBigWrite(t *testing.T) {
	b := &tailBuffer{max: 8}
	_, _ = b.Write([]byte("0123456789\nabcdef\n"))
	if got := b.String(); got != "abcdef\n" {
		t.Fatalf("%q", got)
	}
}
