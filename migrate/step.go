package migrate

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Step is where a cold migration is; it is persisted on
// store.Migration.Step before the step's work is published.
type Step string

const (
	// StepScheduling: pick and claim the target (status pre-migrating,
	// task resize_prep). The engine does it itself, no agent involved.
	StepScheduling Step = "scheduling"
	// StepPrecopy: the source commits the server while it still runs
	// and pushes that to the pre-copy tag (migrating, resize_migrating).
	// A warm-up only: the export's final pass makes the image exact.
	StepPrecopy Step = "precopy"
	// StepPrepull: the target pulls the pre-copy, so the import fetches
	// only the export's last layer (migrating, resize_migrating).
	StepPrepull Step = "prepull"
	// StepExporting: the source stops, commits and pushes (migrating,
	// resize_migrating).
	StepExporting Step = "exporting"
	// StepImporting: the target pulls, creates and starts (post-migrating,
	// resize_finish); the ports are bound to the target.
	StepImporting Step = "importing"
	// StepFinished: the server runs on the target and waits in
	// VERIFY_RESIZE for a confirm or a revert (finished).
	StepFinished Step = "finished"
	// StepConfirming: the source's stopped copy is removed (confirming).
	StepConfirming Step = "confirming"
	// StepRevertTarget: the target's copy is removed (a user's revert
	// waits for it; a rollback after a failure does not).
	StepRevertTarget Step = "revert_target"
	// StepRevertSource: the ports go back to the source, which restarts
	// the server.
	StepRevertSource Step = "revert_source"
	// StepAbandoned: the server was deleted meanwhile; both hosts are
	// told to remove whatever they still have.
	StepAbandoned Step = "abandoned"
	// StepDeleteTag: the outcome is recorded (status confirmed, reverted
	// or error); only the registry tag is left to delete, retried until
	// the registry takes it.
	StepDeleteTag Step = "delete_tag"
	// StepDone: nothing left to do.
	StepDone Step = "done"
)

// transitions is the step machine: every move of a migration is checked
// against it (move), nowhere else.
var transitions = map[Step][]Step{
	StepScheduling:   {StepPrecopy, StepExporting, StepDone, StepAbandoned},
	StepPrecopy:      {StepPrepull, StepExporting, StepRevertTarget, StepAbandoned},
	StepPrepull:      {StepExporting, StepRevertTarget, StepAbandoned},
	StepExporting:    {StepImporting, StepRevertTarget, StepAbandoned},
	StepImporting:    {StepFinished, StepRevertTarget, StepAbandoned},
	StepFinished:     {StepConfirming, StepRevertTarget, StepAbandoned},
	StepConfirming:   {StepDeleteTag, StepAbandoned},
	StepRevertTarget: {StepRevertSource, StepAbandoned},
	StepRevertSource: {StepDeleteTag, StepAbandoned},
	StepAbandoned:    {StepDeleteTag},
	StepDeleteTag:    {StepDone},
}

// CanMoveTo reports whether the step machine allows s → to.
func (s Step) CanMoveTo(to Step) bool { return slices.Contains(transitions[s], to) }

// Settled reports whether the migration's outcome is recorded (only
// housekeeping may be left): the instance is free for other migrations.
func (s Step) Settled() bool { return s == StepDeleteTag || s == StepDone }

// Work is what an agent does for step s (a message kind on its compute
// queue), "" for steps no agent works on.
func (s Step) Work() string {
	switch s {
	case StepPrecopy:
		return protocol.KindMigrationPrecopy
	case StepPrepull:
		return protocol.KindMigrationPrepull
	case StepExporting:
		return protocol.KindMigrationExport
	case StepImporting:
		return protocol.KindMigrationImport
	case StepConfirming, StepRevertTarget, StepAbandoned:
		return protocol.KindMigrationCleanup
	case StepRevertSource:
		return protocol.KindMigrationRestore
	}
	return ""
}

// HostOf returns the host step s's work goes to ("" for none; the
// abandoned step's cleanup goes to both hosts).
func (s Step) HostOf(m *store.Migration) string {
	switch s {
	case StepPrecopy, StepExporting, StepConfirming, StepRevertSource:
		return m.SourceCompute
	case StepPrepull, StepImporting, StepRevertTarget:
		return m.DestCompute
	}
	return ""
}

// transfer reports whether s moves the server's data (a pre-copy, the
// export, or their pulls): a failure or a timeout there rolls back.
func (s Step) transfer() bool {
	switch s {
	case StepPrecopy, StepPrepull, StepExporting, StepImporting:
		return true
	}
	return false
}

// Terminal migration statuses: the user-visible outcome is final.
var terminalStatuses = []lifecycle.MigrationStatus{lifecycle.MigrationConfirmed, lifecycle.MigrationReverted, lifecycle.MigrationError}

// ErrBadTransition is a move the step machine does not allow: a bug.
var ErrBadTransition = errors.New("migration step transition not allowed")

// errMoved: the migration left the step the caller saw (a concurrent
// handler moved it first); the caller's work is someone else's now.
var errMoved = errors.New("the migration left that step meanwhile")

// move persists m's transition to step to (with fields, typically its
// status), guarded on m still being at its step, in the caller's
// transaction tx, and reloads m. errMoved when another handler moved it.
func move(tx *gorm.DB, m *store.Migration, to Step, now time.Time, fields map[string]any) error {
	from := Step(m.Step)
	if !from.CanMoveTo(to) {
		return fmt.Errorf("migration %s: %s → %s: %w", m.UUID, from, to, ErrBadTransition)
	}
	upd := map[string]any{"step": string(to), "step_started_at": now, "updated_at": now}
	maps.Copy(upd, fields)
	res := tx.Model(&store.Migration{}).Where("id = ? AND step = ?", m.ID, string(from)).Updates(upd)
	if res.Error != nil {
		return fmt.Errorf("migration %s: %s → %s: %w", m.UUID, from, to, res.Error)
	}
	if res.RowsAffected == 0 {
		return errMoved
	}
	if err := tx.Where("id = ?", m.ID).First(m).Error; err != nil {
		return fmt.Errorf("reload migration %s: %w", m.UUID, err)
	}
	return nil
}
