package conductor

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// The migration statuses and flavor-copy helpers live in package store
// (store/resize.go), shared with the API and package migrate; these names
// stay for the conductor's own code.
const (
	MigrationPreMigrating = store.MigrationPreMigrating
	MigrationMigrating    = store.MigrationMigrating
	MigrationFinished     = store.MigrationFinished
	MigrationConfirmed    = store.MigrationConfirmed
	MigrationReverting    = store.MigrationReverting
	MigrationReverted     = store.MigrationReverted
	MigrationError        = store.MigrationError
)

// RestoreOldFlavor is store.RestoreOldFlavor.
func RestoreOldFlavor(inst *store.Instance) map[string]any { return store.RestoreOldFlavor(inst) }

// ForgetOldFlavor is store.ForgetOldFlavor.
func ForgetOldFlavor() map[string]any { return store.ForgetOldFlavor() }

// SetMigrationStatus is store.SetResizeStatus.
func SetMigrationStatus(tx *gorm.DB, instanceID string, status lifecycle.MigrationStatus) error {
	return store.SetResizeStatus(tx, instanceID, status)
}

// setClaim records that instanceID holds res on host, whatever the room:
// it is what really runs there (the driver rolled back, or a revert
// failed), and the claim must say so.
func setClaim(tx *gorm.DB, instanceID, host string, res store.Resources) error {
	err := tx.Model(&store.Claim{}).Where("instance_id = ? AND host = ?", instanceID, host).
		Updates(map[string]any{"vcpus": res.VCPUs, "memory_mb": res.MemoryMB, "disk_gb": res.DiskGB}).Error
	if err != nil {
		return fmt.Errorf("set claim of %s on %s: %w", instanceID, host, err)
	}
	return nil
}

// onResizeReport records the outcome of a live resize or of its revert.
// Each update is guarded on the task the report answers, so a duplicate
// or stale report changes nothing.
func (c *Conductor) onResizeReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil || inst.Host != r.Host {
		return nil
	}
	task := inst.TaskState
	from := lifecycle.ResizeOutcome(inst.ResizeFromState)
	return c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		guard := func(vm lifecycle.VMState, tasks ...lifecycle.TaskState) *gorm.DB {
			ts := make([]string, len(tasks))
			for i, t := range tasks {
				ts[i] = string(t)
			}
			return tx.Model(&store.Instance{}).
				Where("id = ? AND vm_state = ? AND task_state IN ? AND deleted_at IS NULL", inst.ID, string(vm), ts)
		}
		apply := func(q *gorm.DB, fields map[string]any) (bool, error) {
			fields["updated_at"] = c.now()
			res := q.Updates(fields)
			if res.Error != nil {
				return false, fmt.Errorf("update instance %s after %s: %w", inst.ID, r.Action, res.Error)
			}
			return res.RowsAffected > 0, nil
		}
		switch {
		case r.Action == lifecycle.ActResize && r.OK:
			if task != lifecycle.ResizePrep && task != lifecycle.ResizeFinish {
				return nil
			}
			ok, err := apply(guard(inst.VMState, lifecycle.ResizePrep, lifecycle.ResizeFinish), map[string]any{
				"vm_state": string(lifecycle.Resized), "task_state": "", "power_state": r.PowerState})
			if err != nil || !ok {
				return err
			}
			c.log.Info("instance resized; awaiting confirm or revert", "instance", inst.ID, "host", r.Host, "vcpus", inst.VCPUs, "memory_mb", inst.MemoryMB)
			return SetMigrationStatus(tx, inst.ID, MigrationFinished)
		case r.Action == lifecycle.ActResize:
			// The driver rolled the limits back: the old flavor runs.
			if task != lifecycle.ResizePrep && task != lifecycle.ResizeFinish {
				return nil
			}
			fields := RestoreOldFlavor(inst)
			for k, v := range ForgetOldFlavor() {
				fields[k] = v
			}
			fields["vm_state"], fields["task_state"], fields["power_state"] = string(from), "", r.PowerState
			ok, err := apply(guard(inst.VMState, lifecycle.ResizePrep, lifecycle.ResizeFinish), fields)
			if err != nil || !ok {
				return err
			}
			c.log.Warn("resize failed; old flavor kept", "instance", inst.ID, "host", r.Host, "error", r.Error)
			if err := setClaim(tx, inst.ID, inst.Host, store.Resources{VCPUs: inst.OldVCPUs, MemoryMB: inst.OldMemoryMB, DiskGB: inst.OldRootGB}); err != nil {
				return err
			}
			return SetMigrationStatus(tx, inst.ID, MigrationError)
		case r.Action == lifecycle.ActRevertResize && r.OK:
			if task != lifecycle.ResizeReverting {
				return nil
			}
			fields := RestoreOldFlavor(inst)
			for k, v := range ForgetOldFlavor() {
				fields[k] = v
			}
			fields["vm_state"], fields["task_state"], fields["power_state"] = string(from), "", r.PowerState
			ok, err := apply(guard(lifecycle.Resized, lifecycle.ResizeReverting), fields)
			if err != nil || !ok {
				return err
			}
			c.log.Info("resize reverted", "instance", inst.ID, "host", r.Host, "vcpus", inst.OldVCPUs, "memory_mb", inst.OldMemoryMB)
			return SetMigrationStatus(tx, inst.ID, MigrationReverted)
		default: // a failed revert: the new size still runs
			if task != lifecycle.ResizeReverting {
				return nil
			}
			ok, err := apply(guard(lifecycle.Resized, lifecycle.ResizeReverting), map[string]any{"task_state": "", "power_state": r.PowerState})
			if err != nil || !ok {
				return err
			}
			c.log.Warn("resize revert failed; the new flavor keeps running", "instance", inst.ID, "host", r.Host, "error", r.Error)
			if err := setClaim(tx, inst.ID, inst.Host, store.Resources{VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.RootGB}); err != nil {
				return err
			}
			// Still awaiting a confirm or another revert.
			return SetMigrationStatus(tx, inst.ID, MigrationFinished)
		}
	})
}
