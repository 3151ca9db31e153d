package vif

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/protocol"
)

// An allowed address pair adds sources to the anti-spoofing flows (its
// prefix with its MAC, IPv4 with ARP, IPv6 with neighbour advertisements)
// and, with a firewall, its MAC's traffic to the port's ingress rules.
func TestAddressPairFlows(t *testing.T) {
	mac, _ := net.ParseMAC("fa:16:3e:00:00:01")
	ips := []net.IP{net.ParseIP("10.0.0.5").To4()}
	pairs, err := parsePairs([]protocol.AddressPair{
		{IP: "10.0.0.77", MAC: "fa:16:3e:00:00:01"}, {IP: "10.0.1.9/24", MAC: "fa:16:3e:00:00:02"},
		{IP: "fd00::/64", MAC: "fa:16:3e:00:00:02"},
	})
	if err != nil {
		t.Fatal(err)
	}
	flows := securityFlows(0x1, 7, mac, ips, pairs, nil, 0)
	for _, w := range []string{
		"cookie=0x1,in_port=7,dl_src=fa:16:3e:00:00:01,priority=100,ip,nw_src=10.0.0.77/32,actions=NORMAL",
		"cookie=0x1,in_port=7,dl_src=fa:16:3e:00:00:01,priority=100,arp,arp_sha=fa:16:3e:00:00:01,arp_spa=10.0.0.77/32,actions=NORMAL",
		"cookie=0x1,in_port=7,dl_src=fa:16:3e:00:00:02,priority=100,ip,nw_src=10.0.1.0/24,actions=NORMAL",
		"cookie=0x1,in_port=7,dl_src=fa:16:3e:00:00:02,priority=100,arp,arp_sha=fa:16:3e:00:00:02,arp_spa=10.0.1.0/24,actions=NORMAL",
		"cookie=0x1,in_port=7,dl_src=fa:16:3e:00:00:02,priority=100,ipv6,ipv6_src=fd00::/64,actions=NORMAL",
		"cookie=0x1,in_port=7,dl_src=fa:16:3e:00:00:02,priority=110,icmp6,icmp_type=136,icmp_code=0,nd_target=fd00::/64,actions=NORMAL",
		// An IPv6 pair brings the port's IPv6 basics (link-local, DAD, no RAs).
		"cookie=0x1,in_port=7,priority=105,icmp6,icmp_type=134,actions=drop",
	} {
		if !slices.Contains(flows, w) {
			t.Errorf("no flow %q in\n%s", w, strings.Join(flows, "\n"))
		}
	}
	fw := &protocol.Firewall{Rules: []protocol.FirewallRule{{Direction: "ingress", EtherType: "IPv4", Protocol: -1, RemoteAny: true, Stateful: true}}}
	flows = securityFlows(0x1, 7, mac, ips, pairs, fw, 42)
	for _, w := range []string{
		"cookie=0x1,table=0,priority=50,ip,dl_dst=fa:16:3e:00:00:02,actions=ct(table=73,zone=42)",
		"cookie=0x1,table=72,priority=50,ip,dl_dst=fa:16:3e:00:00:02,actions=ct(table=73,zone=42)",
		"cookie=0x1,table=73,dl_dst=fa:16:3e:00:00:02,priority=100,ct_state=+new-est+trk,ip,actions=ct(commit,zone=42),NORMAL",
		"cookie=0x1,table=73,dl_dst=fa:16:3e:00:00:02,priority=10,actions=drop",
		"cookie=0x1,table=73,dl_dst=fa:16:3e:00:00:01,priority=100,ct_state=+new-est+trk,ip,actions=ct(commit,zone=42),NORMAL",
	} {
		if !slices.Contains(flows, w) {
			t.Errorf("no flow %q in\n%s", w, strings.Join(flows, "\n"))
		}
	}
	// One capture per MAC, however many pairs share it.
	n := 0
	for _, f := range flows {
		if strings.HasPrefix(f, "cookie=0x1,table=0,priority=50,ip,dl_dst=fa:16:3e:00:00:02") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d captures of the pairs' MAC", n)
	}
	for _, bad := range [][]protocol.AddressPair{{{IP: "10.0.0.300", MAC: "fa:16:3e:00:00:01"}}, {{IP: "10.0.0.3", MAC: "01:00:5e:00:00:01"}}, {{IP: "10.0.0.3"}}} {
		if _, err := parsePairs(bad); err == nil {
			t.Errorf("pairs %v accepted", bad)
		}
	}
}

// On a real bridge: a port may send from an allowed pair's address (its
// own MAC) and from a pair with another MAC, and only after the pairs are
// plugged; removing them stops it again.
func TestAllowedAddressPairs(t *testing.T) {
	t.Parallel()
	_, _, p := setup(t)
	sn := subnet(t)
	nicA, nicB := vlanNIC(t, sn, 10, 130, true), vlanNIC(t, sn, 11, 130, true)
	idA, a := plug(t, p, nicA)
	_, b := plug(t, p, nicB)
	mustReach(t, a, b, sn+"11")

	// A VIP on a's own MAC.
	a.ip(t, "addr", "flush", "dev", "eth0")
	a.ip(t, "addr", "add", sn+"77/24", "dev", "eth0")
	b.ip(t, "neigh", "flush", "dev", "eth0")
	mustNotReach(t, a, b, sn+"11")
	nicA.AllowedAddressPairs = []protocol.AddressPair{{IP: sn + "64/28", MAC: nicA.MAC}}
	if err := p.Refilter(testCtx(t), idA, nicA); err != nil {
		t.Fatal(err)
	}
	// Refilter leaves the guest's addresses: .77 is within .64/28.
	mustReach(t, a, b, sn+"11")
	mustReach(t, b, a, sn+"77")

	// Another MAC with its address.
	other := randMAC(t)
	a.ip(t, "link", "set", "eth0", "address", other)
	a.ip(t, "addr", "flush", "dev", "eth0")
	a.ip(t, "addr", "add", sn+"90/24", "dev", "eth0")
	b.ip(t, "neigh", "flush", "dev", "eth0")
	mustNotReach(t, a, b, sn+"11")
	nicA.AllowedAddressPairs = append(nicA.AllowedAddressPairs, protocol.AddressPair{IP: sn + "90", MAC: other})
	if err := p.Refilter(testCtx(t), idA, nicA); err != nil {
		t.Fatal(err)
	}
	mustReach(t, a, b, sn+"11")

	// Pairs gone: the other MAC is dropped again.
	nicA.AllowedAddressPairs = nil
	if err := p.Refilter(testCtx(t), idA, nicA); err != nil {
		t.Fatal(err)
	}
	b.ip(t, "neigh", "flush", "dev", "eth0")
	mustNotReach(t, a, b, sn+"11")
}
