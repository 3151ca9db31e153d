package conductor

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// onResizeReport records the outcome of a live resize or of its revert.
// Each update is guarded on the task the report answers, so a duplicate
// or stale report changes nothing.
func (c *Conductor) onResizeReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil || inst.Host != r.Host {
		return nil
	}
	task := inst.TaskState
	from := lifecycle.ResizeOutcome(inst.ResizeFromState)
	now := c.now()
	power := map[string]any{"power_state": r.PowerState}
	// back returns the columns that give the instance its old flavor
	// back, forgetting the resize, with the power state reported.
	back := func() map[string]any {
		fields := instance.FlavorBack(inst)
		maps.Copy(fields, power)
		return fields
	}
	running := instance.Guard{VM: []lifecycle.VMState{inst.VMState}, Task: []lifecycle.TaskState{lifecycle.ResizePrep, lifecycle.ResizeFinish}}
	reverting := instance.In(lifecycle.Resized, lifecycle.ResizeReverting)
	return c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		apply := func(g instance.Guard, change instance.Change) (bool, error) {
			change.Task, change.At = lifecycle.NoTask, now
			ok, err := instance.Apply(tx, inst.ID, g, change)
			if err != nil {
				return false, fmt.Errorf("update instance %s after %s: %w", inst.ID, r.Action, err)
			}
			return ok, nil
		}
		switch {
		case r.Action == lifecycle.ActResize && r.OK:
			if task != lifecycle.ResizePrep && task != lifecycle.ResizeFinish {
				return nil
			}
			ok, err := apply(running, instance.Change{VM: lifecycle.Resized, Set: power})
			if err != nil || !ok {
				return err
			}
			c.log.Info("instance resized; awaiting confirm or revert", "instance", inst.ID, "host", r.Host, "vcpus", inst.VCPUs, "memory_mb", inst.MemoryMB)
			return instance.SetResizeStatus(tx, inst.ID, lifecycle.MigrationFinished)
		case r.Action == lifecycle.ActResize:
			// The driver rolled the limits back: the old flavor runs.
			if task != lifecycle.ResizePrep && task != lifecycle.ResizeFinish {
				return nil
			}
			fault := resizeFault(r, now, "Resize error: %s; the server keeps its old flavor.")
			ok, err := apply(running, instance.Change{VM: from, Set: back(), Fault: &fault})
			if err != nil || !ok {
				return err
			}
			c.log.Warn("resize failed; old flavor kept", "instance", inst.ID, "host", r.Host, "error", r.Error)
			if err := instance.SetClaim(tx, inst.ID, inst.Host, store.Resources{VCPUs: inst.OldVCPUs, MemoryMB: inst.OldMemoryMB, DiskGB: inst.OldRootGB + inst.EphemeralGB()}); err != nil {
				return err
			}
			return instance.SetResizeStatus(tx, inst.ID, lifecycle.MigrationError)
		case r.Action == lifecycle.ActRevertResize && r.OK:
			if task != lifecycle.ResizeReverting {
				return nil
			}
			ok, err := apply(reverting, instance.Change{VM: from, Set: back()})
			if err != nil || !ok {
				return err
			}
			c.log.Info("resize reverted", "instance", inst.ID, "host", r.Host, "vcpus", inst.OldVCPUs, "memory_mb", inst.OldMemoryMB)
			return instance.SetResizeStatus(tx, inst.ID, lifecycle.MigrationReverted)
		default: // a failed revert: the new size still runs
			if task != lifecycle.ResizeReverting {
				return nil
			}
			fault := resizeFault(r, now, "Revert of the resize failed: %s; the server keeps its new flavor.")
			ok, err := apply(reverting, instance.Change{Set: power, Fault: &fault})
			if err != nil || !ok {
				return err
			}
			c.log.Warn("resize revert failed; the new flavor keeps running", "instance", inst.ID, "host", r.Host, "error", r.Error)
			if err := instance.SetClaim(tx, inst.ID, inst.Host, store.Resources{VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.ClaimDiskGB()}); err != nil {
				return err
			}
			// Still awaiting a confirm or another revert.
			return instance.SetResizeStatus(tx, inst.ID, lifecycle.MigrationFinished)
		}
	})
}

// resizeFault is the fault a failed resize or revert records on the
// server (through the domain layer, like every fault): format's %s is the
// agent's safe message, the whole error the admins' details. The server
// stays ACTIVE (or RESIZED), so the compute API shows it only once the
// server is in ERROR, as Nova; the instance action's event carries the
// error too (result Error, traceback for admins).
func resizeFault(r protocol.InstanceReport, at time.Time, format string) instance.Fault {
	why := r.ErrorMessage
	if why == "" {
		why = "the compute host could not apply the flavor"
	}
	return instance.Fault{Code: 500, Message: fmt.Sprintf(format, strings.TrimSuffix(why, ".")), Details: r.Error, At: at}
}
