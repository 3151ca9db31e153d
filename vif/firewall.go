package vif

// Security groups in OpenFlow, with conntrack (ct(); the userspace
// datapath has it). Each port with a firewall gets its own conntrack zone
// (from its port id), so the state of a connection as one port's egress
// saw it never stands in for another port's ingress decision.
//
//	table 0   anti-spoofing (flows.go): what a port may send from its own
//	          MAC and addresses; for a filtered port its IP/IPv6 go to
//	          ct(zone, table 71) instead of NORMAL. Packets to a filtered
//	          port's MAC from anywhere else (another host on the VLAN, a
//	          port without port security) go to ct(its zone, table 73).
//	table 71  egress of the sending port (in_port): established/related
//	          pass, invalid dropped, new connections matching a rule are
//	          committed and pass, the rest is dropped. What passes goes
//	          on to table 72.
//	table 72  dispatch: to a filtered local port's MAC -> ct(its zone,
//	          table 73); anything else NORMAL (the bridge-wide fallback).
//	table 73  ingress of the receiving port (dl_dst): as table 71, what
//	          passes is forwarded by NORMAL, which keeps the VLANs apart.
//
// Neighbour discovery (ICMPv6 133-136) and MLD pass both ways, as in
// Neutron. All of a port's flows carry its cookie, so they are replaced
// atomically with its anti-spoofing flows and removed with them.

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"strings"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/protocol"
)

// Firewall tables.
const (
	TableEgress   = 71
	TableDispatch = 72
	TableIngress  = 73
)

// Priorities inside the firewall tables.
const (
	prioFwState = 200 // established/related pass, invalid dropped
	prioFwND    = 150 // neighbour discovery, MLD
	prioFwRule  = 100
	prioFwDrop  = 10
	// prioCapture: table 0's and table 72's redirect of traffic to a
	// filtered port's MAC, below every anti-spoofing flow.
	prioCapture = 50
)

// Zone is the conntrack zone of port portID's firewall (1-65535).
func Zone(portID string) int {
	h := fnv.New32a()
	h.Write([]byte("zone/" + portID))
	return int(h.Sum32()%65535) + 1
}

// DispatchCookie marks the bridge-wide NORMAL of table 72; like the
// table-0 fallback it stays when the last filtered port goes.
func DispatchCookie() uint64 { return Cookie("firewall/dispatch") }

// dispatchFallback is the bridge-wide NORMAL of table 72, under its own
// cookie so no port's flow replacement takes it away.
func dispatchFallback() string {
	return fmt.Sprintf("cookie=%#x,table=%d,priority=0,actions=NORMAL", DispatchCookie(), TableDispatch)
}

// egressAction is what a filtered port's allowed IP traffic does in table
// 0: into conntrack, then its egress rules.
func egressAction(zone int) string {
	return fmt.Sprintf("ct(table=%d,zone=%d)", TableEgress, zone)
}

// firewallFlows are the flows of a port's firewall beyond table 0's
// anti-spoofing ones: the capture of its inbound traffic and its ingress
// and egress rules.
//
// macs are the port's MAC and those of its allowed address pairs: traffic
// to any of them is the port's ingress.
func firewallFlows(cookie uint64, ofport int, macs []net.HardwareAddr, zone int, fw *protocol.Firewall) []string {
	c := fmt.Sprintf("cookie=%#x", cookie)
	in := fmt.Sprintf("%s,table=%d", c, TableIngress)
	out := fmt.Sprintf("%s,table=%d", c, TableEgress)
	fromPort := fmt.Sprintf("in_port=%d", ofport)
	ingress := fmt.Sprintf("ct(table=%d,zone=%d)", TableIngress, zone)
	var flows []string
	heads := map[string][]string{"egress": {out + "," + fromPort}}
	for _, mac := range macs {
		toPort := fmt.Sprintf("dl_dst=%s", mac)
		for _, l3 := range []string{"ip", "ipv6"} {
			flows = append(flows,
				fmt.Sprintf("%s,table=0,priority=%d,%s,%s,actions=%s", c, prioCapture, l3, toPort, ingress),
				fmt.Sprintf("%s,table=%d,priority=%d,%s,%s,actions=%s", c, TableDispatch, prioCapture, l3, toPort, ingress))
		}
		heads["ingress"] = append(heads["ingress"], in+","+toPort)
	}
	pass := map[string]string{"egress": fmt.Sprintf("resubmit(,%d)", TableDispatch), "ingress": "NORMAL"}
	for _, dir := range []string{"egress", "ingress"} {
		for _, h := range heads[dir] {
			flows = append(flows, dirFlows(h, dir, pass[dir], zone, fw)...)
		}
	}
	return flows
}

// dirFlows are the flows of one direction of a port's firewall under
// head (its table and match: the sending port, or one MAC it receives
// on).
func dirFlows(h, dir, pass string, zone int, fw *protocol.Firewall) []string {
	flows := []string{
		fmt.Sprintf("%s,priority=%d,ct_state=-new+est-inv+trk,actions=%s", h, prioFwState, pass),
		fmt.Sprintf("%s,priority=%d,ct_state=-new+rel-inv+trk,actions=%s", h, prioFwState, pass),
		fmt.Sprintf("%s,priority=%d,ct_state=+inv+trk,actions=drop", h, prioFwState),
	}
	for _, t := range []int{130, 131, 132, 133, 134, 135, 136, 143} {
		if dir == "egress" && t == 134 {
			continue // router advertisements: table 0 drops them anyway
		}
		flows = append(flows, fmt.Sprintf("%s,priority=%d,icmp6,icmp_type=%d,actions=%s", h, prioFwND, t, pass))
	}
	flows = append(flows, fmt.Sprintf("%s,priority=%d,actions=drop", h, prioFwDrop))
	if fw == nil {
		return flows
	}
	for _, r := range fw.Rules {
		if r.Direction != dir {
			continue
		}
		state, action := "", pass
		if r.Stateful {
			state = "ct_state=+new-est+trk,"
			action = fmt.Sprintf("ct(commit,zone=%d),%s", zone, pass)
		}
		for _, m := range RuleMatches(r) {
			flows = append(flows, fmt.Sprintf("%s,priority=%d,%s%s,actions=%s", h, prioFwRule, state, m, action))
		}
	}
	return flows
}

// RuleMatches translates one rule into OpenFlow matches (without the
// port and conntrack parts): one per remote address and port-range
// block. A rule naming an empty remote group matches nothing.
func RuleMatches(r protocol.FirewallRule) []string {
	v6 := r.EtherType == "IPv6"
	var l3 string
	switch r.Protocol {
	case -1:
		l3 = pick(v6, "ipv6", "ip")
	case 6:
		l3 = pick(v6, "tcp6", "tcp")
	case 17:
		l3 = pick(v6, "udp6", "udp")
	case 132:
		l3 = pick(v6, "sctp6", "sctp")
	case 1:
		if v6 {
			l3 = "icmp6" // Neutron's icmp in an IPv6 rule
		} else {
			l3 = "icmp"
		}
	case 58:
		l3 = pick(v6, "icmp6", "ip,nw_proto=58")
	default:
		l3 = fmt.Sprintf("%s,nw_proto=%d", pick(v6, "ipv6", "ip"), r.Protocol)
	}
	var tails []string
	switch {
	case r.Protocol == 6 || r.Protocol == 17 || r.Protocol == 132:
		if r.PortMin != nil && r.PortMax != nil {
			for _, b := range PortBlocks(*r.PortMin, *r.PortMax) {
				tails = append(tails, "tp_dst="+b)
			}
		}
	case r.Protocol == 1 || r.Protocol == 58:
		var t []string
		if r.PortMin != nil {
			t = append(t, fmt.Sprintf("icmp_type=%d", *r.PortMin))
			if r.PortMax != nil {
				t = append(t, fmt.Sprintf("icmp_code=%d", *r.PortMax))
			}
		}
		if len(t) > 0 {
			tails = append(tails, strings.Join(t, ","))
		}
	}
	if len(tails) == 0 {
		tails = []string{""}
	}
	var remotes []string
	if r.RemoteAny {
		remotes = []string{""}
	} else {
		field := map[[2]bool]string{{false, false}: "nw_src", {false, true}: "nw_dst", {true, false}: "ipv6_src", {true, true}: "ipv6_dst"}[[2]bool{v6, r.Direction == "egress"}]
		for _, cidr := range r.Remotes {
			p, err := netip.ParsePrefix(cidr)
			if err != nil || p.Addr().Is4() == v6 {
				continue
			}
			remotes = append(remotes, field+"="+p.Masked().String())
		}
	}
	var out []string
	for _, rm := range remotes {
		for _, t := range tails {
			m := l3
			for _, part := range []string{rm, t} {
				if part != "" {
					m += "," + part
				}
			}
			out = append(out, m)
		}
	}
	return out
}

func pick(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

// PortBlocks splits the port range lo..hi into value/mask blocks
// OpenFlow matches (1024-2047 is one, "0x400/0xfc00"); a single port is
// just its number.
func PortBlocks(lo, hi int) []string {
	var out []string
	for lo <= hi {
		size := 1
		// The largest aligned block starting at lo that stays inside hi.
		for size <= 0x8000 && lo%(size*2) == 0 && lo+size*2-1 <= hi {
			size *= 2
		}
		if size == 1 {
			out = append(out, fmt.Sprint(lo))
		} else {
			out = append(out, fmt.Sprintf("%#x/%#x", lo, 0xffff&^(size-1)))
		}
		lo += size
	}
	return out
}

// Refilter replaces only the flows of instance id's plugged NIC nic (its
// anti-spoofing and security-group rules, one atomic bundle) and leaves
// the namespace, the veth and the OVS port as they are: a security group
// change must not re-plumb a running server (a full Plug puts back the
// addresses the guest holds, among other things). It fails when the
// NIC's OVS port is not open; the caller then plugs it whole.
func (p *Plumber) Refilter(ctx context.Context, id string, nic protocol.NIC) error {
	plans, err := p.plan(id, []protocol.NIC{nic})
	if err != nil {
		return err
	}
	pl := plans[0]
	port, found, err := p.ovs.PortByName(ctx, pl.host)
	if err != nil {
		return err
	}
	if !found || port.OFPort <= 0 || port.Error != "" {
		return fmt.Errorf("refilter port %s of instance %s: OVS port %s is not open on %s", nic.PortID, id, pl.host, pl.bridge)
	}
	var b ovs.FlowBatch
	portSecurity(pl, port.OFPort, &b)
	return p.ovs.ApplyFlows(ctx, pl.bridge, &b)
}

// portSecurity adds to b what makes the port's anti-spoofing and security
// group flows exactly pl's: replaced under its cookie when port security
// is on (with the bridge's dispatch fallback its firewall needs), deleted
// when off.
func portSecurity(pl nicPlan, ofport int, b *ovs.FlowBatch) {
	if !pl.nic.PortSecurity {
		b.DeleteCookie(pl.cookie)
		return
	}
	if pl.nic.Firewall != nil {
		b.Add(dispatchFallback())
	}
	b.Replace(pl.cookie, securityFlows(pl.cookie, ofport, pl.mac, pl.ips(), pl.pairs, pl.nic.Firewall, Zone(pl.nic.PortID))...)
}
