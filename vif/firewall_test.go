package vif

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/ovs/ovstest"
	"github.com/capsule-cloud/capsule/protocol"
)

func intp(v int) *int { return &v }

func TestPortBlocks(t *testing.T) {
	for _, c := range []struct {
		lo, hi int
		want   []string
	}{
		{80, 80, []string{"80"}},
		{1024, 2047, []string{"0x400/0xfc00"}},
		{8000, 8003, []string{"0x1f40/0xfffc"}},
		{79, 81, []string{"79", "0x50/0xfffe"}},
		{1, 65535, nil},
	} {
		got := PortBlocks(c.lo, c.hi)
		if c.want != nil && !slices.Equal(got, c.want) {
			t.Errorf("PortBlocks(%d, %d) = %v, want %v", c.lo, c.hi, got, c.want)
		}
		// Every port in the range is in exactly one block, none outside.
		covered := map[int]int{}
		for _, b := range got {
			var v, m int
			if strings.Contains(b, "/") {
				parseHexPair(t, b, &v, &m)
			} else {
				parseInt(t, b, &v)
				m = 0xffff
			}
			for p := 0; p <= 0xffff; p++ {
				if p&m == v {
					covered[p]++
				}
			}
		}
		for p := 0; p <= 0xffff; p++ {
			want := 0
			if p >= c.lo && p <= c.hi {
				want = 1
			}
			if covered[p] != want {
				t.Fatalf("PortBlocks(%d, %d) = %v covers port %d %d times", c.lo, c.hi, got, p, covered[p])
			}
		}
	}
}

func parseHexPair(t *testing.T, s string, v, m *int) {
	t.Helper()
	a, b, _ := strings.Cut(s, "/")
	parseInt(t, a, v)
	parseInt(t, b, m)
}

func parseInt(t *testing.T, s string, v *int) {
	t.Helper()
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	*v = int(n)
}

func TestRuleMatches(t *testing.T) {
	for _, c := range []struct {
		name string
		rule protocol.FirewallRule
		want []string
	}{
		{"tcp 80 from anywhere", protocol.FirewallRule{Direction: "ingress", EtherType: "IPv4", Protocol: 6, PortMin: intp(80), PortMax: intp(80), RemoteAny: true},
			[]string{"tcp,tp_dst=80"}},
		{"udp range to a prefix", protocol.FirewallRule{Direction: "egress", EtherType: "IPv4", Protocol: 17, PortMin: intp(1024), PortMax: intp(2047), Remotes: []string{"10.0.0.0/8"}},
			[]string{"udp,nw_dst=10.0.0.0/8,tp_dst=0x400/0xfc00"}},
		{"icmp echo from a group's members", protocol.FirewallRule{Direction: "ingress", EtherType: "IPv4", Protocol: 1, PortMin: intp(8), Remotes: []string{"10.1.0.5/32", "10.1.0.6/32", "fd00::1/128"}},
			[]string{"icmp,nw_src=10.1.0.5/32,icmp_type=8", "icmp,nw_src=10.1.0.6/32,icmp_type=8"}},
		{"icmp type and code", protocol.FirewallRule{Direction: "ingress", EtherType: "IPv4", Protocol: 1, PortMin: intp(3), PortMax: intp(4), RemoteAny: true},
			[]string{"icmp,icmp_type=3,icmp_code=4"}},
		{"any IPv6 out", protocol.FirewallRule{Direction: "egress", EtherType: "IPv6", Protocol: -1, RemoteAny: true}, []string{"ipv6"}},
		{"icmpv6 from a prefix", protocol.FirewallRule{Direction: "ingress", EtherType: "IPv6", Protocol: 58, Remotes: []string{"fd00::/64"}},
			[]string{"icmp6,ipv6_src=fd00::/64"}},
		{"gre by number", protocol.FirewallRule{Direction: "ingress", EtherType: "IPv4", Protocol: 47, RemoteAny: true}, []string{"ip,nw_proto=47"}},
		{"an empty remote group matches nothing", protocol.FirewallRule{Direction: "ingress", EtherType: "IPv4", Protocol: -1}, nil},
	} {
		if got := RuleMatches(c.rule); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// The firewall's flows: a filtered port's IP goes through conntrack, its
// inbound traffic is captured for its ingress rules, stateful rules
// commit, stateless ones do not, and without a firewall nothing changes.
func TestFirewallFlows(t *testing.T) {
	mac, _ := net.ParseMAC("fa:16:3e:00:00:01")
	ips := []net.IP{net.ParseIP("10.0.0.5").To4()}
	plain := securityFlows(0x1, 7, mac, ips, nil, nil, 0)
	for _, f := range plain {
		if strings.Contains(f, "ct(") || strings.Contains(f, "table=") {
			t.Fatalf("anti-spoofing without a firewall has %q", f)
		}
	}
	fw := &protocol.Firewall{Rules: []protocol.FirewallRule{
		{Direction: "ingress", EtherType: "IPv4", Protocol: 6, PortMin: intp(80), PortMax: intp(80), RemoteAny: true, Stateful: true},
		{Direction: "egress", EtherType: "IPv4", Protocol: -1, RemoteAny: true, Stateful: false},
	}}
	flows := securityFlows(0x1, 7, mac, ips, nil, fw, 42)
	want := []string{
		"cookie=0x1,in_port=7,dl_src=fa:16:3e:00:00:01,priority=100,ip,nw_src=10.0.0.5,actions=ct(table=71,zone=42)",
		"cookie=0x1,table=0,priority=50,ip,dl_dst=fa:16:3e:00:00:01,actions=ct(table=73,zone=42)",
		"cookie=0x1,table=72,priority=50,ip,dl_dst=fa:16:3e:00:00:01,actions=ct(table=73,zone=42)",
		"cookie=0x1,table=73,dl_dst=fa:16:3e:00:00:01,priority=200,ct_state=-new+est-inv+trk,actions=NORMAL",
		"cookie=0x1,table=71,in_port=7,priority=200,ct_state=-new+est-inv+trk,actions=resubmit(,72)",
		"cookie=0x1,table=73,dl_dst=fa:16:3e:00:00:01,priority=100,ct_state=+new-est+trk,tcp,tp_dst=80,actions=ct(commit,zone=42),NORMAL",
		"cookie=0x1,table=71,in_port=7,priority=100,ip,actions=resubmit(,72)",
		"cookie=0x1,table=73,dl_dst=fa:16:3e:00:00:01,priority=10,actions=drop",
		"cookie=0x1,table=71,in_port=7,priority=10,actions=drop",
	}
	for _, w := range want {
		if !slices.Contains(flows, w) {
			t.Errorf("no flow %q in\n%s", w, strings.Join(flows, "\n"))
		}
	}
	// ARP is left to anti-spoofing: it never goes through conntrack.
	for _, f := range flows {
		if strings.Contains(f, "arp") && strings.Contains(f, "ct(") {
			t.Errorf("ARP through conntrack: %q", f)
		}
	}
	if za, za2 := Zone("a"), Zone("a"); za == Zone("b") || za != za2 || za < 1 || za > 65535 {
		t.Fatal("zones are not stable per port")
	}
}

// Open vSwitch takes every flow the translation makes (real ovs-ofctl on
// a netdev bridge), and the dump shows them in the firewall tables.
func TestFirewallFlowsInstall(t *testing.T) {
	c := ovstest.Client(t)
	br := ovstest.Bridge(t, c)
	ctx := context.Background()
	mac, _ := net.ParseMAC("fa:16:3e:00:00:02")
	fw := &protocol.Firewall{Rules: []protocol.FirewallRule{
		{Direction: "ingress", EtherType: "IPv4", Protocol: 6, PortMin: intp(8000), PortMax: intp(8100), RemoteAny: true, Stateful: true},
		{Direction: "ingress", EtherType: "IPv4", Protocol: 1, PortMin: intp(8), PortMax: intp(0), Remotes: []string{"10.0.0.9/32"}, Stateful: true},
		{Direction: "ingress", EtherType: "IPv6", Protocol: 58, RemoteAny: true, Stateful: true},
		{Direction: "egress", EtherType: "IPv4", Protocol: -1, RemoteAny: true, Stateful: true},
		{Direction: "egress", EtherType: "IPv6", Protocol: 17, PortMin: intp(53), PortMax: intp(53), Remotes: []string{"fd00::/8"}, Stateful: false},
		{Direction: "ingress", EtherType: "IPv4", Protocol: 132, PortMin: intp(1), PortMax: intp(2), RemoteAny: true, Stateful: true},
		{Direction: "ingress", EtherType: "IPv4", Protocol: 47, RemoteAny: true, Stateful: true},
	}}
	cookie := Cookie("fw-install-test")
	flows := securityFlows(cookie, 5, mac, []net.IP{net.ParseIP("10.0.0.2").To4(), net.ParseIP("fd00::2")}, nil, fw, Zone("p"))
	if err := c.AddFlows(ctx, br, append([]string{dispatchFallback()}, flows...)); err != nil {
		t.Fatal(err)
	}
	got, err := c.DumpFlows(ctx, br, "")
	if err != nil {
		t.Fatal(err)
	}
	tables := map[int]int{}
	n := 0
	for _, f := range got {
		tables[f.Table]++
		if f.Cookie == cookie {
			n++
		}
	}
	// One flow in the bridge for each made (none merged): Drift counts
	// them.
	if n != len(flows) {
		t.Errorf("%d flows with the port's cookie in the bridge, %d installed", n, len(flows))
	}
	if tables[TableEgress] == 0 || tables[TableIngress] == 0 || tables[TableDispatch] < 3 {
		t.Fatalf("flows per table %v", tables)
	}
	if err := c.ReplaceFlows(ctx, br, cookie, nil); err != nil {
		t.Fatal(err)
	}
	left, _ := c.DumpFlows(ctx, br, "")
	for _, f := range left {
		if f.Cookie == cookie {
			t.Fatalf("after removing the port's flows: %v", left)
		}
	}
	if len(left) != 2 {
		t.Fatalf("the bridge-wide fallbacks (table 0 and 72) should stay: %v", left)
	}
}

// Refilter replaces a plugged port's flows (its new rules appear, the old
// ones go) and leaves the namespace alone: an address the guest added
// stays, where a Plug would remove it.
func TestRefilterLeavesNamespace(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	ctx := testCtx(t)
	sn := subnet(t)
	nic := vlanNIC(t, sn, 10, 131, true)
	id, n := plug(t, p, nic)
	n.ip(t, "addr", "add", sn+"99/24", "dev", "eth0")
	before := len(flowsWithCookie(t, c, br, nic.PortID))

	nic.Firewall = &protocol.Firewall{Rules: []protocol.FirewallRule{
		{Direction: "ingress", EtherType: "IPv4", Protocol: 6, PortMin: intp(80), PortMax: intp(80), RemoteAny: true, Stateful: true},
	}}
	if err := p.Refilter(ctx, id, nic); err != nil {
		t.Fatalf("Refilter: %v", err)
	}
	flows := flowsWithCookie(t, c, br, nic.PortID)
	if !strings.Contains(fmt.Sprint(flows), "tp_dst=80") || len(flows) <= before {
		t.Errorf("after Refilter the port's flows lack its rule (%d flows before, %d after): %v", before, len(flows), flows)
	}
	if out := n.ip(t, "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, sn+"99/24") {
		t.Errorf("Refilter touched the namespace's addresses: %s", out)
	}
	nic.Firewall = nil
	if err := p.Refilter(ctx, id, nic); err != nil {
		t.Fatal(err)
	}
	if flows := flowsWithCookie(t, c, br, nic.PortID); strings.Contains(fmt.Sprint(flows), "tp_dst=80") {
		t.Errorf("the removed rule stayed: %v", flows)
	}
	gone := nic
	gone.PortID = "no-such-port"
	if err := p.Refilter(ctx, id, gone); err == nil {
		t.Error("Refilter of a port that is not plugged succeeded")
	}
}
