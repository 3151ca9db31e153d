package instance

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// firewallFor resolves port's security groups into the rules its host
// enforces: one rule per stored rule, remote groups replaced by their
// members' addresses of the rule's ether type (the port's own included,
// as in Neutron). A port without port security has no firewall.
func firewallFor(ctx context.Context, st *store.Store, port *store.Port) (*protocol.Firewall, error) {
	if !port.PortSecurityEnabled {
		return nil, nil
	}
	src, err := st.PortFirewall(ctx, port)
	if err != nil {
		return nil, err
	}
	return FirewallOf(src)
}

// FirewallOf turns the stored groups and remote members into rules.
func FirewallOf(src *store.PortFirewallSource) (*protocol.Firewall, error) {
	fw := &protocol.Firewall{Rules: []protocol.FirewallRule{}}
	for _, g := range src.Groups {
		for _, r := range g.Rules {
			proto, err := store.ProtocolNumber(r.Protocol)
			if err != nil {
				return nil, fmt.Errorf("rule %s: %w", r.ID, err)
			}
			// Neutron takes "icmp" in an IPv6 rule as ICMPv6.
			if proto == 1 && r.EtherType == "IPv6" {
				proto = 58
			}
			fr := protocol.FirewallRule{Direction: r.Direction, EtherType: r.EtherType, Protocol: proto,
				PortMin: r.PortRangeMin, PortMax: r.PortRangeMax, Stateful: g.Stateful}
			switch {
			case r.RemoteGroupID != nil:
				for _, a := range src.Members[*r.RemoteGroupID] {
					ip, err := netip.ParseAddr(a)
					if err != nil || ip.Is4() != (r.EtherType == "IPv4") {
						continue
					}
					fr.Remotes = append(fr.Remotes, netip.PrefixFrom(ip, ip.BitLen()).String())
				}
			case r.RemoteIPPrefix != nil:
				p, err := netip.ParsePrefix(*r.RemoteIPPrefix)
				if err != nil {
					return nil, fmt.Errorf("rule %s: remote prefix: %w", r.ID, err)
				}
				if p.Bits() == 0 {
					fr.RemoteAny = true
				} else {
					fr.Remotes = []string{p.Masked().String()}
				}
			default:
				fr.RemoteAny = true
			}
			fw.Rules = append(fw.Rules, fr)
		}
	}
	return fw, nil
}
