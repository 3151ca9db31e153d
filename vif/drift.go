package vif

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/protocol"
)

// Drift reports how what is plugged for nics of instance id in the
// namespace at netnsPath differs from what Plug would make ("" when it
// does not), reading only: drift repair plugs a server again when, and
// only when, this names something (Plug rewrites OVS rows and flows and
// logs each time). It looks at what Plug sets: loopback up; per NIC the
// veth pair, the namespace end's MAC, MTU, addresses, TX checksum
// offload and link, the host end's MTU, IPv6 and link (admin up), the
// OVS port (bridge, open, VLAN tag, access mode, ids), the shaping of
// both ends, and the port's flows (per cookie, as many as Plug installs,
// at the same tables and priorities, none from another port number) and
// the bridge's fallback; the default route and the route to the metadata
// service. A flow changed in place to one of the same table and priority
// is not seen.
func (p *Plumber) Drift(ctx context.Context, id, netnsPath string, nics []protocol.NIC) (string, error) {
	plans, err := p.plan(id, nics)
	if err != nil {
		return "", fmt.Errorf("vif: drift of %s: %w", id, err)
	}
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return "", fmt.Errorf("vif: drift of %s: open network namespace %s: %w", id, netnsPath, err)
	}
	defer ns.Close()
	nsh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("vif: drift of %s: netlink in namespace %s: %w", id, netnsPath, err)
	}
	defer nsh.Close()
	host, err := netlink.NewHandle()
	if err != nil {
		return "", fmt.Errorf("vif: drift of %s: netlink: %w", id, err)
	}
	defer host.Close()
	if err := assignNames(nsh, host, plans); err != nil {
		return "", fmt.Errorf("vif: drift of %s: name NICs: %w", id, err)
	}
	if lo, err := nsh.LinkByName("lo"); err != nil {
		return "", fmt.Errorf("vif: drift of %s: find lo: %w", id, err)
	} else if lo.Attrs().Flags&net.FlagUp == 0 {
		return "lo is down", nil
	}
	ports, _, err := p.ovs.Ports(ctx)
	if err != nil {
		return "", fmt.Errorf("vif: drift of %s: %w", id, err)
	}
	byName := map[string]ovs.Port{}
	for _, port := range ports {
		byName[port.Name] = port
	}
	flows := map[string][]ovs.Flow{} // by bridge, read once each
	for _, pl := range plans {
		if d, err := p.linkDrift(ns, nsh, host, pl); d != "" || err != nil {
			return d, err
		}
		port, ok := byName[pl.host]
		if d := portDrift(id, pl, port, ok); d != "" {
			return d, nil
		}
		if _, read := flows[pl.bridge]; !read {
			if flows[pl.bridge], err = p.ovs.DumpFlows(ctx, pl.bridge, ""); err != nil {
				return "", fmt.Errorf("vif: drift of %s: %w", id, err)
			}
		}
		if d, err := p.flowDrift(pl, port.OFPort, flows[pl.bridge]); d != "" || err != nil {
			return d, err
		}
	}
	return routeDrift(nsh, p.metadata, plans)
}

// linkDrift compares pl's veth, both ends, and their shaping.
func (p *Plumber) linkDrift(ns netns.NsHandle, nsh, host *netlink.Handle, pl nicPlan) (string, error) {
	hl, err := linkByName(host, pl.host)
	if err != nil {
		return "", err
	}
	cl, err := linkByName(nsh, pl.cont)
	if err != nil {
		return "", err
	}
	if hl == nil || cl == nil || !paired(hl, cl) {
		return fmt.Sprintf("veth %s <-> %s missing or not paired", pl.host, pl.cont), nil
	}
	switch c, h := cl.Attrs(), hl.Attrs(); {
	case !bytes.Equal(c.HardwareAddr, pl.mac):
		return fmt.Sprintf("%s has MAC %s, want %s", pl.cont, c.HardwareAddr, pl.mac), nil
	case pl.mtu > 0 && (c.MTU != pl.mtu || h.MTU != pl.mtu):
		return fmt.Sprintf("MTU %d/%d on %s/%s, want %d", c.MTU, h.MTU, pl.cont, pl.host, pl.mtu), nil
	case c.Flags&net.FlagUp == 0:
		return pl.cont + " is down", nil
	case h.Flags&net.FlagUp == 0:
		return pl.host + " is down", nil
	}
	have, err := addrList(nsh, cl)
	if err != nil {
		return "", fmt.Errorf("list addresses of %s: %w", pl.cont, err)
	}
	var got, want []string
	for _, a := range have {
		if !a.IP.IsLinkLocalUnicast() {
			got = append(got, a.IPNet.String())
		}
	}
	for _, a := range pl.addrs {
		want = append(want, a.String())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Sprintf("%s has addresses %v, want %v", pl.cont, got, want), nil
	}
	if on, err := txChecksum(ns, pl.cont); err != nil {
		return "", err
	} else if on {
		return "TX checksum offload is on on " + pl.cont, nil
	}
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", pl.host, "disable_ipv6"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err == nil && strings.TrimSpace(string(b)) != "1" {
		return "IPv6 is on on " + pl.host, nil
	}
	for _, s := range []struct {
		h    *netlink.Handle
		name string
		want *shape
	}{{host, pl.host, pl.in}, {nsh, pl.cont, pl.out}} {
		if ok, err := shapedAs(s.h, s.name, s.want); err != nil || !ok {
			return "shaping of " + s.name + " differs", err
		}
	}
	return "", nil
}

// shapedAs reports whether the link's egress is shaped as want (nil: not
// shaped), as shapeLink would leave it.
func shapedAs(h *netlink.Handle, name string, want *shape) (bool, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		return false, fmt.Errorf("find %s: %w", name, err)
	}
	root, err := rootQdisc(h, link)
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", name, err)
	}
	if want == nil {
		return root == nil, nil
	}
	htb, ok := root.(*netlink.Htb)
	if !ok || htb.Handle != shapeQdiscHandle || htb.Defcls != shapeDefaultClass {
		return false, nil
	}
	have, err := htbClass(h, link)
	if err != nil {
		return false, fmt.Errorf("list classes of %s: %w", name, err)
	}
	return have != nil && sameClass(have, want.class(link.Attrs().Index)), nil
}

// portDrift compares pl's OVS port with what AddAccessPort sets.
func portDrift(id string, pl nicPlan, port ovs.Port, found bool) string {
	switch {
	case !found:
		return "no OVS port " + pl.host
	case port.Bridge != pl.bridge:
		return fmt.Sprintf("OVS port %s is on %s, want %s", pl.host, port.Bridge, pl.bridge)
	case port.OFPort <= 0 || port.Error != "":
		return fmt.Sprintf("OVS port %s is not open (ofport %d): %s", pl.host, port.OFPort, port.Error)
	case port.Tag != pl.tag || port.VLANMode != "access":
		return fmt.Sprintf("OVS port %s has tag %d mode %q, want %d access", pl.host, port.Tag, port.VLANMode, pl.tag)
	case port.IfaceID() != pl.nic.PortID || port.VMUUID() != id || port.ExternalIDs[ovs.KeyAttachedMAC] != pl.mac.String() ||
		port.ExternalIDs[ovs.KeyIfaceStatus] != "active":
		return fmt.Sprintf("OVS port %s has external_ids %v", pl.host, port.ExternalIDs)
	}
	return ""
}

// flowDrift compares the flows of pl's cookies (security, metadata) on
// its bridge with the ones Plug installs on OpenFlow port ofport: as many,
// at the same tables and priorities, none naming another in_port; and
// the bridge's NORMAL fallback (and the firewall's dispatch fallback).
func (p *Plumber) flowDrift(pl nicPlan, ofport int, all []ovs.Flow) (string, error) {
	var want ovs.FlowBatch
	p.plugMetadata(pl, ofport, &want)
	portSecurity(pl, ofport, &want)
	expected := map[uint64][]string{pl.cookie: nil, MetadataCookie(pl.nic.PortID): nil}
	inPorts := map[string]bool{} // the in_port matches of the expected flows
	for _, flow := range want.Added() {
		f, err := ovs.ParseFlow(flow)
		if err != nil {
			return "", err
		}
		expected[f.Cookie] = append(expected[f.Cookie], fmt.Sprintf("%d/%d", f.Table, f.Priority))
		for _, m := range strings.Split(f.Match, ",") {
			if strings.HasPrefix(m, "in_port=") {
				inPorts[m] = true
			}
		}
	}
	have := map[uint64][]string{}
	for _, f := range all {
		if _, ours := expected[f.Cookie]; !ours {
			continue
		}
		for _, m := range strings.Split(f.Match, ",") {
			if strings.HasPrefix(m, "in_port=") && !inPorts[m] {
				return fmt.Sprintf("a flow of port %s names %s, not OpenFlow port %d", pl.nic.PortID, m, ofport), nil
			}
		}
		have[f.Cookie] = append(have[f.Cookie], fmt.Sprintf("%d/%d", f.Table, f.Priority))
	}
	for cookie, w := range expected {
		h := have[cookie]
		slices.Sort(w)
		slices.Sort(h)
		if !slices.Equal(h, w) {
			if cookie == pl.cookie || cookie == MetadataCookie(pl.nic.PortID) {
				return fmt.Sprintf("flows of port %s (cookie %#x): %d at %v, want %d at %v", pl.nic.PortID, cookie, len(h), h, len(w), w), nil
			}
			// A bridge-wide flow (the firewall's dispatch fallback):
			// present is enough.
			if len(h) == 0 {
				return fmt.Sprintf("bridge %s lacks its flow with cookie %#x", pl.bridge, cookie), nil
			}
		}
	}
	if !slices.ContainsFunc(all, func(f ovs.Flow) bool { return f.Cookie == ovs.BaseCookie && f.Priority == 0 }) {
		return "bridge " + pl.bridge + " lacks its NORMAL fallback flow", nil
	}
	return "", nil
}

// routeDrift checks the namespace's default route (through the first NIC
// with a gateway) and, with the metadata service, its route to
// 169.254.169.254 (through the first NIC with an IPv4 address).
func routeDrift(nsh *netlink.Handle, metadata bool, plans []nicPlan) (string, error) {
	for _, pl := range plans {
		if pl.gw == nil {
			continue
		}
		link, err := nsh.LinkByName(pl.cont)
		if err != nil {
			return "", err
		}
		family := netlink.FAMILY_V4
		if pl.gw.To4() == nil {
			family = netlink.FAMILY_V6
		}
		routes, err := nsh.RouteListFiltered(family, &netlink.Route{LinkIndex: link.Attrs().Index},
			netlink.RT_FILTER_OIF)
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.Gw.Equal(pl.gw)
		}) {
			return fmt.Sprintf("no default route via %s on %s", pl.gw, pl.cont), nil
		}
		break
	}
	if !metadata {
		return "", nil
	}
	for _, pl := range plans {
		for _, a := range pl.addrs {
			src := a.IP.To4()
			if src == nil {
				continue
			}
			link, err := nsh.LinkByName(pl.cont)
			if err != nil {
				return "", err
			}
			routes, err := nsh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index},
				netlink.RT_FILTER_OIF)
			if err != nil {
				return "", err
			}
			if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
				return r.Dst != nil && r.Dst.IP.Equal(MetadataAddr) && isFullMask(r.Dst.Mask) && r.Src.Equal(src)
			}) {
				return fmt.Sprintf("no route to %s from %s on %s", MetadataAddr, src, pl.cont), nil
			}
			return "", nil
		}
	}
	return "", nil
}

func isZeroMask(m net.IPMask) bool { ones, _ := m.Size(); return ones == 0 }

func isFullMask(m net.IPMask) bool { ones, bits := m.Size(); return ones == bits && bits > 0 }
