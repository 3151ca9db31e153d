package migrate

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// TestStepMachine: every step is reachable from scheduling and leads to
// done; each agent step names its work and host.
func TestStepMachine(t *testing.T) {
	reach := map[Step]bool{StepScheduling: true}
	for changed := true; changed; {
		changed = false
		for from, tos := range transitions {
			for _, to := range tos {
				if reach[from] && !reach[to] {
					reach[to], changed = true, true
				}
			}
		}
	}
	for _, s := range []Step{StepPrecopy, StepPrepull, StepExporting, StepImporting, StepFinished, StepConfirming, StepRevertTarget,
		StepRevertSource, StepAbandoned, StepDeleteTag, StepDone} {
		if !reach[s] {
			t.Errorf("step %s unreachable", s)
		}
		if s != StepDone && len(transitions[s]) == 0 {
			t.Errorf("step %s leads nowhere", s)
		}
	}
	if len(transitions[StepDone]) != 0 {
		t.Error("done is not final")
	}
	if StepFinished.CanMoveTo(StepExporting) || StepPrepull.CanMoveTo(StepImporting) || !StepPrecopy.CanMoveTo(StepRevertTarget) ||
		!StepPrepull.CanMoveTo(StepRevertTarget) || StepExporting.CanMoveTo(StepPrecopy) || StepDeleteTag.CanMoveTo(StepAbandoned) || !StepImporting.CanMoveTo(StepRevertTarget) {
		t.Error("CanMoveTo disagrees with the table")
	}
	m := &store.Migration{SourceCompute: "src", DestCompute: "dst"}
	for s, want := range map[Step][2]string{
		StepPrecopy:      {protocol.KindMigrationPrecopy, "src"},
		StepPrepull:      {protocol.KindMigrationPrepull, "dst"},
		StepExporting:    {protocol.KindMigrationExport, "src"},
		StepImporting:    {protocol.KindMigrationImport, "dst"},
		StepConfirming:   {protocol.KindMigrationCleanup, "src"},
		StepRevertTarget: {protocol.KindMigrationCleanup, "dst"},
		StepRevertSource: {protocol.KindMigrationRestore, "src"},
		StepFinished:     {"", ""},
	} {
		if s.Work() != want[0] || s.HostOf(m) != want[1] {
			t.Errorf("%s: work %q on %q, want %q on %q", s, s.Work(), s.HostOf(m), want[0], want[1])
		}
	}
}

// TestMoveGuarded: a move is persisted only from the step the caller saw
// and only along the table.
func TestMoveGuarded(t *testing.T) {
	st := storetest.SQLite(t)
	m := store.Migration{UUID: "m1", InstanceID: "i1", Step: string(StepExporting), Status: lifecycle.MigrationMigrating}
	if err := st.DB.Create(&m).Error; err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := move(st.DB, &m, StepDone, at, nil); !errors.Is(err, ErrBadTransition) {
		t.Errorf("exporting → done: %v, want ErrBadTransition", err)
	}
	stale := m
	if err := move(st.DB, &m, StepImporting, at, map[string]any{"status": lifecycle.MigrationPostMigrating}); err != nil {
		t.Fatal(err)
	}
	if m.Step != string(StepImporting) || m.Status != lifecycle.MigrationPostMigrating || m.StepStartedAt == nil || !m.StepStartedAt.Equal(at) {
		t.Errorf("after move: %+v", m)
	}
	if err := move(st.DB, &stale, StepRevertTarget, at, nil); !errors.Is(err, errMoved) {
		t.Errorf("move from a stale copy: %v, want errMoved", err)
	}
	if got, _ := Active(context.Background(), st.DB, "i1"); got == nil || got.ID != m.ID {
		t.Errorf("Active = %+v", got)
	}
}
