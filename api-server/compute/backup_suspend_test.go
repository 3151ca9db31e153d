package compute

import (
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// lastSnapshotRequest decodes the newest snapshot_instance cast to h1.
func (f *fixture) lastSnapshotRequest() protocol.SnapshotInstance {
	f.t.Helper()
	sent := f.bus.Sent(bus.ComputeQueue("h1"))
	for i := len(sent) - 1; i >= 0; i-- {
		if sent[i].Kind != protocol.KindSnapshotInstance {
			continue
		}
		var req protocol.SnapshotInstance
		if err := sent[i].Decode(&req); err != nil {
			f.t.Fatal(err)
		}
		return req
	}
	f.t.Fatalf("no snapshot request on the compute queue: %v", sent)
	return protocol.SnapshotInstance{}
}

func (f *fixture) setState(id string, vm lifecycle.VMState, task lifecycle.TaskState) {
	f.t.Helper()
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).
		Updates(map[string]any{"vm_state": string(vm), "task_state": string(task)}).Error; err != nil {
		f.t.Fatal(err)
	}
}

func TestCreateBackupValidation(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "bk")
	f.placeActive(id, 2)
	action := "/v2.1/servers/" + id + "/action"
	for _, bad := range []string{
		`{"createBackup":null}`,
		`{"createBackup":{}}`,
		`{"createBackup":{"backup_type":"daily","rotation":1}}`,
		`{"createBackup":{"name":"b","rotation":1}}`,
		`{"createBackup":{"name":"b","backup_type":"daily"}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":-1}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":"-1"}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":"two"}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":""}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":1.5}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":null}}`,
		`{"createBackup":{"name":"b","backup_type":7,"rotation":1}}`,
		`{"createBackup":{"name":"","backup_type":"daily","rotation":1}}`,
		`{"createBackup":{"name":" b ","backup_type":"daily","rotation":1}}`,
		`{"createBackup":{"name":5,"backup_type":"daily","rotation":1}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":1,"extra":1}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":1,"metadata":{"k":1}}}`,
		`{"createBackup":{"name":"b","backup_type":"daily","rotation":1,"metadata":"x"}}`,
	} {
		resp, body := f.do("POST", action, "demo", bad)
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d %v, want 400", bad, resp.StatusCode, body)
			continue
		}
		expectFault(t, resp, body, 400, "badRequest")
	}
	var n int64
	f.st.DB.Model(&store.Image{}).Where("id <> ?", imageID).Count(&n)
	if got := f.instance(id); n != 0 || got.TaskState != "" {
		t.Errorf("refused backups left %d images, task %q", n, got.TaskState)
	}
	// A numeric string is an integer to Nova.
	resp, body := f.do("POST", action, "demo", `{"createBackup":{"name":"b","backup_type":"daily","rotation":"3"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("rotation \"3\": %d %v", resp.StatusCode, body)
	}
	if req := f.lastSnapshotRequest(); req.Backup == nil || req.Backup.Rotation != 3 || req.Backup.Type != "daily" {
		t.Errorf("snapshot request backup %+v", req.Backup)
	}
}

// TestCreateBackupFlow: the backup is a snapshot with Nova's backup
// properties and task image_backup (status unchanged); the conductor
// activates it and rotates the older ones out.
func TestCreateBackupFlow(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	id := f.create("demo", "bk")
	f.placeActive(id, 2)
	action := "/v2.1/servers/" + id + "/action"
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))

	resp, body := f.do("POST", action, "other", `{"createBackup":{"name":"b","backup_type":"daily","rotation":1}}`)
	expectFault(t, resp, body, 404, "itemNotFound")

	// 2.1: Tempest's common action schema (202, empty body) plus Location.
	f.check(t, ts, apiVersion{2, 1}, contractCall{"demo", "POST", action,
		`{"createBackup":{"name":"b1","backup_type":"daily","rotation":1,"metadata":{"k":"v","image_type":"mine"}}}`,
		"servers", "server_actions_common_schema"})
	req1 := f.lastSnapshotRequest()
	if req1.Backup == nil || *req1.Backup != (protocol.BackupRotation{Type: "daily", Rotation: 1}) || req1.InstanceID != id ||
		req1.Ref != "127.0.0.1:5050/capsule/snapshots/"+req1.ImageID+":"+req1.ImageID {
		t.Fatalf("snapshot request %+v backup %+v", req1, req1.Backup)
	}
	var img store.Image
	if err := f.st.DB.Where("id = ?", req1.ImageID).First(&img).Error; err != nil {
		t.Fatal(err)
	}
	var props map[string]string
	_ = json.Unmarshal([]byte(img.Properties), &props)
	if img.Status != "queued" || img.Name != "b1" || img.Owner != "p-demo" || props["image_type"] != "backup" ||
		props["backup_type"] != "daily" || props["instance_uuid"] != id || props["k"] != "v" {
		t.Errorf("backup image %+v props %v", img, props)
	}
	_, srv := f.do("GET", "/v2.1/servers/"+id, "demo", "")
	s := srv["server"].(map[string]any)
	if s["status"] != "ACTIVE" || s["OS-EXT-STS:task_state"] != "image_backup" {
		t.Errorf("server during backup: %v / %v", s["status"], s["OS-EXT-STS:task_state"])
	}
	// One at a time.
	resp, body = f.do("POST", action, "demo", `{"createBackup":{"name":"b","backup_type":"daily","rotation":1}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req1.RequestID, InstanceID: id, ImageID: req1.ImageID, Host: "h1",
		Ref: req1.Ref, Backup: req1.Backup, OK: true, Digest: "sha256:aa", Size: 10})
	if got := f.instance(id); got.TaskState != "" {
		t.Fatalf("task after the backup %q", got.TaskState)
	}

	// 2.45: {"image_id"}; the second backup with rotation 1 removes the first.
	resp, body = f.do("POST", action, "demo", `{"createBackup":{"name":"b2","backup_type":"daily","rotation":1}}`,
		"X-OpenStack-Nova-API-Version", "2.45")
	img2, _ := body["image_id"].(string)
	if resp.StatusCode != 202 || img2 == "" || len(body) != 1 || !strings.HasSuffix(resp.Header.Get("Location"), img2) {
		t.Fatalf("createBackup 2.45 = %d %v", resp.StatusCode, body)
	}
	req2 := f.lastSnapshotRequest()
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req2.RequestID, InstanceID: id, ImageID: img2, Host: "h1",
		Ref: req2.Ref, Backup: req2.Backup, OK: true, Digest: "sha256:bb", Size: 10})
	var ids []string
	f.st.DB.Model(&store.Image{}).Where("id <> ?", imageID).Pluck("id", &ids)
	if len(ids) != 1 || ids[0] != img2 {
		t.Errorf("images after the second backup = %v, want only %s", ids, img2)
	}

	// The action log names both.
	_, acts := f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions", "demo", "")
	var names []string
	for _, a := range acts["instanceActions"].([]any) {
		names = append(names, a.(map[string]any)["action"].(string))
	}
	if strings.Join(names, ",") != "createBackup,createBackup,create" {
		t.Errorf("instance actions = %v", names)
	}

	// States: suspended is fine (Nova), a resized server is not.
	f.setState(id, lifecycle.Suspended, lifecycle.NoTask)
	resp, body = f.do("POST", action, "demo", `{"createBackup":{"name":"b3","backup_type":"daily","rotation":1}}`)
	if resp.StatusCode != 202 {
		t.Errorf("backup of a suspended server: %d %v", resp.StatusCode, body)
	}
	f.setState(id, lifecycle.Resized, lifecycle.NoTask)
	resp, body = f.do("POST", action, "demo", `{"createBackup":{"name":"b4","backup_type":"daily","rotation":1}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
}

// TestSuspendResume: 202 with an empty body (Tempest's common action
// schema), SUSPENDED with power_state 7 once the conductor has the
// report, Nova's 409s from the wrong states, and the instance actions.
func TestSuspendResume(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	id := f.create("demo", "su")
	f.placeActive(id, 2)
	action := "/v2.1/servers/" + id + "/action"
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	finish := func(act lifecycle.Action, power int) {
		t.Helper()
		sent := f.bus.Sent(bus.ComputeQueue("h1"))
		var req protocol.InstanceAction
		if err := sent[len(sent)-1].Decode(&req); err != nil || req.Action != act {
			t.Fatalf("cast %+v (%v), want %s", req, err, act)
		}
		f.report(cond, protocol.InstanceReport{RequestID: req.RequestID, InstanceID: id, Host: "h1", Action: act,
			OK: true, PowerState: power, Event: "compute_" + string(act) + "_instance"})
	}

	resp, body := f.do("POST", action, "demo", `{"resume":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	f.check(t, ts, apiVersion{2, 1}, contractCall{"demo", "POST", action, `{"suspend":null}`, "servers", "server_actions_common_schema"})
	if got := f.instance(id); got.TaskState != "suspending" {
		t.Errorf("task while suspending %q", got.TaskState)
	}
	finish(lifecycle.ActSuspend, 3) // the driver sees a frozen (paused) container
	for _, v := range []apiVersion{{2, 1}, {2, 60}} {
		body := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/" + id, "", "servers", "get_server"})
		s := body["server"].(map[string]any)
		if s["status"] != "SUSPENDED" || s["OS-EXT-STS:vm_state"] != "suspended" || s["OS-EXT-STS:power_state"] != float64(7) ||
			s["OS-EXT-STS:task_state"] != nil {
			t.Errorf("suspended server at %s: %v %v %v %v", v, s["status"], s["OS-EXT-STS:vm_state"],
				s["OS-EXT-STS:power_state"], s["OS-EXT-STS:task_state"])
		}
	}
	_, list := f.do("GET", "/v2.1/servers?status=SUSPENDED", "demo", "")
	if got := list["servers"].([]any); len(got) != 1 || got[0].(map[string]any)["id"] != id {
		t.Errorf("?status=SUSPENDED = %v", got)
	}

	// Nova: no stop, pause, resize, rebuild or second suspend from
	// suspended; hard reboot and snapshot are fine (not tried here).
	for _, b := range []string{`{"suspend":null}`, `{"os-stop":null}`, `{"pause":null}`, `{"reboot":{"type":"SOFT"}}`,
		`{"resize":{"flavorRef":"2"}}`, `{"rebuild":{"imageRef":"` + imageID + `"}}`} {
		resp, body := f.do("POST", action, "demo", b)
		if resp.StatusCode != 409 {
			t.Errorf("%s from SUSPENDED: %d %v, want 409", b, resp.StatusCode, body)
			continue
		}
		expectFault(t, resp, body, 409, "conflictingRequest")
	}

	f.check(t, ts, apiVersion{2, 1}, contractCall{"demo", "POST", action, `{"resume":null}`, "servers", "server_actions_common_schema"})
	if got := f.instance(id); got.TaskState != "resuming" {
		t.Errorf("task while resuming %q", got.TaskState)
	}
	finish(lifecycle.ActResume, 1)
	if got := f.instance(id); got.VMState != "active" || got.PowerState != 1 || got.TaskState != "" {
		t.Errorf("after resume %s/%q/%d", got.VMState, got.TaskState, got.PowerState)
	}
	_, acts := f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions", "demo", "")
	var names []string
	for _, a := range acts["instanceActions"].([]any) {
		names = append(names, a.(map[string]any)["action"].(string))
	}
	if strings.Join(names, ",") != "resume,suspend,create" {
		t.Errorf("instance actions = %v", names)
	}

	// Delete works from SUSPENDED.
	f.setState(id, lifecycle.Suspended, lifecycle.NoTask)
	if resp, body := f.do("DELETE", "/v2.1/servers/"+id, "demo", ""); resp.StatusCode != 204 {
		t.Errorf("delete of a suspended server: %d %v", resp.StatusCode, body)
	}
}
