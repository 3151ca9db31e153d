package vif

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/protocol"
)

// Cookie is the OpenFlow cookie of the port-security flows of Neutron port
// portID: Capsule's prefix and 48 bits of a hash of the id, so a port's
// flows are found and replaced by cookie alone, whatever its ofport.
func Cookie(portID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(portID))
	v := h.Sum64() & (1<<48 - 1)
	if v == 0 {
		v = 1 // 0 is ovs.BaseCookie, the bridge's fallback flow
	}
	return ovs.CookiePrefix | v
}

// Priorities of the per-port flows, above the bridge's priority-0 NORMAL
// fallback: what a port may send is allowed at 100 (110 for the IPv6
// neighbour advertisements it may send), everything else it sends is
// dropped at 90 (105 for forbidden ICMPv6 it must not send from any source).
const (
	prioAllowND  = 110
	prioDenyND   = 105
	prioAllow    = 100
	prioDropPort = 90
)

// securityFlows are the anti-spoofing rules for a port at ofport: frames
// only from mac; IPv4 only from the port's IPv4 addresses; ARP only with
// mac as sender hardware address and one of those addresses as sender IP
// (no ARP poisoning); IPv6 (only when the port has IPv6 addresses) only from
// those and mac's EUI-64 link-local address, neighbour advertisements only
// for them, no router advertisements; all else from the port dropped.
// Traffic to the port is not filtered here: the VLAN does that.
//
// Each allowed address pair adds a source: IPv4 (and ARP) or IPv6 (and
// neighbour advertisements) from its address or prefix with its MAC.
//
// With a firewall (fw not nil: the port's security groups) the IP and IPv6
// it may send go through its egress rules (ct, table 71) instead of
// straight to NORMAL, and what is sent to it through its ingress rules
// (firewall.go).
func securityFlows(cookie uint64, ofport int, mac net.HardwareAddr, ips []net.IP, pairs []addressPair, fw *protocol.Firewall, zone int) []string {
	fromMAC := func(m net.HardwareAddr) string {
		return fmt.Sprintf("cookie=%#x,in_port=%d,dl_src=%s", cookie, ofport, m)
	}
	from := fromMAC(mac)
	ipAction := "NORMAL"
	if fw != nil {
		ipAction = egressAction(zone)
	}
	var flows []string
	var v6 []net.IP
	for _, ip := range ips {
		if ip4 := ip.To4(); ip4 != nil {
			flows = append(flows,
				fmt.Sprintf("%s,priority=%d,ip,nw_src=%s,actions=%s", from, prioAllow, ip4, ipAction),
				fmt.Sprintf("%s,priority=%d,arp,arp_sha=%s,arp_spa=%s,actions=NORMAL", from, prioAllow, mac, ip4))
		} else {
			v6 = append(v6, ip)
		}
	}
	pairV6 := false
	for _, ap := range pairs {
		f := fromMAC(ap.mac)
		if ap.prefix.Addr().Is4() {
			flows = append(flows,
				fmt.Sprintf("%s,priority=%d,ip,nw_src=%s,actions=%s", f, prioAllow, ap.prefix, ipAction),
				fmt.Sprintf("%s,priority=%d,arp,arp_sha=%s,arp_spa=%s,actions=NORMAL", f, prioAllow, ap.mac, ap.prefix))
			continue
		}
		pairV6 = true
		flows = append(flows,
			fmt.Sprintf("%s,priority=%d,icmp6,icmp_type=136,icmp_code=0,nd_target=%s,actions=NORMAL", f, prioAllowND, ap.prefix),
			fmt.Sprintf("%s,priority=%d,ipv6,ipv6_src=%s,actions=%s", f, prioAllow, ap.prefix, ipAction))
	}
	if len(v6) > 0 || pairV6 {
		v6 = append(v6, linkLocal(mac))
		for _, ip := range v6 {
			flows = append(flows,
				fmt.Sprintf("%s,priority=%d,icmp6,icmp_type=136,icmp_code=0,nd_target=%s,actions=NORMAL", from, prioAllowND, ip),
				fmt.Sprintf("%s,priority=%d,ipv6,ipv6_src=%s,actions=%s", from, prioAllow, ip, ipAction))
		}
		flows = append(flows,
			// Duplicate address detection and its MLD report come from ::.
			fmt.Sprintf("%s,priority=%d,icmp6,ipv6_src=::,icmp_type=135,icmp_code=0,actions=NORMAL", from, prioAllow),
			fmt.Sprintf("%s,priority=%d,icmp6,ipv6_src=::,icmp_type=143,actions=NORMAL", from, prioAllow),
			fmt.Sprintf("cookie=%#x,in_port=%d,priority=%d,icmp6,icmp_type=136,actions=drop", cookie, ofport, prioDenyND),
			fmt.Sprintf("cookie=%#x,in_port=%d,priority=%d,icmp6,icmp_type=134,actions=drop", cookie, ofport, prioDenyND))
	}
	flows = append(flows, fmt.Sprintf("cookie=%#x,in_port=%d,priority=%d,actions=drop", cookie, ofport, prioDropPort))
	if fw != nil {
		macs := []net.HardwareAddr{mac}
		for _, ap := range pairs {
			if !slices.ContainsFunc(macs, func(m net.HardwareAddr) bool { return bytes.Equal(m, ap.mac) }) {
				macs = append(macs, ap.mac)
			}
		}
		flows = append(flows, firewallFlows(cookie, ofport, macs, zone, fw)...)
	}
	return flows
}

// addressPair is a validated protocol.AddressPair.
type addressPair struct {
	prefix netip.Prefix // a single address is a /32 or /128
	mac    net.HardwareAddr
}

// parsePairs validates a NIC's allowed address pairs.
func parsePairs(in []protocol.AddressPair) ([]addressPair, error) {
	out := make([]addressPair, 0, len(in))
	for _, ap := range in {
		mac, err := net.ParseMAC(ap.MAC)
		if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
			return nil, fmt.Errorf("allowed address pair MAC %q is not a unicast Ethernet address", ap.MAC)
		}
		var pfx netip.Prefix
		if a, err := netip.ParseAddr(ap.IP); err == nil && a.Zone() == "" {
			a = a.Unmap()
			pfx = netip.PrefixFrom(a, a.BitLen())
		} else if pfx, err = netip.ParsePrefix(ap.IP); err != nil {
			return nil, fmt.Errorf("allowed address pair %q is not an address or a prefix", ap.IP)
		}
		out = append(out, addressPair{prefix: pfx.Masked(), mac: mac})
	}
	return out, nil
}

// linkLocal is the EUI-64 IPv6 link-local address the kernel derives from
// mac (fe80::/64, universal/local bit flipped, ff:fe in the middle).
func linkLocal(mac net.HardwareAddr) net.IP {
	ip := make(net.IP, net.IPv6len)
	ip[0], ip[1] = 0xfe, 0x80
	ip[8] = mac[0] ^ 0x02
	ip[9], ip[10] = mac[1], mac[2]
	ip[11], ip[12] = 0xff, 0xfe
	ip[13], ip[14], ip[15] = mac[3], mac[4], mac[5]
	return ip
}
