package compute

import (
	"context"
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

// Block-device mappings on create: volumes are recorded with the server
// (new ones creating, with no host yet; the user's attaching, binding the
// server to their host), a boot volume makes a volume-backed server
// (image ""), the volume quota holds, what Capsule cannot do is refused
// (never dropped), and a server deleted before it was built lets go of
// its volumes as delete_on_termination says.
func TestCreateBDMs(t *testing.T) {
	f := newFixture(t)
	f.addVolume(vol1, "p-demo", "h2")
	f.addVolume(vol2, "p-other", "h1")
	create := func(token, extra, bdms string) (int, map[string]any) {
		resp, body := f.do("POST", "/v2.1/servers", token, `{"server":{"name":"b","flavorRef":"1"`+extra+`,"block_device_mapping_v2":[`+bdms+`]}}`)
		return resp.StatusCode, body
	}
	img := `,"imageRef":"` + f.image + `"`
	for _, bdm := range []string{
		`{"source_type":"blank","destination_type":"local","guest_format":"swap","boot_index":-1}`,
		`{"source_type":"blank","destination_type":"volume","boot_index":-1}`,                                   // no size
		`{"source_type":"blank","destination_type":"volume","volume_size":1,"boot_index":0}`,                    // blank boot
		`{"source_type":"blank","destination_type":"volume","volume_size":9223372036854775807,"boot_index":-1}`, // above Nova's 2^31-1
		`{"source_type":"volume","destination_type":"volume","uuid":"` + vol2 + `","boot_index":1}`,             // another project's
		`{"source_type":"image","destination_type":"volume","uuid":"` + f.image + `","volume_size":1,"boot_index":0},{"source_type":"image","destination_type":"volume","uuid":"` + f.image + `","volume_size":1,"boot_index":"0"}`,
	} {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"b","imageRef":"`+f.image+`","flavorRef":"1","block_device_mapping_v2":[`+bdm+`]}}`)
		expectFault(t, resp, body, 400, "badRequest")
	}
	// over the gigabytes quota (1000 by default)
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"b","imageRef":"`+f.image+`","flavorRef":"1","block_device_mapping_v2":[{"source_type":"blank","destination_type":"volume","volume_size":1001}]}}`)
	expectFault(t, resp, body, 403, "forbidden")
	// over the project's per_volume_gigabytes: the largest volume counts, not the sum
	if err := f.st.SetVolumeQuotaLimits(context.Background(), "p-demo", map[string]int{store.QuotaPerVolumeGigabytes: 2}); err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"b","imageRef":"`+f.image+`","flavorRef":"1","block_device_mapping_v2":[{"source_type":"blank","destination_type":"volume","volume_size":3}]}}`)
	expectFault(t, resp, body, 403, "forbidden")
	if err := f.st.SetVolumeQuotaLimits(context.Background(), "p-demo", map[string]int{store.QuotaPerVolumeGigabytes: -1}); err != nil {
		t.Fatal(err)
	}
	// the image as the local root is what Capsule does anyway
	if code, body := create("demo", img, `{"source_type":"image","destination_type":"local","uuid":"`+f.image+`","boot_index":0}`); code != 202 {
		t.Fatalf("root bdm: %d %v", code, body)
	}

	// a blank volume and the user's volume, attached at boot
	code, body := create("demo", img, `{"source_type":"image","destination_type":"local","uuid":"`+f.image+`","boot_index":0},`+
		`{"source_type":"blank","destination_type":"volume","volume_size":2,"boot_index":1,"delete_on_termination":true,"tag":"data"},`+
		`{"source_type":"volume","destination_type":"volume","uuid":"`+vol1+`","boot_index":2,"device_name":"vdd"}`)
	if code != 202 {
		t.Fatalf("volume bdms: %d %v", code, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	atts, err := store.InstanceVolumeAttachments(f.st.DB, id)
	if err != nil || len(atts) != 2 {
		t.Fatalf("attachments %v %v", atts, err)
	}
	var blank *store.Volume
	for _, a := range atts {
		if a.Status != store.AttachmentAttaching || a.MountPath == protocol.RootMountPath {
			t.Fatalf("attachment %+v", a)
		}
		if a.VolumeID == vol1 {
			if a.Device != "/dev/vdd" || a.DeleteOnTermination {
				t.Fatalf("existing volume's attachment %+v", a)
			}
			continue
		}
		if blank, err = store.GetVolume(f.st.DB, a.VolumeID); err != nil {
			t.Fatal(err)
		}
		if a.Device != "/dev/vdb" || !a.DeleteOnTermination || a.Tag != "data" || blank.Status != store.VolumeCreating || blank.SizeGB != 2 || blank.Host != "" {
			t.Fatalf("blank volume %+v, attachment %+v", blank, a)
		}
	}
	if blank == nil || f.volumeStatus(vol1) != store.VolumeAttaching {
		t.Fatalf("volumes: blank %v, vol1 %s", blank, f.volumeStatus(vol1))
	}
	var inst store.Instance
	if err := f.st.DB.Where("id = ?", id).First(&inst).Error; err != nil || inst.RequestedHost != "h2" {
		t.Fatalf("server bound to its volume's host: %q %v", inst.RequestedHost, err)
	}
	// deleted before a host took it: the new volume goes, vol1 is free
	if resp, body := f.do("DELETE", "/v2.1/servers/"+id, "demo", ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d %v", resp.StatusCode, body)
	}
	if _, err := store.GetVolume(f.st.DB, blank.ID); err == nil {
		t.Fatalf("the blank volume of a server deleted before its build is still there")
	}
	if st := f.volumeStatus(vol1); st != store.VolumeAvailable {
		t.Fatalf("vol1 %s after its server's delete", st)
	}

	// boot from a new volume made from the image: a volume-backed server
	code, body = create("demo", "", `{"source_type":"image","destination_type":"volume","uuid":"`+f.image+`","volume_size":3,"boot_index":0}`)
	if code != 202 {
		t.Fatalf("boot from volume: %d %v", code, body)
	}
	id = body["server"].(map[string]any)["id"].(string)
	resp, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if resp.StatusCode != 200 || body["server"].(map[string]any)["image"] != "" {
		t.Fatalf("volume-backed server's image: %v", body)
	}
	atts, _ = store.InstanceVolumeAttachments(f.st.DB, id)
	if len(atts) != 1 || atts[0].MountPath != protocol.RootMountPath || atts[0].Device != "/dev/vda" {
		t.Fatalf("boot attachment %+v", atts)
	}
	root, _ := store.GetVolume(f.st.DB, atts[0].VolumeID)
	if root.ImageID != f.image || !root.Bootable || root.SizeGB != 3 {
		t.Fatalf("boot volume %+v", root)
	}
	// no image and no boot volume
	code, body = create("demo", "", `{"source_type":"blank","destination_type":"volume","volume_size":1,"boot_index":1}`)
	if code != 400 {
		t.Fatalf("no image, no boot volume: %d %v", code, body)
	}
}

// A server with a local volume attached is rebooted and cold-migrated
// with it (a migration and a resize take it along; shelving it:
// TestShelveLocalVolume).
func TestLocalVolumePinsServer(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	f.addVolume(vol1, "p-demo", "h1")
	if err := f.st.DB.Create(&store.VolumeAttachment{ID: "a1", VolumeID: vol1, InstanceID: id, Host: "h1", Status: store.AttachmentAttached}).Error; err != nil {
		t.Fatal(err)
	}
	if resp, out := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"reboot":{"type":"SOFT"}}`); resp.StatusCode != 202 {
		t.Fatalf("reboot: %d %v", resp.StatusCode, out)
	}
	f.activate(id, "h1")
	if resp, out := f.do("POST", "/v2.1/servers/"+id+"/action", "admin", `{"migrate":null}`); resp.StatusCode != 202 {
		t.Fatalf("migrate with a local volume: %d %v", resp.StatusCode, out)
	}
}
