package compute

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// placeActive puts server id on host h1 (vCPUs of capacity), active,
// with its claim, as a finished build leaves it.
func (f *fixture) placeActive(id string, vcpus int) {
	f.t.Helper()
	now := time.Now().UTC()
	var n int64
	f.st.DB.Model(&store.Service{}).Where("host = ?", "h1").Count(&n)
	if n == 0 {
		if err := f.st.DB.Create(&store.Service{UUID: "svc-h1", Host: "h1", Binary: store.ComputeBinary, Zone: "nova",
			LastHeartbeat: &now, VCPUs: vcpus, MemoryMB: 4096, DiskGB: 100,
			CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}).Error; err != nil {
			f.t.Fatal(err)
		}
	}
	var inst store.Instance
	f.st.DB.Where("id = ?", id).First(&inst)
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{
		"host": "h1", "vm_state": "active", "task_state": "", "power_state": 1}).Error; err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.ClaimOnHost(context.Background(), "h1", id,
		store.Resources{VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.RootGB}, nil); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) instance(id string) store.Instance {
	f.t.Helper()
	var inst store.Instance
	if err := f.st.DB.Where("id = ?", id).First(&inst).Error; err != nil {
		f.t.Fatal(err)
	}
	return inst
}

func (f *fixture) claim(id string) store.Claim {
	f.t.Helper()
	var c store.Claim
	if err := f.st.DB.Where("instance_id = ?", id).First(&c).Error; err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) report(c *conductor.Conductor, rep protocol.InstanceReport) {
	f.t.Helper()
	m, err := bus.NewMessage(protocol.KindInstanceReport, rep)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := c.Handle(context.Background(), m); err != nil {
		f.t.Fatalf("conductor: %v", err)
	}
}

func TestResizeFlow(t *testing.T) {
	f := newFixture(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.st.DB.Create(&store.Flavor{FlavorID: "3", Name: "m1.big", VCPUs: 2, MemoryMB: 256, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error)
	must(f.st.DB.Create(&store.Flavor{FlavorID: "4", Name: "m1.huge", VCPUs: 8, MemoryMB: 256, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error)
	must(f.st.DB.Create(&store.Flavor{FlavorID: "5", Name: "m1.off", VCPUs: 1, MemoryMB: 256, RootGB: 1, IsPublic: true, Disabled: true, RxtxFactor: 1}).Error)
	id := f.create("demo", "rs")
	f.placeActive(id, 3)
	action := "/v2.1/servers/" + id + "/action"

	for _, c := range []struct{ name, body string }{
		{"same flavor", `{"resize":{"flavorRef":"1"}}`},
		{"unknown flavor", `{"resize":{"flavorRef":"99"}}`},
		{"disabled flavor", `{"resize":{"flavorRef":"5"}}`},
		{"no flavorRef", `{"resize":{}}`},
	} {
		resp, body := f.do("POST", action, "demo", c.body)
		expectFault(t, resp, body, 400, "badRequest")
		if got := f.instance(id); got.FlavorID != "1" || got.TaskState != "" || got.OldFlavorID != "" {
			t.Errorf("%s: instance changed: flavor %s task %q", c.name, got.FlavorID, got.TaskState)
		}
	}
	// A smaller disk is refused as Nova does.
	must(f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("root_gb", 10).Error)
	resp, body := f.do("POST", action, "demo", `{"resize":{"flavorRef":"3"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	if msg := body["badRequest"].(map[string]any)["message"]; msg != "Resizing to a smaller disk flavor is not allowed. Flavor 3 has a 1 GB root disk, the server has 10 GB." {
		t.Errorf("refusal of a smaller disk says %q", msg)
	}
	must(f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("root_gb", 1).Error)
	// Another project's server does not exist for the caller.
	resp, body = f.do("POST", action, "other", `{"resize":{"flavorRef":"3"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	// Nothing to confirm or revert yet.
	resp, body = f.do("POST", action, "demo", `{"confirmResize":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	// Resize: RESIZE before the 202, claim moved, cast with the new size.
	resp, body = f.do("POST", action, "demo", `{"resize":{"flavorRef":"3"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("resize = %d %v", resp.StatusCode, body)
	}
	reqID := resp.Header.Get("x-compute-request-id")
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if s := body["server"].(map[string]any); s["status"] != "RESIZE" || s["OS-EXT-STS:task_state"] != "resize_prep" {
		t.Errorf("after resize: status %v task %v", s["status"], s["OS-EXT-STS:task_state"])
	}
	if c := f.claim(id); c.VCPUs != 2 || c.MemoryMB != 256 {
		t.Errorf("claim after resize = %+v", c)
	}
	sent := f.bus.Sent(bus.ComputeQueue("h1"))
	if len(sent) != 1 || sent[0].Kind != protocol.KindResizeInstance {
		t.Fatalf("compute queue got %v", sent)
	}
	var rz protocol.ResizeInstance
	must(sent[0].Decode(&rz))
	if rz.Spec.VCPUs != 2 || rz.Spec.MemoryMB != 256 || rz.Old.VCPUs != 1 || rz.Old.MemoryMB != 128 || rz.RequestID != reqID ||
		!rz.Running {
		t.Errorf("resize message %+v", rz)
	}
	// A second resize meanwhile conflicts.
	resp, body = f.do("POST", action, "demo", `{"resize":{"flavorRef":"2"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.report(cond, protocol.InstanceReport{RequestID: reqID, InstanceID: id, Host: "h1", Action: lifecycle.ActResize,
		OK: true, PowerState: 1, Event: "compute_resize_instance", Started: time.Now(), Finished: time.Now()})
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	s := body["server"].(map[string]any)
	if s["status"] != "VERIFY_RESIZE" || s["flavor"].(map[string]any)["id"] != "3" {
		t.Errorf("after resize report: status %v flavor %v", s["status"], s["flavor"])
	}
	_, body = f.do("GET", "/v2.1/os-migrations", "admin", "", "X-OpenStack-Nova-API-Version", "2.59")
	migs := body["migrations"].([]any)
	if len(migs) != 1 {
		t.Fatalf("migrations = %v", migs)
	}
	m := migs[0].(map[string]any)
	if m["status"] != "finished" || m["migration_type"] != "resize" || m["instance_uuid"] != id || m["uuid"] == "" ||
		m["source_compute"] != "h1" || m["dest_compute"] != "h1" || m["id"].(float64) < 1 ||
		m["old_instance_type_id"].(float64) == m["new_instance_type_id"].(float64) {
		t.Errorf("migration %v", m)
	}
	resp, body = f.do("GET", "/v2.1/os-migrations", "demo", "")
	expectFault(t, resp, body, 403, "forbidden")

	// Revert: claim back at once, old limits cast, conductor restores.
	resp, body = f.do("POST", action, "demo", `{"revertResize":null}`)
	if resp.StatusCode != 202 {
		t.Fatalf("revert = %d %v", resp.StatusCode, body)
	}
	revID := resp.Header.Get("x-compute-request-id")
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if s := body["server"].(map[string]any); s["status"] != "REVERT_RESIZE" {
		t.Errorf("after revert: status %v", s["status"])
	}
	if c := f.claim(id); c.VCPUs != 1 || c.MemoryMB != 128 {
		t.Errorf("claim after revert = %+v", c)
	}
	sent = f.bus.Sent(bus.ComputeQueue("h1"))
	if len(sent) != 2 || sent[1].Kind != protocol.KindRevertResize {
		t.Fatalf("compute queue got %v", sent)
	}
	rz = protocol.ResizeInstance{}
	must(sent[1].Decode(&rz))
	if rz.Spec.VCPUs != 1 || rz.Spec.MemoryMB != 128 || !rz.Running {
		t.Errorf("revert message %+v", rz)
	}
	f.report(cond, protocol.InstanceReport{RequestID: revID, InstanceID: id, Host: "h1", Action: lifecycle.ActRevertResize,
		OK: true, PowerState: 1, Event: "compute_revert_resize", Started: time.Now(), Finished: time.Now()})
	inst := f.instance(id)
	if inst.VMState != "active" || inst.TaskState != "" || inst.FlavorID != "1" || inst.VCPUs != 1 || inst.OldFlavorID != "" {
		t.Errorf("after revert report: %s/%q flavor %s vcpus %d old %q", inst.VMState, inst.TaskState, inst.FlavorID, inst.VCPUs, inst.OldFlavorID)
	}

	// Resize again, the agent fails: old flavor and claim back, ACTIVE.
	resp, _ = f.do("POST", action, "demo", `{"resize":{"flavorRef":"3"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("second resize = %d", resp.StatusCode)
	}
	failedID := resp.Header.Get("x-compute-request-id")
	f.report(cond, protocol.InstanceReport{RequestID: failedID, InstanceID: id, Host: "h1",
		Action: lifecycle.ActResize, OK: false, Error: "resize instance: boom", ErrorMessage: "the server uses more memory than the new flavor has",
		PowerState: 1, Event: "compute_resize_instance", Started: time.Now(), Finished: time.Now()})
	inst = f.instance(id)
	if inst.VMState != "active" || inst.TaskState != "" || inst.FlavorID != "1" || inst.OldFlavorID != "" {
		t.Errorf("after failed resize: %s/%q flavor %s", inst.VMState, inst.TaskState, inst.FlavorID)
	}
	// Why: the fault is recorded (shown once the server is in ERROR, as
	// Nova: an ACTIVE server has none in its view), the action's event
	// is an Error whose traceback admins see, the migration is in error.
	if inst.FaultMessage != "Resize error: the server uses more memory than the new flavor has; the server keeps its old flavor." || inst.FaultDetails != "resize instance: boom" {
		t.Errorf("fault after failed resize: %q %q", inst.FaultMessage, inst.FaultDetails)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if s := body["server"].(map[string]any); s["status"] != "ACTIVE" || s["fault"] != nil {
		t.Errorf("after failed resize: status %v fault %v, want ACTIVE without a fault (Nova shows it in ERROR only)", s["status"], s["fault"])
	}
	for _, who := range []string{"admin", "demo"} {
		_, body = f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions/"+failedID, who, "", "X-OpenStack-Nova-API-Version", "2.51")
		a := body["instanceAction"].(map[string]any)
		evs := a["events"].([]any)
		if len(evs) != 1 || a["message"] != "Error" {
			t.Fatalf("%s: failed resize action %v", who, a)
		}
		ev := evs[0].(map[string]any)
		tb, hasTB := ev["traceback"]
		if ev["result"] != "Error" || ev["event"] != "compute_resize_instance" || (who == "admin") != hasTB || (who == "admin" && tb != "resize instance: boom") {
			t.Errorf("%s: failed resize event %v, want result Error and the traceback for admins only", who, ev)
		}
	}
	_, body = f.do("GET", "/v2.1/os-migrations?instance_uuid="+id+"&status=error", "admin", "")
	if n := len(body["migrations"].([]any)); n != 1 {
		t.Errorf("migrations in error = %d, want 1", n)
	}
	if c := f.claim(id); c.VCPUs != 1 || c.MemoryMB != 128 {
		t.Errorf("claim after failed resize = %+v", c)
	}

	// Resize and confirm: 204, new flavor kept, migration confirmed.
	resp, _ = f.do("POST", action, "demo", `{"resize":{"flavorRef":"3"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("third resize = %d", resp.StatusCode)
	}
	f.report(cond, protocol.InstanceReport{RequestID: resp.Header.Get("x-compute-request-id"), InstanceID: id, Host: "h1",
		Action: lifecycle.ActResize, OK: true, PowerState: 1, Event: "compute_resize_instance", Started: time.Now(), Finished: time.Now()})
	resp, body = f.do("POST", action, "demo", `{"confirmResize":null}`)
	if resp.StatusCode != 204 {
		t.Fatalf("confirm = %d %v", resp.StatusCode, body)
	}
	inst = f.instance(id)
	if inst.VMState != "active" || inst.FlavorID != "3" || inst.OldFlavorID != "" {
		t.Errorf("after confirm: %s flavor %s old %q", inst.VMState, inst.FlavorID, inst.OldFlavorID)
	}
	if c := f.claim(id); c.VCPUs != 2 {
		t.Errorf("claim after confirm = %+v", c)
	}
	_, body = f.do("GET", "/v2.1/os-migrations?instance_uuid="+id+"&status=confirmed", "admin", "")
	if n := len(body["migrations"].([]any)); n != 1 {
		t.Errorf("confirmed migrations = %d, want 1", n)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions", "demo", "")
	var names []string
	for _, a := range body["instanceActions"].([]any) {
		names = append(names, a.(map[string]any)["action"].(string))
	}
	want := []string{"confirmResize", "resize", "resize", "revertResize", "resize", "create"}
	if len(names) != len(want) {
		t.Fatalf("actions %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Errorf("actions %v, want %v", names, want)
			break
		}
	}
}

// TestResizeStoppedServer: a SHUTOFF server resizes too and goes back to
// SHUTOFF on confirm, as in Nova.
func TestResizeStoppedServer(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "off")
	f.placeActive(id, 4)
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{"vm_state": "stopped", "power_state": 4}).Error; err != nil {
		t.Fatal(err)
	}
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "demo", `{"resize":{"flavorRef":"2"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("resize = %d %v", resp.StatusCode, body)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if s := body["server"].(map[string]any); s["status"] != "RESIZE" {
		t.Errorf("status %v, want RESIZE", s["status"])
	}
	// The agent must not start it (a redelivery finds it stopped).
	var rz protocol.ResizeInstance
	if sent := f.bus.Sent(bus.ComputeQueue("h1")); len(sent) == 0 || sent[len(sent)-1].Decode(&rz) != nil || rz.Running {
		t.Errorf("resize message of the stopped server: %+v (of %d), want running false", rz, len(sent))
	}
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.report(cond, protocol.InstanceReport{RequestID: resp.Header.Get("x-compute-request-id"), InstanceID: id, Host: "h1",
		Action: lifecycle.ActResize, OK: true, PowerState: 4, Event: "compute_resize_instance", Started: time.Now(), Finished: time.Now()})
	// A duplicate report changes nothing.
	f.report(cond, protocol.InstanceReport{RequestID: resp.Header.Get("x-compute-request-id"), InstanceID: id, Host: "h1",
		Action: lifecycle.ActResize, OK: true, PowerState: 4, Event: "compute_resize_instance", Started: time.Now(), Finished: time.Now()})
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if s := body["server"].(map[string]any); s["status"] != "VERIFY_RESIZE" {
		t.Errorf("status %v, want VERIFY_RESIZE", s["status"])
	}
	if resp, body := f.do("POST", action, "demo", `{"confirmResize":null}`); resp.StatusCode != 204 {
		t.Fatalf("confirm = %d %v", resp.StatusCode, body)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if s := body["server"].(map[string]any); s["status"] != "SHUTOFF" {
		t.Errorf("status after confirm %v, want SHUTOFF", s["status"])
	}
	if inst := f.instance(id); inst.FlavorID != "2" || inst.MemoryMB != 512 {
		t.Errorf("flavor after confirm: %s %d MB", inst.FlavorID, inst.MemoryMB)
	}
	if c := f.claim(id); c.MemoryMB != 512 || c.DiskGB != 5 {
		t.Errorf("claim after confirm: %+v", c)
	}
}
