package vif

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"

	"github.com/capsule-cloud/capsule/protocol"
)

// linkIndex is the ifindex of dev in namespace n (0: no such link).
func linkIndex(t *testing.T, n netnsT, dev string) int {
	t.Helper()
	h, err := netlink.NewHandleAt(n.handle(t))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := linkByName(h, dev)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil {
		return 0
	}
	return l.Attrs().Index
}

// Interface hot-plug on real OVS and namespaces: a NIC added to a plugged
// instance becomes the next eth<i> without touching the others; a single
// NIC's Unplug removes only its veth, OVS port and flows; plugging the
// rest again keeps their names and links (a detached eth0 leaves eth1
// as it is, default route moved to it), and a NIC added after that takes
// the lowest free name.
func TestHotplugKeepsNamesAndUnplugsOneNIC(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	ctx := testCtx(t)
	snA, snB, snC := subnet(t), subnet(t), subnet(t)
	a, b, nc := vlanNIC(t, snA, 10, 160, true), vlanNIC(t, snB, 10, 161, true), vlanNIC(t, snC, 10, 162, true)
	n := newNetns(t)
	id := uuid.NewString()
	t.Cleanup(func() { _ = p.Unplug(ctx, id, []protocol.NIC{a, b, nc}) })
	if err := p.Plug(ctx, id, n.path, []protocol.NIC{a}); err != nil {
		t.Fatal(err)
	}
	eth0 := linkIndex(t, n, "eth0")

	// Attach b: eth1, eth0 untouched; a neighbour on b's VLAN reaches it.
	if err := p.Plug(ctx, id, n.path, []protocol.NIC{a, b}); err != nil {
		t.Fatalf("hot-plug b: %v", err)
	}
	if got := linkIndex(t, n, "eth0"); got != eth0 {
		t.Errorf("eth0 re-created by the hot-plug (ifindex %d -> %d)", eth0, got)
	}
	if addrs := n.ip(t, "-o", "addr", "show", "dev", "eth1"); !strings.Contains(addrs, snB+"10/24") {
		t.Fatalf("eth1 after the hot-plug: %s", addrs)
	}
	eth1 := linkIndex(t, n, "eth1")
	_, neighbour := plug(t, p, vlanNIC(t, snB, 20, 161, true))
	mustReach(t, neighbour, n, snB+"10")

	// Detach a (eth0) alone: only its plumbing goes.
	if err := p.Unplug(ctx, id, []protocol.NIC{a}); err != nil {
		t.Fatalf("unplug a: %v", err)
	}
	if linkIndex(t, n, "eth0") != 0 || hostLinkExists(t, HostIfName(a.PortID)) {
		t.Error("a's veth survived its unplug")
	}
	if f := flowsWithCookie(t, c, br, a.PortID); len(f) != 0 {
		t.Errorf("a's flows left: %v", f)
	}
	ports, err := c.Vsctl(ctx, "list-ports", br)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ports, HostIfName(a.PortID)) || !strings.Contains(ports, HostIfName(b.PortID)) {
		t.Errorf("OVS ports after unplugging a: %s", ports)
	}
	if len(flowsWithCookie(t, c, br, b.PortID)) == 0 || linkIndex(t, n, "eth1") != eth1 {
		t.Error("unplugging a touched b")
	}
	mustReach(t, neighbour, n, snB+"10")

	// The agent plugs what is left again: b keeps eth1 and gets the
	// default route.
	if err := p.Plug(ctx, id, n.path, []protocol.NIC{b}); err != nil {
		t.Fatalf("re-plug b: %v", err)
	}
	if got := linkIndex(t, n, "eth1"); got != eth1 {
		t.Errorf("re-plugging renamed or re-created b's eth1 (ifindex %d -> %d)", eth1, got)
	}
	if route := n.ip(t, "route", "show", "default"); !strings.Contains(route, snB+"1") || !strings.Contains(route, "eth1") {
		t.Errorf("default route after the detach of eth0: %q", route)
	}

	// A new NIC takes the lowest free name, eth0.
	if err := p.Plug(ctx, id, n.path, []protocol.NIC{b, nc}); err != nil {
		t.Fatalf("hot-plug c: %v", err)
	}
	if addrs := n.ip(t, "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, snC+"10/24") {
		t.Errorf("eth0 after hot-plugging c: %s", addrs)
	}
	if got := linkIndex(t, n, "eth1"); got != eth1 {
		t.Errorf("hot-plugging c touched eth1 (ifindex %d -> %d)", eth1, got)
	}
}
