package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/vif"
)

// addrsOf returns the IPv4 addresses (with prefix) of dev inside the
// server's workload, and whether dev exists there.
func (s *netServer) addrsOf(dev string) ([]string, bool) {
	out, err := s.exec("ip", "addr", "show", "dev", dev)
	if err != nil {
		return nil, false
	}
	var addrs []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "inet" {
			addrs = append(addrs, f[1])
		}
	}
	return addrs, true
}

// TestInterfaceHotplugCLI is the interface hot-plug proof with the
// openstack CLI: a running server on network A gets a NIC on network B
// (server add network), which is eth1 in the container with the port's
// address and answers a neighbour on B by TCP and ping; the server
// remove port takes it away again: eth1, the veth, the OVS port and its
// flows go, the port the compute API created is deleted, and the
// agent's start-up reconcile (drift repair) does not bring it back.
func TestInterfaceHotplugCLI(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack CLI (python3-openstackclient) is required: %v", err)
	}
	c := startCloud(t, withBridge)
	h := c.hosts[0]
	ctx := context.Background()
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	run, jsonOf := osc.run, osc.json
	vlan := 101 + rand.IntN(800)
	for i, n := range []struct{ name, cidr string }{{"hpnetA", "10.81.0.0/24"}, {"hpnetB", "10.82.0.0/24"}} {
		run("network", "create", "--provider-network-type", "vlan", "--provider-physical-network", "physnet1",
			"--provider-segment", fmt.Sprint(vlan+i), n.name)
		run("subnet", "create", "--network", n.name, "--subnet-range", n.cidr, n.name+"-sub")
	}
	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--nic", "net-id=hpnetA", "--wait", "hpvm")
	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--nic", "net-id=hpnetB,v4-fixed-ip=10.82.0.50",
		"--wait", "hpnb")
	idOf := func(name string) string {
		var show map[string]any
		jsonOf(&show, "server", "show", name)
		id, _ := show["id"].(string)
		return id
	}
	s := &netServer{name: "hpvm", id: idOf("hpvm"), host: h}
	nb := &netServer{name: "hpnb", id: idOf("hpnb"), host: h}

	run("server", "add", "network", "hpvm", "hpnetB")
	var ps []map[string]any
	jsonOf(&ps, "port", "list", "--server", "hpvm", "--network", "hpnetB")
	if len(ps) != 1 {
		t.Fatalf("ports of hpvm on hpnetB = %v, want one", ps)
	}
	portB, _ := ps[0]["ID"].(string)
	var port map[string]any
	jsonOf(&port, "port", "show", portB)
	ipB := ""
	if ips, ok := port["fixed_ips"].([]any); ok && len(ips) == 1 {
		ipB, _ = ips[0].(map[string]any)["ip_address"].(string)
	}
	if ipB == "" || port["status"] != "ACTIVE" || port["binding_host_id"] != h.name {
		t.Fatalf("hot-plugged port = %v", port)
	}
	jsonOf(&ps, "port", "list", "--server", "hpvm")
	if len(ps) != 2 {
		t.Errorf("port list --server hpvm = %v, want two ports", ps)
	}
	if addrs, ok := s.addrsOf("eth1"); !ok || !slices.Equal(addrs, []string{ipB + "/24"}) {
		t.Errorf("hpvm's eth1 = %v (exists %v), want %s/24", addrs, ok, ipB)
	}
	if addrs, ok := s.addrsOf("eth0"); !ok || len(addrs) != 1 || !strings.HasPrefix(addrs[0], "10.81.0.") {
		t.Errorf("hpvm's eth0 = %v after the attach, want its 10.81.0.x address", addrs)
	}
	s.serve(t)
	expectTCP(t, nb, s, ipB, true, "hot-plugged NIC")
	if !nb.ping(t, ipB) {
		t.Errorf("hpnb does not ping hpvm's hot-plugged address %s", ipB)
	}
	var actions []map[string]any
	jsonOf(&actions, "server", "event", "list", "hpvm")
	if !strings.Contains(fmt.Sprint(actions), "attach_interface") {
		t.Errorf("server event list = %v, want attach_interface", actions)
	}

	run("server", "remove", "port", "hpvm", portB)
	tap := vif.HostIfName(portB)
	gone := func(why string) {
		t.Helper()
		if _, ok := s.addrsOf("eth1"); ok {
			t.Errorf("%s: hpvm still has eth1", why)
		}
		if out, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput(); strings.Contains(string(out), " "+tap+"@") ||
			strings.Contains(string(out), " "+tap+":") {
			t.Errorf("%s: veth %s is still on the host", why, tap)
		}
		o := ovs.New(ovs.Options{})
		if out, err := o.Vsctl(ctx, "list-ports", h.bridge); err != nil || slices.Contains(strings.Fields(out), tap) {
			t.Errorf("%s: OVS port %s still on %s (%v): %s", why, tap, h.bridge, err, out)
		}
		if flows, err := o.DumpFlows(ctx, h.bridge, ovs.CookieMatch(vif.Cookie(portB))); err != nil || len(flows) != 0 {
			t.Errorf("%s: flows of %s left on %s: %v %v", why, portB, h.bridge, flows, err)
		}
		if addrs, ok := s.addrsOf("eth0"); !ok || len(addrs) != 1 {
			t.Errorf("%s: hpvm's eth0 = %v", why, addrs)
		}
		expectTCP(t, nb, s, ipB, false, why)
	}
	gone("after server remove port")
	jsonOf(&ps, "port", "list", "--server", "hpvm")
	if len(ps) != 1 {
		t.Errorf("port list --server hpvm after the detach = %v, want one port", ps)
	}
	if out, err := osc.try("port", "show", portB); err == nil {
		t.Errorf("the port the compute API created for the attach still exists: %s", out)
	}

	// A restarted capsuled reconciles (drift repair, orphan removal) at
	// start-up: the detached NIC stays gone, the server's eth0 stays.
	capsuled := c.proc(t, "capsuled")
	capsuled.stop()
	n := capsuled.logged(t, agentReconciled)
	capsuled.start(t)
	c.waitReady(t)
	// The start-up reconcile runs once the conductor answers.
	capsuled.waitLogged(t, agentReconciled, n, 60*time.Second)
	gone("after an agent restart")
}
