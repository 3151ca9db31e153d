package agent

import (
	"context"
	"slices"

	"github.com/capsule-cloud/capsule/vif"
)

// VIF adapts the vif package's Plumber (host-side veths, OVS ports and
// flows) to the agent's Plumber. The two removals the agent needs beyond
// Plug and Unplug are built on vif's Orphans and Remove: OVS tags every
// port with its instance (vm-uuid), so what belongs to an instance can be
// found without knowing its NICs.
func VIF(p *vif.Plumber) Plumber { return vifPlumber{p} }

type vifPlumber struct{ *vif.Plumber }

// UnplugInstance implements Plumber.
func (v vifPlumber) UnplugInstance(ctx context.Context, id string) error {
	_, err := v.remove(ctx, func(owner string) bool { return owner != id })
	return err
}

// RemoveOrphans implements Plumber.
func (v vifPlumber) RemoveOrphans(ctx context.Context, keep func(id string) bool) ([]string, error) {
	return v.remove(ctx, keep)
}

// remove removes every vif port whose instance keep refuses and returns
// those instances.
func (v vifPlumber) remove(ctx context.Context, keep func(id string) bool) ([]string, error) {
	all, err := v.Orphans(ctx, nil) // nothing kept: every instance's ports
	if err != nil {
		return nil, err
	}
	var gone []vif.Port
	var ids []string
	for _, p := range all {
		if keep(p.InstanceID) {
			continue
		}
		gone = append(gone, p)
		if !slices.Contains(ids, p.InstanceID) {
			ids = append(ids, p.InstanceID)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	if err := v.Remove(ctx, gone); err != nil {
		return nil, err
	}
	return ids, nil
}
