package vif

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

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
// (10 Mbit/s) gets TCP at that rate each way, without loss; unshaped it is
// much faster. Re-Plug keeps the qdiscs, repairs them and removes them when
// the bandwidth goes.
func TestShaping(t *testing.T) {
	t.Parallel()
	c, _, p := setup(t)
	ctx := testCtx(t)
	sn := subnet(t)
	const rate = 1250 // KB/s
	bw := &protocol.Bandwidth{InboundAverageKBps: rate, OutboundAverageKBps: rate}
	// Only a is shaped: a->b measures a's outbound shaping, b->a its
	// inbound.
	nicA, nicB := vlanNIC(t, sn, 10, 172, true), vlanNIC(t, sn, 11, 172, true)
	nicA.Bandwidth = bw
	idA, a := plug(t, p, nicA)
	_, b := plug(t, p, nicB)
	tap := HostIfName(nicA.PortID)
	replug := func(bw *protocol.Bandwidth) {
		t.Helper()
		nic := nicA
		nic.Bandwidth = bw
		if err := p.Plug(ctx, idA, a.path, []protocol.NIC{nic}); err != nil {
			t.Fatalf("re-Plug: %v", err)
		}
	}
	hostEnd, contEnd := linkOn(t, nil, tap), linkOn(t, &a, "eth0")

	shaped := func(t *testing.T, from, to netnsT, ip string) {
		t.Helper()
		r0 := tcpRetrans(t, from)
		got := throughput(t, from, to, ip, 4*time.Second)
		r1 := tcpRetrans(t, from)
		t.Logf("%s -> %s: %.0f KB/s of TCP payload (limit %d KB/s on the wire); %d of %d segments retransmitted",
			from.name, to.name, got/1000, rate, r1.retrans-r0.retrans, r1.out-r0.out)
		if got < rate*1000*0.85 || got > rate*1000*1.15 {
			t.Errorf("rate %.0f KB/s, want %d ± 15%%", got/1000, rate)
		}
		// Shaping, not policing: the sender is held back by a queue. Out
		// of the server nothing is lost (the server's own qdisc pushes
		// back on its TCP); into it, OVS's userspace datapath drops what
		// overflows its packet socket's send buffer while the qdisc holds
		// packets (~1% measured), which TCP rides out at the rate. A
		// policer loses far more (an IFB the datapath bypasses: ~17%).
		if lost := r1.retrans - r0.retrans; lost*20 > r1.out-r0.out {
			t.Errorf("%d of %d segments retransmitted: loss-driven, not shaped", lost, r1.out-r0.out)
		}
	}
	unshaped := func(t *testing.T, from, to netnsT, ip string) {
		t.Helper()
		got := throughput(t, from, to, ip, 2*time.Second)
		t.Logf("%s -> %s unshaped: %.0f KB/s", from.name, to.name, got/1000)
		if got < 4*rate*1000 {
			t.Errorf("unshaped rate %.0f KB/s, want well above %d KB/s (else the shaped test proves nothing)", got/1000, rate)
		}
	}
	checkQdiscs := func(t *testing.T, want bool) {
		t.Helper()
		for _, l := range []*tcLink{hostEnd, contEnd} {
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

	t.Run("out", func(t *testing.T) { shaped(t, a, b, sn+"11") })
	t.Run("in", func(t *testing.T) { shaped(t, b, a, sn+"10") })
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
		unshaped(t, a, b, sn+"11")
		unshaped(t, b, a, sn+"10")
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

// throughput sends TCP from namespace from to a listener in namespace to on
// ip for d, and returns the payload rate the receiver saw, in bytes per
// second, from its first byte to the end of the stream.
func throughput(t *testing.T, from, to netnsT, ip string, d time.Duration) float64 {
	t.Helper()
	var l net.Listener
	if err := inNamespace(to.handle(t), func() error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", to.name, err)
	}
	defer l.Close()
	type result struct {
		n           int64
		first, last time.Time
		err         error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		c, err := l.Accept()
		if err != nil {
			r.err = err
			done <- r
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(d + 30*time.Second))
		buf := make([]byte, 256<<10)
		for {
			k, err := c.Read(buf)
			if k > 0 {
				if r.first.IsZero() {
					r.first = time.Now()
				}
				r.n += int64(k)
				r.last = time.Now()
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					r.err = err
				}
				break
			}
		}
		done <- r
	}()
	var c net.Conn
	if err := inNamespace(from.handle(t), func() error {
		var err error
		c, err = net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial from %s: %v", from.name, err)
	}
	buf := make([]byte, 64<<10)
	_ = c.SetWriteDeadline(time.Now().Add(d))
	for {
		if _, err := c.Write(buf); err != nil {
			break // the deadline: stop sending, let the queued data drain
		}
	}
	// Close sends what is still queued, then FIN; the receiver's window
	// runs to its last byte.
	c.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("receive in %s: %v", to.name, r.err)
	}
	secs := r.last.Sub(r.first).Seconds()
	if secs < d.Seconds()/2 {
		t.Fatalf("received %d bytes in %.2f s", r.n, secs)
	}
	return float64(r.n) / secs
}

type tcpCounters struct{ out, retrans int64 }

// tcpRetrans reads the TCP segment counters of namespace n.
func tcpRetrans(t *testing.T, n netnsT) tcpCounters {
	t.Helper()
	var names, values []string
	for _, line := range strings.Split(run(t, "ip", "netns", "exec", n.name, "cat", "/proc/net/snmp"), "\n") {
		if !strings.HasPrefix(line, "Tcp: ") {
			continue
		}
		if names == nil {
			names = strings.Fields(line)
		} else {
			values = strings.Fields(line)
		}
	}
	var c tcpCounters
	for i := range min(len(names), len(values)) {
		v, _ := strconv.ParseInt(values[i], 10, 64)
		switch names[i] {
		case "OutSegs":
			c.out = v
		case "RetransSegs":
			c.retrans = v
		}
	}
	return c
}
