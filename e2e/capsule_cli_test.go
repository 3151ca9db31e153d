package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var buildCLIOnce sync.Once
var cliBin string
var cliErr error

func buildCapsuleCLI(t *testing.T) string {
	t.Helper()
	buildCLIOnce.Do(func() {
		dir, err := os.MkdirTemp("", "capsule-e2e-cli")
		if err != nil {
			cliErr = err
			return
		}
		cliBin = filepath.Join(dir, "capsule")
		if out, err := exec.Command("go", "build", "-o", cliBin, "../cmd/capsule").CombinedOutput(); err != nil {
			cliErr = err
			t.Logf("%s", out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliBin
}

// TestCapsuleCLI drives the operator CLI with openrc-style variables:
// host list (table and JSON), server list/show and a small boot benchmark
// beside raw docker run.
func TestCapsuleCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	bin := buildCapsuleCLI(t)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("capsule %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	var hosts []map[string]string
	if err := json.Unmarshal([]byte(run("-f", "json", "host", "list")), &hosts); err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0]["Host"] != c.host || hosts[0]["State"] != "up" {
		t.Fatalf("host list = %v", hosts)
	}
	if out := run("host", "list"); !strings.Contains(out, c.host) || !strings.HasPrefix(out, "Host") {
		t.Errorf("host list table = %q", out)
	}
	out := run("bench", "boot", "--count", "3", "--concurrency", "2", "--docker-host", c.dockerHost,
		"--raw-image", os.Getenv("CAPSULE_TEST_IMAGE"))
	if !strings.Contains(out, "capsule (API to ACTIVE)") || !strings.Contains(out, "raw docker run") {
		t.Errorf("bench output = %q", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "capsule" || f[0] == "raw") && f[len(f)-1] != "0" {
			t.Errorf("bench had failures: %q", line)
		}
	}
	var list []map[string]string
	if err := json.Unmarshal([]byte(run("-f", "json", "server", "list", "--all-projects")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("bench left servers: %v", list)
	}
	if ids, _ := c.docker("ps", "-aq", "--filter", "label=capsule.bench=raw"); ids != "" {
		t.Errorf("bench left raw containers: %s", ids)
	}
}
