package vif

// The metadata service's plumbing: how a server reaches
// http://169.254.169.254/ on its VLAN with no router and no NAT box, and how
// the agent knows which server asked.
//
// Each mapped bridge gets a metadata port: a veth pair whose host end
// (MetadataIfName) is an OVS port with the fixed OpenFlow number
// MetadataOFPort, and whose other end, md0, lives in a network namespace of
// the agent's own holding 169.254.169.254 (the agent's HTTP listener,
// ListenMetadata). Per server port, flows with MetadataCookie:
//
//   - answer the server's ARP for 169.254.169.254 with the metadata port's
//     MAC (on the server's own port: nothing reaches the VLAN);
//   - send its TCP to 169.254.169.254:80 — only from its own MAC and IP
//     (what anti-spoofing allows) — to the metadata port, with the source
//     address rewritten to the port's token, 169.254.x.y derived from the
//     server port's OpenFlow number (TokenIP);
//   - send the replies to that token back to the server port only, with
//     the server's address and MAC put back.
//
// The listener thus sees each server as its port's token: the agent maps
// the token to the OpenFlow port, the port to the instance its external_ids
// name (set by the agent), and serves that instance's metadata. Nothing a
// server sends chooses the token: a server that forges another's address
// matches no flow of its port and its packets are dropped by anti-spoofing.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/internal/netnsfile"
	"github.com/capsule-cloud/capsule/ovs"
)

// MetadataOFPort is the OpenFlow port number the metadata port of every
// bridge asks for (ofport_request): fixed, so the servers' flows stay right
// when the agent restarts and makes the port again.
const MetadataOFPort = 65201

// MetadataAddr is the metadata service's address.
var MetadataAddr = net.IPv4(169, 254, 169, 254).To4()

// metadataGW is the made-up next hop of the metadata namespace's replies
// (a permanent neighbour entry with metadataGWMAC, so the namespace never
// ARPs): OpenFlow turns them into frames to the server.
var (
	metadataGW    = net.IPv4(169, 254, 0, 1).To4()
	metadataGWMAC = net.HardwareAddr{0xfe, 0xca, 0x5f, 0, 0, 1}
)

// Priority of the per-port metadata flows: above the anti-spoofing allows
// (100, 110), so a server's metadata traffic is redirected before NORMAL.
const (
	prioMetadata     = 120
	prioMetadataDrop = 90
)

// MetadataCookie is the OpenFlow cookie of port portID's metadata flows,
// apart from its anti-spoofing ones (Cookie) so each set is replaced
// alone.
func MetadataCookie(portID string) uint64 { return Cookie("metadata/" + portID) }

// MetadataBridgeCookie marks the flows of a bridge's metadata port itself
// (bridge-wide, kept while the agent runs, like the bridge's uplink).
func MetadataBridgeCookie(bridge string) uint64 { return Cookie("metadata-bridge/" + bridge) }

// MetadataIfName is the host end of bridge's metadata veth (and its OVS
// port): "mdh" and 8 hex digits of a hash of the bridge name.
func MetadataIfName(bridge string) string {
	h := fnv.New32a()
	h.Write([]byte(bridge))
	return fmt.Sprintf("mdh%08x", h.Sum32())
}

// metadataNSIf is the metadata veth's end in the agent's namespace.
const metadataNSIf = "md0"

// MetadataMAC is the MAC of bridge's metadata port (the md0 end): locally
// administered, unicast, stable across agent restarts.
func MetadataMAC(bridge string) net.HardwareAddr {
	h := fnv.New32a()
	h.Write([]byte(bridge))
	s := h.Sum32()
	return net.HardwareAddr{0xfe, 0xca, 0x5e, byte(s >> 16), byte(s >> 8), byte(s)}
}

// TokenIP is the address a server on OpenFlow port ofport appears from to
// the metadata listener: 169.254.0.0 + 256 + ofport. ok is false for a
// port number outside OpenFlow's range or whose token would be the
// service's own address.
func TokenIP(ofport int) (net.IP, bool) {
	if ofport < 1 || ofport > 0xfeff {
		return nil, false
	}
	v := ofport + 256
	ip := net.IPv4(169, 254, byte(v>>8), byte(v)).To4()
	if ip.Equal(MetadataAddr) || ip.Equal(metadataGW) {
		return nil, false
	}
	return ip, true
}

// OFPortOfToken is TokenIP's inverse.
func OFPortOfToken(ip net.IP) (int, bool) {
	ip4 := ip.To4()
	if ip4 == nil || ip4[0] != 169 || ip4[1] != 254 {
		return 0, false
	}
	v := int(ip4[2])<<8 | int(ip4[3])
	port := v - 256
	if _, ok := TokenIP(port); !ok {
		return 0, false
	}
	return port, true
}

// macHex is mac as the 0x... number a load action takes.
func macHex(mac net.HardwareAddr) string {
	return fmt.Sprintf("0x%02x%02x%02x%02x%02x%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}

// metadataFlows are the flows that give the server on ofport (MAC mac,
// IPv4 address ip) the metadata service of the bridge whose metadata port
// has MAC mdMAC. None when the port has no token.
func metadataFlows(cookie uint64, ofport int, mac net.HardwareAddr, ip net.IP, mdMAC net.HardwareAddr) []string {
	token, ok := TokenIP(ofport)
	if !ok {
		return nil
	}
	from := fmt.Sprintf("cookie=%#x,priority=%d,in_port=%d,dl_src=%s", cookie, prioMetadata, ofport, mac)
	return []string{
		// ARP who-has 169.254.169.254 from the server: answered on its port.
		fmt.Sprintf("%s,arp,arp_op=1,arp_spa=%s,arp_tpa=%s,actions="+
			"move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:%s,load:0x2->NXM_OF_ARP_OP[],"+
			"move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"+
			"load:%s->NXM_NX_ARP_SHA[],load:0xa9fea9fe->NXM_OF_ARP_SPA[],in_port",
			from, ip, MetadataAddr, mdMAC, macHex(mdMAC)),
		// Its TCP to the service: to the metadata port, as its token.
		fmt.Sprintf("%s,tcp,nw_src=%s,nw_dst=%s,tp_dst=80,actions=mod_dl_dst:%s,mod_nw_src:%s,output:%d",
			from, ip, MetadataAddr, mdMAC, token, MetadataOFPort),
		// The replies to its token: back to it alone.
		fmt.Sprintf("cookie=%#x,priority=%d,in_port=%d,ip,nw_dst=%s,actions=mod_dl_src:%s,mod_dl_dst:%s,mod_nw_dst:%s,output:%d",
			cookie, prioMetadata, MetadataOFPort, token, mdMAC, mac, ip, ofport),
	}
}

// WithMetadata makes Plug give every server port the metadata service's
// flows and the server a route to 169.254.169.254 (see ListenMetadata).
func (p *Plumber) WithMetadata() *Plumber {
	p.metadata = true
	return p
}

// plugMetadata adds to b what installs (or, with the service off or no
// IPv4 address, removes) the metadata flows of the NIC pl on OpenFlow port
// ofport.
func (p *Plumber) plugMetadata(pl nicPlan, ofport int, b *ovs.FlowBatch) {
	cookie := MetadataCookie(pl.nic.PortID)
	var ip net.IP
	for _, a := range pl.addrs {
		if ip4 := a.IP.To4(); ip4 != nil {
			ip = ip4
			break
		}
	}
	if !p.metadata || ip == nil {
		b.DeleteCookie(cookie)
		return
	}
	flows := metadataFlows(cookie, ofport, pl.mac, ip, MetadataMAC(pl.bridge))
	if flows == nil {
		p.log.Warn("no metadata service for a port whose OpenFlow number has no token", "port", pl.nic.PortID, "ofport", ofport)
	}
	b.Replace(cookie, flows...)
}

// metadataRoute routes 169.254.169.254 on-link through the first NIC with
// an IPv4 address (from that address), so a server without a gateway
// reaches the service too.
func (p *Plumber) metadataRoute(nsh *netlink.Handle, plans []nicPlan) error {
	if !p.metadata {
		return nil
	}
	for _, pl := range plans {
		for _, a := range pl.addrs {
			src := a.IP.To4()
			if src == nil {
				continue
			}
			link, err := nsh.LinkByName(pl.cont)
			if err != nil {
				return err
			}
			return nsh.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK,
				Dst: &net.IPNet{IP: MetadataAddr, Mask: net.CIDRMask(32, 32)}, Src: src})
		}
	}
	return nil
}

// MetadataListener is the metadata service's listener of one bridge, in a
// network namespace of its own; Close closes it and lets the namespace and
// its veth go.
type MetadataListener struct {
	net.Listener
	ns netns.NsHandle
}

// Close closes the listener and the namespace handle.
func (l *MetadataListener) Close() error {
	err := l.Listener.Close()
	l.ns.Close()
	return err
}

// ListenMetadata makes bridge's metadata port (a fresh namespace with md0
// = MetadataMAC(bridge), 169.254.169.254/32, the reply route; the host end
// MetadataIfName as OVS port MetadataOFPort, anything else it sends
// dropped) and returns a TCP listener on 169.254.169.254:80 inside. The
// namespace lives as long as the listener: an agent that exits takes the
// port's device with it, and the next one makes it again (the servers'
// flows name the fixed port number, so they keep working).
func (p *Plumber) ListenMetadata(ctx context.Context, bridge string) (_ *MetadataListener, err error) {
	ns, err := netnsfile.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: %w", bridge, err)
	}
	defer func() {
		if err != nil {
			ns.Close()
		}
	}()
	hostIf := MetadataIfName(bridge)
	host, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: netlink: %w", bridge, err)
	}
	defer host.Close()
	// A previous agent's port and device, if any: the OVS port first,
	// while no new device has its name. Closing a port, OVS's userspace
	// datapath puts back the flags it changed (promiscuous mode), writing
	// by name a flag word computed from its cache of the old device, which
	// says down when the old device went with its namespace: a new device
	// made before that delete was set down, OVS could not send to it
	// ("Network is down") and no server reached the service while the
	// port looked healthy in OVS (e2e TestMetadataService/agent restart,
	// on a loaded machine where ovs-vswitchd saw the delete before the
	// new device's netlink news).
	if err := p.ovs.DeletePort(ctx, hostIf); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: %w", bridge, err)
	}
	if err := deleteLink(host, hostIf); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: %w", bridge, err)
	}
	if err := host.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: metadataNSIf,
		PeerHardwareAddr: MetadataMAC(bridge), PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: create veth %s: %w", bridge, hostIf, err)
	}
	defer func() {
		if err != nil {
			_ = deleteLink(host, hostIf)
		}
	}()
	if err := configureMetadataNS(ns); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: %w", bridge, err)
	}
	link, err := host.LinkByName(hostIf)
	if err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: %w", bridge, err)
	}
	sysctl := filepath.Join("/proc/sys/net/ipv6/conf", hostIf, "disable_ipv6")
	if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vif: metadata port of %s: disable IPv6 on %s: %w", bridge, hostIf, err)
	}
	if err := host.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: set %s up: %w", bridge, hostIf, err)
	}
	if err := p.ensureMetadataPort(ctx, bridge, hostIf); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: %w", bridge, err)
	}
	// Up again once OVS has the port open: opening it, OVS turns
	// promiscuous mode on the same way, from a cache that may still be
	// the old device's.
	if err := host.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: set %s up: %w", bridge, hostIf, err)
	}
	var ln net.Listener
	if err := inNamespace(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(MetadataAddr.String(), "80"))
		return err
	}); err != nil {
		return nil, fmt.Errorf("vif: metadata port of %s: listen: %w", bridge, err)
	}
	p.log.Info("metadata service port ready", "bridge", bridge, "port", hostIf, "ofport", MetadataOFPort)
	return &MetadataListener{Listener: ln, ns: ns}, nil
}

// configureMetadataNS sets up md0 in ns: 169.254.169.254/32, up (and lo),
// TX checksum offload off (the userspace datapath), a default route on-link
// to metadataGW with a permanent neighbour entry.
func configureMetadataNS(ns netns.NsHandle) error {
	nsh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in metadata namespace: %w", err)
	}
	defer nsh.Close()
	lo, err := nsh.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := nsh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	link, err := nsh.LinkByName(metadataNSIf)
	if err != nil {
		return err
	}
	if err := nsh.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: MetadataAddr, Mask: net.CIDRMask(32, 32)}}); err != nil {
		return fmt.Errorf("add %s to %s: %w", MetadataAddr, metadataNSIf, err)
	}
	if err := txChecksumOff(ns, metadataNSIf); err != nil {
		return err
	}
	if err := nsh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", metadataNSIf, err)
	}
	if err := nsh.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: metadataGW, HardwareAddr: metadataGWMAC}); err != nil {
		return fmt.Errorf("neighbour %s: %w", metadataGW, err)
	}
	if err := nsh.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: metadataGW,
		Flags: int(netlink.FLAG_ONLINK)}); err != nil {
		return fmt.Errorf("default route via %s: %w", metadataGW, err)
	}
	return nil
}

// ensureMetadataPort adds hostIf (a new device: ListenMetadata deleted
// any port of that name before making it) to bridge as OpenFlow port
// MetadataOFPort and drops whatever it sends that no server's reply flow
// takes.
func (p *Plumber) ensureMetadataPort(ctx context.Context, bridge, hostIf string) error {
	if _, err := p.ovs.Vsctl(ctx, "--may-exist", "add-port", bridge, hostIf,
		"--", "set", "Interface", hostIf, fmt.Sprintf("ofport_request=%d", MetadataOFPort),
		"external_ids:capsule-role=metadata"); err != nil {
		return fmt.Errorf("add metadata port %s to %s: %w", hostIf, bridge, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		port, found, err := p.ovs.PortByName(ctx, hostIf)
		if err != nil {
			return err
		}
		if found && port.OFPort == MetadataOFPort && port.Error == "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("OVS did not open metadata port %s as OpenFlow port %d (ofport %d): %s",
				hostIf, MetadataOFPort, port.OFPort, port.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := p.ovs.EnsureFallbackFlow(ctx, bridge); err != nil {
		return err
	}
	cookie := MetadataBridgeCookie(bridge)
	return p.ovs.ReplaceFlows(ctx, bridge, cookie, []string{
		fmt.Sprintf("cookie=%#x,priority=%d,in_port=%d,actions=drop", cookie, prioMetadataDrop, MetadataOFPort)})
}

// MetadataPortHealthy reports whether bridge's metadata port is in OVS as
// OpenFlow port MetadataOFPort with its device open, and whether that
// device is a veth that is up with its carrier (its md0 end up too): OVS
// shows a port whose device was set down as healthy, and sends nothing
// through it. Drift repair makes the port again when not.
func (p *Plumber) MetadataPortHealthy(ctx context.Context, bridge string) (bool, error) {
	hostIf := MetadataIfName(bridge)
	port, found, err := p.ovs.PortByName(ctx, hostIf)
	if err != nil {
		return false, err
	}
	if !found || port.Bridge != bridge || port.OFPort != MetadataOFPort || port.Error != "" {
		return false, nil
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return false, fmt.Errorf("vif: metadata port of %s: netlink: %w", bridge, err)
	}
	defer host.Close()
	link, err := linkByName(host, hostIf)
	if err != nil {
		return false, fmt.Errorf("vif: metadata port of %s: %w", bridge, err)
	}
	return link != nil && linkUp(link), nil
}

// linkUp reports whether a veth is administratively up and has its
// carrier (its peer is up).
func linkUp(l netlink.Link) bool {
	return l.Type() == "veth" && l.Attrs().Flags&net.FlagUp != 0 && l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
}

// MetadataClient names the server behind a connection to bridge's
// metadata listener from remote (a token, see TokenIP): the instance and
// Neutron port that the OVS port on that OpenFlow port carries in its
// external_ids, which only the agent writes.
func (p *Plumber) MetadataClient(ctx context.Context, bridge string, remote net.IP) (instanceID, portID string, err error) {
	ofport, ok := OFPortOfToken(remote)
	if !ok {
		return "", "", fmt.Errorf("vif: %s is no metadata token", remote)
	}
	ports, err := p.ovs.ListPorts(ctx, bridge)
	if err != nil {
		return "", "", fmt.Errorf("vif: metadata client %s: %w", remote, err)
	}
	for _, port := range ports {
		if port.OFPort == ofport && port.VMUUID() != "" {
			return port.VMUUID(), port.IfaceID(), nil
		}
	}
	return "", "", fmt.Errorf("vif: no server port is OpenFlow port %d of %s", ofport, bridge)
}

// Bridges are the mapped bridges (each gets a metadata port).
func (p *Plumber) Bridges() []string { return p.bridges() }
