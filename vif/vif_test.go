package vif

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/ovs/ovstest"
	"github.com/capsule-cloud/capsule/protocol"
)

func TestHostIfName(t *testing.T) {
	t.Parallel()
	if got := HostIfName("3f2a1c9e-7b4d-4e21-9a55-0c1d2e3f4a5b"); got != "tap3f2a1c9e-7b" {
		t.Errorf("HostIfName = %q", got)
	}
	if got := HostIfName("short"); got != "tapshort" {
		t.Errorf("HostIfName(short) = %q", got)
	}
	if Cookie("a") == Cookie("b") || Cookie("a")>>48 != ovs.CookiePrefix>>48 || Cookie("a") == ovs.BaseCookie {
		t.Errorf("cookies: %#x %#x", Cookie("a"), Cookie("b"))
	}
}

// Two servers on one VLAN talk TCP and ICMP both ways, and everything Plug
// promises is in place on both sides.
func TestPlugSameVLAN(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	ctx := testCtx(t)
	sn := subnet(t)
	nicA, nicB := vlanNIC(t, sn, 10, 101, true), vlanNIC(t, sn, 11, 101, true)
	idA, a := plug(t, p, nicA)
	_, b := plug(t, p, nicB)

	mustReach(t, a, b, sn+"11")
	mustReach(t, b, a, sn+"10")

	// Namespace side.
	nsh, err := netlink.NewHandleAt(a.handle(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	eth0, err := nsh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().HardwareAddr.String() != nicA.MAC || eth0.Attrs().MTU != 1450 || eth0.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0 = %+v", eth0.Attrs())
	}
	if addrs := a.ip(t, "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, sn+"10/24") {
		t.Errorf("eth0 addresses: %s", addrs)
	}
	if lo := a.ip(t, "-o", "link", "show", "lo"); !strings.Contains(lo, "UP") {
		t.Errorf("lo not up: %s", lo)
	}
	if r := a.ip(t, "route", "show", "default"); !strings.Contains(r, "default via "+sn+"1 dev eth0") {
		t.Errorf("default route: %q", r)
	}
	if on, err := txChecksum(a.handle(t), "eth0"); err != nil || on {
		t.Errorf("TX checksum offload on eth0: on=%v err=%v", on, err)
	}

	// Host side.
	host, err := netlink.LinkByName(HostIfName(nicA.PortID))
	if err != nil {
		t.Fatal(err)
	}
	if host.Attrs().MTU != 1450 || host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host end = %+v", host.Attrs())
	}
	port, ok, err := c.PortByIfaceID(ctx, nicA.PortID)
	if err != nil || !ok {
		t.Fatalf("OVS port by iface-id: %v %v", ok, err)
	}
	if port.Bridge != br || port.Name != HostIfName(nicA.PortID) || port.Tag != 101 || port.VLANMode != "access" ||
		port.VMUUID() != idA || port.ExternalIDs["attached-mac"] != nicA.MAC || port.ExternalIDs["iface-status"] != "active" {
		t.Errorf("OVS port = %+v", port)
	}
	if f := flowsWithCookie(t, c, br, nicA.PortID); len(f) != 3 {
		t.Errorf("port security flows = %v, want allow IP, allow ARP, drop", f)
	}
}

func TestVLANIsolation(t *testing.T) {
	t.Parallel()
	_, _, p := setup(t)
	sn := subnet(t)
	_, a := plug(t, p, vlanNIC(t, sn, 10, 101, true))
	_, b := plug(t, p, vlanNIC(t, sn, 11, 102, true))
	_, flat := plug(t, p, vlanNIC(t, sn, 12, 0, true))
	mustNotReach(t, a, b, sn+"11")
	mustNotReach(t, b, a, sn+"10")
	mustNotReach(t, flat, a, sn+"10")
	mustNotReach(t, a, flat, sn+"12")
}

// Flat servers (untagged) reach each other but not a VLAN; a flat port is
// an access port, so tagged frames the server sends are dropped instead of
// hopping onto a VLAN.
func TestFlat(t *testing.T) {
	t.Parallel()
	_, _, p := setup(t)
	sn, sn2 := subnet(t), subnet(t)
	nicA := vlanNIC(t, sn, 10, 0, false)
	_, a := plug(t, p, nicA)
	_, b := plug(t, p, vlanNIC(t, sn, 11, 0, true))
	_, v := plug(t, p, vlanNIC(t, sn2, 20, 200, false))
	mustReach(t, a, b, sn+"11")
	mustReach(t, b, a, sn+"10")
	mustNotReach(t, a, v, sn2+"20")

	port, ok, err := p.ovs.PortByName(testCtx(t), HostIfName(nicA.PortID))
	if err != nil || !ok {
		t.Fatalf("port: %v %v", ok, err)
	}
	if port.Tag != 0 || port.VLANMode != "access" {
		t.Errorf("flat port = %+v, want untagged access", port)
	}
}

// Two "hosts" (bridges) joined by a trunk: same-VLAN servers talk across,
// other VLANs stay apart. The trunk is either a patch pair or a veth pair
// (the way a physical uplink would look).
func TestTrunkAcrossBridges(t *testing.T) {
	t.Parallel()
	for _, link := range []string{"patch", "veth"} {
		t.Run(link, func(t *testing.T) {
			c := ovstest.Client(t)
			ctx := testCtx(t)
			brA, brB := ovstest.Bridge(t, c), ovstest.Bridge(t, c)
			ta, tb := ovstest.Name("trk"), ovstest.Name("trk")
			switch link {
			case "patch":
				if err := c.AddPatchPair(ctx, brA, ta, brB, tb); err != nil {
					t.Fatal(err)
				}
			case "veth":
				run(t, "ip", "link", "add", ta, "type", "veth", "peer", "name", tb)
				t.Cleanup(func() { run(t, "ip", "link", "del", ta) })
				run(t, "ip", "link", "set", ta, "up")
				run(t, "ip", "link", "set", tb, "up")
				if err := c.AddTrunkPort(ctx, brA, ta); err != nil {
					t.Fatal(err)
				}
				if err := c.AddTrunkPort(ctx, brB, tb); err != nil {
					t.Fatal(err)
				}
			}
			pA := New(c, map[string]string{"physnet1": brA}, testLogger(t))
			pB := New(c, map[string]string{"physnet1": brB}, testLogger(t))
			sn := subnet(t)
			_, a := plug(t, pA, vlanNIC(t, sn, 10, 300, true))
			_, b := plug(t, pB, vlanNIC(t, sn, 11, 300, true))
			_, other := plug(t, pB, vlanNIC(t, sn, 12, 301, true))
			sn2 := subnet(t)
			_, fa := plug(t, pA, vlanNIC(t, sn2, 10, 0, true))
			_, fb := plug(t, pB, vlanNIC(t, sn2, 11, 0, true))

			mustReach(t, a, b, sn+"11")
			mustReach(t, b, a, sn+"10")
			mustNotReach(t, a, other, sn+"12")
			mustReach(t, fa, fb, sn2+"11") // flat crosses the trunk untagged
		})
	}
}

// A server that changes its IP or MAC reaches nobody with port security
// on, and still does with it off; nor can it poison a neighbour's ARP
// cache.
func TestPortSecurity(t *testing.T) {
	t.Parallel()
	_, _, p := setup(t)
	sn := subnet(t)
	nicA, nicB, nicC := vlanNIC(t, sn, 10, 110, true), vlanNIC(t, sn, 11, 110, true), vlanNIC(t, sn, 12, 110, false)
	idA, a := plug(t, p, nicA)
	_, b := plug(t, p, nicB)
	_, cc := plug(t, p, nicC)
	mustReach(t, a, b, sn+"11")
	mustReach(t, cc, b, sn+"11")

	t.Run("arp-poisoning", func(t *testing.T) {
		// b knows a and c now. a claims c's address, c claims a's.
		gratuitous := func(from netnsT, claim string) {
			// The tenant takes the address, announces it, and drops it.
			from.ip(t, "addr", "add", claim+"/32", "dev", "eth0")
			run(t, "ip", "netns", "exec", from.name, "busybox", "arping", "-U", "-c", "2", "-I", "eth0", "-s", claim, claim)
			from.ip(t, "addr", "del", claim+"/32", "dev", "eth0")
		}
		neigh := func(ip string) string { return b.ip(t, "neigh", "show", ip) }
		run(t, "sleep", "1.1") // past the neighbour entries' locktime
		gratuitous(a, sn+"12")
		if got := neigh(sn + "12"); !strings.Contains(got, nicC.MAC) {
			t.Errorf("a (port security on) poisoned b's ARP cache: %s", got)
		}
		gratuitous(cc, sn+"10")
		if got := neigh(sn + "10"); !strings.Contains(got, nicC.MAC) {
			t.Errorf("c (port security off) could not rewrite b's ARP cache, the check proves nothing: %s", got)
		}
		b.ip(t, "neigh", "flush", "dev", "eth0")
	})

	t.Run("ip-change", func(t *testing.T) {
		a.ip(t, "addr", "flush", "dev", "eth0")
		a.ip(t, "addr", "add", sn+"50/24", "dev", "eth0")
		mustNotReach(t, a, b, sn+"11")
		mustNotReach(t, b, a, sn+"50")

		// Plug again puts the address back (drift repair).
		if err := p.Plug(testCtx(t), idA, a.path, []protocol.NIC{nicA}); err != nil {
			t.Fatal(err)
		}
		if addrs := a.ip(t, "-4", "-o", "addr", "show", "dev", "eth0"); strings.Contains(addrs, sn+"50") || !strings.Contains(addrs, sn+"10/24") {
			t.Errorf("addresses after re-plug: %s", addrs)
		}
		b.ip(t, "neigh", "flush", "dev", "eth0")
		mustReach(t, a, b, sn+"11")
	})

	t.Run("mac-change", func(t *testing.T) {
		a.ip(t, "link", "set", "eth0", "address", randMAC(t))
		b.ip(t, "neigh", "flush", "dev", "eth0")
		mustNotReach(t, a, b, sn+"11")
		if err := p.Plug(testCtx(t), idA, a.path, []protocol.NIC{nicA}); err != nil {
			t.Fatal(err)
		}
		b.ip(t, "neigh", "flush", "dev", "eth0")
		mustReach(t, a, b, sn+"11")
	})

	t.Run("off", func(t *testing.T) {
		cc.ip(t, "addr", "flush", "dev", "eth0")
		cc.ip(t, "addr", "add", sn+"60/24", "dev", "eth0")
		b.ip(t, "neigh", "flush", "dev", "eth0")
		mustReach(t, cc, b, sn+"11")
		mustReach(t, b, cc, sn+"60")
	})
}

// Port security flows for IPv6 let neighbour discovery and traffic from
// the port's own addresses through.
func TestPortSecurityIPv6(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	sn := subnet(t)
	nicA, nicB := vlanNIC(t, sn, 10, 120, true), vlanNIC(t, sn, 11, 120, true)
	nicA.IPs = append(nicA.IPs, protocol.IP{Address: "fd00:ca5e::10", PrefixLen: 64})
	nicB.IPs = append(nicB.IPs, protocol.IP{Address: "fd00:ca5e::11", PrefixLen: 64})
	_, a := plug(t, p, nicA)
	_, b := plug(t, p, nicB)
	if err := a.tcp(t, b, "fd00:ca5e::11"); err != nil {
		t.Error(err)
	}
	if err := b.tcp(t, a, "fd00:ca5e::10"); err != nil {
		t.Error(err)
	}
	if f := flowsWithCookie(t, c, br, nicA.PortID); len(f) < 8 {
		t.Errorf("IPv6 port security flows: %v", f)
	}
	// a spoofing another IPv6 source is dropped.
	a.ip(t, "-6", "addr", "flush", "dev", "eth0", "scope", "global")
	a.ip(t, "-6", "addr", "add", "fd00:ca5e::99/64", "dev", "eth0", "nodad")
	if err := a.tcp(t, b, "fd00:ca5e::11"); err == nil {
		t.Error("spoofed IPv6 source reached b")
	}
}

// Plug is idempotent and repairs a deleted OVS port, a wrong tag, deleted
// flows (the port's and the bridge's fallback) and a deleted host veth.
func TestPlugRepairsDrift(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	ctx := testCtx(t)
	sn := subnet(t)
	nicA, nicB := vlanNIC(t, sn, 10, 130, true), vlanNIC(t, sn, 11, 130, true)
	idA, a := plug(t, p, nicA)
	_, b := plug(t, p, nicB)
	tap := HostIfName(nicA.PortID)
	// drift is what Drift names for a ("" when in sync).
	drift := func() string {
		t.Helper()
		d, err := p.Drift(ctx, idA, a.path, []protocol.NIC{nicA})
		if err != nil {
			t.Fatalf("Drift: %v", err)
		}
		return d
	}
	// replug plugs a again, once Drift saw the drift the subtest made;
	// afterwards there is none.
	replug := func() {
		t.Helper()
		if d := drift(); d == "" {
			t.Errorf("Drift saw no drift before the repair")
		} else {
			t.Logf("drift: %s", d)
		}
		if err := p.Plug(ctx, idA, a.path, []protocol.NIC{nicA}); err != nil {
			t.Fatalf("re-Plug: %v", err)
		}
		if d := drift(); d != "" {
			t.Errorf("drift after the repair: %s", d)
		}
	}
	state := func() (int, int, []ovs.Flow) {
		t.Helper()
		l, err := netlink.LinkByName(tap)
		if err != nil {
			t.Fatal(err)
		}
		port, ok, err := c.PortByName(ctx, tap)
		if err != nil || !ok {
			t.Fatalf("port %s: %v %v", tap, ok, err)
		}
		if port.Tag != 130 {
			t.Errorf("tag = %d, want 130", port.Tag)
		}
		return l.Attrs().Index, port.OFPort, flowsWithCookie(t, c, br, nicA.PortID)
	}
	idx0, of0, flows0 := state()

	t.Run("idempotent", func(t *testing.T) {
		if d := drift(); d != "" {
			t.Errorf("drift right after Plug: %s", d)
		}
		if err := p.Plug(ctx, idA, a.path, []protocol.NIC{nicA}); err != nil {
			t.Fatal(err)
		}
		if err := p.Plug(ctx, idA, a.path, []protocol.NIC{nicA}); err != nil {
			t.Fatal(err)
		}
		if d := drift(); d != "" {
			t.Errorf("drift after re-Plugs: %s", d)
		}
		idx, of, flows := state()
		if idx != idx0 || of != of0 || fmt.Sprint(flows) != fmt.Sprint(flows0) {
			t.Errorf("re-Plug changed things: ifindex %d->%d ofport %d->%d flows %v -> %v", idx0, idx, of0, of, flows0, flows)
		}
		mustReach(t, a, b, sn+"11")
	})
	t.Run("port", func(t *testing.T) {
		if err := c.DeletePort(ctx, tap); err != nil {
			t.Fatal(err)
		}
		mustNotReach(t, a, b, sn+"11")
		replug()
		if _, _, flows := state(); len(flows) != len(flows0) {
			t.Errorf("flows after port repair: %v", flows)
		}
		mustReach(t, a, b, sn+"11")
	})
	t.Run("tag", func(t *testing.T) {
		if _, err := c.Vsctl(ctx, "set", "Port", tap, "tag=999"); err != nil {
			t.Fatal(err)
		}
		mustNotReach(t, a, b, sn+"11")
		replug()
		state()
		mustReach(t, a, b, sn+"11")
	})
	t.Run("flows", func(t *testing.T) {
		if err := c.DeleteFlows(ctx, br, ovs.CookieMatch(Cookie(nicA.PortID))); err != nil {
			t.Fatal(err)
		}
		replug()
		if _, _, flows := state(); len(flows) != len(flows0) {
			t.Errorf("flows after repair: %v, want %v", flows, flows0)
		}
		if _, err := c.Ofctl(ctx, "", "del-flows", br); err != nil { // everything, fallback too
			t.Fatal(err)
		}
		// The datapath's flow cache is revalidated asynchronously.
		time.Sleep(time.Second)
		mustNotReach(t, a, b, sn+"11")
		replug()
		if _, _, flows := state(); len(flows) != len(flows0) {
			t.Errorf("flows after repair: %v, want %v", flows, flows0)
		}
		// b's flows are b's Plug's job; repair them the same way.
		if err := p.Plug(ctx, mustPortVM(t, c, nicB.PortID), b.path, []protocol.NIC{nicB}); err != nil {
			t.Fatal(err)
		}
		mustReach(t, a, b, sn+"11")
	})
	t.Run("link down", func(t *testing.T) {
		run(t, "ip", "link", "set", tap, "down")
		replug()
		mustReach(t, a, b, sn+"11")
	})
	t.Run("address", func(t *testing.T) {
		a.ip(t, "addr", "del", sn+"10/24", "dev", "eth0")
		replug()
		mustReach(t, a, b, sn+"11")
	})
	t.Run("veth", func(t *testing.T) {
		run(t, "ip", "link", "del", tap)
		if _, err := netlink.LinkByName(tap); err == nil {
			t.Fatal("veth still there")
		}
		replug()
		idx, _, flows := state()
		if idx == idx0 || len(flows) != len(flows0) {
			t.Errorf("after veth repair: ifindex %d (was %d), flows %v", idx, idx0, flows)
		}
		if addrs := a.ip(t, "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, sn+"10/24") {
			t.Errorf("eth0 after repair: %s", addrs)
		}
		if r := a.ip(t, "route", "show", "default"); !strings.Contains(r, "via "+sn+"1") {
			t.Errorf("default route after repair: %q", r)
		}
		if on, err := txChecksum(a.handle(t), "eth0"); err != nil || on {
			t.Errorf("TX checksum offload: %v %v", on, err)
		}
		mustReach(t, a, b, sn+"11")
		mustReach(t, b, a, sn+"10")
	})
}

func mustPortVM(t *testing.T, c *ovs.Client, portID string) string {
	t.Helper()
	port, ok, err := c.PortByIfaceID(testCtx(t), portID)
	if err != nil || !ok {
		t.Fatalf("port %s: %v %v", portID, ok, err)
	}
	return port.VMUUID()
}

// A Plug that fails part-way leaves nothing behind.
func TestPlugFailureUndoes(t *testing.T) {
	t.Parallel()
	c := ovstest.Client(t)
	br := ovstest.Bridge(t, c)
	missing := ovstest.Name("brt-gone")
	p := New(c, map[string]string{"physnet1": br, "physnet2": missing}, testLogger(t))
	sn := subnet(t)

	check := func(t *testing.T, n netnsT, nics []protocol.NIC) {
		t.Helper()
		for _, nic := range nics {
			if hostLinkExists(t, HostIfName(nic.PortID)) {
				t.Errorf("veth %s left behind", HostIfName(nic.PortID))
			}
			if f := flowsWithCookie(t, c, br, nic.PortID); len(f) != 0 {
				t.Errorf("flows left behind: %v", f)
			}
		}
		ports, err := c.ListPorts(testCtx(t), br)
		if err != nil || len(ports) != 0 {
			t.Errorf("ports left behind: %v %v", ports, err)
		}
		onlyFallback(t, c, br)
		if links := n.ip(t, "-o", "link", "show"); strings.Contains(links, "eth") {
			t.Errorf("namespace links left behind: %s", links)
		}
	}

	t.Run("missing-bridge", func(t *testing.T) {
		// The second NIC fails at add-port, after the first is fully
		// plugged and the second's veth exists.
		n := newNetns(t)
		nic2 := vlanNIC(t, sn, 20, 141, true)
		nic2.PhysicalNetwork = "physnet2"
		nics := []protocol.NIC{vlanNIC(t, sn, 10, 140, true), nic2}
		err := p.Plug(testCtx(t), uuid.NewString(), n.path, nics)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Fatalf("Plug error = %v, want one naming the missing bridge", err)
		}
		check(t, n, nics)
	})
	t.Run("unmapped", func(t *testing.T) {
		n := newNetns(t)
		nic2 := vlanNIC(t, sn, 21, 141, true)
		nic2.PhysicalNetwork = "physnet9"
		nics := []protocol.NIC{vlanNIC(t, sn, 11, 140, true), nic2}
		if err := p.Plug(testCtx(t), uuid.NewString(), n.path, nics); err == nil || !strings.Contains(err.Error(), "physnet9") {
			t.Fatalf("Plug error = %v", err)
		}
		check(t, n, nics)
	})
	t.Run("invalid", func(t *testing.T) {
		n := newNetns(t)
		good := vlanNIC(t, sn, 12, 140, true)
		for name, mutate := range map[string]func(*protocol.NIC){
			"mac":     func(n *protocol.NIC) { n.MAC = "01:00:5e:00:00:01" },
			"vlan":    func(n *protocol.NIC) { n.SegmentationID = 4095 },
			"type":    func(n *protocol.NIC) { n.NetworkType = "vxlan" },
			"ip":      func(n *protocol.NIC) { n.IPs[0].Address = "10.1.2" },
			"prefix":  func(n *protocol.NIC) { n.IPs[0].PrefixLen = 33 },
			"gateway": func(n *protocol.NIC) { n.Gateway = "gw" },
			"port":    func(n *protocol.NIC) { n.PortID = "" },
		} {
			bad := vlanNIC(t, sn, 22, 141, true)
			bad.IPs = []protocol.IP{bad.IPs[0]}
			mutate(&bad)
			nics := []protocol.NIC{good, bad}
			if err := p.Plug(testCtx(t), uuid.NewString(), n.path, nics); err == nil {
				t.Errorf("%s: Plug accepted %+v", name, bad)
			}
			check(t, n, nics[:1])
		}
	})
	t.Run("bad-netns", func(t *testing.T) {
		nics := []protocol.NIC{vlanNIC(t, sn, 13, 140, true)}
		if err := p.Plug(testCtx(t), uuid.NewString(), "/var/run/netns/capsule-t-nonexistent", nics); err == nil {
			t.Error("Plug into a missing namespace succeeded")
		}
		if hostLinkExists(t, HostIfName(nics[0].PortID)) {
			t.Error("veth left behind")
		}
	})
}

// Unplug removes veths, ports and flows; twice is fine.
func TestUnplug(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	ctx := testCtx(t)
	sn, sn2 := subnet(t), subnet(t)
	nics := []protocol.NIC{vlanNIC(t, sn, 10, 150, true), vlanNIC(t, sn2, 10, 151, true)}
	nics[1].Gateway = ""
	n := newNetns(t)
	id := uuid.NewString()
	if err := p.Plug(ctx, id, n.path, nics); err != nil {
		t.Fatal(err)
	}
	if links := n.ip(t, "-o", "link", "show"); !strings.Contains(links, "eth0") || !strings.Contains(links, "eth1") {
		t.Fatalf("namespace links: %s", links)
	}
	for i := 0; i < 2; i++ {
		if err := p.Unplug(ctx, id, nics); err != nil {
			t.Fatalf("Unplug #%d: %v", i+1, err)
		}
	}
	for _, nic := range nics {
		name := HostIfName(nic.PortID)
		if hostLinkExists(t, name) {
			t.Errorf("veth %s left behind", name)
		}
		if out := run(t, "ip", "-o", "link", "show"); strings.Contains(out, name) {
			t.Errorf("ip link still shows %s", name)
		}
		if f := flowsWithCookie(t, c, br, nic.PortID); len(f) != 0 {
			t.Errorf("flows left: %v", f)
		}
	}
	if out, err := c.Vsctl(ctx, "list-ports", br); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("ovs-vsctl list-ports %s: %q %v", br, out, err)
	}
	onlyFallback(t, c, br)
	if links := n.ip(t, "-o", "link", "show"); strings.Contains(links, "eth") {
		t.Errorf("namespace links after Unplug: %s", links)
	}
}

// Orphans finds ports of instances the agent does not keep; Remove deletes
// them and nothing else.
func TestOrphans(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	ctx := testCtx(t)
	sn := subnet(t)
	nicA, nicB := vlanNIC(t, sn, 10, 160, true), vlanNIC(t, sn, 11, 160, true)
	idA, _ := plug(t, p, nicA)
	idB, _ := plug(t, p, nicB)
	// A patch port (an uplink) without vm-uuid is never an orphan.
	other := ovstest.Bridge(t, c)
	if err := c.AddPatchPair(ctx, br, ovstest.Name("pt-"), other, ovstest.Name("pt-")); err != nil {
		t.Fatal(err)
	}

	orphans, err := p.Orphans(ctx, map[string]bool{idA: true})
	if err != nil {
		t.Fatal(err)
	}
	want := Port{Bridge: br, Name: HostIfName(nicB.PortID), InstanceID: idB, PortID: nicB.PortID}
	if len(orphans) != 1 || orphans[0] != want {
		t.Fatalf("orphans = %+v, want [%+v]", orphans, want)
	}
	if err := p.Remove(ctx, orphans); err != nil {
		t.Fatal(err)
	}
	if hostLinkExists(t, want.Name) {
		t.Error("orphan veth left")
	}
	if f := flowsWithCookie(t, c, br, nicB.PortID); len(f) != 0 {
		t.Errorf("orphan flows left: %v", f)
	}
	if orphans, err := p.Orphans(ctx, map[string]bool{idA: true}); err != nil || len(orphans) != 0 {
		t.Errorf("orphans after Remove: %v %v", orphans, err)
	}
	if _, ok, err := c.PortByIfaceID(ctx, nicA.PortID); err != nil || !ok {
		t.Errorf("kept instance's port gone: %v %v", ok, err)
	}
	if f := flowsWithCookie(t, c, br, nicA.PortID); len(f) == 0 {
		t.Error("kept instance's flows gone")
	}
}
