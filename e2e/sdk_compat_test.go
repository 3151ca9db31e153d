package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
)

// TestOpenstackSDKCompat drives openstacksdk (python3-openstacksdk, which
// python3-openstackclient installs) over issue 18's Compute, Image and
// Network items on one cloud (testdata/sdk_compat.py: extensions, host
// aggregates and their zone, network tags and the tag and mtu filters,
// allowed_address_pairs with If-Match, an image imported with glance-direct
// with a custom property and a member, a server created and shown at 2.96,
// the ip filter, the Compute image proxy), then checks that the openstack
// CLI's requests for what it made (--debug) get no 4xx answer, so nothing
// is retried after one.
func TestOpenstackSDKCompat(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack CLI (python3-openstackclient) is required: %v", err)
	}
	c := startCloud(t, withBridge)
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	demo := strings.TrimSpace(admin.run("project", "show", "demo", "-f", "value", "-c", "id"))

	cmd := exec.Command("/usr/bin/python3", "testdata/sdk_compat.py")
	cmd.Env = append(c.env("admin", c.adminPass, "admin"), "DEMO_PROJECT_ID="+demo, fmt.Sprint("VLAN=", 101+rand.IntN(800)))
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("sdk_compat.py: %v\n%s\n%s", err, out, stderr)
	}
	var made struct{ Network, Server, Image, Host string }
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &made); err != nil || made.Server == "" {
		t.Fatalf("sdk_compat.py printed %q: %v", out, err)
	}

	// The CLI as a user runs it, with --debug: no request on what the
	// SDK made answered 4xx (openstackCLI.debugClean).
	for _, args := range [][]string{
		{"server", "show", made.Server},
		{"server", "list", "--ip", `10\.79\.0\.`},
		{"network", "show", made.Network},
		{"network", "list", "--tags", "blue"},
		{"port", "list", "--network", made.Network},
		{"image", "show", made.Image},
		{"image", "member", "list", made.Image},
		{"aggregate", "list"},
		{"availability", "zone", "list"},
		{"extension", "list", "--network"},
	} {
		admin.debugClean(args...)
	}
	// The aggregate commands of the CLI, by id (a name lookup first asks
	// for it as an id, which Nova answers 400, as Capsule does).
	var agg map[string]any
	admin.json(&agg, "aggregate", "create", "cli-agg")
	id := fmt.Sprint(agg["id"])
	admin.run("aggregate", "add", "host", id, made.Host)
	admin.run("aggregate", "set", "--property", "ssd=true", id)
	var shown map[string]any
	admin.json(&shown, "aggregate", "show", id)
	if !strings.Contains(fmt.Sprint(shown["properties"]), "ssd") || !strings.Contains(fmt.Sprint(shown["hosts"]), made.Host) {
		t.Errorf("aggregate show: %v", shown)
	}
	// The host runs the server: it keeps its zone (400).
	if out, err := admin.try("aggregate", "set", "--zone", "cli-az", id); err == nil || !strings.Contains(out, "contain instances") {
		t.Errorf("a zone for a host running a server: %v\n%s", err, out)
	}
	admin.run("aggregate", "remove", "host", id, made.Host)
	admin.run("aggregate", "delete", id)
	admin.run("server", "delete", "--wait", made.Server)
}
