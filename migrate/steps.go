package migrate

import (
	"context"
	"errors"
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

// migratedTask marks an instance whose export was reported: the import
// step comes next, whatever happened to the conductor meanwhile.
const migratedTask = lifecycle.ResizeMigrated

// errInstanceChanged: the instance left the state the step expects
// (typically: it is being deleted).
var errInstanceChanged = errors.New("the instance left the state the migration expects")

// updateInstance applies change to instance id while it is not deleted,
// its vm_state is vm ("" = any) and its task one of tasks; else
// errInstanceChanged.
func updateInstance(tx *gorm.DB, id string, vm lifecycle.VMState, tasks []lifecycle.TaskState, change instance.Change) error {
	g := instance.Guard{Task: tasks}
	if vm != "" {
		g.VM = []lifecycle.VMState{vm}
	}
	ok, err := instance.Apply(tx, id, g, change)
	if err != nil {
		return err
	}
	if !ok {
		return errInstanceChanged
	}
	return nil
}

// schedule is the scheduling step: claim room on a target (the scheduler
// never picks the source; an admin's requested host is the only
// candidate), then hand over to the export.
func (e *Engine) schedule(ctx context.Context, m *store.Migration, inst *store.Instance) error {
	start := e.now()
	log := e.logFor(m)
	// A claim this migration already holds is from an attempt that died
	// before recording its choice: keep that host.
	target, err := instance.MigrationClaimHost(e.st.WithContext(ctx), m.InstanceID, m.ID)
	if err != nil {
		return fmt.Errorf("claims of migration %s: %w", m.UUID, err)
	}
	if target == "" {
		target, err = e.sched.SelectTarget(ctx, instance.MigrationTarget{InstanceID: inst.ID, MigrationID: m.ID,
			Resources:        store.Resources{VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.ClaimDiskGB()},
			AvailabilityZone: inst.RequestedZone, Source: m.SourceCompute, Host: m.RequestedHost})
		var nv interface{ Explain() string }
		if errors.As(err, &nv) {
			return e.noValidHost(ctx, m, inst, start, nv.Explain())
		}
		if err != nil {
			return fmt.Errorf("select target of migration %s: %w", m.UUID, err)
		}
	}
	err = e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		vols, err := localVolumesOf(tx, inst.ID, m.SourceCompute)
		if err != nil {
			return err
		}
		// Its ephemeral disks move as local volumes do (no rows: each
		// cleanup drops the copy of the host the server leaves).
		for i := range inst.Ephemerals() {
			vols = strings.TrimSpace(vols + " " + protocol.EphemeralID(inst.ID, i))
		}
		first := StepExporting
		if e.precopy {
			first = StepPrecopy
		}
		if err := move(tx, m, first, e.now(), map[string]any{"status": lifecycle.MigrationMigrating,
			"dest_compute": target, "dest_node": target, "dest_host": target, "snapshot_ref": e.Ref(m), "volume_ids": vols}); err != nil {
			return err
		}
		return updateInstance(tx, inst.ID, m.SourceVMState, []lifecycle.TaskState{lifecycle.ResizePrep},
			instance.Change{Task: lifecycle.ResizeMigrating, At: e.now()})
	})
	if errors.Is(err, errMoved) {
		return nil // another handler scheduled it (and its claim is the one kept above)
	}
	if errors.Is(err, errInstanceChanged) {
		// Being deleted: the deletion ends the migration (and drops the
		// claim); until then the claim is harmless.
		log.Info("instance changed while scheduling its migration", "target", target)
		return nil
	}
	if err != nil {
		return err
	}
	log = e.logFor(m)
	log.Info("migration step", "from", string(StepScheduling), "to", m.Step, "status", m.Status)
	e.recordEvent(ctx, m, store.Event{Name: EventSchedule, Host: e.host, Start: start, Finish: e.now(), OK: true})
	return e.publish(ctx, m, inst, true)
}

// noValidHost ends a migration nobody can take: the instance goes back
// to where it was, with the fault Nova records.
func (e *Engine) noValidHost(ctx context.Context, m *store.Migration, inst *store.Instance, start time.Time, explain string) error {
	at := e.now()
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := move(tx, m, StepDone, at, map[string]any{"status": lifecycle.MigrationError,
			"error_message": instance.NoValidHostMessage}); err != nil {
			return err
		}
		err := updateInstance(tx, inst.ID, m.SourceVMState, []lifecycle.TaskState{lifecycle.ResizePrep},
			instance.Change{VM: m.SourceVMState, Task: lifecycle.NoTask, Set: instance.FlavorBack(inst), At: at,
				Fault: &instance.Fault{Code: 500, Message: instance.NoValidHostMessage, Details: explain, At: at}})
		if errors.Is(err, errInstanceChanged) {
			return nil // being deleted: only the migration ends
		}
		return err
	})
	if err != nil {
		return ignoreMoved(err)
	}
	e.logFor(m).Warn("no valid host for migration", "explain", explain)
	e.recordEvent(ctx, m, store.Event{Name: EventSchedule, Host: e.host, Start: start, Finish: at, OK: false,
		Detail: instance.NoValidHostMessage + " " + explain, Message: instance.NoValidHostMessage})
	return nil
}

// onPrecopied records what the pre-copy pushed, then the target pulls
// it (the server still runs on the source).
func (e *Engine) onPrecopied(ctx context.Context, m *store.Migration, r protocol.MigrationReport) error {
	next := StepPrepull
	if r.Digest == "" {
		// The source's driver cannot pre-copy: nothing to pre-pull, the
		// export moves it all.
		next = StepExporting
	}
	// image_bytes holds the pre-copy's until the export adds its own.
	if err := e.moveTo(ctx, m, next, map[string]any{"pushed_bytes": r.Bytes, "image_bytes": r.Bytes}); err != nil {
		return ignoreMoved(err)
	}
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	return e.publish(ctx, m, inst, true)
}

// onPrepulled: the target holds the pre-copy; now the source stops the
// server and pushes what changed since (the export).
func (e *Engine) onPrepulled(ctx context.Context, m *store.Migration, r protocol.MigrationReport) error {
	if err := e.moveTo(ctx, m, StepExporting, map[string]any{"pulled_bytes": r.Bytes}); err != nil {
		return ignoreMoved(err)
	}
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	return e.publish(ctx, m, inst, true)
}

// onExported records what the source pushed (task resize_migrated),
// then moves on to the import.
func (e *Engine) onExported(ctx context.Context, m *store.Migration, r protocol.MigrationReport) error {
	at := e.now()
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// What the export pushed comes on top of what the pre-copy did
		// (image_bytes until now; 0 without one). Guarded on no digest
		// recorded yet, so a duplicate report does not add it twice.
		res := tx.Model(&store.Migration{}).Where("id = ? AND step = ? AND snapshot_digest = ''", m.ID, string(StepExporting)).
			Updates(map[string]any{"snapshot_digest": r.Digest, "image_bytes": gorm.Expr("image_bytes + ?", r.Bytes),
				"pushed_bytes": gorm.Expr("image_bytes + ?", r.Bytes),
				"updated_at":   at})
		if res.Error != nil {
			return fmt.Errorf("record export of migration %s: %w", m.UUID, res.Error)
		}
		if res.RowsAffected == 0 {
			return errMoved
		}
		return updateInstance(tx, m.InstanceID, m.SourceVMState, []lifecycle.TaskState{lifecycle.ResizeMigrating},
			instance.Change{Task: migratedTask, Set: map[string]any{"power_state": r.PowerState}, At: at})
	})
	if errors.Is(err, errMoved) || errors.Is(err, errInstanceChanged) {
		return nil
	}
	if err != nil {
		return err
	}
	e.logFor(m).Info("migration exported", "digest", r.Digest, "bytes", r.Bytes)
	return e.enterImporting(ctx, m)
}

// enterImporting binds the ports to the target and sends the import.
func (e *Engine) enterImporting(ctx context.Context, m *store.Migration) error {
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := move(tx, m, StepImporting, e.now(), map[string]any{"status": lifecycle.MigrationPostMigrating}); err != nil {
			return err
		}
		if err := updateInstance(tx, m.InstanceID, m.SourceVMState, []lifecycle.TaskState{migratedTask},
			instance.Change{Task: lifecycle.ResizeFinish, At: e.now()}); err != nil {
			return err
		}
		return instance.BindPorts(tx, m.InstanceID, m.DestCompute)
	})
	if errors.Is(err, errMoved) || errors.Is(err, errInstanceChanged) {
		return nil
	}
	if err != nil {
		return err
	}
	e.logFor(m).Info("migration step", "from", string(StepExporting), "to", m.Step, "status", m.Status)
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	return e.publish(ctx, m, inst, true)
}

// onImported: the server runs on the target and waits in VERIFY_RESIZE.
// Both claims stay until the confirm or revert.
func (e *Engine) onImported(ctx context.Context, m *store.Migration, r protocol.MigrationReport) error {
	at := e.now()
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		zone, err := instance.ZoneOf(tx, m.DestCompute)
		if err != nil {
			return err
		}
		if err := move(tx, m, StepFinished, at, map[string]any{"status": lifecycle.MigrationFinished,
			"pulled_bytes": maxExpr("pulled_bytes", r.Bytes)}); err != nil {
			return err
		}
		return updateInstance(tx, m.InstanceID, m.SourceVMState, []lifecycle.TaskState{lifecycle.ResizeFinish},
			instance.Change{VM: lifecycle.Resized, Task: lifecycle.NoTask, At: at,
				Set: map[string]any{"host": m.DestCompute, "availability_zone": zone, "power_state": r.PowerState}})
	})
	if errors.Is(err, errMoved) || errors.Is(err, errInstanceChanged) {
		return nil
	}
	if err != nil {
		return err
	}
	e.forget(m.ID)
	e.logFor(m).Info("migration finished; awaiting confirm or revert", "status", m.Status)
	return nil
}

// rollback undoes a migration that failed before it finished: the
// target's copy is dropped (without waiting for that host) and the source
// restarted; it ends in status error with reason as the instance's fault.
func (e *Engine) rollback(ctx context.Context, m *store.Migration, reason string) error {
	from := m.Step
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return move(tx, m, StepRevertTarget, e.now(), map[string]any{"rollback": true, "error_message": reason})
	})
	if err != nil {
		return ignoreMoved(err)
	}
	e.logFor(m).Warn("migration failed; rolling back", "from", from, "reason", reason)
	at := e.now()
	e.recordEvent(ctx, m, store.Event{Name: EventRollback, Host: e.host, Start: at, Finish: at, OK: false, Detail: reason, Message: reason})
	return e.advance(ctx, m, true)
}

// enterRevertSource binds the ports back to the source and sends the
// restore.
func (e *Engine) enterRevertSource(ctx context.Context, m *store.Migration) error {
	from := m.Step
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := move(tx, m, StepRevertSource, e.now(), nil); err != nil {
			return err
		}
		return instance.BindPorts(tx, m.InstanceID, m.SourceCompute)
	})
	if err != nil {
		return ignoreMoved(err)
	}
	e.logFor(m).Info("migration step", "from", from, "to", m.Step, "status", m.Status, "rollback", m.Rollback)
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	return e.publish(ctx, m, inst, true)
}

// revertTasks are the task states the instance may have while m's
// source restarts: a user's revert, or a failure's rollback.
func revertTasks(m *store.Migration) []lifecycle.TaskState {
	if m.Rollback {
		return migrationTasks
	}
	return []lifecycle.TaskState{lifecycle.ResizeReverting}
}

// completeRevert: the source runs again; the instance is back there with
// its old flavor, the target claim goes, then the tag.
func (e *Engine) completeRevert(ctx context.Context, m *store.Migration, r protocol.MigrationReport) error {
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	at := e.now()
	status := lifecycle.MigrationReverted
	if m.Rollback {
		status = lifecycle.MigrationError
	}
	err = e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		zone, err := instance.ZoneOf(tx, m.SourceCompute)
		if err != nil {
			return err
		}
		if err := move(tx, m, StepDeleteTag, at, map[string]any{"status": status}); err != nil {
			return err
		}
		fields := instance.FlavorBack(inst)
		maps.Copy(fields, map[string]any{"host": m.SourceCompute, "availability_zone": zone, "power_state": r.PowerState})
		if m.Rollback {
			// The fault of the rollback (its details, if any, are kept).
			maps.Copy(fields, map[string]any{"fault_code": 500, "fault_message": m.ErrorMessage, "fault_at": at})
		}
		change := instance.Change{VM: m.SourceVMState, Task: lifecycle.NoTask, Set: fields, At: at}
		if err := updateInstance(tx, m.InstanceID, "", revertTasks(m), change); errors.Is(err, errInstanceChanged) {
			// Deleted meanwhile (the deletion's pass cleans up), or a
			// failed delete left it in ERROR: the migration ends anyway.
			e.logFor(m).Warn("instance changed during the revert; left as it is", "vm_state", inst.VMState, "task_state", inst.TaskState)
		} else if err != nil {
			return err
		}
		return releaseTarget(tx, m)
	})
	if err != nil {
		return ignoreMoved(err)
	}
	e.forget(m.ID)
	if m.Rollback {
		e.logFor(m).Warn("migration rolled back; instance back on its source", "status", m.Status, "reason", m.ErrorMessage)
	} else {
		e.logFor(m).Info("migration reverted; instance back on its source", "status", m.Status)
	}
	return e.deleteTag(ctx, m)
}

// releaseTarget drops the claim the migration took on its target, unless
// the instance lives there.
func releaseTarget(tx *gorm.DB, m *store.Migration) error {
	if m.DestCompute == "" {
		return nil
	}
	if err := instance.ReleaseClaimAway(tx, m.InstanceID, m.DestCompute); err != nil {
		return fmt.Errorf("release target claim of migration %s: %w", m.UUID, err)
	}
	return nil
}

// failOnSource: the source could not be restarted. The instance stays
// there in ERROR with the fault; the target's room is given back.
func (e *Engine) failOnSource(ctx context.Context, m *store.Migration, reason string) error {
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	at := e.now()
	msg := reason
	if m.ErrorMessage != "" {
		msg = m.ErrorMessage + " " + reason
	}
	err = e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := move(tx, m, StepDeleteTag, at, map[string]any{"status": lifecycle.MigrationError, "error_message": msg}); err != nil {
			return err
		}
		fields := instance.FlavorBack(inst)
		maps.Copy(fields, map[string]any{"host": m.SourceCompute, "power_state": int(lifecycle.NoState),
			"fault_code": 500, "fault_message": msg, "fault_at": at})
		change := instance.Change{VM: lifecycle.Error, Task: lifecycle.NoTask, Set: fields, At: at}
		if err := updateInstance(tx, m.InstanceID, "", revertTasks(m), change); err != nil && !errors.Is(err, errInstanceChanged) {
			return err
		}
		return releaseTarget(tx, m)
	})
	if err != nil {
		return ignoreMoved(err)
	}
	e.forget(m.ID)
	e.logFor(m).Error("migration failed on its source; instance in error", "reason", msg)
	return e.deleteTag(ctx, m)
}

// finishConfirm: the source's copy is gone (or its cleanup waits in that
// host's queue); its claim goes, then the tag.
func (e *Engine) finishConfirm(ctx context.Context, m *store.Migration) error {
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := move(tx, m, StepDeleteTag, e.now(), map[string]any{"status": lifecycle.MigrationConfirmed}); err != nil {
			return err
		}
		// The source claim, unless the instance lives there (it cannot,
		// short of a bug: then its room must stay claimed).
		if err := instance.ReleaseClaimAway(tx, m.InstanceID, m.SourceCompute); err != nil {
			return fmt.Errorf("release source claim of migration %s: %w", m.UUID, err)
		}
		// The target claim is the instance's only one now.
		return instance.AdoptClaim(tx, m.InstanceID, m.DestCompute)
	})
	if err != nil {
		return ignoreMoved(err)
	}
	e.forget(m.ID)
	e.logFor(m).Info("migration confirmed", "status", m.Status)
	return e.deleteTag(ctx, m)
}

// abandon ends the migration of a deleted instance: whatever either host
// has is removed, the claims go (the deletion dropped them already,
// unless a claim raced it), then the tag.
func (e *Engine) abandon(ctx context.Context, m *store.Migration) error {
	if s := Step(m.Step); s == StepAbandoned || s.Settled() {
		return nil
	}
	from := m.Step
	fields := map[string]any{"status": lifecycle.MigrationError, "error_message": "The instance was deleted during its migration."}
	if Step(from) == StepConfirming {
		// The user's confirm stands; only its cleanup is widened.
		fields = map[string]any{"status": lifecycle.MigrationConfirmed}
	}
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := move(tx, m, StepAbandoned, e.now(), fields); err != nil {
			return err
		}
		return instance.ReleaseClaimsIfDeleted(tx, m.InstanceID)
	})
	if err != nil {
		return ignoreMoved(err)
	}
	e.logFor(m).Warn("instance deleted during its migration; cleaning up both hosts", "from", from)
	return e.advance(ctx, m, true)
}

// deleteTag removes the migration's image from the registry, then the
// migration is done. A failure leaves it at this step: the periodic pass
// tries again.
func (e *Engine) deleteTag(ctx context.Context, m *store.Migration) error {
	if m.SnapshotRef != "" {
		if e.reg == nil {
			e.logFor(m).Warn("no registry client: migration image left in the registry", "ref", m.SnapshotRef)
		} else if err := e.reg.DeleteImage(ctx, m.SnapshotRef, m.SnapshotDigest); err != nil {
			e.logFor(m).Warn("delete migration image; will retry", "ref", m.SnapshotRef, "error", err)
			return nil
		} else if err := e.reg.DeleteImage(ctx, PreRef(m), ""); err != nil {
			// Every migration names a pre-copy tag; one that never
			// pre-copied has none, which the registry answers as gone.
			e.logFor(m).Warn("delete migration pre-copy image; will retry", "ref", PreRef(m), "error", err)
			return nil
		} else if err := e.deleteVolumeTags(ctx, m); err != nil {
			e.logFor(m).Warn("delete migration volume data; will retry", "error", err)
			return nil
		}
	}
	return ignoreMoved(e.moveTo(ctx, m, StepDone, nil))
}
