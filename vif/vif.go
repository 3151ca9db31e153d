// Package vif plugs a server's NICs (protocol.NIC) into its network
// namespace and into Open vSwitch, on the host, before the workload starts:
// for each NIC a veth pair whose host end ("tap" + port id prefix, as Nova
// names it) is an access port on the bridge mapped to the NIC's physical
// network, with the VLAN tag set in the same OVSDB transaction as the port
// (nova-docker left the tag to an asynchronous agent), and whose namespace
// end is eth<i> with the NIC's MAC, static addresses, MTU and default route.
// Port security is enforced with per-port OpenFlow rules.
//
// Plug is idempotent and repairs drift; on failure it undoes what it did and
// returns the error (nova-docker logged and swallowed plumbing errors).
// Calls for one instance must not run concurrently; the agent serialises
// them per instance.
package vif

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/protocol"
)

// Plumber plugs and unplugs NICs. It holds no mutable state.
type Plumber struct {
	ovs      *ovs.Client
	mappings map[string]string // physical network -> bridge
	log      *slog.Logger
	metadata bool // the metadata service's flows and route (metadata.go)
}

// New returns a Plumber that attaches NICs to the bridges bridgeMappings
// names (physical network -> OVS bridge, the agent's bridge_mappings). The
// bridges must exist (see EnsureBridges); Plug never creates one, so a typo
// in the mappings is an error rather than a stray bridge.
func New(o *ovs.Client, bridgeMappings map[string]string, log *slog.Logger) *Plumber {
	m := make(map[string]string, len(bridgeMappings))
	for k, v := range bridgeMappings {
		m[k] = v
	}
	if log == nil {
		log = slog.Default()
	}
	return &Plumber{ovs: o, mappings: m, log: log}
}

// Port is an OVS port Plug created, as Orphans reports it.
type Port struct {
	Bridge     string
	Name       string // OVS port and host interface name (tap...)
	InstanceID string // its vm-uuid
	PortID     string // its iface-id (Neutron port id)
}

// HostIfName is the host end of a NIC's veth pair: "tap" and the first 11
// characters of the port id, as Nova names it (15 characters, the kernel's
// limit).
func HostIfName(portID string) string {
	if len(portID) > 11 {
		portID = portID[:11]
	}
	return "tap" + portID
}

// ContainerIfName is the name of NIC i inside the namespace.
func ContainerIfName(i int) string { return fmt.Sprintf("eth%d", i) }

// EnsureBridges creates every mapped bridge that is missing and makes sure
// each has Capsule's settings and NORMAL fallback flow (ovs.EnsureBridge).
// The agent calls it at start-up; the uplink/trunk port is deployment's job.
func (p *Plumber) EnsureBridges(ctx context.Context) error {
	for _, br := range p.bridges() {
		if err := p.ovs.EnsureBridge(ctx, br); err != nil {
			return fmt.Errorf("vif: %w", err)
		}
	}
	return nil
}

// bridges returns the mapped bridges, sorted and without duplicates.
func (p *Plumber) bridges() []string {
	seen := map[string]bool{}
	var out []string
	for _, br := range p.mappings {
		if !seen[br] {
			seen[br] = true
			out = append(out, br)
		}
	}
	sort.Strings(out)
	return out
}

// nicPlan is a validated NIC with everything Plug derives from it.
type nicPlan struct {
	nic    protocol.NIC
	host   string // host end of the veth, OVS port name
	cont   string // eth<i> in the namespace
	bridge string
	tag    int // 0 = untagged (flat)
	mac    net.HardwareAddr
	addrs  []*net.IPNet // address with its prefix length
	pairs  []addressPair
	gw     net.IP
	mtu    int // 0 = leave the kernel default
	cookie uint64
	in     *shape // into the server; nil = unshaped
	out    *shape // out of the server; nil = unshaped
}

// plan validates every NIC before anything is touched, so a bad request
// fails without side effects.
func (p *Plumber) plan(id string, nics []protocol.NIC) ([]nicPlan, error) {
	if id == "" {
		return nil, errors.New("empty instance id")
	}
	hosts := map[string]string{}
	plans := make([]nicPlan, 0, len(nics))
	for i, nic := range nics {
		pl := nicPlan{nic: nic, cont: ContainerIfName(i), mtu: nic.MTU}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("NIC %d (port %s): %s", i, nic.PortID, fmt.Sprintf(format, a...))
		}
		if nic.PortID == "" {
			return nil, bad("empty port id")
		}
		pl.host = HostIfName(nic.PortID)
		if other, dup := hosts[pl.host]; dup {
			return nil, bad("host interface name %s clashes with port %s", pl.host, other)
		}
		hosts[pl.host] = nic.PortID
		pl.cookie = Cookie(nic.PortID)
		var ok bool
		if pl.bridge, ok = p.mappings[nic.PhysicalNetwork]; !ok || pl.bridge == "" {
			return nil, bad("physical network %q is not in this host's bridge_mappings", nic.PhysicalNetwork)
		}
		switch nic.NetworkType {
		case "vlan":
			if nic.SegmentationID < 1 || nic.SegmentationID > 4094 {
				return nil, bad("VLAN id %d out of range 1-4094", nic.SegmentationID)
			}
			pl.tag = nic.SegmentationID
		case "flat":
			if nic.SegmentationID != 0 {
				return nil, bad("flat network with segmentation id %d", nic.SegmentationID)
			}
		default:
			return nil, bad("network type %q not supported (vlan, flat)", nic.NetworkType)
		}
		mac, err := net.ParseMAC(nic.MAC)
		if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
			return nil, bad("MAC %q is not a unicast Ethernet address", nic.MAC)
		}
		pl.mac = mac
		for _, a := range nic.IPs {
			ip := net.ParseIP(a.Address)
			if ip == nil {
				return nil, bad("address %q is not an IP", a.Address)
			}
			bits := 128
			if ip4 := ip.To4(); ip4 != nil {
				ip, bits = ip4, 32
			}
			if a.PrefixLen < 1 || a.PrefixLen > bits {
				return nil, bad("prefix length %d of %s out of range", a.PrefixLen, a.Address)
			}
			pl.addrs = append(pl.addrs, &net.IPNet{IP: ip, Mask: net.CIDRMask(a.PrefixLen, bits)})
		}
		if pl.pairs, err = parsePairs(nic.AllowedAddressPairs); err != nil {
			return nil, bad("%v", err)
		}
		if nic.Gateway != "" {
			if pl.gw = net.ParseIP(nic.Gateway); pl.gw == nil {
				return nil, bad("gateway %q is not an IP", nic.Gateway)
			}
			if ip4 := pl.gw.To4(); ip4 != nil {
				pl.gw = ip4
			}
		}
		if nic.MTU != 0 && (nic.MTU < 68 || nic.MTU > 65535) {
			return nil, bad("MTU %d out of range", nic.MTU)
		}
		if pl.in, pl.out, err = shapes(nic.Bandwidth); err != nil {
			return nil, bad("%v", err)
		}
		plans = append(plans, pl)
	}
	return plans, nil
}

func (pl nicPlan) ips() []net.IP {
	out := make([]net.IP, len(pl.addrs))
	for i, a := range pl.addrs {
		out[i] = a.IP
	}
	return out
}

// undoStack collects the inverse of each step Plug did, run newest first
// when a later step fails.
type undoStack []undoStep

type undoStep struct {
	what string
	fn   func(context.Context) error
}

func (u *undoStack) push(what string, fn func(context.Context) error) {
	*u = append(*u, undoStep{what, fn})
}

// run undoes everything, even if the caller's context is done (a cancelled
// Plug must not leak), and reports every undo that failed.
func (u undoStack) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", u[i].what, err))
		}
	}
	return errors.Join(errs...)
}

// Plug makes the NICs of instance id exist inside the network namespace at
// netnsPath (e.g. /proc/<pid>/ns/net of the server's sandbox): for NIC i a
// veth pair whose host end is named HostIfName(nic.PortID) and whose
// container end is eth<i> in the namespace (a NIC already plugged keeps its
// name, a new one takes the lowest free index: see assignNames), with nic.MAC, nic.MTU, the
// addresses, link up (and lo up), the default route via nic.Gateway (first
// NIC that has one), TX checksum offload off on the container end (needed
// with OVS's userspace datapath); the host end up, MTU, added to the bridge
// bridgeMappings[nic.PhysicalNetwork] as an access port with tag
// nic.SegmentationID (vlan) or untagged (flat), external_ids
// iface-id=<port id>, attached-mac, vm-uuid=<id>, iface-status=active;
// when nic.PortSecurity, OpenFlow rules with cookie Cookie(port id) so the
// port may only send frames from its MAC and IP packets/ARP from its own
// IPs, everything else from it dropped; normal forwarding otherwise; and
// nic.Bandwidth's shaping, HTB on each end's egress (see shaping.go).
//
// Idempotent: plugging an already plugged instance (same namespace) fixes
// drift (missing port, wrong tag, missing flows, missing veth, addresses,
// missing or different shaping; shaping no longer wanted is removed) and
// succeeds. On failure every step done by this call is undone before
// returning the error. DNS and hostname are not set here: they belong to
// the container's configuration (resolv.conf, hostname).
func (p *Plumber) Plug(ctx context.Context, id, netnsPath string, nics []protocol.NIC) (err error) {
	plans, err := p.plan(id, nics)
	if err != nil {
		return fmt.Errorf("vif: plug %s: %w", id, err)
	}
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("vif: plug %s: open network namespace %s: %w", id, netnsPath, err)
	}
	defer ns.Close()
	nsh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("vif: plug %s: netlink in namespace %s: %w", id, netnsPath, err)
	}
	defer nsh.Close()
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("vif: plug %s: netlink: %w", id, err)
	}
	defer host.Close()
	if err := assignNames(nsh, host, plans); err != nil {
		return fmt.Errorf("vif: plug %s: name NICs: %w", id, err)
	}

	var undo undoStack
	defer func() {
		if err == nil {
			return
		}
		if uerr := undo.run(ctx); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()

	lo, err := nsh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("vif: plug %s: find lo in %s: %w", id, netnsPath, err)
	}
	if err := nsh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("vif: plug %s: set lo up: %w", id, err)
	}
	for _, pl := range plans {
		if err := p.plugNIC(ctx, id, ns, nsh, host, pl, &undo); err != nil {
			return fmt.Errorf("vif: plug %s: %s (port %s): %w", id, pl.cont, pl.nic.PortID, err)
		}
	}
	for _, pl := range plans {
		if pl.gw == nil {
			continue
		}
		if err := defaultRoute(nsh, pl); err != nil {
			return fmt.Errorf("vif: plug %s: default route via %s on %s: %w", id, pl.gw, pl.cont, err)
		}
		break
	}
	if err := p.metadataRoute(nsh, plans); err != nil {
		return fmt.Errorf("vif: plug %s: route to the metadata service: %w", id, err)
	}
	p.log.Info("plugged NICs", "instance", id, "netns", netnsPath, "nics", len(plans))
	return nil
}

func (p *Plumber) plugNIC(ctx context.Context, id string, ns netns.NsHandle, nsh, host *netlink.Handle, pl nicPlan, undo *undoStack) error {
	created, err := p.ensureVeth(ns, nsh, host, pl)
	if err != nil {
		return err
	}
	if created {
		undo.push("veth "+pl.host, func(context.Context) error { return deleteLink(host, pl.host) })
	}
	if err := configureContainerEnd(ns, nsh, pl); err != nil {
		return err
	}
	if err := configureHostEnd(host, pl); err != nil {
		return err
	}

	// The OVS port, with its tag and ids in one transaction.
	existing, found, err := p.ovs.PortByName(ctx, pl.host)
	if err != nil {
		return err
	}
	// OVS keeps a port whose device was deleted and does not reliably
	// reopen a new device of the same name: rebuild the port when the veth
	// is new or OVS reports the port broken.
	replace := found && (created || existing.OFPort <= 0 || existing.Error != "")
	if found && existing.Bridge != pl.bridge {
		p.log.Warn("moving OVS port to the mapped bridge", "instance", id, "port", pl.host, "from", existing.Bridge, "to", pl.bridge)
		if err := p.ovs.ApplyFlows(ctx, existing.Bridge, portFlowsGone(pl.nic.PortID)); err != nil {
			return err
		}
		replace = true
	}
	switch {
	case !found:
		if created {
			p.log.Debug("adding OVS port", "instance", id, "port", pl.host, "bridge", pl.bridge, "tag", pl.tag)
		} else {
			p.log.Warn("repairing missing OVS port", "instance", id, "port", pl.host, "bridge", pl.bridge)
		}
	case replace:
		p.log.Warn("rebuilding OVS port", "instance", id, "port", pl.host, "bridge", pl.bridge, "ofport", existing.OFPort, "error", existing.Error)
	case existing.Tag != pl.tag:
		p.log.Warn("repairing OVS port VLAN tag", "instance", id, "port", pl.host, "tag", existing.Tag, "want", pl.tag)
	}
	ids := ovs.ExternalIDs{IfaceID: pl.nic.PortID, AttachedMAC: pl.mac.String(), VMUUID: id}
	if replace {
		err = p.ovs.ReplaceAccessPort(ctx, pl.bridge, pl.host, pl.tag, ids)
	} else {
		err = p.ovs.AddAccessPort(ctx, pl.bridge, pl.host, pl.tag, ids)
	}
	if !found || created {
		// Registered before checking err: a failed transaction added
		// nothing and both undos tolerate that.
		undo.push("OVS port "+pl.host, func(ctx context.Context) error {
			return errors.Join(
				p.ovs.ApplyFlows(ctx, pl.bridge, portFlowsGone(pl.nic.PortID)),
				p.ovs.DeletePort(ctx, pl.host))
		})
	}
	if err != nil {
		return err
	}
	port, found, err := p.ovs.PortByName(ctx, pl.host)
	if err != nil {
		return err
	}
	if !found || port.OFPort <= 0 || port.Error != "" {
		return fmt.Errorf("OVS did not open port %s on %s (ofport %d): %s", pl.host, pl.bridge, port.OFPort, port.Error)
	}
	if !found || replace {
		// Up again once OVS has the port open: closing an old port of
		// that name, and opening this one, OVS's userspace datapath sets
		// the device's flags (promiscuous mode) by writing a flag word
		// computed from its cache, which may still be an old device's,
		// down (see ListenMetadata).
		if err := configureHostEnd(host, pl); err != nil {
			return err
		}
	}
	// Shaping only once OVS has the port open: opening a port, OVS resets
	// its root qdisc to the port's (empty) QoS. The qdiscs go with the veth
	// when an undo deletes it.
	if err := p.shapeNIC(id, nsh, host, pl, created); err != nil {
		return err
	}

	// Flows: the bridge's fallback, then this port's metadata and security
	// rules, in one bundle (replaced atomically, so a running instance is
	// never briefly unfiltered; one ovs-ofctl run per NIC).
	var b ovs.FlowBatch
	b.Add(ovs.FallbackFlow())
	p.plugMetadata(pl, port.OFPort, &b)
	portSecurity(pl, port.OFPort, &b)
	return p.ovs.ApplyFlows(ctx, pl.bridge, &b)
}

// ensureVeth makes sure the host end pl.host and the namespace end pl.cont
// exist and are each other's peer, creating the pair (the peer directly in
// the namespace, so eth<i> never appears on the host) when they are not. It
// reports whether it created the pair.
func (p *Plumber) ensureVeth(ns netns.NsHandle, nsh, host *netlink.Handle, pl nicPlan) (bool, error) {
	hostLink, err := linkByName(host, pl.host)
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", pl.host, err)
	}
	contLink, err := linkByName(nsh, pl.cont)
	if err != nil {
		return false, fmt.Errorf("look up %s in namespace: %w", pl.cont, err)
	}
	if hostLink != nil && contLink != nil && paired(hostLink, contLink) {
		return false, nil
	}
	if hostLink != nil || contLink != nil {
		p.log.Warn("replacing veth that is not paired with the namespace", "host_if", pl.host, "host_exists", hostLink != nil, "ns_if", pl.cont, "ns_exists", contLink != nil)
	}
	if hostLink != nil {
		if err := deleteLink(host, pl.host); err != nil {
			return false, err
		}
	}
	if contLink != nil {
		// Deleting a veth end deletes its peer: only remove what is left.
		if err := deleteLink(nsh, pl.cont); err != nil {
			return false, fmt.Errorf("in namespace: %w", err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: pl.host, MTU: pl.mtu},
		PeerName:         pl.cont,
		PeerHardwareAddr: pl.mac,
		PeerNamespace:    netlink.NsFd(int(ns)),
		PeerMTU:          uint32(pl.mtu),
	}
	if err := host.LinkAdd(veth); err != nil {
		return false, fmt.Errorf("create veth %s <-> %s in namespace: %w", pl.host, pl.cont, err)
	}
	return true, nil
}

// paired reports whether host and cont are the two ends of one veth: each
// names the other as its link.
func paired(host, cont netlink.Link) bool {
	return host.Type() == "veth" && cont.Type() == "veth" &&
		host.Attrs().ParentIndex == cont.Attrs().Index &&
		cont.Attrs().ParentIndex == host.Attrs().Index &&
		host.Attrs().NetNsID >= 0 // the peer is in another namespace
}

// configureContainerEnd sets eth<i>'s MAC, MTU and exactly the NIC's
// addresses (IPv6 link-local ones stay), turns TX checksum offload off and
// brings it up.
func configureContainerEnd(ns netns.NsHandle, nsh *netlink.Handle, pl nicPlan) error {
	link, err := nsh.LinkByName(pl.cont)
	if err != nil {
		return fmt.Errorf("find %s in namespace: %w", pl.cont, err)
	}
	if !bytes.Equal(link.Attrs().HardwareAddr, pl.mac) {
		// Down first: not every driver takes a new MAC while up.
		if err := nsh.LinkSetDown(link); err != nil {
			return fmt.Errorf("set %s down: %w", pl.cont, err)
		}
		if err := nsh.LinkSetHardwareAddr(link, pl.mac); err != nil {
			return fmt.Errorf("set MAC of %s to %s: %w", pl.cont, pl.mac, err)
		}
	}
	if pl.mtu > 0 && link.Attrs().MTU != pl.mtu {
		if err := nsh.LinkSetMTU(link, pl.mtu); err != nil {
			return fmt.Errorf("set MTU of %s to %d: %w", pl.cont, pl.mtu, err)
		}
	}
	have, err := addrList(nsh, link)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", pl.cont, err)
	}
	want := map[string]bool{}
	for _, a := range pl.addrs {
		want[a.String()] = true
	}
	present := map[string]bool{}
	for _, a := range have {
		s := a.IPNet.String()
		if want[s] || a.IP.IsLinkLocalUnicast() {
			present[s] = true
			continue
		}
		if err := nsh.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove stray address %s from %s: %w", s, pl.cont, err)
		}
	}
	for _, a := range pl.addrs {
		if present[a.String()] {
			continue
		}
		addr := &netlink.Addr{IPNet: a}
		if a.IP.To4() == nil {
			// IPAM made the address unique; skip the DAD delay.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := nsh.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", a, pl.cont, err)
		}
	}
	if err := txChecksumOff(ns, pl.cont); err != nil {
		return err
	}
	if err := nsh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", pl.cont, err)
	}
	return nil
}

// configureHostEnd sets the host end's MTU, turns IPv6 off on it (the host
// must not talk on a tenant's port) and brings it up.
func configureHostEnd(host *netlink.Handle, pl nicPlan) error {
	link, err := host.LinkByName(pl.host)
	if err != nil {
		return fmt.Errorf("find %s: %w", pl.host, err)
	}
	if pl.mtu > 0 && link.Attrs().MTU != pl.mtu {
		if err := host.LinkSetMTU(link, pl.mtu); err != nil {
			return fmt.Errorf("set MTU of %s to %d: %w", pl.host, pl.mtu, err)
		}
	}
	sysctl := filepath.Join("/proc/sys/net/ipv6/conf", pl.host, "disable_ipv6")
	if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		// ErrNotExist: the kernel has no IPv6, nothing to turn off.
		return fmt.Errorf("disable IPv6 on %s: %w", pl.host, err)
	}
	if err := host.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", pl.host, err)
	}
	return nil
}

// defaultRoute points the namespace's default route at pl.gw through
// pl.cont; a gateway outside the NIC's subnets is declared on-link.
func defaultRoute(nsh *netlink.Handle, pl nicPlan) error {
	link, err := nsh.LinkByName(pl.cont)
	if err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: pl.gw}
	onSubnet := false
	for _, a := range pl.addrs {
		if a.Contains(pl.gw) {
			onSubnet = true
		}
	}
	if !onSubnet {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return nsh.RouteReplace(r)
}

// linkByName returns the link or nil when there is none.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	return l, err
}

// deleteLink deletes the named link; a missing one is fine.
func deleteLink(h *netlink.Handle, name string) error {
	l, err := linkByName(h, name)
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if l == nil {
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		if l2, err2 := linkByName(h, name); err2 == nil && l2 == nil {
			return nil // gone meanwhile (its peer was deleted)
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// addrList lists a link's addresses, retrying a dump the kernel
// interrupted (netlink.ErrDumpInterrupted means a partial answer).
func addrList(h *netlink.Handle, link netlink.Link) ([]netlink.Addr, error) {
	var err error
	for range 5 {
		var addrs []netlink.Addr
		addrs, err = h.AddrList(link, netlink.FAMILY_ALL)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return addrs, err
		}
	}
	return nil, err
}

// Unplug removes the host side of the NICs of instance id: their flows,
// OVS ports and veths (the namespace side dies with the namespace).
// Idempotent: missing pieces are fine. A port that OVS says belongs to
// another instance (a Neutron port re-bound elsewhere on this host) is left
// alone.
func (p *Plumber) Unplug(ctx context.Context, id string, nics []protocol.NIC) error {
	all, bridges, err := p.ovs.Ports(ctx)
	if err != nil {
		return fmt.Errorf("vif: unplug %s: %w", id, err)
	}
	byName := map[string]ovs.Port{}
	for _, port := range all {
		byName[port.Name] = port
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("vif: unplug %s: netlink: %w", id, err)
	}
	defer host.Close()
	var errs []error
	for _, nic := range nics {
		if nic.PortID == "" {
			errs = append(errs, errors.New("NIC with empty port id"))
			continue
		}
		name := HostIfName(nic.PortID)
		port, found := byName[name]
		if found && port.VMUUID() != "" && port.VMUUID() != id {
			p.log.Warn("not unplugging an OVS port of another instance", "instance", id, "port", name, "owner", port.VMUUID())
			continue
		}
		rm := Port{Name: name, PortID: nic.PortID, InstanceID: id}
		var onBridges []string
		if found {
			onBridges = append(onBridges, port.Bridge)
		}
		if br := p.mappings[nic.PhysicalNetwork]; br != "" && bridges[br] && (!found || br != port.Bridge) {
			onBridges = append(onBridges, br)
		}
		if err := p.remove(ctx, host, rm, onBridges, found); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vif: unplug %s: %w", id, err)
	}
	p.log.Info("unplugged NICs", "instance", id, "nics", len(nics))
	return nil
}

// remove deletes a port's flows on bridges, the OVS port (when inOVS) and
// the host veth.
func (p *Plumber) remove(ctx context.Context, host *netlink.Handle, port Port, bridges []string, inOVS bool) error {
	var errs []error
	for _, br := range bridges {
		if err := p.ovs.ApplyFlows(ctx, br, portFlowsGone(port.PortID)); err != nil {
			errs = append(errs, err)
		}
	}
	if inOVS {
		if err := p.ovs.DeletePort(ctx, port.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteLink(host, port.Name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// portFlowsGone is the batch deleting every flow of port portID: its
// security and its metadata flows.
func portFlowsGone(portID string) *ovs.FlowBatch {
	var b ovs.FlowBatch
	b.DeleteCookie(Cookie(portID))
	b.DeleteCookie(MetadataCookie(portID))
	return &b
}

// Orphans lists OVS ports on the mapped bridges carrying a vm-uuid that is
// not in keep, so the agent's drift repair can Remove what belongs to no
// server. Ports without a vm-uuid (uplinks, patch ports) are never orphans.
func (p *Plumber) Orphans(ctx context.Context, keep map[string]bool) ([]Port, error) {
	all, _, err := p.ovs.Ports(ctx)
	if err != nil {
		return nil, fmt.Errorf("vif: orphans: %w", err)
	}
	mapped := map[string]bool{}
	for _, br := range p.mappings {
		mapped[br] = true
	}
	var out []Port
	for _, port := range all {
		vm := port.VMUUID()
		if !mapped[port.Bridge] || vm == "" || keep[vm] {
			continue
		}
		out = append(out, Port{Bridge: port.Bridge, Name: port.Name, InstanceID: vm, PortID: port.IfaceID()})
	}
	return out, nil
}

// Remove deletes ports (as Orphans returns them): their flows, OVS ports
// and host veths. Missing pieces are fine; every failure is reported.
func (p *Plumber) Remove(ctx context.Context, ports []Port) error {
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("vif: remove ports: netlink: %w", err)
	}
	defer host.Close()
	var errs []error
	for _, port := range ports {
		if !strings.HasPrefix(port.Name, "tap") {
			errs = append(errs, fmt.Errorf("port %s was not plugged by vif", port.Name))
			continue
		}
		var bridges []string
		if port.PortID != "" && port.Bridge != "" {
			bridges = []string{port.Bridge}
		}
		if err := p.remove(ctx, host, port, bridges, true); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vif: remove ports: %w", err)
	}
	return nil
}
