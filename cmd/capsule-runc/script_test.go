package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestScriptSendsOnlyCreateToTheWrapper: capsule-runc.sh, installed as
// capsule-runc, runs the Go wrapper (capsule-runc-join beside it) for
// `runc create` and `runc run`, and runc itself for every other call the
// shim makes; with no runc to be found it leaves the search (and its
// error) to the wrapper.
func TestScriptSendsOnlyCreateToTheWrapper(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	script, err := os.ReadFile("capsule-runc.sh")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rt := write("capsule-runc", string(script))
	write("capsule-runc-join", "#!/bin/sh\necho join \"$@\"\n")
	fakeRunc := write("fake-runc", "#!/bin/sh\necho runc \"$@\"\n")
	run := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(rt, args...)
		cmd.Env = append([]string{"PATH=/nonexistent"}, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("capsule-runc %v: %v %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	withRunc := []string{"CAPSULE_RUNC=" + fakeRunc}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--root", "/run/x", "--log", "/l", "--log-format", "json", "create", "--bundle", "/b", "--pid-file", "/p", "c1"}, "join"},
		{[]string{"--root", "/run/x", "run", "c1"}, "join"},
		{[]string{"--root", "/run/x", "--log", "/l", "start", "c1"}, "runc"},
		{[]string{"--root", "/run/x", "kill", "c1", "9"}, "runc"},
		{[]string{"--root", "/run/x", "delete", "--force", "c1"}, "runc"},
		{[]string{"--version"}, "runc"},
	} {
		got := run(withRunc, c.args...)
		if want := c.want + " " + strings.Join(c.args, " "); got != want {
			t.Errorf("capsule-runc %v ran %q, want %q", c.args, got, want)
		}
	}
	// No CAPSULE_RUNC and no runc on PATH: the wrapper searches.
	if got := run(nil, "state", "c1"); got != "join state c1" {
		t.Errorf("without a runc to find: %q, want the wrapper", got)
	}
}
