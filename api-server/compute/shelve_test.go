package compute

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/scheduler"
	"github.com/capsule-cloud/capsule/store"
)

// lastSent decodes the newest message of kind on queue into v.
func (f *fixture) lastSent(queue, kind string, v any) {
	f.t.Helper()
	sent := f.bus.Sent(queue)
	for i := len(sent) - 1; i >= 0; i-- {
		if sent[i].Kind == kind {
			if err := sent[i].Decode(v); err != nil {
				f.t.Fatal(err)
			}
			return
		}
	}
	f.t.Fatalf("no %s on %s: %v", kind, queue, sent)
}

func (f *fixture) status(id string) (string, any) {
	f.t.Helper()
	_, body := f.do("GET", "/v2.1/servers/"+id, "demo", "")
	s := body["server"].(map[string]any)
	return s["status"].(string), s["OS-EXT-STS:task_state"]
}

// TestShelveOffloadUnshelve walks a server through shelve (stop, push as
// <name>-shelved), the immediate offload (claims released, ports unbound,
// cores and RAM out of the quota usage), an unshelve checked against the
// quota and scheduled from the shelve image, and its end (ACTIVE, shelve
// image gone); then a delete of an offloaded server deletes its image.
func TestShelveOffloadUnshelve(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	id := f.create("demo", "sv")
	f.placeActive(id, 4)
	action := "/v2.1/servers/" + id + "/action"
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	sched := scheduler.New(f.st, f.bus, config.Default().Scheduler, slog.New(slog.NewTextHandler(io.Discard, nil)))

	resp, body := f.do("POST", action, "demo", `{"unshelve":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("POST", action, "admin", `{"shelveOffload":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	f.check(t, ts, apiVersion{2, 1}, contractCall{"demo", "POST", action, `{"shelve":null}`, "servers", "server_actions_common_schema"})
	req := f.lastSnapshotRequest()
	if !req.Shelve || req.InstanceID != id || !strings.HasSuffix(req.Ref, ":"+req.ImageID) {
		t.Fatalf("shelve request %+v", req)
	}
	var img store.Image
	if err := f.st.DB.Where("id = ?", req.ImageID).First(&img).Error; err != nil {
		t.Fatal(err)
	}
	var props map[string]string
	_ = json.Unmarshal([]byte(img.Properties), &props)
	if img.Name != "sv-shelved" || img.Owner != "p-demo" || img.Status != "queued" || props["image_type"] != "snapshot" ||
		props["instance_uuid"] != id {
		t.Errorf("shelve image %+v %v", img, props)
	}
	if st, task := f.status(id); st != "ACTIVE" || task != "shelving" {
		t.Errorf("during shelve: %s/%v", st, task)
	}
	resp, body = f.do("POST", action, "demo", `{"shelve":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	// Pushed: shelved, then offloaded at once (shelved_offload_time 0).
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: "h1",
		Ref: req.Ref, Shelve: true, OK: true, Digest: "sha256:aa", Size: 10, PowerState: 4, Event: "compute_shelve_instance"})
	if st, task := f.status(id); st != "SHELVED" || task != "shelving_offloading" {
		t.Errorf("after the push: %s/%v", st, task)
	}
	if got := f.instance(id); got.ShelvedImageID != req.ImageID || got.ShelvedHost != "h1" || got.ShelvedAt == nil {
		t.Errorf("shelved columns %q %q %v", got.ShelvedImageID, got.ShelvedHost, got.ShelvedAt)
	}
	var off protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	if off.Action != lifecycle.ActShelveOffload || off.RequestID != req.RequestID {
		t.Fatalf("offload cast %+v", off)
	}
	f.report(cond, protocol.InstanceReport{RequestID: off.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload,
		OK: true, Event: "compute_shelve_offload_instance"})
	got := f.instance(id)
	if got.VMState != lifecycle.ShelvedOffloaded || got.Host != "" || got.TaskState != "" {
		t.Fatalf("after offload: %s/%s on %q", got.VMState, got.TaskState, got.Host)
	}
	var claims int64
	f.st.DB.Model(&store.Claim{}).Where("instance_id = ?", id).Count(&claims)
	if claims != 0 {
		t.Errorf("%d claims left after offload", claims)
	}
	u, err := f.st.CountQuotaUsage(context.Background(), "p-demo", "")
	if err != nil || u.Instances != 1 || u.Cores != 0 || u.RAM != 0 {
		t.Errorf("quota usage of an offloaded server = %+v (%v), want 1 instance, no cores or RAM", u, err)
	}

	// Unshelve is checked against the quota: the cores come back.
	f.setQuota("p-demo", `{"cores":0}`)
	resp, body = f.do("POST", action, "demo", `{"unshelve":null}`)
	expectFault(t, resp, body, 403, "forbidden")
	f.setQuota("p-demo", `{"cores":20}`)
	f.check(t, ts, apiVersion{2, 1}, contractCall{"demo", "POST", action, `{"unshelve":null}`, "servers", "server_actions_common_schema"})
	if st, task := f.status(id); st != "SHELVED_OFFLOADED" || task != "unshelving" {
		t.Errorf("unshelving: %s/%v", st, task)
	}
	if u, _ := f.st.CountQuotaUsage(context.Background(), "p-demo", ""); u.Cores != 1 {
		t.Errorf("cores used while unshelving = %d, want 1", u.Cores)
	}
	var sreq protocol.ScheduleInstance
	f.lastSent(bus.SchedulerQueue, protocol.KindScheduleInstance, &sreq)
	m, _ := bus.NewMessage(protocol.KindScheduleInstance, sreq)
	if _, err := sched.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var build protocol.BuildInstance
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindBuildInstance, &build)
	if !build.Unshelve || build.Spec.ID != id || build.Spec.ImageRef != req.Ref {
		t.Fatalf("unshelve build %+v", build)
	}
	if got := f.instance(id); got.Host != "h1" || got.TaskState != lifecycle.Spawning {
		t.Errorf("placed: %q %s", got.Host, got.TaskState)
	}
	f.report(cond, protocol.InstanceReport{RequestID: build.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnshelve,
		OK: true, PowerState: 1, Event: "compute_unshelve_instance"})
	got = f.instance(id)
	if got.VMState != lifecycle.Active || got.TaskState != "" || got.ShelvedImageID != "" {
		t.Fatalf("after unshelve: %s/%s image %q", got.VMState, got.TaskState, got.ShelvedImageID)
	}
	var n int64
	f.st.DB.Model(&store.Image{}).Where("id = ?", req.ImageID).Count(&n)
	if n != 0 {
		t.Error("shelve image left after the unshelve")
	}
	if names := f.actionNames(id); strings.Join(names, ",") != "unshelve,shelve,create" {
		t.Errorf("instance actions %v", names)
	}

	// A failed unshelve spawn leaves the server offloaded, with a fault,
	// its room released; a delete then takes its shelve image along.
	f.do("POST", action, "demo", `{"shelve":null}`)
	req = f.lastSnapshotRequest()
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: "h1",
		Ref: req.Ref, Shelve: true, OK: true, PowerState: 4})
	f.report(cond, protocol.InstanceReport{RequestID: req.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload, OK: true})
	f.do("POST", action, "demo", `{"unshelve":null}`)
	f.lastSent(bus.SchedulerQueue, protocol.KindScheduleInstance, &sreq)
	m, _ = bus.NewMessage(protocol.KindScheduleInstance, sreq)
	if _, err := sched.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	f.report(cond, protocol.InstanceReport{RequestID: sreq.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnshelve,
		OK: false, Error: "pull failed", ErrorMessage: "the image could not be pulled"})
	got = f.instance(id)
	if got.VMState != lifecycle.ShelvedOffloaded || got.Host != "" || got.TaskState != "" || got.FaultMessage == "" {
		t.Fatalf("after a failed unshelve: %s/%s on %q fault %q", got.VMState, got.TaskState, got.Host, got.FaultMessage)
	}
	f.st.DB.Model(&store.Claim{}).Where("instance_id = ?", id).Count(&claims)
	if claims != 0 {
		t.Errorf("%d claims left after a failed unshelve", claims)
	}
	if resp, _ := f.do("DELETE", "/v2.1/servers/"+id, "demo", ""); resp.StatusCode != 204 {
		t.Fatalf("delete offloaded: %d", resp.StatusCode)
	}
	f.st.DB.Model(&store.Image{}).Where("id = ?", req.ImageID).Count(&n)
	if n != 0 {
		t.Error("shelve image left after deleting the offloaded server")
	}
}

// TestShelvePolicy: a member shelves and unshelves their own server, a
// reader may not (403), another project does not see it (404), no or a
// bad token is 401; shelveOffload is for admins only.
func TestShelvePolicy(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "pol")
	f.placeActive(id, 4)
	action := "/v2.1/servers/" + id + "/action"
	for _, b := range []string{`{"shelve":null}`, `{"unshelve":null}`, `{"shelveOffload":null}`} {
		resp, body := f.do("POST", action, "other", b)
		expectFault(t, resp, body, 404, "itemNotFound")
		resp, body = f.do("POST", action, "read", b)
		expectFault(t, resp, body, 403, "forbidden")
		for _, tok := range []string{"", "garbage"} {
			if resp, _ := f.do("POST", action, tok, b); resp.StatusCode != 401 {
				t.Errorf("%s with token %q: %d, want 401", b, tok, resp.StatusCode)
			}
		}
	}
	f.setState(id, lifecycle.Shelved, lifecycle.NoTask)
	resp, body := f.do("POST", action, "demo", `{"shelveOffload":null}`)
	expectFault(t, resp, body, 403, "forbidden")
	if resp, body := f.do("POST", action, "admin", `{"shelveOffload":null}`); resp.StatusCode != 202 {
		t.Fatalf("admin offload: %d %v", resp.StatusCode, body)
	}
	var off protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	if off.Action != lifecycle.ActShelveOffload {
		t.Errorf("cast %+v", off)
	}
	// Unshelving a server still on its host starts it there.
	f.setState(id, lifecycle.Shelved, lifecycle.NoTask)
	if resp, body := f.do("POST", action, "demo", `{"unshelve":null}`); resp.StatusCode != 202 {
		t.Fatalf("unshelve shelved: %d %v", resp.StatusCode, body)
	}
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	if off.Action != lifecycle.ActUnshelve {
		t.Errorf("cast %+v", off)
	}
	// 2.77's availability_zone and 2.91's host are for an offloaded
	// server only (409 for one still on its host: TestUnshelveZone277).
	f.setState(id, lifecycle.Shelved, lifecycle.NoTask)
	resp, body = f.do("POST", action, "demo", `{"unshelve":{"availability_zone":"nova"}}`, "X-OpenStack-Nova-API-Version", "2.77")
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("POST", action, "admin", `{"unshelve":{"host":"h1"}}`, "X-OpenStack-Nova-API-Version", "2.91")
	expectFault(t, resp, body, 409, "conflictingRequest")
}

// TestRescuePolicyAndStates: a member rescues their own active, stopped
// or errored server (200 {"adminPass"}, the image cast to the host: the
// server's own or rescue_image_ref), a reader may not (403), another
// project does not see it (404), no or a bad token is 401; a bad image is
// 400, a rescued server cannot be rescued again (409) but unrescued (202).
func TestRescuePolicyAndStates(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "rsc")
	f.placeActive(id, 4)
	action := "/v2.1/servers/" + id + "/action"
	for _, b := range []string{`{"rescue":null}`, `{"unrescue":null}`} {
		resp, body := f.do("POST", action, "other", b)
		expectFault(t, resp, body, 404, "itemNotFound")
		resp, body = f.do("POST", action, "read", b)
		expectFault(t, resp, body, 403, "forbidden")
		for _, tok := range []string{"", "garbage"} {
			if resp, _ := f.do("POST", action, tok, b); resp.StatusCode != 401 {
				t.Errorf("%s with token %q: %d, want 401", b, tok, resp.StatusCode)
			}
		}
	}
	resp, body := f.do("POST", action, "demo", `{"unrescue":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	for _, bad := range []string{`{"rescue":{"rescue_image_ref":"not-a-uuid"}}`, `{"rescue":{"rescue_image_ref":"` + newUUID() + `"}}`,
		`{"rescue":{"frob":1}}`, `{"rescue":{"adminPass":1}}`, `{"rescue":[]}`} {
		resp, body := f.do("POST", action, "demo", bad)
		expectFault(t, resp, body, 400, "badRequest")
	}
	resp, body = f.do("POST", action, "demo", `{"rescue":{"adminPass":"s3cret","rescue_image_ref":"`+f.image+`"}}`)
	if resp.StatusCode != 200 || body["adminPass"] != "s3cret" || len(body) != 1 {
		t.Fatalf("rescue: %d %v", resp.StatusCode, body)
	}
	var act protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &act)
	if act.Action != lifecycle.ActRescue || act.RescueImage != "127.0.0.1:5050/capsule/busybox:latest" {
		t.Errorf("rescue cast %+v", act)
	}
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.report(cond, protocol.InstanceReport{RequestID: act.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActRescue,
		OK: true, PowerState: 1, Event: "compute_rescue_instance"})
	if st, task := f.status(id); st != "RESCUE" || task != nil {
		t.Errorf("rescued: %s/%v", st, task)
	}
	resp, body = f.do("POST", action, "demo", `{"rescue":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("POST", action, "demo", `{"os-start":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if resp, body := f.do("POST", action, "demo", `{"unrescue":null}`); resp.StatusCode != 202 || len(body) != 0 {
		t.Fatalf("unrescue: %d %v", resp.StatusCode, body)
	}
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &act)
	f.report(cond, protocol.InstanceReport{RequestID: act.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnrescue,
		OK: true, PowerState: 1})
	if st, _ := f.status(id); st != "ACTIVE" {
		t.Errorf("after unrescue: %s", st)
	}
	// A stopped server is rescued with its own image; a generated password.
	f.setState(id, lifecycle.Stopped, lifecycle.NoTask)
	resp, body = f.do("POST", action, "demo", `{"rescue":null}`)
	if resp.StatusCode != 200 || body["adminPass"] == "" {
		t.Fatalf("rescue of a stopped server: %d %v", resp.StatusCode, body)
	}
	if names := f.actionNames(id); strings.Join(names, ",") != "rescue,unrescue,rescue,create" {
		t.Errorf("instance actions %v", names)
	}
}

// TestShelveLocalVolume walks a server with a local volume attached
// through shelve and unshelve (Nova keeps the volume attached, in-use):
// the offload's work names where each local volume goes in the registry,
// a failed offload leaves the volume on the host, a done one records it
// on no host (the registry has it), attach and detach wait for the
// unshelve, the unshelve's build pulls it, a failed unshelve leaves it in
// the registry, a done one records it on the new host.
func TestShelveLocalVolume(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "sv")
	f.placeActive(id, 4)
	f.addVolume(vol1, "p-demo", "h1")
	if err := f.st.DB.Model(&store.Volume{}).Where("id = ?", vol1).Update("status", store.VolumeInUse).Error; err != nil {
		t.Fatal(err)
	}
	if err := f.st.DB.Create(&store.VolumeAttachment{ID: "a1", VolumeID: vol1, InstanceID: id, Host: "h1", Device: "/dev/vdb",
		MountPath: "/mnt/data", Status: store.AttachmentAttached}).Error; err != nil {
		t.Fatal(err)
	}
	action := "/v2.1/servers/" + id + "/action"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cond := conductor.New(f.st, f.bus, config.Conductor{ShelvedOffloadTime: -1}, 3, logger)
	sched := scheduler.New(f.st, f.bus, config.Default().Scheduler, logger)
	volume := func() (store.Volume, store.VolumeAttachment) {
		t.Helper()
		var v store.Volume
		var a store.VolumeAttachment
		if err := f.st.DB.Where("id = ?", vol1).First(&v).Error; err != nil {
			t.Fatal(err)
		}
		if err := f.st.DB.Where("volume_id = ?", vol1).First(&a).Error; err != nil {
			t.Fatalf("attachment of %s: %v", vol1, err)
		}
		return v, a
	}
	wantVolume := func(when, host string) {
		t.Helper()
		v, a := volume()
		if v.Host != host || a.Host != host || v.Status != store.VolumeInUse || a.InstanceID != id || a.MountPath != "/mnt/data" {
			t.Fatalf("%s: volume on %q (%s), attachment on %q to %s at %s; want in-use on %q, attached at /mnt/data",
				when, v.Host, v.Status, a.Host, a.InstanceID, a.MountPath, host)
		}
	}

	if resp, body := f.do("POST", action, "demo", `{"shelve":null}`); resp.StatusCode != 202 {
		t.Fatalf("shelve with a local volume: %d %v", resp.StatusCode, body)
	}
	req := f.lastSnapshotRequest()
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: "h1",
		Ref: req.Ref, Shelve: true, OK: true, PowerState: 4})
	wantVolume("shelved", "h1")
	// Attach and detach wait until it is unshelved.
	resp, body := f.do("DELETE", "/v2.1/servers/"+id+"/os-volume_attachments/"+vol1, "demo", "")
	expectFault(t, resp, body, 409, "conflictingRequest")

	// The offload names the volume's place in the shelve image's registry;
	// failed, it leaves the volume where it is.
	resp, body = f.do("POST", action, "admin", `{"shelveOffload":null}`)
	if resp.StatusCode != 202 {
		t.Fatalf("shelveOffload: %d %v", resp.StatusCode, body)
	}
	var off protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	host := strings.SplitN(req.Ref, "/", 2)[0]
	wantRef := host + "/capsule/volumes/" + vol1 + ":shelved"
	if off.Action != lifecycle.ActShelveOffload || len(off.VolumeRefs) != 1 || off.VolumeRefs[vol1] != wantRef {
		t.Fatalf("offload cast %+v, want volume refs {%s: %s}", off, vol1, wantRef)
	}
	f.report(cond, protocol.InstanceReport{RequestID: off.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload,
		OK: false, Error: "push: 503", ErrorMessage: "could not push volume " + vol1 + " to the registry (it stays on host h1)", PowerState: 4})
	if got := f.instance(id); got.VMState != lifecycle.Shelved || got.Host != "h1" || !strings.Contains(got.FaultMessage, vol1) {
		t.Fatalf("after a failed offload: %s on %q fault %q", got.VMState, got.Host, got.FaultMessage)
	}
	wantVolume("failed offload", "h1")
	f.do("POST", action, "admin", `{"shelveOffload":null}`)
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	f.report(cond, protocol.InstanceReport{RequestID: off.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload, OK: true})
	if got := f.instance(id); got.VMState != lifecycle.ShelvedOffloaded || got.Host != "" {
		t.Fatalf("after offload: %s on %q", got.VMState, got.Host)
	}
	wantVolume("offloaded", "")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/os-volume_attachments", "demo", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	// The unshelve's build pulls it; failed, the data stays in the
	// registry (the volume on no host), and the next one moves it.
	unshelve := func() protocol.BuildInstance {
		t.Helper()
		if resp, body := f.do("POST", action, "demo", `{"unshelve":null}`); resp.StatusCode != 202 {
			t.Fatalf("unshelve: %d %v", resp.StatusCode, body)
		}
		var sreq protocol.ScheduleInstance
		f.lastSent(bus.SchedulerQueue, protocol.KindScheduleInstance, &sreq)
		m, _ := bus.NewMessage(protocol.KindScheduleInstance, sreq)
		if _, err := sched.Handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		var build protocol.BuildInstance
		f.lastSent(bus.ComputeQueue("h1"), protocol.KindBuildInstance, &build)
		if !build.Unshelve || build.VolumeRefs[vol1] != wantRef || len(build.Spec.Volumes) != 1 || build.Spec.Volumes[0].MountPath != "/mnt/data" {
			t.Fatalf("unshelve build: refs %v volumes %+v", build.VolumeRefs, build.Spec.Volumes)
		}
		return build
	}
	build := unshelve()
	f.report(cond, protocol.InstanceReport{RequestID: build.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnshelve,
		OK: false, Error: "import: no space", ErrorMessage: "could not pull volume " + vol1 + " onto host h1 (its data stays in the registry)"})
	if got := f.instance(id); got.VMState != lifecycle.ShelvedOffloaded || got.Host != "" || !strings.Contains(got.FaultMessage, vol1) {
		t.Fatalf("after a failed unshelve: %s on %q fault %q", got.VMState, got.Host, got.FaultMessage)
	}
	wantVolume("failed unshelve", "")
	build = unshelve()
	f.report(cond, protocol.InstanceReport{RequestID: build.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnshelve,
		OK: true, PowerState: 1})
	if got := f.instance(id); got.VMState != lifecycle.Active || got.Host != "h1" {
		t.Fatalf("after unshelve: %s on %q", got.VMState, got.Host)
	}
	wantVolume("unshelved", "h1")

	// Deleted while offloaded: the volume is detached and pulled back
	// onto the host the server was shelved on (maintenance meanwhile);
	// pulled, it is available there. A failed pull leaves it in error,
	// the data still in the registry.
	for _, ok := range []bool{false, true} {
		if ok {
			id = f.create("demo", "sv2")
			f.placeActive(id, 4)
			action = "/v2.1/servers/" + id + "/action"
			if err := f.st.DB.Model(&store.Volume{}).Where("id = ?", vol1).Updates(map[string]any{"status": store.VolumeInUse, "host": "h1"}).Error; err != nil {
				t.Fatal(err)
			}
			if err := f.st.DB.Create(&store.VolumeAttachment{ID: "a2", VolumeID: vol1, InstanceID: id, Host: "h1", Device: "/dev/vdb",
				MountPath: "/mnt/data", Status: store.AttachmentAttached}).Error; err != nil {
				t.Fatal(err)
			}
		}
		f.do("POST", action, "demo", `{"shelve":null}`)
		req = f.lastSnapshotRequest()
		f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: "h1",
			Ref: req.Ref, Shelve: true, OK: true, PowerState: 4})
		f.do("POST", action, "admin", `{"shelveOffload":null}`)
		f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
		f.report(cond, protocol.InstanceReport{RequestID: off.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload, OK: true})
		wantVolume("offloaded again", "")
		if resp, _ := f.do("DELETE", "/v2.1/servers/"+id, "demo", ""); resp.StatusCode != 204 {
			t.Fatalf("delete offloaded: %d", resp.StatusCode)
		}
		var v store.Volume
		f.st.DB.Where("id = ?", vol1).First(&v)
		var atts int64
		f.st.DB.Model(&store.VolumeAttachment{}).Where("volume_id = ?", vol1).Count(&atts)
		if v.Status != store.VolumeMaintenance || v.Host != "h1" || atts != 0 {
			t.Fatalf("volume of the deleted offloaded server: %s on %q, %d attachments", v.Status, v.Host, atts)
		}
		relay := outbox.NewRelay(f.st, f.bus, outbox.Options{Owner: "test"})
		if _, err := relay.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
		var imp protocol.VolumeTransfer
		f.lastSent(bus.ComputeQueue("h1"), protocol.KindVolumeImport, &imp)
		if imp.Volume.ID != vol1 || imp.Volume.Host != "h1" || imp.Ref != wantRef {
			t.Fatalf("restore pull %+v", imp)
		}
		m, _ := bus.NewMessage(protocol.KindVolumeReport, protocol.VolumeReport{RequestID: imp.RequestID, Kind: protocol.KindVolumeImport,
			VolumeID: vol1, Host: "h1", OK: ok, Ref: imp.Ref, ErrorMessage: "disk full"})
		if _, err := cond.Handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		f.st.DB.Where("id = ?", vol1).First(&v)
		if want := map[bool]store.VolumeStatus{true: store.VolumeAvailable, false: store.VolumeError}[ok]; v.Status != want || v.Host != "h1" {
			t.Fatalf("restored (pull ok %v): %s on %q, want %s on h1", ok, v.Status, v.Host, want)
		}
		if !ok && !strings.Contains(v.ErrorMessage, wantRef) {
			t.Errorf("failed restore: error message %q does not say where the data is", v.ErrorMessage)
		}
	}
}
