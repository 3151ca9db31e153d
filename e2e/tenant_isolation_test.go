package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/attachinterfaces"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/vif"
)

// TestTenantNetworkIsolation is the host-side proof of docs/security.md's
// Network isolation on real OVS and dockerd. The device_id hijack: the
// demo project (a member) cannot bind a port to the admin project's
// server, and a port merely labelled with the server's id (an admin may
// write one) never becomes its NIC, not even after the agent's start-up
// reconcile: no eth1, no OVS port, the server's routes unchanged. A
// deleted port does not stay plugged: a member's delete of its own
// server's port is refused (409), and an admin's delete of a hot-plugged
// NIC takes eth1, the veth, the OVS port and its flows away before the
// port is gone. A changed address of a server's port is on the host
// (eth0, flows) when the update answers, and the old one free only then.
func TestTenantNetworkIsolation(t *testing.T) {
	t.Parallel()
	c := startCloud(t, withBridge)
	h := c.hosts[0]
	ctx := context.Background()
	acc, anc := c.computeClient(t, "admin", c.adminPass, "admin"), c.networkClient(t, "admin", c.adminPass, "admin")
	dcc, dnc := c.computeClient(t, "demo", c.demoPass, "demo"), c.networkClient(t, "demo", c.demoPass, "demo")
	vlan := 101 + rand.IntN(800)
	netV, _ := vlanNetwork(t, anc, "isoV", vlan, "10.83.0.0/24", true)
	netX, _ := vlanNetwork(t, anc, "isoX", vlan+1, "10.84.0.0/24", true)
	shared := true
	for _, id := range []string{netV, netX} {
		if _, err := networks.Update(ctx, anc, id, networks.UpdateOpts{Shared: &shared}).Extract(); err != nil {
			t.Fatalf("share network %s: %v", id, err)
		}
	}

	victim := activeServer(t, acc, anc, "victim", c.bootOn(t, acc, "victim", h, netV, ""), h)
	routes := func() string {
		t.Helper()
		out, err := victim.exec("ip", "route")
		if err != nil {
			t.Fatalf("ip route in the victim: %v %s", err, out)
		}
		return out
	}
	before := routes()
	if !strings.Contains(before, "default via 10.83.0.1 dev eth0") {
		t.Fatalf("victim's routes = %q, want its default route via its own gateway", before)
	}

	// The hijack, as the demo project's member.
	owner := "compute:nova"
	_, err := ports.Create(ctx, dnc, ports.CreateOpts{NetworkID: netX, DeviceID: victim.id, DeviceOwner: owner}).Extract()
	if !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("member's port with the victim's device_id: %v, want 409", err)
	}
	mine, err := ports.Create(ctx, dnc, ports.CreateOpts{NetworkID: netX}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ports.Update(ctx, dnc, mine.ID, ports.UpdateOpts{DeviceID: &victim.id, DeviceOwner: &owner}).Extract()
	if !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("member's update to the victim's device_id: %v, want 409", err)
	}
	// A label: what an admin may write through the Networking API.
	label, err := ports.Create(ctx, anc, ports.CreateOpts{NetworkID: netX, DeviceID: victim.id, DeviceOwner: owner}).Extract()
	if err != nil {
		t.Fatalf("admin's labelled port: %v", err)
	}

	o := ovs.New(ovs.Options{})
	unplugged := func(why string, s *netServer, dev string, portIDs ...string) {
		t.Helper()
		if _, ok := s.addrsOf(dev); ok {
			t.Errorf("%s: %s has %s", why, s.name, dev)
		}
		links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
		brPorts, err := o.Vsctl(ctx, "list-ports", h.bridge)
		if err != nil {
			t.Fatalf("list-ports %s: %v", h.bridge, err)
		}
		for _, id := range portIDs {
			tap := vif.HostIfName(id)
			if strings.Contains(string(links), " "+tap+"@") || strings.Contains(string(links), " "+tap+":") {
				t.Errorf("%s: veth %s of port %s is on the host", why, tap, id)
			}
			if slices.Contains(strings.Fields(brPorts), tap) {
				t.Errorf("%s: OVS port %s of port %s is on %s", why, tap, id, h.bridge)
			}
			if flows, err := o.DumpFlows(ctx, h.bridge, ovs.CookieMatch(vif.Cookie(id))); err != nil || len(flows) != 0 {
				t.Errorf("%s: flows of port %s on %s: %v %v", why, id, h.bridge, flows, err)
			}
		}
	}
	// The agent's start-up reconcile re-plugs every server from the NICs
	// the cloud says it has: the labelled port must not be one.
	capsuled := c.proc(t, "capsuled")
	capsuled.stop()
	n := capsuled.logged(t, agentReconciled)
	capsuled.start(t)
	c.waitReady(t)
	capsuled.waitLogged(t, agentReconciled, n, 60*time.Second)
	unplugged("after the hijack attempts and a reconcile", victim, "eth1", label.ID, mine.ID)
	if after := routes(); after != before {
		t.Errorf("victim's routes changed: %q, were %q", after, before)
	}
	pages, err := attachinterfaces.List(acc, victim.id).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ifs, err := attachinterfaces.ExtractInterfaces(pages); err != nil || len(ifs) != 1 || ifs[0].PortID != victim.portID {
		t.Errorf("victim's interfaces = %+v (%v), want only its port %s", ifs, err, victim.portID)
	}

	// A member cannot delete its server's NIC through the port API.
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	ds, err := servers.Create(ctx, dcc, servers.CreateOpts{Name: "dsrv", ImageRef: img, FlavorRef: "1",
		Networks: []servers.Network{{UUID: netV}}}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, dcc, ds.ID, "ACTIVE", 90*time.Second)
	dpages, err := ports.List(dnc, ports.ListOpts{DeviceID: ds.ID}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dports, err := ports.ExtractPorts(dpages)
	if err != nil || len(dports) != 1 {
		t.Fatalf("ports of dsrv = %+v %v", dports, err)
	}
	if err := ports.Delete(ctx, dnc, dports[0].ID).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("member's delete of its server's port: %v, want 409", err)
	}

	// An admin's delete of a hot-plugged NIC unplugs it first.
	att, err := attachinterfaces.Create(ctx, acc, victim.id, attachinterfaces.CreateOpts{NetworkID: netX}).Extract()
	if err != nil {
		t.Fatalf("attach to the victim: %v", err)
	}
	if addrs, ok := victim.addrsOf("eth1"); !ok || len(addrs) != 1 {
		t.Fatalf("victim's eth1 after the attach = %v (exists %v)", addrs, ok)
	}
	if err := ports.Delete(ctx, anc, att.PortID).ExtractErr(); err != nil {
		t.Fatalf("admin's delete of the hot-plugged port: %v", err)
	}
	unplugged("after the admin deleted the port", victim, "eth1", att.PortID)
	if _, err := ports.Get(ctx, anc, att.PortID).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("port after the admin's delete: %v, want 404", err)
	}
	if after := routes(); after != before {
		t.Errorf("victim's routes after the delete: %q, were %q", after, before)
	}

	// A changed address is on the host when the update answers (no
	// reconcile in between): eth0 and the anti-spoofing flows carry the
	// new address only, and the old one is free again.
	// Addresses are allocated at random: the new one must differ from
	// the victim's (an "update" to its own address changes nothing).
	newIP := "10.83.0.200"
	if victim.ip == newIP {
		newIP = "10.83.0.201"
	}
	fixed := []ports.IP{{IPAddress: newIP}}
	if _, err := ports.Update(ctx, anc, victim.portID, ports.UpdateOpts{FixedIPs: fixed}).Extract(); err != nil {
		t.Fatalf("change the victim's address: %v", err)
	}
	if addrs, _ := victim.addrsOf("eth0"); !slices.Equal(addrs, []string{newIP + "/24"}) {
		t.Errorf("victim's eth0 right after the update = %v, want only %s/24", addrs, newIP)
	}
	flows, err := o.DumpFlows(ctx, h.bridge, ovs.CookieMatch(vif.Cookie(victim.portID)))
	if text := fmt.Sprint(flows); err != nil || !strings.Contains(text, newIP) || strings.Contains(text, victim.ip+",") || strings.Contains(text, victim.ip+" ") {
		t.Errorf("victim's flows right after the update (%v): %s", err, text)
	}
	if r := routes(); !strings.Contains(r, "default via 10.83.0.1 dev eth0") {
		t.Errorf("victim's routes after the address change = %q, want its default route kept", r)
	}
	taken, err := ports.Create(ctx, anc, ports.CreateOpts{NetworkID: netV, FixedIPs: []ports.IP{{IPAddress: victim.ip}}}).Extract()
	if err != nil {
		t.Errorf("the victim's old address is not free after the update: %v", err)
	} else {
		_ = ports.Delete(ctx, anc, taken.ID).ExtractErr()
	}
}
