package conductor

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// onRebuildReport ends a rebuild. Success leaves the server running (or
// stopped, when it was SHUTOFF) on its new image, with a new launch time
// as Nova records one. A failure leaves it in ERROR with the agent's
// error as the fault, as Nova does: the old disk may already be gone, so
// the way out is another rebuild (allowed from ERROR) or a delete.
// Updates are guarded on the rebuild still running, so a duplicate or
// stale report changes nothing.
func (c *Conductor) onRebuildReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil || inst.Host != r.Host {
		return nil
	}
	now := c.now()
	change := instance.Change{VM: lifecycle.RebuildOutcome(lifecycle.PowerState(r.PowerState)), Task: lifecycle.NoTask,
		ClearFault: true, Set: map[string]any{"power_state": r.PowerState, "launched_at": now}, At: now}
	if !r.OK {
		change = instance.Change{VM: lifecycle.Error, Task: lifecycle.NoTask, At: now,
			Fault: &instance.Fault{Code: 500, Message: failedBecause(fmt.Sprintf("Rebuild of instance %s failed", inst.ID), r), Details: r.Error, At: now},
			Set:   map[string]any{"power_state": r.PowerState}}
	}
	ok, err := instance.Apply(c.st.WithContext(ctx), inst.ID, instance.In(inst.VMState, lifecycle.Rebuilding), change)
	if err != nil {
		return err
	}
	if ok && !r.OK {
		c.log.Error("rebuild failed", "instance", inst.ID, "host", r.Host, "error", r.Error)
	}
	return nil
}
