package conductor

import (
	"context"
	"fmt"

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
	fields := map[string]any{"task_state": "", "power_state": r.PowerState}
	if r.OK {
		fields["vm_state"] = string(lifecycle.RebuildOutcome(lifecycle.PowerState(r.PowerState)))
		fields["launched_at"] = now
		fields["fault_code"], fields["fault_message"], fields["fault_details"], fields["fault_at"] = 0, "", "", nil
	} else {
		fields["vm_state"] = string(lifecycle.Error)
		fields["fault_code"], fields["fault_at"] = 500, now
		fields["fault_message"] = fmt.Sprintf("Rebuild of instance %s failed", inst.ID)
		fields["fault_details"] = r.Error
	}
	ok, err := c.updateIf(ctx, inst.ID, inst.VMState, lifecycle.Rebuilding, fields)
	if err != nil {
		return err
	}
	if ok && !r.OK {
		c.log.Error("rebuild failed", "instance", inst.ID, "host", r.Host, "error", r.Error)
	}
	return nil
}
