package agent

import (
	"cmp"
	"context"

	"github.com/capsule-cloud/capsule/protocol"
)

// The vif adapter prunes NICs with vif's Stale and Remove, the instance
// grain of the orphan removal (Orphans and Remove).
var _ NICPruner = vifPlumber{}

// RemoveStaleNICs implements NICPruner.
func (v vifPlumber) RemoveStaleNICs(ctx context.Context, id string, nics []protocol.NIC) ([]string, error) {
	stale, err := v.Stale(ctx, id, nics)
	if err != nil || len(stale) == 0 {
		return nil, err
	}
	if err := v.Remove(ctx, stale); err != nil {
		return nil, err
	}
	gone := make([]string, len(stale))
	for i, p := range stale {
		// A port without iface-id is still tagged with the instance:
		// name it by its OVS port.
		gone[i] = cmp.Or(p.PortID, p.Name)
	}
	return gone, nil
}
