package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestOpenstackCLI drives the cloud with the real Debian openstack client,
// as a newcomer following the README would.
func TestOpenstackCLI(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack CLI (python3-openstackclient) is required: %v", err)
	}
	c := startCloud(t)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("openstack", args...)
		cmd.Env = c.env("demo", c.demoPass, "demo")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--wait", "cli-vm")
	var list []map[string]any
	if err := json.Unmarshal([]byte(run("server", "list", "-f", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["Name"] != "cli-vm" || list[0]["Status"] != "ACTIVE" {
		t.Fatalf("server list = %v", list)
	}
	var show map[string]any
	if err := json.Unmarshal([]byte(run("server", "show", "cli-vm", "-f", "json")), &show); err != nil {
		t.Fatal(err)
	}
	if show["status"] != "ACTIVE" || show["flavor"] == nil {
		t.Errorf("server show = %v", show)
	}
	// ACTIVE is the workload started; its boot log ends a moment later.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out := run("console", "log", "show", "cli-vm")
		if strings.Contains(out, "system ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console log show = %q", out)
		}
	}
	run("server", "stop", "cli-vm")
	run("server", "delete", "--wait", "cli-vm")
	if out := run("server", "list", "-f", "value"); strings.TrimSpace(out) != "" {
		t.Errorf("server list after delete = %q", out)
	}
	t.Run("identity", func(t *testing.T) { testIdentityCLI(t, c) })
}
