package compute

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/scheduler"
	"github.com/capsule-cloud/capsule/store"
)

// offloadedServer creates a server of demo's on h1 and shelves it
// through the conductor (shelved_offload_time 0: offloaded at once).
func (f *fixture) offloadedServer(cond *conductor.Conductor, name string) (string, protocol.SnapshotInstance) {
	f.t.Helper()
	id := f.create("demo", name)
	f.placeActive(id, 1)
	if resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"shelve":null}`); resp.StatusCode != 202 {
		f.t.Fatalf("shelve: %d %v", resp.StatusCode, body)
	}
	req := f.lastSnapshotRequest()
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: "h1",
		Ref: req.Ref, Shelve: true, OK: true, PowerState: 4})
	var off protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	f.report(cond, protocol.InstanceReport{RequestID: off.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload, OK: true})
	if got := f.instance(id); got.VMState != lifecycle.ShelvedOffloaded || got.Host != "" {
		f.t.Fatalf("after shelve: %s on %q", got.VMState, got.Host)
	}
	return id, req
}

// volumeReport hands the conductor a host's volume report.
func (f *fixture) volumeReport(cond *conductor.Conductor, r protocol.VolumeReport) {
	f.t.Helper()
	m, _ := bus.NewMessage(protocol.KindVolumeReport, r)
	if _, err := cond.Handle(context.Background(), m); err != nil {
		f.t.Fatal(err)
	}
}

// volumeRow is volume id's row and its attachment (nil when none).
func (f *fixture) volumeRow(id string) (store.Volume, *store.VolumeAttachment) {
	f.t.Helper()
	var v store.Volume
	if err := f.st.DB.Where("id = ?", id).First(&v).Error; err != nil {
		f.t.Fatal(err)
	}
	var atts []store.VolumeAttachment
	f.st.DB.Where("volume_id = ?", id).Find(&atts)
	if len(atts) == 0 {
		return v, nil
	}
	return v, &atts[0]
}

// Attach and detach on a SHELVED_OFFLOADED server (Nova from 2.20; 409
// below): the attachment is only recorded (no host). A shared volume is
// in-use at once; a local one is pushed by its host to the registry next
// to the shelve image (its <volume>:shelved tag, as the offload does for
// the server's own local volumes) and lives on no host once pushed, its
// old copy deleted; the unshelve waits for that, then pulls it with the
// rest. Detach drops the record; a local volume in the registry is
// pulled back onto the host the server was shelved on (available there
// once pulled, the tag deleted). Another project gets 404, a reader 403,
// no token 401.
func TestVolumeAttachDetachOffloaded(t *testing.T) {
	f := newFixture(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, logger)
	sched := scheduler.New(f.st, f.bus, config.Default().Scheduler, logger)
	relay := outbox.NewRelay(f.st, f.bus, outbox.Options{Owner: "test"})
	pass := func() {
		t.Helper()
		if _, err := relay.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	id, shelveReq := f.offloadedServer(cond, "parked")
	f.addVolume(vol1, "p-demo", "h2") // local, on another host
	if err := f.st.DB.Create(&store.Volume{ID: vol2, ProjectID: "p-demo", SizeGB: 1, Status: store.VolumeAvailable,
		Backend: protocol.BackendShared, Host: "h2"}).Error; err != nil {
		t.Fatal(err)
	}
	base := "/v2.1/servers/" + id + "/os-volume_attachments"
	v220 := []string{"OpenStack-API-Version", "compute 2.20"}
	attach := func(token, vol string, hdr ...string) (int, map[string]any) {
		resp, body := f.do("POST", base, token, `{"volumeAttachment":{"volumeId":"`+vol+`","device":"/data-`+vol[len(vol)-1:]+`"}}`, hdr...)
		return resp.StatusCode, body
	}

	// Before 2.20: Nova's 409.
	resp, body := f.do("POST", base, "demo", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, "OpenStack-API-Version", "compute 2.19")
	expectFault(t, resp, body, 409, "conflictingRequest")
	// Tenant isolation on the new behaviour.
	resp, body = f.do("POST", base, "other", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, v220...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", base, "read", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, v220...)
	expectFault(t, resp, body, 403, "forbidden")
	if resp, _ := f.do("POST", base, "", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, v220...); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}

	// A shared volume: recorded, in-use at once, nothing sent anywhere.
	sentBefore := len(f.bus.Sent(bus.ComputeQueue("h2")))
	if code, body := attach("demo", vol2, v220...); code != 200 || body["volumeAttachment"].(map[string]any)["device"] != "/data-2" {
		t.Fatalf("attach shared: %d %v", code, body)
	}
	if v, a := f.volumeRow(vol2); v.Status != store.VolumeInUse || a == nil || a.Status != store.AttachmentAttached || a.Host != "" || a.InstanceID != id {
		t.Fatalf("shared volume attached to the offloaded server: %s %+v", v.Status, a)
	}
	// A local one: pushed by h2 to the tag the unshelve pulls.
	if code, body := attach("demo", vol1, v220...); code != 200 {
		t.Fatalf("attach local: %d %v", code, body)
	}
	pass()
	if n := len(f.bus.Sent(bus.ComputeQueue("h2"))); n != sentBefore+1 {
		t.Fatalf("h2 got %d messages, want the export only", n-sentBefore)
	}
	var exp protocol.VolumeTransfer
	f.lastSent(bus.ComputeQueue("h2"), protocol.KindVolumeExport, &exp)
	wantRef := strings.SplitN(shelveReq.Ref, "/", 2)[0] + "/capsule/volumes/" + vol1 + ":shelved"
	if exp.Ref != wantRef || exp.Volume.ID != vol1 || exp.Volume.Host != "h2" {
		t.Fatalf("export %+v, want ref %s", exp, wantRef)
	}
	// Unshelve waits for it.
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"unshelve":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if got := f.instance(id); got.VMState != lifecycle.ShelvedOffloaded || got.TaskState != lifecycle.NoTask {
		t.Fatalf("refused unshelve changed the server: %s/%s", got.VMState, got.TaskState)
	}
	// Pushed: on no host, in-use, attached; h2's copy goes.
	f.volumeReport(cond, protocol.VolumeReport{RequestID: exp.RequestID, Kind: protocol.KindVolumeExport, VolumeID: vol1, Host: "h2",
		OK: true, Ref: exp.Ref})
	if v, a := f.volumeRow(vol1); v.Status != store.VolumeInUse || v.Host != "" || a == nil || a.Status != store.AttachmentAttached || a.Host != "" {
		t.Fatalf("local volume after its push: %s on %q, attachment %+v", v.Status, v.Host, a)
	}
	pass()
	var del protocol.VolumeDelete
	f.lastSent(bus.ComputeQueue("h2"), protocol.KindVolumeDelete, &del)
	if del.Volume.ID != vol1 || del.Volume.Host != "h2" {
		t.Fatalf("old copy's delete %+v", del)
	}
	f.volumeReport(cond, protocol.VolumeReport{RequestID: del.RequestID, Kind: protocol.KindVolumeDelete, VolumeID: vol1, Host: "h2", OK: true})
	if v, _ := f.volumeRow(vol1); v.Status != store.VolumeInUse {
		t.Fatalf("the old copy's delete changed the volume: %s", v.Status)
	}
	for _, v := range []apiVersion{{2, 20}, {2, 79}, {2, 89}} {
		body := f.check(t, loadTempestSchemas(t), v, contractCall{"demo", "GET", base, "", "servers", "list_volume_attachments"})
		if n := len(body["volumeAttachments"].([]any)); n != 2 {
			t.Errorf("%s: %d attachments listed, want 2", v, n)
		}
	}

	// Detach below 2.20: 409; a reader 403; another project 404.
	resp, body = f.do("DELETE", base+"/"+vol2, "demo", "")
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("DELETE", base+"/"+vol2, "read", "", v220...)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("DELETE", base+"/"+vol2, "other", "", v220...)
	expectFault(t, resp, body, 404, "itemNotFound")
	// The shared one: available at once.
	if resp, body := f.do("DELETE", base+"/"+vol2, "demo", "", v220...); resp.StatusCode != 202 {
		t.Fatalf("detach shared: %d %v", resp.StatusCode, body)
	}
	if v, a := f.volumeRow(vol2); v.Status != store.VolumeAvailable || a != nil {
		t.Fatalf("shared volume after detach: %s %+v", v.Status, a)
	}
	// The local one: pulled back onto h1 (where the server was shelved).
	if resp, body := f.do("DELETE", base+"/"+vol1, "demo", "", v220...); resp.StatusCode != 202 {
		t.Fatalf("detach local: %d %v", resp.StatusCode, body)
	}
	if v, a := f.volumeRow(vol1); v.Status != store.VolumeMaintenance || v.Host != "h1" || a != nil {
		t.Fatalf("local volume being detached: %s on %q %+v", v.Status, v.Host, a)
	}
	pass()
	var imp protocol.VolumeTransfer
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindVolumeImport, &imp)
	if imp.Ref != wantRef || imp.Volume.ID != vol1 || imp.Volume.Host != "h1" {
		t.Fatalf("pull back %+v", imp)
	}
	f.volumeReport(cond, protocol.VolumeReport{RequestID: imp.RequestID, Kind: protocol.KindVolumeImport, VolumeID: vol1, Host: "h1",
		OK: true, Ref: imp.Ref})
	if v, _ := f.volumeRow(vol1); v.Status != store.VolumeAvailable || v.Host != "h1" {
		t.Fatalf("local volume detached: %s on %q", v.Status, v.Host)
	}

	// Attached again (now on h1, pushed from there), then unshelved: the
	// build pulls it and mounts both at their paths.
	if code, body := attach("demo", vol1, v220...); code != 200 {
		t.Fatalf("attach local again: %d %v", code, body)
	}
	if code, body := attach("demo", vol2, v220...); code != 200 {
		t.Fatalf("attach shared again: %d %v", code, body)
	}
	pass()
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindVolumeExport, &exp)
	f.volumeReport(cond, protocol.VolumeReport{RequestID: exp.RequestID, Kind: protocol.KindVolumeExport, VolumeID: vol1, Host: "h1",
		OK: true, Ref: exp.Ref})
	if resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"unshelve":null}`); resp.StatusCode != 202 {
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
	paths := map[string]string{}
	for _, vm := range build.Spec.Volumes {
		paths[vm.Volume.ID] = vm.MountPath
	}
	if !build.Unshelve || build.VolumeRefs[vol1] != wantRef || len(build.VolumeRefs) != 1 || paths[vol1] != "/data-1" || paths[vol2] != "/data-2" {
		t.Fatalf("unshelve build: refs %v volumes %v", build.VolumeRefs, paths)
	}
	f.report(cond, protocol.InstanceReport{RequestID: build.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnshelve, OK: true, PowerState: 1})
	if v, a := f.volumeRow(vol1); v.Host != "h1" || v.Status != store.VolumeInUse || a == nil || a.Host != "h1" {
		t.Fatalf("local volume after the unshelve: %s on %q %+v", v.Status, v.Host, a)
	}
}

// shelveServer shelves server id (active on h1) through cond, which
// must not offload it at once: it is shelved on h1 afterwards.
func (f *fixture) shelveServer(cond *conductor.Conductor, id string) protocol.SnapshotInstance {
	f.t.Helper()
	if resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"shelve":null}`); resp.StatusCode != 202 {
		f.t.Fatalf("shelve: %d %v", resp.StatusCode, body)
	}
	req := f.lastSnapshotRequest()
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: "h1",
		Ref: req.Ref, Shelve: true, OK: true, PowerState: 4})
	if got := f.instance(id); got.VMState != lifecycle.Shelved || got.Host != "h1" || got.TaskState != lifecycle.NoTask {
		f.t.Fatalf("after shelve: %s/%s on %q", got.VMState, got.TaskState, got.Host)
	}
	return req
}

// Attach and detach on a SHELVED server (shelved, not yet offloaded: its
// stopped container still on h1; Nova from 2.20, 409 below): the work
// goes to h1 as for a stopped server (a local volume of another host is
// moved there first), and the server takes the volume either way it
// leaves the shelf: started again on h1 (it is attached there), or
// offloaded (the offload pushes it with the server's other local
// volumes) and built from the shelve image elsewhere. An offload waits
// for an attach in flight (409). Another project
// gets 404, a reader 403, no token 401.
func TestVolumeAttachDetachShelved(t *testing.T) {
	f := newFixture(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cond := conductor.New(f.st, f.bus, config.Conductor{ShelvedOffloadTime: time.Hour}, 3, logger)
	sched := scheduler.New(f.st, f.bus, config.Default().Scheduler, logger)
	relay := outbox.NewRelay(f.st, f.bus, outbox.Options{Owner: "test"})
	pass := func() {
		t.Helper()
		if _, err := relay.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	id := f.create("demo", "shelf")
	f.placeActive(id, 1)
	shelveReq := f.shelveServer(cond, id)
	f.addVolume(vol1, "p-demo", "h2") // local, on another host
	if err := f.st.DB.Create(&store.Volume{ID: vol2, ProjectID: "p-demo", SizeGB: 1, Status: store.VolumeAvailable,
		Backend: protocol.BackendShared, Host: "h2"}).Error; err != nil {
		t.Fatal(err)
	}
	base := "/v2.1/servers/" + id + "/os-volume_attachments"
	action := "/v2.1/servers/" + id + "/action"
	v220 := []string{"OpenStack-API-Version", "compute 2.20"}
	attach := func(token, vol string, hdr ...string) (int, map[string]any) {
		resp, body := f.do("POST", base, token, `{"volumeAttachment":{"volumeId":"`+vol+`","device":"/data-`+vol[len(vol)-1:]+`"}}`, hdr...)
		return resp.StatusCode, body
	}
	attached := func(vol, host string) {
		t.Helper()
		var a protocol.VolumeAttach
		f.lastSent(bus.ComputeQueue(host), protocol.KindVolumeAttach, &a)
		if a.InstanceID != id || a.Mount.Volume.ID != vol {
			t.Fatalf("attach sent to %s: %+v", host, a)
		}
		f.volumeReport(cond, protocol.VolumeReport{RequestID: a.RequestID, Kind: protocol.KindVolumeAttach, VolumeID: vol, Host: host,
			AttachmentID: a.Mount.AttachmentID, InstanceID: id, OK: true})
		if v, at := f.volumeRow(vol); v.Status != store.VolumeInUse || at == nil || at.Status != store.AttachmentAttached || at.Host != host {
			t.Fatalf("volume %s after its attach: %s %+v", vol, v.Status, at)
		}
	}

	// Before 2.20: Nova's 409; tenant isolation on the new behaviour.
	resp, body := f.do("POST", base, "demo", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, "OpenStack-API-Version", "compute 2.19")
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("POST", base, "other", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, v220...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", base, "read", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, v220...)
	expectFault(t, resp, body, 403, "forbidden")
	if resp, _ := f.do("POST", base, "", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`, v220...); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	if v, a := f.volumeRow(vol2); v.Status != store.VolumeAvailable || a != nil {
		t.Fatalf("refused attaches changed the volume: %s %+v", v.Status, a)
	}

	// The local volume moves from h2 to h1 first (as for a stopped
	// server), not to the shelved tag.
	if code, body := attach("demo", vol1, v220...); code != 200 {
		t.Fatalf("attach local: %d %v", code, body)
	}
	pass()
	var exp protocol.VolumeTransfer
	f.lastSent(bus.ComputeQueue("h2"), protocol.KindVolumeExport, &exp)
	wantRef := strings.SplitN(shelveReq.Ref, "/", 2)[0] + "/capsule/volumes/" + vol1 + ":shelved"
	if exp.Volume.ID != vol1 || exp.Ref == wantRef {
		t.Fatalf("export %+v", exp)
	}
	// No offload while it moves: the admin's is refused, the server stays
	// as it was.
	resp, body = f.do("POST", action, "admin", `{"shelveOffload":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if got := f.instance(id); got.VMState != lifecycle.Shelved || got.TaskState != lifecycle.NoTask || got.Host != "h1" {
		t.Fatalf("refused offload changed the server: %s/%s on %q", got.VMState, got.TaskState, got.Host)
	}
	f.volumeReport(cond, protocol.VolumeReport{RequestID: exp.RequestID, Kind: protocol.KindVolumeExport, VolumeID: vol1, Host: "h2",
		OK: true, Ref: exp.Ref})
	pass()
	var imp protocol.VolumeTransfer
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindVolumeImport, &imp)
	f.volumeReport(cond, protocol.VolumeReport{RequestID: imp.RequestID, Kind: protocol.KindVolumeImport, VolumeID: vol1, Host: "h1",
		OK: true, Ref: imp.Ref})
	pass()
	attached(vol1, "h1")
	if v, _ := f.volumeRow(vol1); v.Host != "h1" {
		t.Fatalf("local volume lives on %q, want h1", v.Host)
	}
	// The shared one goes straight to h1.
	if code, body := attach("demo", vol2, v220...); code != 200 {
		t.Fatalf("attach shared: %d %v", code, body)
	}
	attached(vol2, "h1")

	// Detach (below 2.20 409, reader 403, other project 404) goes to h1.
	resp, body = f.do("DELETE", base+"/"+vol2, "demo", "")
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("DELETE", base+"/"+vol2, "read", "", v220...)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("DELETE", base+"/"+vol2, "other", "", v220...)
	expectFault(t, resp, body, 404, "itemNotFound")
	if resp, body := f.do("DELETE", base+"/"+vol2, "demo", "", v220...); resp.StatusCode != 202 {
		t.Fatalf("detach shared: %d %v", resp.StatusCode, body)
	}
	var det protocol.VolumeDetach
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindVolumeDetach, &det)
	if det.InstanceID != id || det.Mount.Volume.ID != vol2 {
		t.Fatalf("detach sent %+v", det)
	}
	f.volumeReport(cond, protocol.VolumeReport{RequestID: det.RequestID, Kind: protocol.KindVolumeDetach, VolumeID: vol2, Host: "h1",
		AttachmentID: det.Mount.AttachmentID, InstanceID: id, OK: true})
	if v, a := f.volumeRow(vol2); v.Status != store.VolumeAvailable || a != nil {
		t.Fatalf("shared volume after detach: %s %+v", v.Status, a)
	}

	// Unshelved on h1: started there with the volume attached.
	if resp, body := f.do("POST", action, "demo", `{"unshelve":null}`); resp.StatusCode != 202 {
		t.Fatalf("unshelve: %d %v", resp.StatusCode, body)
	}
	var un protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &un)
	if un.Action != lifecycle.ActUnshelve {
		t.Fatalf("h1 got %+v, want the unshelve", un)
	}
	f.report(cond, protocol.InstanceReport{RequestID: un.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnshelve, OK: true, PowerState: 1})
	if got := f.instance(id); got.VMState != lifecycle.Active || got.Host != "h1" {
		t.Fatalf("after unshelve: %s on %q", got.VMState, got.Host)
	}
	if v, a := f.volumeRow(vol1); v.Status != store.VolumeInUse || v.Host != "h1" || a == nil || a.Host != "h1" {
		t.Fatalf("local volume after the unshelve: %s on %q %+v", v.Status, v.Host, a)
	}

	// Shelved again, the shared volume attached while shelved, then
	// offloaded: the offload pushes the local one with the server, and
	// the unshelve's build pulls it and mounts both.
	shelveReq = f.shelveServer(cond, id)
	wantRef = strings.SplitN(shelveReq.Ref, "/", 2)[0] + "/capsule/volumes/" + vol1 + ":shelved"
	if code, body := attach("demo", vol2, v220...); code != 200 {
		t.Fatalf("attach shared again: %d %v", code, body)
	}
	attached(vol2, "h1")
	if resp, body := f.do("POST", action, "admin", `{"shelveOffload":null}`); resp.StatusCode != 202 {
		t.Fatalf("offload: %d %v", resp.StatusCode, body)
	}
	var off protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	if off.Action != lifecycle.ActShelveOffload || len(off.VolumeRefs) != 1 || off.VolumeRefs[vol1] != wantRef {
		t.Fatalf("offload %+v, want vol1 pushed to %s", off, wantRef)
	}
	f.report(cond, protocol.InstanceReport{RequestID: off.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload, OK: true})
	if v, a := f.volumeRow(vol1); v.Status != store.VolumeInUse || v.Host != "" || a == nil || a.Host != "" {
		t.Fatalf("local volume after the offload: %s on %q %+v", v.Status, v.Host, a)
	}
	if resp, body := f.do("POST", action, "demo", `{"unshelve":null}`); resp.StatusCode != 202 {
		t.Fatalf("unshelve offloaded: %d %v", resp.StatusCode, body)
	}
	var sreq protocol.ScheduleInstance
	f.lastSent(bus.SchedulerQueue, protocol.KindScheduleInstance, &sreq)
	m, _ := bus.NewMessage(protocol.KindScheduleInstance, sreq)
	if _, err := sched.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var build protocol.BuildInstance
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindBuildInstance, &build)
	paths := map[string]string{}
	for _, vm := range build.Spec.Volumes {
		paths[vm.Volume.ID] = vm.MountPath
	}
	if !build.Unshelve || build.VolumeRefs[vol1] != wantRef || len(build.VolumeRefs) != 1 || paths[vol1] != "/data-1" || paths[vol2] != "/data-2" {
		t.Fatalf("unshelve build: refs %v volumes %v", build.VolumeRefs, paths)
	}
}

// A volume-backed server shelves as any server (no longer 409): its
// shelve commits the workload (config and layer: the boot volume is not
// in it), the boot volume stays attached, and the offload takes a local
// one to the registry like any local volume; the unshelve pulls it and
// builds from the shelve image on whatever host the scheduler picks.
func TestShelveVolumeBacked(t *testing.T) {
	f := newFixture(t)
	f.addHost("h1", false, false)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, logger)
	sched := scheduler.New(f.st, f.bus, config.Default().Scheduler, logger)
	id, root := f.bootedFromVolume("h1", 2)
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "other", `{"shelve":null}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", action, "read", `{"shelve":null}`)
	expectFault(t, resp, body, 403, "forbidden")
	if resp, body := f.do("POST", action, "demo", `{"shelve":null}`); resp.StatusCode != 202 {
		t.Fatalf("shelve volume-backed: %d %v", resp.StatusCode, body)
	}
	req := f.lastSnapshotRequest()
	if !req.Shelve || req.InstanceID != id {
		t.Fatalf("shelve work %+v", req)
	}
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: "h1",
		Ref: req.Ref, Shelve: true, OK: true, PowerState: 4})
	var off protocol.InstanceAction
	f.lastSent(bus.ComputeQueue("h1"), protocol.KindInstanceAction, &off)
	wantRef := strings.SplitN(req.Ref, "/", 2)[0] + "/capsule/volumes/" + root.ID + ":shelved"
	if off.Action != lifecycle.ActShelveOffload || off.VolumeRefs[root.ID] != wantRef {
		t.Fatalf("offload %+v, want the boot volume pushed to %s", off, wantRef)
	}
	f.report(cond, protocol.InstanceReport{RequestID: off.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActShelveOffload, OK: true})
	got := f.instance(id)
	if got.VMState != lifecycle.ShelvedOffloaded || got.Host != "" || got.ImageID != "" {
		t.Fatalf("after shelve: %s on %q image %q", got.VMState, got.Host, got.ImageID)
	}
	if v, a := f.volumeRow(root.ID); v.Status != store.VolumeInUse || v.Host != "" || a == nil || a.MountPath != protocol.RootMountPath {
		t.Fatalf("boot volume while offloaded: %s on %q %+v", v.Status, v.Host, a)
	}
	// The boot volume cannot be detached, offloaded or not.
	resp, body = f.do("DELETE", "/v2.1/servers/"+id+"/os-volume_attachments/"+root.ID, "demo", "", "OpenStack-API-Version", "compute 2.20")
	expectFault(t, resp, body, 400, "badRequest")
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
	if !build.Unshelve || build.Spec.ImageRef != req.Ref || build.VolumeRefs[root.ID] != wantRef || len(build.Spec.Volumes) != 1 ||
		!build.Spec.Volumes[0].Root() {
		t.Fatalf("unshelve build: image %s refs %v volumes %+v", build.Spec.ImageRef, build.VolumeRefs, build.Spec.Volumes)
	}
	f.report(cond, protocol.InstanceReport{RequestID: build.RequestID, InstanceID: id, Host: "h1", Action: lifecycle.ActUnshelve, OK: true, PowerState: 1})
	if got := f.instance(id); got.VMState != lifecycle.Active || got.Host != "h1" || got.ImageID != "" || got.ShelvedImageID != "" {
		t.Fatalf("after unshelve: %s on %q image %q shelve image %q", got.VMState, got.Host, got.ImageID, got.ShelvedImageID)
	}
	if v, _ := f.volumeRow(root.ID); v.Status != store.VolumeInUse || v.Host != "h1" {
		t.Fatalf("boot volume after the unshelve: %s on %q", v.Status, v.Host)
	}
}
