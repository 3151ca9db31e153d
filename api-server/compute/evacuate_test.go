package compute

import (
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// evacFixture is a server active on h1 (its claim held), h2 up, h3 down.
func evacFixture(t *testing.T) (*fixture, string) {
	t.Helper()
	f := newFixture(t)
	id := f.create("demo", "ev")
	f.placeActive(id, 4)
	f.addHost("h2", false, false)
	f.addHost("h3", false, true)
	return f, id
}

// forceDown marks h1's compute service forced down through os-services
// (2.53), as an operator does before evacuating.
func (f *fixture) forceDown(host string, down bool) {
	f.t.Helper()
	body := `{"forced_down": false}`
	if down {
		body = `{"forced_down": true}`
	}
	resp, out := f.do("PUT", "/v2.1/os-services/svc-"+host, "admin", body, mv(apiVersion{2, 53})...)
	if resp.StatusCode != 200 {
		f.t.Fatalf("force %s down: %d %v", host, resp.StatusCode, out)
	}
	if got := out["service"].(map[string]any)["forced_down"]; got != down {
		f.t.Fatalf("forced_down %v, want %v", got, down)
	}
}

// TestEvacuateRefusals: the evacuate action's authorization (admin only:
// 401 bad token, 404 other project, 403 member), Nova's body schema per
// microversion, and its refusals: the host still up (400), an unknown
// target (404), the same host (400), a target down (400), a server in
// the wrong state (409), a local volume left on the dead host (409,
// named). Nothing is recorded for any of them.
func TestEvacuateRefusals(t *testing.T) {
	f, id := evacFixture(t)
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "bogus", `{"evacuate":{}}`, mv(apiVersion{2, 14})...)
	if resp.StatusCode != 401 {
		t.Fatalf("bad token: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do("POST", action, "other", `{"evacuate":{}}`, mv(apiVersion{2, 14})...)
	expectFault(t, resp, body, 404, "itemNotFound")
	for _, tok := range []string{"demo", "read", "projadmin"} {
		resp, body = f.do("POST", action, tok, `{"evacuate":{}}`, mv(apiVersion{2, 14})...)
		expectFault(t, resp, body, 403, "forbidden")
		if tok != "read" && !strings.Contains(faultOf(body), "os_compute_api:os-evacuate") {
			t.Errorf("%s: 403 message %q", tok, faultOf(body))
		}
	}
	// The source host is up.
	resp, body = f.do("POST", action, "admin", `{"evacuate":{}}`, mv(apiVersion{2, 14})...)
	expectFault(t, resp, body, 400, "badRequest")
	if msg := faultOf(body); msg != "Compute service of h1 is still in use." {
		t.Errorf("host up: %q", msg)
	}
	f.forceDown("h1", true)

	// Nova's schema per microversion.
	schema := []struct {
		v    apiVersion
		body string
		want string
	}{
		{apiVersion{2, 1}, `{"evacuate":{}}`, "'onSharedStorage' is a required property"},
		{apiVersion{2, 13}, `{"evacuate":{"host":"h2"}}`, "'onSharedStorage' is a required property"},
		{apiVersion{2, 13}, `{"evacuate":{"onSharedStorage":"maybe"}}`, "is not a boolean"},
		{apiVersion{2, 1}, `{"evacuate":{"onSharedStorage":true,"adminPass":"x"}}`, "admin password can't be changed on existing disk"},
		{apiVersion{2, 14}, `{"evacuate":{"onSharedStorage":false}}`, "('onSharedStorage' was unexpected)"},
		{apiVersion{2, 28}, `{"evacuate":{"force":true}}`, "('force' was unexpected)"},
		{apiVersion{2, 29}, `{"evacuate":{"force":"sometimes"}}`, "is not a boolean"},
		{apiVersion{2, 68}, `{"evacuate":{"force":false}}`, "('force' was unexpected)"},
		{apiVersion{2, 95}, `{"evacuate":{"targetState":"stopped"}}`, "('targetState' was unexpected)"},
		{apiVersion{2, 14}, `{"evacuate":{"host":"bad host!"}}`, "field/attribute host"},
		{apiVersion{2, 14}, `{"evacuate":{"host":null}}`, "field/attribute host"},
		{apiVersion{2, 14}, `{"evacuate":{"adminPass":7}}`, "field/attribute adminPass"},
		{apiVersion{2, 14}, `{"evacuate":[]}`, "is not of type 'object'"},
	}
	for _, c := range schema {
		resp, body = f.do("POST", action, "admin", c.body, mv(c.v)...)
		expectFault(t, resp, body, 400, "badRequest")
		if !strings.Contains(faultOf(body), c.want) {
			t.Errorf("%s %s: %q, want %q", c.v, c.body, faultOf(body), c.want)
		}
	}
	// Targets.
	resp, body = f.do("POST", action, "admin", `{"evacuate":{"host":"nope"}}`, mv(apiVersion{2, 14})...)
	expectFault(t, resp, body, 404, "itemNotFound")
	if msg := faultOf(body); msg != "Compute host nope not found." {
		t.Errorf("unknown host: %q", msg)
	}
	resp, body = f.do("POST", action, "admin", `{"evacuate":{"host":"h1"}}`, mv(apiVersion{2, 14})...)
	expectFault(t, resp, body, 400, "badRequest")
	if msg := faultOf(body); msg != "The target host can't be the same one." {
		t.Errorf("same host: %q", msg)
	}
	resp, body = f.do("POST", action, "admin", `{"evacuate":{"host":"h3"}}`, mv(apiVersion{2, 14})...)
	expectFault(t, resp, body, 400, "badRequest")
	if msg := faultOf(body); !strings.Contains(msg, "h3 is down") {
		t.Errorf("target down: %q", msg)
	}
	// States Nova refuses (ACTIVE, SHUTOFF and ERROR only, no task).
	for _, st := range []struct {
		vm   lifecycle.VMState
		task lifecycle.TaskState
		want string
	}{
		{lifecycle.Paused, lifecycle.NoTask, "Cannot 'evacuate' instance " + id + " while it is in vm_state paused"},
		{lifecycle.Shelved, lifecycle.NoTask, "while it is in vm_state shelved"},
		{lifecycle.Active, lifecycle.Rebooting, "Cannot 'evacuate' instance " + id + " while it is in task_state rebooting"},
	} {
		f.setState(id, st.vm, st.task)
		resp, body = f.do("POST", action, "admin", `{"evacuate":{}}`, mv(apiVersion{2, 14})...)
		expectFault(t, resp, body, 409, "conflictingRequest")
		if !strings.Contains(faultOf(body), st.want) {
			t.Errorf("%s/%s: %q", st.vm, st.task, faultOf(body))
		}
	}
	f.setState(id, lifecycle.Active, lifecycle.NoTask)
	// A local volume on the dead host cannot follow: refused, named.
	f.addVolume("vol-local-1", "p-demo", "h1")
	if err := f.st.DB.Create(&store.VolumeAttachment{ID: "att-1", VolumeID: "vol-local-1", InstanceID: id, Host: "h1",
		MountPath: "/mnt/data", Status: store.AttachmentAttached}).Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "admin", `{"evacuate":{}}`, mv(apiVersion{2, 14})...)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if msg := faultOf(body); !strings.Contains(msg, "vol-local-1") || !strings.Contains(msg, "local volume") {
		t.Errorf("local volume: %q", msg)
	}
	// None of it left a trace.
	inst := f.instance(id)
	if inst.TaskState != lifecycle.NoTask || inst.Host != "h1" {
		t.Errorf("refused evacuations changed the server: %s/%s on %s", inst.VMState, inst.TaskState, inst.Host)
	}
	var n int64
	f.st.DB.Model(&store.Migration{}).Count(&n)
	if n != 0 {
		t.Errorf("refused evacuations left %d migrations", n)
	}
	for _, a := range f.actionNames(id) {
		if a == "evacuate" {
			t.Errorf("refused evacuation recorded as an action")
		}
	}
}

// TestEvacuateAccepted: an accepted evacuation answers as Nova at each
// microversion (before 2.14 {"adminPass": ...}, from 2.14 an empty 200),
// puts the server in REBUILD on its dead host, records the evacuation
// migration (os-migrations, 2.23's migration_type) and the instance
// action, and asks the scheduler for a host; a second one is a 409. What
// the server ends as (2.95: stopped) goes with the migration.
func TestEvacuateAccepted(t *testing.T) {
	f, id := evacFixture(t)
	f.forceDown("h1", true)
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "admin", `{"evacuate":{"onSharedStorage":false}}`, mv(apiVersion{2, 13})...)
	if resp.StatusCode != 200 {
		t.Fatalf("evacuate at 2.13: %d %v", resp.StatusCode, body)
	}
	if pass, ok := body["adminPass"].(string); !ok || pass == "" || len(body) != 1 {
		t.Errorf("2.13 body %v, want {adminPass: generated}", body)
	}
	inst := f.instance(id)
	if inst.VMState != lifecycle.Active || inst.TaskState != lifecycle.Rebuilding || inst.Host != "h1" {
		t.Errorf("server %s/%s on %s, want active/rebuilding on h1", inst.VMState, inst.TaskState, inst.Host)
	}
	if st, _ := f.status(id); st != "REBUILD" {
		t.Errorf("status %s, want REBUILD", st)
	}
	var sched protocol.ScheduleInstance
	f.lastSent(bus.SchedulerQueue, protocol.KindScheduleInstance, &sched)
	if !sched.Evacuate || sched.InstanceID != id || sched.Host != "" {
		t.Errorf("schedule request %+v", sched)
	}
	m, err := instance.Evacuation(f.st.DB, id)
	if err != nil || m == nil {
		t.Fatalf("evacuation record: %v %v", m, err)
	}
	if m.MigrationType != "evacuation" || m.Status != "accepted" || m.SourceCompute != "h1" || m.SourceVMState != lifecycle.Active {
		t.Errorf("migration %+v", m)
	}
	_, list := f.do("GET", "/v2.1/os-migrations", "admin", "", mv(apiVersion{2, 23})...)
	ms := list["migrations"].([]any)
	if len(ms) != 1 || ms[0].(map[string]any)["migration_type"] != "evacuation" || ms[0].(map[string]any)["source_compute"] != "h1" {
		t.Errorf("os-migrations %v", ms)
	}
	if acts := f.actionNames(id); len(acts) == 0 || acts[0] != "evacuate" {
		t.Errorf("actions %v", acts)
	}
	resp, body = f.do("POST", action, "admin", `{"evacuate":{}}`, mv(apiVersion{2, 14})...)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if !strings.Contains(faultOf(body), "task_state rebuilding") {
		t.Errorf("second evacuate: %q", faultOf(body))
	}

	// 2.14: an empty 200, a named host (up) goes to the scheduler; 2.95:
	// the server ends stopped.
	for _, c := range []struct {
		v       apiVersion
		stopped bool
	}{{apiVersion{2, 14}, false}, {apiVersion{2, 95}, true}} {
		id2 := f.create("demo", "ev2")
		f.placeActive(id2, 4)
		resp, raw := f.raw("POST", "/v2.1/servers/"+id2+"/action", "admin", `{"evacuate":{"host":"h2","adminPass":"s3cret"}}`, mv(c.v)...)
		if resp.StatusCode != 200 || len(raw) != 0 {
			t.Fatalf("%s: %d %q, want 200 with no body", c.v, resp.StatusCode, raw)
		}
		f.lastSent(bus.SchedulerQueue, protocol.KindScheduleInstance, &sched)
		if !sched.Evacuate || sched.InstanceID != id2 || sched.Host != "h2" {
			t.Errorf("%s: schedule request %+v", c.v, sched)
		}
		m, _ := instance.Evacuation(f.st.DB, id2)
		if m == nil || (m.SourceVMState == lifecycle.Stopped) != c.stopped {
			t.Errorf("%s: evacuation %+v, stopped %v", c.v, m, c.stopped)
		}
		if inst := f.instance(id2); inst.AdminPassHash == "" || inst.AdminPassHash == f.instance(id).AdminPassHash {
			t.Errorf("%s: adminPass not recorded for the rebuilt disk", c.v)
		}
	}
}
