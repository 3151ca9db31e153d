package conductor

import (
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// resizing is an instance in the middle of a live resize on h1 from
// m1.tiny (1 vCPU) to m1.big (2 vCPUs), from ACTIVE, with its resize
// migration record.
func resizing(t *testing.T, st *store.Store, task lifecycle.TaskState, vm lifecycle.VMState) store.Instance {
	t.Helper()
	inst := addInstance(t, st, state(vm, task), onHost("h1"), power(lifecycle.Running), func(i *store.Instance) {
		i.OldFlavorID, i.OldFlavorName, i.OldVCPUs, i.OldMemoryMB, i.OldRootGB = "f1", "m1.tiny", 1, 512, 1
		i.FlavorID, i.FlavorName, i.VCPUs, i.MemoryMB, i.RootGB = "f2", "m1.big", 2, 512, 1
		i.ResizeFromState = lifecycle.Active
	})
	addClaim(t, st, inst.ID, "h1")
	if err := st.DB.Create(&store.Migration{UUID: "mig-" + inst.ID, InstanceID: inst.ID, MigrationType: "resize",
		Status: lifecycle.MigrationPreMigrating, SourceCompute: "h1", DestCompute: "h1", CreatedAt: testNow, UpdatedAt: testNow}).Error; err != nil {
		t.Fatal(err)
	}
	return inst
}

func resizeStatus(t *testing.T, st *store.Store, id string) lifecycle.MigrationStatus {
	t.Helper()
	var m store.Migration
	if err := st.DB.Where("instance_id = ?", id).First(&m).Error; err != nil {
		t.Fatal(err)
	}
	return m.Status
}

// TestResizeFailureSaysWhy: an agent's failed resize leaves the server
// ACTIVE on its old flavor with a fault naming the cause (the agent's
// safe message; the whole error as the admins' details), the action's
// event "Error" with the error as traceback, and the migration in error.
// A failed revert keeps the new flavor, with its own fault.
func TestResizeFailureSaysWhy(t *testing.T) {
	st := openSQLite(t)
	addHost(t, st, "h1")
	c := newTestConductor(st, bus.NewMem(), 3)

	inst := resizing(t, st, lifecycle.ResizePrep, lifecycle.Active)
	addAction(t, st, inst.ID, "resize", "req-rs")
	r := report(inst, "h1", lifecycle.ActResize, "req-rs", false)
	r.Error = "resize instance " + inst.ID + ": docker resize: dockerd unix:///x: not supported by this driver"
	r.ErrorMessage = "the server uses more memory than the new flavor has"
	r.PowerState = int(lifecycle.Running)
	mustSend(t, c, protocol.KindInstanceReport, r)

	got := loadInst(t, st, inst.ID)
	if got.VMState != lifecycle.Active || got.TaskState != lifecycle.NoTask || got.FlavorID != "f1" || got.VCPUs != 1 || got.OldFlavorID != "" {
		t.Errorf("after a failed resize: %s/%q flavor %s (%d vCPUs), old %q; want active, no task, the old flavor",
			got.VMState, got.TaskState, got.FlavorID, got.VCPUs, got.OldFlavorID)
	}
	wantMsg := "Resize error: the server uses more memory than the new flavor has; the server keeps its old flavor."
	if got.FaultCode != 500 || got.FaultMessage != wantMsg || got.FaultDetails != r.Error || got.FaultAt == nil || !got.FaultAt.Equal(testNow) {
		t.Errorf("fault = %d %q %q %v\nwant 500 %q, the agent's error as details, at %v", got.FaultCode, got.FaultMessage, got.FaultDetails, got.FaultAt, wantMsg, testNow)
	}
	if s := resizeStatus(t, st, inst.ID); s != lifecycle.MigrationError {
		t.Errorf("migration status %s, want error", s)
	}
	evs := eventsOf(t, st, inst.ID, "req-rs")
	if len(evs) != 1 || evs[0].Result != "Error" || evs[0].Traceback != r.Error || evs[0].Event != r.Event || evs[0].Details != r.ErrorMessage {
		t.Errorf("events %+v, want one %s Error with the agent's error as traceback", evs, r.Event)
	}

	// Without a safe message the fault still says what happened.
	inst2 := resizing(t, st, lifecycle.ResizePrep, lifecycle.Active)
	r2 := report(inst2, "h1", lifecycle.ActResize, "req-rs2", false)
	mustSend(t, c, protocol.KindInstanceReport, r2)
	if got := loadInst(t, st, inst2.ID); !strings.HasPrefix(got.FaultMessage, "Resize error: ") || got.FaultDetails != r2.Error {
		t.Errorf("fault without a safe message: %q %q", got.FaultMessage, got.FaultDetails)
	}
	addAction(t, st, inst2.ID, "resize", "req-rs2")
	mustSend(t, c, protocol.KindInstanceReport, r2) // the event of a redelivery (the first had no action to go with)
	if evs := eventsOf(t, st, inst2.ID, "req-rs2"); len(evs) != 1 || evs[0].Details != store.GenericEventDetails {
		t.Errorf("event of a failure without a safe message: %+v, want the generic details", evs)
	}

	// A failed revert: still RESIZED on the new flavor, with a fault.
	inst3 := resizing(t, st, lifecycle.ResizeReverting, lifecycle.Resized)
	r3 := report(inst3, "h1", lifecycle.ActRevertResize, "req-rv", false)
	r3.ErrorMessage = "the server uses more memory than the new flavor has"
	mustSend(t, c, protocol.KindInstanceReport, r3)
	got = loadInst(t, st, inst3.ID)
	if got.VMState != lifecycle.Resized || got.TaskState != lifecycle.NoTask || got.FlavorID != "f2" ||
		got.FaultMessage != "Revert of the resize failed: the server uses more memory than the new flavor has; the server keeps its new flavor." {
		t.Errorf("after a failed revert: %s/%q flavor %s fault %q", got.VMState, got.TaskState, got.FlavorID, got.FaultMessage)
	}
}
