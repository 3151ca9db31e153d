package compute

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// revertOverQuota asks to revert server id's resize on a quota that has
// no room for the old flavor: Nova's 403, nothing changed.
func (f *fixture) revertOverQuota(id, wantMsg string) {
	f.t.Helper()
	before := f.instance(id)
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"revertResize":null}`)
	expectFault(f.t, resp, body, 403, "forbidden")
	if msg := anyFaultMessage(body); !strings.HasPrefix(msg, wantMsg) {
		f.t.Errorf("over-quota revert says %q, want %q", msg, wantMsg)
	}
	after := f.instance(id)
	if after.VMState != before.VMState || after.TaskState != before.TaskState || after.VCPUs != before.VCPUs || after.OldFlavorID != before.OldFlavorID {
		f.t.Errorf("refused revert changed the server: %s/%q vcpus %d old %q, was %s/%q vcpus %d old %q",
			after.VMState, after.TaskState, after.VCPUs, after.OldFlavorID, before.VMState, before.TaskState, before.VCPUs, before.OldFlavorID)
	}
}

// TestRevertOfShrinkChecksQuota: a live resize from 4 vCPUs down to 1,
// then the project's cores used up elsewhere: reverting (which gives the
// server its 4 vCPUs back) is refused with Nova's 403, as Nova's
// revert_resize checks an upsize; with room again it is accepted.
func TestRevertOfShrinkChecksQuota(t *testing.T) {
	f := newFixture(t)
	if err := f.st.DB.Create(&store.Flavor{FlavorID: "4c", Name: "m1.quad", VCPUs: 4, MemoryMB: 128, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error; err != nil {
		t.Fatal(err)
	}
	id := f.create("demo", "big")
	f.placeActive(id, 64)
	action := "/v2.1/servers/" + id + "/action"
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	resize := func(flavor string) {
		t.Helper()
		resp, body := f.do("POST", action, "demo", `{"resize":{"flavorRef":"`+flavor+`"}}`)
		if resp.StatusCode != 202 {
			t.Fatalf("resize to %s = %d %v", flavor, resp.StatusCode, body)
		}
		f.report(cond, protocol.InstanceReport{RequestID: resp.Header.Get("x-compute-request-id"), InstanceID: id, Host: "h1",
			Action: lifecycle.ActResize, OK: true, PowerState: 1, Event: "compute_resize_instance", Started: time.Now(), Finished: time.Now()})
	}
	resize("4c")
	if resp, body := f.do("POST", action, "demo", `{"confirmResize":null}`); resp.StatusCode != 204 {
		t.Fatalf("confirm = %d %v", resp.StatusCode, body)
	}
	resize("1") // 4 vCPUs down to 1: VERIFY_RESIZE, the old flavor kept
	if inst := f.instance(id); inst.VMState != "resized" || inst.VCPUs != 1 || inst.OldVCPUs != 4 {
		t.Fatalf("after the shrink: %s vcpus %d old %d", inst.VMState, inst.VCPUs, inst.OldVCPUs)
	}
	other := f.create("demo", "other") // 1 more core: 2 used
	f.setQuota("p-demo", `{"cores":4}`)
	sent := len(f.bus.Sent(bus.ComputeQueue("h1")))
	f.revertOverQuota(id, "Quota exceeded for cores: Requested 3, but already used 2 of 4 cores")
	if c := f.claim(id); c.VCPUs != 1 {
		t.Errorf("claim after a refused revert = %+v, want 1 vCPU", c)
	}
	if n := len(f.bus.Sent(bus.ComputeQueue("h1"))); n != sent {
		t.Errorf("a refused revert was cast (%d messages, was %d)", n, sent)
	}
	// With room (the other server gone) the revert goes ahead.
	if resp, body := f.do("DELETE", "/v2.1/servers/"+other, "demo", ""); resp.StatusCode != 204 {
		t.Fatalf("delete other = %d %v", resp.StatusCode, body)
	}
	f.setQuota("p-demo", `{"cores":5}`)
	if resp, body := f.do("POST", action, "demo", `{"revertResize":null}`); resp.StatusCode != 202 {
		t.Fatalf("revert with room = %d %v", resp.StatusCode, body)
	}
	if c := f.claim(id); c.VCPUs != 4 {
		t.Errorf("claim after revert = %+v, want 4 vCPUs", c)
	}
}

// TestColdRevertOfShrinkChecksQuota: the same for a resize done as a
// cold migration (package migrate's revert): refused with Nova's 403 when
// the old flavor no longer fits the quota, the migration still waiting.
func TestColdRevertOfShrinkChecksQuota(t *testing.T) {
	f := newFixture(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	big := store.Flavor{FlavorID: "4c", Name: "m1.quad", VCPUs: 4, MemoryMB: 1024, RootGB: 1, IsPublic: true, RxtxFactor: 1}
	must(f.st.DB.Create(&big).Error)
	id := f.create("demo", "cold")
	f.placeActive(id, 64)
	inst := f.instance(id)
	// As a finished cold resize from m1.quad down to m1.tiny leaves it.
	must(f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{
		"vm_state": "resized", "resize_from_state": "active", "old_flavor_row_id": big.ID, "old_flavor_id": big.FlavorID,
		"old_flavor_name": big.Name, "old_vcpus": big.VCPUs, "old_memory_mb": big.MemoryMB, "old_root_gb": big.RootGB,
		"old_extra_specs": "{}"}).Error)
	mig := store.Migration{UUID: "m-cold", InstanceID: id, MigrationType: "resize", Status: lifecycle.MigrationFinished,
		SourceCompute: "h0", DestCompute: "h1", OldFlavorID: big.ID, NewFlavorID: inst.FlavorRowID,
		Step: string(migrate.StepFinished), SourceVMState: "active", CreatedAt: time.Now(), UpdatedAt: time.Now()}
	must(f.st.DB.Create(&mig).Error)
	f.setQuota("p-demo", `{"ram":512}`)
	f.revertOverQuota(id, "Quota exceeded for ram: Requested 896, but already used 128 of 512 ram")
	var m store.Migration
	must(f.st.DB.First(&m, mig.ID).Error)
	if m.Step != string(migrate.StepFinished) || m.Status != lifecycle.MigrationFinished {
		t.Errorf("migration after a refused revert: step %s status %s, want it still waiting", m.Step, m.Status)
	}
	f.setQuota("p-demo", `{"ram":1024}`)
	if resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"revertResize":null}`); resp.StatusCode != 202 {
		t.Fatalf("revert with room = %d %v", resp.StatusCode, body)
	}
	must(f.st.DB.First(&m, mig.ID).Error)
	if m.Step != string(migrate.StepRevertTarget) {
		t.Errorf("migration after the revert: step %s, want %s", m.Step, migrate.StepRevertTarget)
	}
}
