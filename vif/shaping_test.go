package vif

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/capsule-cloud/capsule/protocol"
)

func TestShapes(t *testing.T) {
	t.Parallel()
	in, out, err := shapes(&protocol.Bandwidth{
		InboundAverageKBps: 1250, InboundPeakKBps: 2500, InboundBurstKB: 100,
		OutboundAverageKBps: 500, OutboundBurstKB: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	if *in != (shape{rate: 1250000, ceil: 2500000, buffer: 102400}) {
		t.Errorf("inbound = %+v", *in)
	}
	// Without a peak the burst goes out at line rate: both buckets deep.
	if *out != (shape{rate: 500000, ceil: 500000, buffer: 65536, cbuffer: 65536}) {
		t.Errorf("outbound = %+v", *out)
	}
	if in, out, err := shapes(&protocol.Bandwidth{OutboundAverageKBps: 10}); err != nil || in != nil || out == nil {
		t.Errorf("outbound only: %v %v %v", in, out, err)
	}
	if in, out, err := shapes(nil); err != nil || in != nil || out != nil {
		t.Errorf("nil: %v %v %v", in, out, err)
	}
	if in, out, err := shapes(&protocol.Bandwidth{}); err != nil || in != nil || out != nil {
		t.Errorf("zero: %v %v %v", in, out, err)
	}
	for name, bw := range map[string]protocol.Bandwidth{
		"negative":         {InboundAverageKBps: -1},
		"peak-no-average":  {InboundPeakKBps: 100},
		"burst-no-average": {OutboundBurstKB: 100},
		"peak-below":       {OutboundAverageKBps: 100, OutboundPeakKBps: 50},
		"huge-rate":        {InboundAverageKBps: 1 << 40},
		"huge-burst":       {InboundAverageKBps: 1, InboundBurstKB: 1000},
	} {
		if _, _, err := shapes(&bw); err == nil {
			t.Errorf("%s: %+v accepted", name, bw)
		}
	}
	// A bad bandwidth fails Plug's validation, before anything is touched.
	_, _, p := setup(t)
	nic := vlanNIC(t, subnet(t), 10, 171, true)
	nic.Bandwidth = &protocol.Bandwidth{InboundPeakKBps: 5}
	n := newNetns(t)
	if err := p.Plug(testCtx(t), "x", n.path, []protocol.NIC{nic}); err == nil || !strings.Contains(err.Error(), "inbound bandwidth") {
		t.Errorf("Plug with a bad bandwidth: %v", err)
	}
	if hostLinkExists(t, HostIfName(nic.PortID)) {
		t.Error("veth created for an invalid NIC")
	}
}

// A server with quota:vif_inbound_average and outbound_average of 1250 KB/s
// (10 Mbit/s) gets an HTB qdisc at that rate on both ends of its veth (the
// rate TCP then gets is measured in TestRateShaping, shaping_rate_test.go).
// Re-Plug keeps the qdiscs, repairs them and removes them when the
// bandwidth goes.
func TestShaping(t *testing.T) {
	t.Parallel()
	c, _, p := setup(t)
	ctx := testCtx(t)
	sp := plugShapedPair(t, p)
	const rate = shapedRate
	sn, bw, nicA, idA, a, b, replug := sp.subnet, sp.bw, sp.nicA, sp.idA, sp.a, sp.b, sp.replug
	tap := HostIfName(nicA.PortID)
	hostEnd, contEnd := linkOn(t, nil, tap), linkOn(t, &a, "eth0")
	checkQdiscs := func(t *testing.T, want bool) {
		t.Helper()
		checkShaping(t, []*tcLink{hostEnd, contEnd}, rate, want)
	}

	// Shaped traffic still flows each way, through the class.
	mustReach(t, a, b, sn+"11")
	mustReach(t, b, a, sn+"10")
	checkQdiscs(t, true)

	t.Run("idempotent", func(t *testing.T) {
		_, c0, _ := hostEnd.shaping(t)
		replug(bw)
		replug(bw)
		checkQdiscs(t, true)
		// Left alone, not replaced: the class keeps its counters.
		_, c1, _ := hostEnd.shaping(t)
		if c1.Statistics == nil || c0.Statistics == nil || c1.Statistics.Basic.Bytes < c0.Statistics.Basic.Bytes || c1.Statistics.Basic.Bytes == 0 {
			t.Errorf("class counters %+v -> %+v: re-Plug replaced the class", c0.Statistics, c1.Statistics)
		}
		if n := hostEnd.qdiscCount(t); n != 1 {
			t.Errorf("%d qdiscs on %s", n, tap)
		}
	})
	t.Run("drift", func(t *testing.T) {
		run(t, "tc", "qdisc", "del", "dev", tap, "root")
		run(t, "tc", "-n", a.name, "class", "change", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate", "50mbit")
		replug(bw)
		checkQdiscs(t, true)
		// OVS resets the root qdisc of a port it (re)opens: a rebuilt
		// port gets its shaping back.
		if err := c.DeletePort(ctx, tap); err != nil {
			t.Fatal(err)
		}
		replug(bw)
		checkQdiscs(t, true)
	})
	t.Run("removed", func(t *testing.T) {
		replug(nil)
		checkQdiscs(t, false)
		mustReach(t, a, b, sn+"11")
		replug(bw)
		checkQdiscs(t, true)
	})
	t.Run("unplug", func(t *testing.T) {
		if err := p.Unplug(ctx, idA, []protocol.NIC{nicA}); err != nil {
			t.Fatal(err)
		}
		if hostLinkExists(t, tap) {
			t.Errorf("%s (and its qdisc) left after Unplug", tap)
		}
		// Nothing else named after the port (no IFB or the like) exists.
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if strings.Contains(l.Attrs().Name, nicA.PortID[:8]) {
				t.Errorf("link %s (%s) left after Unplug", l.Attrs().Name, l.Type())
			}
		}
		if links := a.ip(t, "-o", "link", "show"); strings.Contains(links, "eth0") {
			t.Errorf("namespace links after Unplug: %s", links)
		}
	})
}

// checkShaping checks each link has the HTB root qdisc and class 1:1 at
// rate KB/s (want), or neither (!want).
func checkShaping(t *testing.T, links []*tcLink, rate uint64, want bool) {
	t.Helper()
	for _, l := range links {
		q, c, sh := l.shaping(t)
		if sh.Shaped != want {
			t.Errorf("%s: ReadShaping = %+v, want shaped %v", l.name, sh, want)
		}
		if !want {
			if q != nil || c != nil {
				t.Errorf("%s: qdisc %v class %v left, want none", l.name, q, c)
			}
			continue
		}
		if q == nil || c == nil {
			t.Fatalf("%s: qdisc %v class %v, want HTB 1: and class 1:1", l.name, q, c)
		}
		if c.Rate != rate*1000 || c.Ceil != rate*1000 {
			t.Errorf("%s: class rate %d ceil %d, want %d B/s", l.name, c.Rate, c.Ceil, rate*1000)
		}
	}
}

// tcLink is a link on the host (ns nil) or in a test namespace.
type tcLink struct {
	name string
	h    *netlink.Handle
}

func linkOn(t *testing.T, ns *netnsT, name string) *tcLink {
	t.Helper()
	h, err := netlink.NewHandle()
	if ns != nil {
		h, err = netlink.NewHandleAt(ns.handle(t))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &tcLink{name: name, h: h}
}

// shaping returns the link's root HTB qdisc and its class 1:1 (with
// statistics), each nil when absent, and its shaping as diagnostics
// read it.
func (l *tcLink) shaping(t *testing.T) (netlink.Qdisc, *netlink.HtbClass, Shaping) {
	t.Helper()
	link, err := l.h.LinkByName(l.name)
	if err != nil {
		t.Fatal(err)
	}
	q, err := rootQdisc(l.h, link)
	if err != nil {
		t.Fatal(err)
	}
	c, err := htbClass(l.h, link)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := ReadShaping(l.h, link)
	if err != nil {
		t.Fatal(err)
	}
	return q, c, sh
}

func (l *tcLink) qdiscCount(t *testing.T) int {
	t.Helper()
	link, err := l.h.LinkByName(l.name)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := l.h.QdiscList(link)
	if err != nil {
		t.Fatal(err)
	}
	return len(qs)
}

// shapedRate is the shaping tests' rate each way, KB/s (10 Mbit/s).
const shapedRate = 1250

// shapedPair is two servers on one VLAN, a's NIC shaped to shapedRate
// each way and b's not, for the shaping tests.
type shapedPair struct {
	subnet string
	bw     *protocol.Bandwidth
	nicA   protocol.NIC
	idA    string
	a, b   netnsT
	// replug plugs a's NIC again with bandwidth bw (nil: unshaped).
	replug func(bw *protocol.Bandwidth)
}

func plugShapedPair(t *testing.T, p *Plumber) shapedPair {
	t.Helper()
	sp := shapedPair{subnet: subnet(t)}
	sp.bw = &protocol.Bandwidth{InboundAverageKBps: shapedRate, OutboundAverageKBps: shapedRate}
	nicB := vlanNIC(t, sp.subnet, 11, 172, true)
	sp.nicA = vlanNIC(t, sp.subnet, 10, 172, true)
	sp.nicA.Bandwidth = sp.bw
	sp.idA, sp.a = plug(t, p, sp.nicA)
	_, sp.b = plug(t, p, nicB)
	sp.replug = func(bw *protocol.Bandwidth) {
		t.Helper()
		nic := sp.nicA
		nic.Bandwidth = bw
		if err := p.Plug(testCtx(t), sp.idA, sp.a.path, []protocol.NIC{nic}); err != nil {
			t.Fatalf("re-Plug: %v", err)
		}
	}
	return sp
}
