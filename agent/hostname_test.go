package agent

import (
	"strings"
	"testing"
)

func TestKernelHostname(t *testing.T) {
	long := strings.Repeat("a", 70) + ".example.com"
	for in, want := range map[string]string{
		"web1":                  "web1",
		"web1.example.com":      "web1.example.com",
		"host-" + long[:59]:     "host-" + long[:59],
		"web1." + long:          "web1",
		long:                    strings.Repeat("a", 63),
		strings.Repeat("b", 65): strings.Repeat("b", 63),
	} {
		if got := kernelHostname(in); got != want || len(got) > 64 {
			t.Errorf("kernelHostname(%q) = %q, want %q", in, got, want)
		}
	}
}
