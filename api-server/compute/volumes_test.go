package compute

import (
	"encoding/json"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

func (f *fixture) addVolume(id, project, host string) {
	f.t.Helper()
	v := store.Volume{ID: id, ProjectID: project, SizeGB: 1, Status: store.VolumeAvailable, Backend: protocol.BackendLocal, Host: host}
	if err := f.st.DB.Create(&v).Error; err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) volumeStatus(id string) store.VolumeStatus {
	f.t.Helper()
	v, err := store.GetVolume(f.st.DB, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return v.Status
}

func (f *fixture) sentTo(host, kind string) []bus.Message {
	var out []bus.Message
	for _, m := range f.bus.Sent(bus.ComputeQueue(host)) {
		if m.Kind == kind {
			out = append(out, m)
		}
	}
	return out
}

const (
	vol1 = "0a0a0a0a-0000-4000-8000-000000000001"
	vol2 = "0a0a0a0a-0000-4000-8000-000000000002"
)

func TestVolumeAttachDetach(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	f.addVolume(vol1, "p-demo", "h1")
	f.addVolume(vol2, "p-demo", "h2")
	base := "/v2.1/servers/" + id + "/os-volume_attachments"

	// another project's member, a reader, no token
	resp, body := f.do("POST", base, "other", `{"volumeAttachment":{"volumeId":"`+vol1+`"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", base, "read", `{"volumeAttachment":{"volumeId":"`+vol1+`"}}`)
	expectFault(t, resp, body, 403, "forbidden")
	if resp, _ := f.do("GET", base, "", ""); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}

	resp, body = f.do("POST", base, "demo", `{"volumeAttachment":{"volumeId":"`+vol1+`","delete_on_termination":true}}`,
		"OpenStack-API-Version", "compute 2.89")
	if resp.StatusCode != 200 {
		t.Fatalf("attach: %d %v", resp.StatusCode, body)
	}
	va := body["volumeAttachment"].(map[string]any)
	if va["device"] != "/dev/vdb" || va["volumeId"] != vol1 || va["delete_on_termination"] != true || va["attachment_id"] == nil || va["id"] != nil {
		t.Fatalf("attachment %v", va)
	}
	if f.volumeStatus(vol1) != store.VolumeAttaching {
		t.Fatalf("volume %s", f.volumeStatus(vol1))
	}
	msgs := f.sentTo("h1", protocol.KindVolumeAttach)
	var at protocol.VolumeAttach
	if len(msgs) != 1 || json.Unmarshal(msgs[0].Body, &at) != nil || at.InstanceID != id || at.Mount.MountPath != "/mnt/"+vol1 {
		t.Fatalf("attach work %+v", at)
	}
	// attached twice: refused
	resp, body = f.do("POST", base, "demo", `{"volumeAttachment":{"volumeId":"`+vol1+`"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	// a volume on another host moves first (export from h2)
	resp, body = f.do("POST", base, "demo", `{"volumeAttachment":{"volumeId":"`+vol2+`","device":"/data"}}`)
	if resp.StatusCode != 200 || body["volumeAttachment"].(map[string]any)["device"] != "/data" {
		t.Fatalf("attach vol2: %d %v", resp.StatusCode, body)
	}
	var tr protocol.VolumeTransfer
	if msgs := f.sentTo("h2", protocol.KindVolumeExport); len(msgs) != 1 || json.Unmarshal(msgs[0].Body, &tr) != nil || tr.Ref == "" || tr.Volume.Host != "h2" {
		t.Fatalf("export %+v", tr)
	}
	// the host reports vol1 attached
	store.ChangeVolumeStatus(f.st.DB, vol1, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeInUse, nil)
	f.st.DB.Model(&store.VolumeAttachment{}).Where("volume_id = ?", vol1).Update("status", store.AttachmentAttached)

	resp, body = f.do("GET", "/v2.1/servers/"+id, "demo", "", "OpenStack-API-Version", "compute 2.3")
	if va := body["server"].(map[string]any)["os-extended-volumes:volumes_attached"].([]any); resp.StatusCode != 200 || len(va) != 2 {
		t.Fatalf("volumes_attached %v", body)
	}
	resp, body = f.do("GET", base+"/"+vol1, "other", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	// swap refused clearly
	resp, body = f.do("PUT", base+"/"+vol1, "admin", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("PUT", base+"/"+vol1, "demo", `{"volumeAttachment":{"volumeId":"`+vol2+`"}}`)
	expectFault(t, resp, body, 403, "forbidden")
	// detach
	resp, body = f.do("DELETE", base+"/"+vol2, "demo", "")
	expectFault(t, resp, body, 400, "badRequest") // still attaching
	resp, body = f.do("DELETE", base+"/"+vol1, "read", "")
	expectFault(t, resp, body, 403, "forbidden")
	if resp, body := f.do("DELETE", base+"/"+vol1, "demo", ""); resp.StatusCode != 202 {
		t.Fatalf("detach: %d %v", resp.StatusCode, body)
	}
	if f.volumeStatus(vol1) != store.VolumeDetaching || len(f.sentTo("h1", protocol.KindVolumeDetach)) != 1 {
		t.Fatalf("detach: %s", f.volumeStatus(vol1))
	}
}

// A block-device mapping Capsule cannot honour is refused, never dropped.
func TestCreateRefusesVolumeBDMs(t *testing.T) {
	f := newFixture(t)
	for _, bdm := range []string{
		`{"source_type":"blank","destination_type":"volume","volume_size":1,"boot_index":-1}`,
		`{"source_type":"volume","destination_type":"volume","uuid":"` + vol1 + `","boot_index":1}`,
		`{"source_type":"blank","destination_type":"local","guest_format":"swap","boot_index":-1}`,
	} {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"b","imageRef":"`+f.image+`","flavorRef":"1","block_device_mapping_v2":[`+bdm+`]}}`)
		expectFault(t, resp, body, 400, "badRequest")
	}
	// the image as the local root is what Capsule does anyway
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"b","imageRef":"`+f.image+`","flavorRef":"1","block_device_mapping_v2":[{"source_type":"image","destination_type":"local","uuid":"`+f.image+`","boot_index":0}]}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("root bdm: %d %v", resp.StatusCode, body)
	}
}

// A server with a local volume attached is not shelved until the volume
// is detached (an unshelve elsewhere would leave its data behind); a cold
// migration and a resize take it along, rebuild and reboot keep it.
func TestLocalVolumePinsServer(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	f.addVolume(vol1, "p-demo", "h1")
	if err := f.st.DB.Create(&store.VolumeAttachment{ID: "a1", VolumeID: vol1, InstanceID: id, Host: "h1", Status: store.AttachmentAttached}).Error; err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"shelve":null}`, `{"shelveOffload":null}`} {
		resp, out := f.do("POST", "/v2.1/servers/"+id+"/action", "admin", body)
		expectFault(t, resp, out, 409, "conflictingRequest")
	}
	if resp, out := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"reboot":{"type":"SOFT"}}`); resp.StatusCode != 202 {
		t.Fatalf("reboot: %d %v", resp.StatusCode, out)
	}
	f.activate(id, "h1")
	if resp, out := f.do("POST", "/v2.1/servers/"+id+"/action", "admin", `{"migrate":null}`); resp.StatusCode != 202 {
		t.Fatalf("migrate with a local volume: %d %v", resp.StatusCode, out)
	}
}
