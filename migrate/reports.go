package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// OnReport handles an agent's MigrationReport. Only a report of the
// migration's current step, from the host that step targets, changes
// anything; a duplicate, a stale report or a Skipped one is logged and
// dropped (late cleanups are recorded as events).
func (e *Engine) OnReport(ctx context.Context, r protocol.MigrationReport) error {
	m, err := e.load(ctx, r.MigrationID)
	if errors.Is(err, store.ErrNotFound) {
		e.log.Debug("report of an unknown migration ignored", "migration_id", r.MigrationID, "host", r.Host)
		return nil
	}
	if err != nil {
		return err
	}
	log := e.logFor(m).With("report_step", r.Step, "report_host", r.Host, "kind", r.Kind, "ok", r.OK)
	if r.Skipped {
		log.Debug("agent skipped migration work", "reason", r.Error)
		return nil
	}
	step := Step(r.Step)
	if step != Step(m.Step) || r.Host != step.HostOf(m) || r.Kind != step.Work() {
		return e.late(ctx, m, r)
	}
	e.recordEvent(ctx, m, store.Event{Name: r.Event, Host: r.Host, Start: r.Started, Finish: r.Finished, OK: r.OK, Detail: r.Error, Message: r.ErrorMessage})
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	if inst.DeletedAt != nil {
		return e.abandon(ctx, m)
	}
	if !r.OK {
		log.Warn("migration work failed", "error", r.Error)
	}
	switch step {
	case StepPrecopy:
		if r.OK {
			return e.onPrecopied(ctx, m, r)
		}
		return e.rollback(ctx, m, fmt.Sprintf("Migration pre-copy on host %s failed: %s", r.Host, reportReason(r)))
	case StepPrepull:
		if r.OK {
			return e.onPrepulled(ctx, m, r)
		}
		return e.rollback(ctx, m, fmt.Sprintf("Migration pre-pull on host %s failed: %s", r.Host, reportReason(r)))
	case StepExporting:
		if r.OK {
			return e.onExported(ctx, m, r)
		}
		return e.rollback(ctx, m, fmt.Sprintf("Migration export on host %s failed: %s", r.Host, reportReason(r)))
	case StepImporting:
		if r.OK {
			return e.onImported(ctx, m, r)
		}
		return e.rollback(ctx, m, fmt.Sprintf("Migration import on host %s failed: %s", r.Host, reportReason(r)))
	case StepConfirming:
		if r.OK {
			return e.finishConfirm(ctx, m)
		}
		// Sent again by the next periodic pass, until the deadline.
		e.forget(m.ID)
		return nil
	case StepRevertTarget:
		// A failed cleanup leaves a stopped copy the agent's
		// reconciliation reports as an orphan; the revert goes on.
		return e.enterRevertSource(ctx, m)
	case StepRevertSource:
		if r.OK {
			return e.completeRevert(ctx, m, r)
		}
		return e.failOnSource(ctx, m, fmt.Sprintf("Restoring the instance on host %s failed: %s", r.Host, reportReason(r)))
	}
	return nil
}

// late handles a report of a step the migration has left: a duplicate or
// a stale one changes nothing. A late cleanup is recorded as an event
// (it is real work done); a push that completed after a rollback has its
// image deleted.
func (e *Engine) late(ctx context.Context, m *store.Migration, r protocol.MigrationReport) error {
	log := e.logFor(m).With("report_step", r.Step, "report_host", r.Host, "kind", r.Kind, "ok", r.OK)
	switch {
	case r.Kind == protocol.KindMigrationCleanup:
		e.recordEvent(ctx, m, store.Event{Name: r.Event, Host: r.Host, Start: r.Started, Finish: r.Finished, OK: r.OK, Detail: r.Error, Message: r.ErrorMessage})
		if r.OK {
			log.Info("late migration cleanup done")
		} else {
			log.Error("late migration cleanup failed; the host keeps a stopped copy", "error", r.Error)
		}
	case r.Kind == protocol.KindMigrationPrecopy && r.OK && Step(m.Step) == StepDone:
		// The migration's tag step is over: this push came after it.
		if e.reg != nil {
			if err := e.reg.DeleteImage(ctx, PreRef(m), r.Digest); err != nil {
				log.Error("delete pre-copy image of a push that finished after the migration ended", "error", err)
			}
		}
	case r.Kind == protocol.KindMigrationExport && r.OK && r.Digest != "" && r.Digest != m.SnapshotDigest:
		if Step(m.Step) == StepDone {
			if e.reg != nil {
				if err := e.reg.DeleteImage(ctx, m.SnapshotRef, r.Digest); err != nil {
					log.Error("delete image of a push that finished after the migration ended", "error", err)
				}
			}
			return nil
		}
		// Still going: record it, the tag step deletes it.
		err := e.st.WithContext(ctx).Model(&store.Migration{}).Where("id = ? AND snapshot_digest = ''", m.ID).
			Update("snapshot_digest", r.Digest).Error
		if err != nil {
			return fmt.Errorf("record late push of migration %s: %w", m.UUID, err)
		}
		log.Info("push finished after the export step ended; its image will be deleted", "digest", r.Digest)
	default:
		log.Debug("stale or duplicate migration report ignored")
	}
	return nil
}

// OnProgress records how far a push or pull got.
func (e *Engine) OnProgress(ctx context.Context, p protocol.MigrationProgress) error {
	col := "pushed_bytes"
	val := maxExpr(col, p.Bytes)
	where := "id = ? AND step = ? AND source_compute = ?"
	switch Step(p.Step) {
	case StepPrecopy:
	case StepExporting:
		// On top of the pre-copy's bytes (image_bytes, 0 without one),
		// until the export's report is recorded: that adds the export's
		// total to image_bytes, and a progress handled after it (the two
		// are handled concurrently) would count its bytes twice.
		val = gorm.Expr("CASE WHEN pushed_bytes > image_bytes + ? THEN pushed_bytes ELSE image_bytes + ? END", p.Bytes, p.Bytes)
		where += " AND snapshot_digest = ''"
	case StepPrepull, StepImporting:
		col = "pulled_bytes"
		where = "id = ? AND step = ? AND dest_compute = ?"
		val = maxExpr(col, p.Bytes)
	default:
		return nil
	}
	err := e.st.WithContext(ctx).Model(&store.Migration{}).
		Where(where, p.MigrationID, p.Step, p.Host).
		// Never backwards: progress messages may arrive out of order, or
		// after the step's report.
		Updates(map[string]any{col: val, "updated_at": e.now()}).Error
	if err != nil {
		return fmt.Errorf("record progress of migration %d: %w", p.MigrationID, err)
	}
	return nil
}

// Check answers an agent about to do migration work: proceed only while
// the migration is at that work's step and the asking host is the one
// that step targets. Cleanups are the exception: a rollback does not wait
// for the target's cleanup, nor a confirm past its deadline for the
// source's, nor anything for a deleted instance, so those proceed
// whenever their host gets to them, unless a newer migration of the
// instance may have put something there since.
func (e *Engine) Check(ctx context.Context, q protocol.MigrationCheck) (protocol.MigrationCheckReply, error) {
	no := func(reason string) (protocol.MigrationCheckReply, error) {
		return protocol.MigrationCheckReply{Proceed: false, Reason: reason}, nil
	}
	m, err := e.load(ctx, q.MigrationID)
	if errors.Is(err, store.ErrNotFound) {
		return no("unknown migration")
	}
	if err != nil {
		return protocol.MigrationCheckReply{}, err
	}
	inst, err := e.instance(ctx, m)
	if err != nil {
		return protocol.MigrationCheckReply{}, err
	}
	step, cur := Step(q.Step), Step(m.Step)
	reply := func(ok bool, reason string) (protocol.MigrationCheckReply, error) {
		e.logFor(m).Debug("migration check", "check_step", q.Step, "check_host", q.Host, "proceed", ok, "reason", reason)
		return protocol.MigrationCheckReply{Proceed: ok, Reason: reason}, nil
	}
	if step.Work() == protocol.KindMigrationCleanup {
		if q.Host != m.SourceCompute && q.Host != m.DestCompute {
			return reply(false, "host takes no part in this migration")
		}
		if inst.DeletedAt != nil {
			return reply(true, "instance deleted")
		}
	}
	if step == cur {
		if step == StepAbandoned || q.Host != step.HostOf(m) {
			return reply(false, "step targets another host")
		}
		if d := e.deadline(m); step.transfer() && !d.IsZero() && e.now().After(d) {
			return reply(false, "step deadline passed")
		}
		if (step == StepExporting || step == StepPrecopy || step == StepPrepull) && inst.TaskState != lifecycle.ResizeMigrating {
			return reply(false, "export already reported")
		}
		return reply(true, "")
	}
	// A cleanup the migration no longer waits for.
	var lateOK bool
	switch step {
	case StepRevertTarget:
		lateOK = q.Host == m.DestCompute && m.Status != lifecycle.MigrationConfirmed &&
			slices.Contains([]Step{StepRevertSource, StepDeleteTag, StepDone}, cur)
	case StepConfirming:
		lateOK = q.Host == m.SourceCompute && m.Status == lifecycle.MigrationConfirmed
	}
	if !lateOK {
		return reply(false, fmt.Sprintf("migration is at step %s", cur))
	}
	newer, err := e.newerMigration(ctx, m)
	if err != nil {
		return protocol.MigrationCheckReply{}, err
	}
	if newer {
		return reply(false, "a newer migration of the instance may use this host")
	}
	return reply(true, "late cleanup")
}

// maxExpr sets col to the larger of its value and n.
func maxExpr(col string, n int64) clause.Expr {
	return gorm.Expr("CASE WHEN "+col+" > ? THEN "+col+" ELSE ? END", n, n)
}

func (e *Engine) newerMigration(ctx context.Context, m *store.Migration) (bool, error) {
	var n int64
	err := e.st.WithContext(ctx).Model(&store.Migration{}).Where("instance_id = ? AND id > ?", m.InstanceID, m.ID).Count(&n).Error
	if err != nil {
		return false, fmt.Errorf("newer migrations of %s: %w", m.InstanceID, err)
	}
	return n > 0, nil
}

// reportReason is why a migration step failed, for the migration's error
// message and the server's fault: the agent's safe message when its error
// has one, else the error (the whole error is the step's event traceback).
func reportReason(r protocol.MigrationReport) string {
	if r.ErrorMessage != "" {
		return r.ErrorMessage
	}
	return r.Error
}
