package vif

import (
	"context"
	"errors"
	"fmt"

	"github.com/capsule-cloud/capsule/protocol"
)

// Stale lists the OVS ports on the mapped bridges that are tagged with
// instance id (vm-uuid) but are none of nics: NICs the server no longer
// has (an attach the API rolled back after the plug, a detach whose unplug
// was lost), so the agent's drift repair can Remove them. It is Orphans at
// the grain of one instance's NICs. A port named after one of nics
// (HostIfName) is never stale whatever its iface-id says: Plug takes that
// port over for the NIC, and removing it would cut the NIC off.
func (p *Plumber) Stale(ctx context.Context, id string, nics []protocol.NIC) ([]Port, error) {
	if id == "" {
		return nil, errors.New("vif: stale ports: empty instance id")
	}
	all, err := p.Orphans(ctx, nil) // nothing kept: every instance's ports
	if err != nil {
		return nil, fmt.Errorf("vif: stale ports of %s: %w", id, err)
	}
	ports := make(map[string]bool, len(nics))
	names := make(map[string]bool, len(nics))
	for _, nic := range nics {
		if nic.PortID != "" {
			ports[nic.PortID] = true
			names[HostIfName(nic.PortID)] = true
		}
	}
	var out []Port
	for _, port := range all {
		if port.InstanceID != id || ports[port.PortID] || names[port.Name] {
			continue
		}
		out = append(out, port)
	}
	return out, nil
}
