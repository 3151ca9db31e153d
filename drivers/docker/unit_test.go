package docker

import (
	"strings"
	"testing"
)

func TestVersionInt(t *testing.T) {
	for in, want := range map[string]int{
		"28.5.2":         28005002,
		"20.10.24+dfsg1": 20010024,
		"v1.2":           1002000,
		"19.03.5-ce":     19003005,
		"":               0,
	} {
		if got := VersionInt(in); got != want {
			t.Errorf("VersionInt(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestCleanConsole(t *testing.T) {
	in := "\x1b[1;32mok\x1b[0m\r\nbell\a tab\there\x00\nbad\xffutf8\n"
	want := "ok\nbell tab\there\nbad\uFFFDutf8\n"
	if got := CleanConsole(in); got != want {
		t.Errorf("CleanConsole = %q, want %q", got, want)
	}
}

func TestLastLines(t *testing.T) {
	s := "a\nb\nc\n"
	for n, want := range map[int]string{0: "", 1: "c\n", 2: "b\nc\n", 5: s} {
		if got := lastLines(s, n); got != want {
			t.Errorf("lastLines(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDrainPull(t *testing.T) {
	ok := `{"status":"Pulling"}` + "\n" + `{"status":"Done"}`
	if err := drainPull(strings.NewReader(ok)); err != nil {
		t.Errorf("ok stream: %v", err)
	}
	bad := `{"status":"Pulling"}{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}`
	if err := drainPull(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("error stream: %v", err)
	}
}
