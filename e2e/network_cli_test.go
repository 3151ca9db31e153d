package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
)

// TestNetworkOpenstackCLI drives networks, subnets, servers with a fixed
// IP and their ports with the Debian openstack client, as the networking
// issue's proof lists them, on a cloud whose host maps physnet1 to a real
// Open vSwitch bridge.
func TestNetworkOpenstackCLI(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack CLI (python3-openstackclient) is required: %v", err)
	}
	c := startCloud(t, withBridge)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("openstack", args...)
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	jsonOf := func(v any, args ...string) {
		t.Helper()
		out := run(append(args, "-f", "json")...)
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("openstack %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	vlan := 101 + rand.IntN(800)

	var n map[string]any
	jsonOf(&n, "network", "create", "--provider-network-type", "vlan", "--provider-physical-network", "physnet1",
		"--provider-segment", fmt.Sprint(vlan), "clinet")
	netID, _ := n["id"].(string)
	if netID == "" || n["provider:network_type"] != "vlan" || n["provider:physical_network"] != "physnet1" ||
		fmt.Sprint(n["provider:segmentation_id"]) != fmt.Sprint(vlan) {
		t.Fatalf("network create = %v", n)
	}
	var sn map[string]any
	jsonOf(&sn, "subnet", "create", "--network", "clinet", "--subnet-range", "10.78.0.0/24", "clisub")
	if sn["cidr"] != "10.78.0.0/24" || sn["network_id"] != netID || sn["gateway_ip"] != "10.78.0.1" {
		t.Fatalf("subnet create = %v", sn)
	}

	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny",
		"--nic", "net-id="+netID+",v4-fixed-ip=10.78.0.20", "--wait", "clivm")

	var ps []map[string]any
	jsonOf(&ps, "port", "list", "--server", "clivm")
	if len(ps) != 1 || !strings.Contains(fmt.Sprint(ps[0]["Fixed IP Addresses"]), "10.78.0.20") {
		t.Errorf("port list --server = %v, want one port with 10.78.0.20", ps)
	}
	var show map[string]any
	jsonOf(&show, "server", "show", "clivm")
	if show["status"] != "ACTIVE" || !strings.Contains(fmt.Sprint(show["addresses"]), "10.78.0.20") ||
		!strings.Contains(fmt.Sprint(show["addresses"]), "clinet") {
		t.Errorf("server show: status %v addresses %v, want ACTIVE with clinet=10.78.0.20", show["status"], show["addresses"])
	}
	if out := run("server", "list", "-c", "Networks", "-f", "value"); !strings.Contains(out, "10.78.0.20") {
		t.Errorf("server list Networks = %q", out)
	}
	// The address is the one the container has.
	id, _ := show["id"].(string)
	s := &netServer{name: "clivm", id: id, host: c.hosts[0]}
	if addrs, _ := s.eth0(t); len(addrs) != 1 || addrs[0] != "10.78.0.20/24" {
		t.Errorf("clivm's eth0 has %v, want 10.78.0.20/24", addrs)
	}

	run("server", "delete", "--wait", "clivm")
	if out := run("port", "list", "--network", "clinet", "-f", "value"); strings.TrimSpace(out) != "" {
		t.Errorf("ports left after the server was deleted: %q", out)
	}
	run("subnet", "delete", "clisub")
	run("network", "delete", "clinet")
	if out := run("network", "list", "-f", "value"); strings.Contains(out, "clinet") {
		t.Errorf("network list after delete = %q", out)
	}
}
