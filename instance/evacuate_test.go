package instance

import (
	"context"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// evacuee is an active server on h1 holding its claim there, h1 and h2
// compute hosts.
func evacuee(t *testing.T, st *store.Store, id string, vm lifecycle.VMState) *store.Instance {
	t.Helper()
	now := time.Now().UTC()
	for _, h := range []string{"h1", "h2"} {
		var n int64
		st.DB.Model(&store.Service{}).Where("host = ?", h).Count(&n)
		if n == 0 {
			if err := st.DB.Create(&store.Service{UUID: "svc-" + h, Host: h, Binary: store.ComputeBinary, LastHeartbeat: &now,
				VCPUs: 8, MemoryMB: 8192, DiskGB: 100, CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	inst := newInstance(t, st, id, func(i *store.Instance) { i.VMState, i.TaskState, i.Host = vm, lifecycle.NoTask, "h1" })
	if err := st.ClaimOnHost(context.Background(), "h1", id, store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}, nil); err != nil {
		t.Fatal(err)
	}
	return inst
}

func claimHosts(t *testing.T, st *store.Store, id string) []string {
	t.Helper()
	var hosts []string
	if err := st.DB.Model(&store.Claim{}).Where("instance_id = ?", id).Order("host").Pluck("host", &hosts).Error; err != nil {
		t.Fatal(err)
	}
	return hosts
}

// TestEvacuationTransitions walks the evacuation's state machine: begin
// (rebuilding on the dead host, migration accepted), place (the new
// host's claim only, rebuild_spawning there, migration pre-migrating),
// done (active, or stopped when asked, migration done, listed for the dead
// host's cleanup, then completed); a failed build puts it in ERROR back on
// the dead host without the new host's claim; no host leaves it as it was
// with a fault. Stale reports change nothing.
func TestEvacuationTransitions(t *testing.T) {
	st := openSQLite(t)
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)

	inst := evacuee(t, st, "e1", lifecycle.Active)
	m := store.Migration{RequestID: "req-1"}
	if err := BeginEvacuate(st.DB, inst, &m, false, at, nil); err != nil {
		t.Fatal(err)
	}
	if got := reload(t, st, "e1"); got.TaskState != lifecycle.Rebuilding || got.Host != "h1" || lifecycle.Status(got.VMState, got.TaskState) != "REBUILD" {
		t.Errorf("after begin: %s/%s on %s", got.VMState, got.TaskState, got.Host)
	}
	if m.MigrationType != MigrationEvacuation || m.Status != EvacAccepted || m.SourceCompute != "h1" || m.SourceVMState != lifecycle.Active || m.UUID == "" {
		t.Errorf("migration %+v", m)
	}
	// A build report before placement changes nothing.
	if ok, err := Evacuated(st.DB, "e1", "h2", lifecycle.Running, at); err != nil || ok {
		t.Errorf("Evacuated before placement = %v, %v", ok, err)
	}
	if err := st.ClaimOnHost(context.Background(), "h2", "e1", store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}, nil); err != nil {
		t.Fatal(err)
	}
	if ok, err := PlaceEvacuation(st.DB, "e1", &m, "h2", "nova", at); err != nil || !ok {
		t.Fatalf("PlaceEvacuation = %v, %v", ok, err)
	}
	got := reload(t, st, "e1")
	if got.TaskState != lifecycle.RebuildSpawning || got.Host != "h2" || lifecycle.Status(got.VMState, got.TaskState) != "REBUILD" {
		t.Errorf("after place: %s/%s on %s", got.VMState, got.TaskState, got.Host)
	}
	if hosts := claimHosts(t, st, "e1"); len(hosts) != 1 || hosts[0] != "h2" {
		t.Errorf("claims after place: %v, want [h2]", hosts)
	}
	cur, _ := Evacuation(st.DB, "e1")
	if cur == nil || cur.Status != EvacPlaced || cur.DestCompute != "h2" {
		t.Errorf("migration after place: %+v", cur)
	}
	// A report from another host is stale.
	if ok, _ := Evacuated(st.DB, "e1", "h1", lifecycle.Running, at); ok {
		t.Error("a report from the dead host was applied")
	}
	if ok, err := Evacuated(st.DB, "e1", "h2", lifecycle.Running, at); err != nil || !ok {
		t.Fatalf("Evacuated = %v, %v", ok, err)
	}
	if got := reload(t, st, "e1"); got.VMState != lifecycle.Active || got.TaskState != lifecycle.NoTask || got.Host != "h2" {
		t.Errorf("after done: %s/%s on %s", got.VMState, got.TaskState, got.Host)
	}
	if ids, err := EvacuatedFrom(st.DB, "h1"); err != nil || len(ids) != 1 || ids[0] != "e1" {
		t.Errorf("EvacuatedFrom(h1) = %v, %v", ids, err)
	}
	if err := EvacuationCleaned(st.DB, "h1", []string{"e1"}, at); err != nil {
		t.Fatal(err)
	}
	if ids, _ := EvacuatedFrom(st.DB, "h1"); len(ids) != 0 {
		t.Errorf("after cleanup EvacuatedFrom(h1) = %v", ids)
	}
	var done store.Migration
	st.DB.Where("id = ?", m.ID).First(&done)
	if done.Status != EvacCompleted {
		t.Errorf("migration after cleanup: %s, want completed", done.Status)
	}

	// A failed build: ERROR back on the dead host, the new host's claim gone.
	inst = evacuee(t, st, "e2", lifecycle.Stopped)
	m2 := store.Migration{}
	if err := BeginEvacuate(st.DB, inst, &m2, false, at, nil); err != nil {
		t.Fatal(err)
	}
	if m2.SourceVMState != lifecycle.Stopped {
		t.Errorf("a stopped server's evacuation ends %s, want stopped", m2.SourceVMState)
	}
	if err := st.ClaimOnHost(context.Background(), "h2", "e2", store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}, nil); err != nil {
		t.Fatal(err)
	}
	if ok, err := PlaceEvacuation(st.DB, "e2", &m2, "h2", "nova", at); err != nil || !ok {
		t.Fatalf("PlaceEvacuation = %v, %v", ok, err)
	}
	if ok, err := EvacuationFailed(st.DB, "e2", "h2", Fault{Code: 500, Message: "Evacuation failed: pull", At: at}); err != nil || !ok {
		t.Fatalf("EvacuationFailed = %v, %v", ok, err)
	}
	got = reload(t, st, "e2")
	if got.VMState != lifecycle.Error || got.TaskState != lifecycle.NoTask || got.Host != "h1" || got.FaultMessage != "Evacuation failed: pull" {
		t.Errorf("after a failed build: %s/%s on %s fault %q", got.VMState, got.TaskState, got.Host, got.FaultMessage)
	}
	if hosts := claimHosts(t, st, "e2"); len(hosts) != 0 {
		t.Errorf("claims after a failed build: %v, want none", hosts)
	}
	var failed store.Migration
	st.DB.Where("id = ?", m2.ID).First(&failed)
	if failed.Status != EvacFailed || failed.ErrorMessage != "Evacuation failed: pull" {
		t.Errorf("migration after a failed build: %s %q", failed.Status, failed.ErrorMessage)
	}

	// No host: as it was, with the fault; 2.95's stop recorded.
	inst = evacuee(t, st, "e3", lifecycle.Active)
	m3 := store.Migration{}
	if err := BeginEvacuate(st.DB, inst, &m3, true, at, nil); err != nil {
		t.Fatal(err)
	}
	if m3.SourceVMState != lifecycle.Stopped {
		t.Errorf("a 2.95 evacuation ends %s, want stopped", m3.SourceVMState)
	}
	if ok, err := EvacuationUnplaced(st.DB, "e3", &m3, Fault{Code: 500, Message: "Evacuation failed: No valid host was found.", At: at}); err != nil || !ok {
		t.Fatalf("EvacuationUnplaced = %v, %v", ok, err)
	}
	got = reload(t, st, "e3")
	if got.VMState != lifecycle.Active || got.TaskState != lifecycle.NoTask || got.Host != "h1" || got.FaultMessage == "" {
		t.Errorf("after no host: %s/%s on %s fault %q", got.VMState, got.TaskState, got.Host, got.FaultMessage)
	}
	var unplaced store.Migration
	st.DB.Where("id = ?", m3.ID).First(&unplaced)
	if unplaced.Status != EvacError {
		t.Errorf("migration after no host: %s, want error", unplaced.Status)
	}
}
