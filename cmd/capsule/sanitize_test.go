package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
)

// hostile is a server name a tenant could set: it would retitle the
// operator's terminal (OSC 0), clear it (CSI 2J), ring, rewrite the line
// (CR), colour, and reverse the text that follows (RLO).
const hostile = "web\x1b]0;pwned\x07\x1b[2J\x07\rfake\x1b[31mred\u202egnp.exe\u009b1m\x00\x7f1"

func TestSafeStripsTerminalControls(t *testing.T) {
	got := safe(hostile)
	if strings.ContainsAny(got, "\x1b\x07\r\x00\x7f\u202e\u009b") {
		t.Fatalf("safe left control characters: %q", got)
	}
	if got != "webfakeredgnp.exe1" {
		t.Fatalf("safe(%q) = %q", hostile, got)
	}
	for _, s := range []string{"vm-1", "serveur été", "名字", "a b"} {
		if safe(s) != s {
			t.Errorf("safe changed printable text %q to %q", s, safe(s))
		}
	}
	if got := safe("bad\xffutf8"); got != "bad\uFFFDutf8" {
		t.Errorf("invalid UTF-8: %q", got)
	}
}

// capture returns what f writes to stdout.
func capture(t *testing.T, f func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	ferr := f()
	os.Stdout = old
	_ = w.Close()
	out, _ := io.ReadAll(r)
	if ferr != nil {
		t.Fatal(ferr)
	}
	return string(out)
}

// The operator CLI's tables and records print no terminal control a
// tenant put in a name; JSON output keeps the name exact (escaped).
func TestCLIOutputStripsControls(t *testing.T) {
	c := &cli{format: "table"}
	out := capture(t, func() error {
		return c.table([]string{"ID", "NAME"}, [][]string{{"1", hostile}})
	})
	if strings.ContainsAny(out, "\x1b\x07\r\x00\x7f\u202e") || !strings.Contains(out, "webfakeredgnp.exe1") {
		t.Fatalf("table output %q", out)
	}
	out = capture(t, func() error {
		return c.record([]string{"name", "fault"}, map[string]any{"name": hostile, "fault": "x\x1b[2Jy"})
	})
	if strings.ContainsAny(out, "\x1b\x07\r\x00\x7f\u202e") {
		t.Fatalf("record output %q", out)
	}
	var p bytes.Buffer
	(&progress{w: &p}).show("migrating " + hostile)
	if strings.ContainsAny(p.String(), "\x1b\x07\r") {
		t.Fatalf("progress line %q", p.String())
	}
	c.format = "json"
	out = capture(t, func() error {
		return c.table([]string{"NAME"}, [][]string{{hostile}})
	})
	if strings.Contains(out, "\x1b") {
		t.Fatalf("json output has a raw escape: %q", out)
	}
	var rows []map[string]string
	if err := json.Unmarshal([]byte(out), &rows); err != nil || rows[0]["NAME"] != hostile {
		t.Fatalf("json output lost the exact name: %v %q", err, out)
	}
}
