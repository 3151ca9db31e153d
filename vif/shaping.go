package vif

// Traffic shaping of a NIC (Nova's quota:vif_* extra specs), with HTB
// through netlink.
//
// Into the server: a root HTB qdisc on the host end of the veth, whose
// egress is the server's ingress (OVS transmits into the veth through the
// host end's qdisc, with the userspace datapath too).
//
// Out of the server: a root HTB qdisc on the container end (eth<i>, inside
// the server's namespace). The usual alternative, the host end's ingress
// redirected (u32 + mirred) to an IFB with HTB, does not work with OVS's
// userspace (netdev) datapath: OVS reads the host end through a packet
// socket, and the kernel hands packets to packet sockets before the ingress
// hook runs, so OVS forwards every packet unshaped while the IFB shapes a
// copy that goes nowhere (measured: ~105 MB/s through a 1250 KB/s IFB, its
// queue dropping the copies). Shaping at the container end's egress works
// with every datapath, is shaping rather than policing (the server's TCP is
// slowed by its own qdisc's backpressure, nothing is dropped), and needs no
// extra device. The server cannot undo it: containers run without
// CAP_NET_ADMIN (drivers/docker CapDrop).
//
// OVS resets the root qdisc of a port when it opens it (adding the port,
// rebuilding it, restarting ovs-vswitchd) to the port's QoS, which Capsule
// leaves empty; so Plug shapes after the port is open, and drift repair's
// re-Plug puts the inbound HTB back after an OVS restart. Into the server,
// OVS drops some packets it cannot hand to the shaped veth while the HTB
// holds a queue (the qdisc itself counts no drops; most likely the packet
// socket's send buffer, which queued packets are charged to, is full):
// measured, TCP into a shaped server retransmits 0-1.3% of its segments
// and holds the rate.
//
// Both qdiscs live on the veth, so they go when the veth goes (Unplug,
// Remove, or a failed Plug undoing the veth it created): nothing to leak.

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/capsule-cloud/capsule/protocol"
)

// Handles of what shaping installs: root qdisc 1: with the one class 1:1
// every packet goes to (default 1).
var (
	shapeQdiscHandle = netlink.MakeHandle(1, 0)
	shapeClassHandle = netlink.MakeHandle(1, 1)
)

const (
	shapeDefaultClass = 1
	// Nova's units as libvirt passes them to tc: "kbps" is 1000 bytes/s,
	// "kb" is 1024 bytes.
	bytesPerKB     = 1000
	bytesPerBurstK = 1024
	// maxBurstSeconds bounds a burst against its rate: HTB keeps the burst
	// as a transmission time in 32-bit ticks of 64 ns (~274 s).
	maxBurstSeconds = 60
	maxRateKBps     = (1<<32 - 1) / bytesPerKB // rate tables are 32-bit bytes/s
)

// shape is one direction's HTB class: rate and ceil in bytes per second,
// buffer and cbuffer in bytes (0 = tc's default, rate/HZ + MTU).
type shape struct {
	rate, ceil      uint64
	buffer, cbuffer uint32
}

// shapes validates a NIC's bandwidth and returns the inbound (into the
// server) and outbound shapes; nil means that direction is not shaped.
func shapes(bw *protocol.Bandwidth) (in, out *shape, err error) {
	if bw == nil {
		return nil, nil, nil
	}
	if in, err = direction("inbound", bw.InboundAverageKBps, bw.InboundPeakKBps, bw.InboundBurstKB); err != nil {
		return nil, nil, err
	}
	if out, err = direction("outbound", bw.OutboundAverageKBps, bw.OutboundPeakKBps, bw.OutboundBurstKB); err != nil {
		return nil, nil, err
	}
	return in, out, nil
}

// direction turns Nova's average/peak (KB/s) and burst (KB) into an HTB
// class. A root HTB class cannot borrow, so it sends only while both its
// buckets have tokens: rate with buffer bounds the long-term average and the
// burst, ceil with cbuffer bounds how fast a burst goes out. With a peak,
// bursts leave at the peak; without one, the ceil bucket gets the burst's
// depth too, so a burst is a plain token bucket at the average.
func direction(name string, avg, peak, burst int) (*shape, error) {
	switch {
	case avg < 0 || peak < 0 || burst < 0:
		return nil, fmt.Errorf("%s bandwidth: negative value (average %d, peak %d, burst %d)", name, avg, peak, burst)
	case avg == 0 && (peak != 0 || burst != 0):
		return nil, fmt.Errorf("%s bandwidth: peak or burst without an average", name)
	case avg == 0:
		return nil, nil
	case avg > maxRateKBps || peak > maxRateKBps:
		return nil, fmt.Errorf("%s bandwidth: rate above %d KB/s", name, maxRateKBps)
	case peak != 0 && peak < avg:
		return nil, fmt.Errorf("%s bandwidth: peak %d KB/s below average %d KB/s", name, peak, avg)
	case burst > maxBurstSeconds*avg*bytesPerKB/bytesPerBurstK:
		return nil, fmt.Errorf("%s bandwidth: burst %d KB is more than %d s at the average %d KB/s", name, burst, maxBurstSeconds, avg)
	}
	s := &shape{rate: uint64(avg) * bytesPerKB, buffer: uint32(burst) * bytesPerBurstK}
	s.ceil = s.rate
	if peak != 0 {
		s.ceil = uint64(peak) * bytesPerKB
	} else {
		s.cbuffer = s.buffer
	}
	return s, nil
}

// class is the HTB class 1:1 of s on the link with index idx, as netlink
// sends it (and as the kernel reports it back: rates in bytes per second,
// buffers in ticks).
func (s *shape) class(idx int) *netlink.HtbClass {
	c := netlink.NewHtbClass(
		netlink.ClassAttrs{LinkIndex: idx, Parent: shapeQdiscHandle, Handle: shapeClassHandle},
		netlink.HtbClassAttrs{Rate: s.rate * 8, Ceil: s.ceil * 8, Buffer: s.buffer, Cbuffer: s.cbuffer})
	// Set the quantum (bytes served per round, only relevant between
	// sibling classes) rather than let the kernel derive it from r2q and
	// warn about small or big quanta.
	c.Quantum = uint32(min(max(s.rate/10, 1600), 200000))
	return c
}

// sameClass compares what the kernel reports with what we would set.
func sameClass(have, want *netlink.HtbClass) bool {
	return have.Rate == want.Rate && have.Ceil == want.Ceil &&
		have.Buffer == want.Buffer && have.Cbuffer == want.Cbuffer && have.Quantum == want.Quantum
}

// shapeLink makes the egress of the link named name on h shaped by want
// (nil: not shaped, the root qdisc removed). Left alone when already right,
// so drift repair does not reset queues; otherwise the root is replaced. It
// reports whether it changed anything.
func shapeLink(h *netlink.Handle, name string, want *shape) (bool, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		return false, fmt.Errorf("find %s: %w", name, err)
	}
	idx := link.Attrs().Index
	root, err := rootQdisc(h, link)
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", name, err)
	}
	if want == nil {
		if root == nil {
			return false, nil
		}
		if err := h.QdiscDel(root); err != nil {
			return false, fmt.Errorf("remove %s qdisc of %s: %w", root.Type(), name, err)
		}
		return true, nil
	}
	class := want.class(idx)
	if htb, ok := root.(*netlink.Htb); ok && htb.Handle == shapeQdiscHandle && htb.Defcls == shapeDefaultClass {
		have, err := htbClass(h, link)
		if err != nil {
			return false, fmt.Errorf("list classes of %s: %w", name, err)
		}
		if have != nil && sameClass(have, class) {
			return false, nil
		}
	} else {
		if root != nil {
			if err := h.QdiscDel(root); err != nil {
				return false, fmt.Errorf("remove %s qdisc of %s: %w", root.Type(), name, err)
			}
		}
		q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_ROOT, Handle: shapeQdiscHandle})
		q.Defcls = shapeDefaultClass
		if err := h.QdiscAdd(q); err != nil {
			return false, fmt.Errorf("add HTB qdisc to %s: %w", name, err)
		}
	}
	if err := h.ClassReplace(class); err != nil {
		return false, fmt.Errorf("set HTB class of %s to %d B/s (ceil %d B/s): %w", name, want.rate, want.ceil, err)
	}
	return true, nil
}

// rootQdisc returns the link's root qdisc, or nil when it has the
// default (noqueue on a veth, or none).
func rootQdisc(h *netlink.Handle, link netlink.Link) (netlink.Qdisc, error) {
	var qdiscs []netlink.Qdisc
	var err error
	for range 5 {
		if qdiscs, err = h.QdiscList(link); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	for _, q := range qdiscs {
		a := q.Attrs()
		if a.LinkIndex == link.Attrs().Index && a.Parent == netlink.HANDLE_ROOT && a.Handle != netlink.HANDLE_NONE {
			return q, nil
		}
	}
	return nil, nil
}

// Shaping is what a link's shaping queue did: whether an HTB root qdisc
// shapes the link (Capsule's shaping), and the packets it dropped and
// held back over its rate since it was installed.
type Shaping struct {
	Shaped     bool
	Drops      uint64
	Overlimits uint64
}

// ReadShaping reads the shaping of link through h, a handle in the
// link's namespace (the zero Handle is this process's). A link without
// an HTB root is not shaped: the zero Shaping.
func ReadShaping(h *netlink.Handle, link netlink.Link) (Shaping, error) {
	root, err := rootQdisc(h, link)
	if err != nil || root == nil || root.Type() != "htb" {
		return Shaping{}, err
	}
	out := Shaping{Shaped: true}
	if s := root.Attrs().Statistics; s != nil && s.Queue != nil {
		out.Drops, out.Overlimits = uint64(s.Queue.Drops), uint64(s.Queue.Overlimits)
	}
	return out, nil
}

// htbClass returns the HTB class 1:1 of the link, or nil.
func htbClass(h *netlink.Handle, link netlink.Link) (*netlink.HtbClass, error) {
	var classes []netlink.Class
	var err error
	for range 5 {
		if classes, err = h.ClassList(link, shapeQdiscHandle); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	for _, c := range classes {
		if htb, ok := c.(*netlink.HtbClass); ok && htb.Handle == shapeClassHandle {
			return htb, nil
		}
	}
	return nil, nil
}

// shapeNIC applies pl's shaping to both ends of its veth: inbound on the
// host end through host, outbound on the container end through nsh.
func (p *Plumber) shapeNIC(id string, nsh, host *netlink.Handle, pl nicPlan, fresh bool) error {
	for _, d := range []struct {
		what, ifname string
		h            *netlink.Handle
		want         *shape
	}{
		{"inbound", pl.host, host, pl.in},
		{"outbound", pl.cont, nsh, pl.out},
	} {
		changed, err := shapeLink(d.h, d.ifname, d.want)
		if err != nil {
			return fmt.Errorf("%s shaping: %w", d.what, err)
		}
		if !changed {
			continue
		}
		attrs := []any{"instance", id, "interface", d.ifname, "direction", d.what}
		if d.want != nil {
			attrs = append(attrs, "rate_Bps", d.want.rate, "ceil_Bps", d.want.ceil, "burst_bytes", d.want.buffer)
		}
		switch {
		case fresh:
			p.log.Debug("shaped NIC", attrs...)
		case d.want == nil:
			p.log.Info("removed NIC shaping", attrs...)
		default:
			p.log.Warn("(re)applied NIC shaping", attrs...)
		}
	}
	return nil
}
