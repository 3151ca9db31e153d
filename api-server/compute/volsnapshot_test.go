package compute

import (
	"encoding/json"
	"testing"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// bootedFromVolume creates a volume-backed server of demo's (a boot
// volume of size GB made from the image) and settles it active on host
// with its boot volume in use there, as a build does.
func (f *fixture) bootedFromVolume(host string, size int) (string, *store.Volume) {
	f.t.Helper()
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"bfv","flavorRef":"2","block_device_mapping_v2":[`+
		`{"source_type":"image","destination_type":"volume","uuid":"`+f.image+`","volume_size":`+jsonInt(size)+`,"boot_index":0,"delete_on_termination":true}]}}`)
	if resp.StatusCode != 202 {
		f.t.Fatalf("boot from volume: %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	f.activate(id, host)
	atts, err := store.InstanceVolumeAttachments(f.st.DB, id)
	if err != nil || len(atts) != 1 {
		f.t.Fatalf("attachments %v %v", atts, err)
	}
	if err := f.st.DB.Model(&store.VolumeAttachment{}).Where("id = ?", atts[0].ID).
		Updates(map[string]any{"status": store.AttachmentAttached, "host": host}).Error; err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.DB.Model(&store.Volume{}).Where("id = ?", atts[0].VolumeID).
		Updates(map[string]any{"status": store.VolumeInUse, "host": host}).Error; err != nil {
		f.t.Fatal(err)
	}
	v, err := store.GetVolume(f.st.DB, atts[0].VolumeID)
	if err != nil {
		f.t.Fatal(err)
	}
	return id, v
}

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }

// A volume-backed server's createImage snapshots its boot volume and
// makes an image of size 0 mapping the snapshot (Nova's bdm v2
// properties); booting that image makes a new volume from the snapshot
// on the snapshot's host and boots from it. A resize to a flavor with a
// smaller disk and a cold migration are taken (the boot volume goes
// along); a backup and a rebuild are still refused.
func TestVolumeBackedSnapshotAndMoves(t *testing.T) {
	f := newFixture(t)
	f.addHost("h1", false, false)
	f.addHost("h2", false, false)
	id, root := f.bootedFromVolume("h1", 2)
	action := "/v2.1/servers/" + id + "/action"

	resp, body := f.do("POST", action, "other", `{"createImage":{"name":"snap"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", action, "read", `{"createImage":{"name":"snap"}}`)
	expectFault(t, resp, body, 403, "forbidden")
	for _, b := range []string{`{"createBackup":{"name":"b","backup_type":"daily","rotation":1}}`, `{"rebuild":{"imageRef":"` + f.image + `"}}`} {
		resp, body = f.do("POST", action, "admin", b)
		expectFault(t, resp, body, 409, "conflictingRequest")
	}

	resp, body = f.do("POST", action, "demo", `{"createImage":{"name":"snap","metadata":{"k":"v"}}}`, "OpenStack-API-Version", "compute 2.45")
	if resp.StatusCode != 202 {
		t.Fatalf("createImage: %d %v", resp.StatusCode, body)
	}
	imgID, _ := body["image_id"].(string)
	var img store.Image
	if err := f.st.DB.Where("id = ?", imgID).First(&img).Error; err != nil {
		t.Fatalf("image %q: %v", imgID, err)
	}
	if img.Status != "active" || img.Size == nil || *img.Size != 0 || img.Owner != "p-demo" || img.RegistryRef != "" {
		t.Fatalf("snapshot image %+v", img)
	}
	var props map[string]string
	if err := json.Unmarshal([]byte(img.Properties), &props); err != nil {
		t.Fatal(err)
	}
	if props["bdm_v2"] != "True" || props["root_device_name"] != "/dev/vda" || props["k"] != "v" || props["image_type"] != "snapshot" ||
		props["base_image_ref"] != f.image {
		t.Fatalf("snapshot image properties %v", props)
	}
	var bdms []map[string]any
	if err := json.Unmarshal([]byte(props["block_device_mapping"]), &bdms); err != nil || len(bdms) != 1 {
		t.Fatalf("block_device_mapping %q: %v", props["block_device_mapping"], err)
	}
	b := bdms[0]
	if b["source_type"] != "snapshot" || b["destination_type"] != "volume" || b["boot_index"] != float64(0) ||
		b["volume_size"] != float64(2) || b["device_name"] != "/dev/vda" || b["delete_on_termination"] != true {
		t.Fatalf("mapping %v", b)
	}
	sn, err := store.GetVolumeSnapshot(f.st.DB, b["snapshot_id"].(string))
	if err != nil || sn.VolumeID != root.ID || sn.Status != store.SnapshotCreating || sn.Host != "h1" || sn.ProjectID != "p-demo" {
		t.Fatalf("snapshot %+v %v", sn, err)
	}
	if sent := f.sentTo("h1", protocol.KindSnapshotCreate); len(sent) != 1 {
		t.Fatalf("snapshot work sent to h1: %d", len(sent))
	}
	var inst store.Instance
	if err := f.st.DB.Where("id = ?", id).First(&inst).Error; err != nil || inst.TaskState != "" || inst.VMState != "active" {
		t.Fatalf("server after its snapshot: %+v %v", inst, err)
	}

	// The image boots once its snapshot is available.
	boot := `{"server":{"name":"from-snap","flavorRef":"1","imageRef":"` + imgID + `"}}`
	resp, body = f.do("POST", "/v2.1/servers", "demo", boot)
	expectFault(t, resp, body, 400, "badRequest")
	if err := f.st.DB.Model(&store.VolumeSnapshot{}).Where("id = ?", sn.ID).Update("status", store.SnapshotAvailable).Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", "/v2.1/servers", "demo", boot)
	if resp.StatusCode != 202 {
		t.Fatalf("boot from the snapshot image: %d %v", resp.StatusCode, body)
	}
	nid := body["server"].(map[string]any)["id"].(string)
	atts, _ := store.InstanceVolumeAttachments(f.st.DB, nid)
	if len(atts) != 1 || atts[0].MountPath != protocol.RootMountPath || !atts[0].DeleteOnTermination {
		t.Fatalf("attachments of the server booted from the snapshot image %+v", atts)
	}
	nv, _ := store.GetVolume(f.st.DB, atts[0].VolumeID)
	if nv.SnapshotID != sn.ID || nv.ImageID != f.image || nv.SizeGB != 2 || nv.Host != "h1" || nv.Status != store.VolumeCreating {
		t.Fatalf("its boot volume %+v", nv)
	}
	var ninst store.Instance
	if err := f.st.DB.Where("id = ?", nid).First(&ninst).Error; err != nil || ninst.ImageID != "" || ninst.RequestedHost != "h1" {
		t.Fatalf("server from the snapshot image: image %q host %q %v", ninst.ImageID, ninst.RequestedHost, err)
	}

	// The flavor's disk means nothing to a volume-backed server: a
	// resize to a smaller one is taken, and so is a cold migration.
	resp, body = f.do("POST", action, "demo", `{"resize":{"flavorRef":"1"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("resize of a volume-backed server to a smaller disk: %d %v", resp.StatusCode, body)
	}
	f.activate(id, "h1")
	if err := f.st.DB.Where("instance_id = ?", id).Delete(&store.Migration{}).Error; err != nil {
		t.Fatal(err)
	}
	if resp, body := f.do("POST", action, "admin", `{"migrate":null}`); resp.StatusCode != 202 {
		t.Fatalf("migrate of a volume-backed server: %d %v", resp.StatusCode, body)
	}
}

func TestImageBDMsAndMerge(t *testing.T) {
	img := &store.Image{ID: "i", Properties: `{"bdm_v2":"True","block_device_mapping":"[{\"source_type\":\"snapshot\",\"destination_type\":\"volume\",\"snapshot_id\":\"s1\",\"boot_index\":0,\"device_name\":\"/dev/vda\",\"volume_id\":null},{\"source_type\":\"snapshot\",\"snapshot_id\":\"s2\",\"device_name\":\"/dev/vdb\"}]","base_image_ref":"b"}`}
	got, base, err := imageBDMs(img)
	if err != nil || base != "b" || len(got) != 2 {
		t.Fatalf("imageBDMs: %s %q %v", got, base, err)
	}
	var first bdmIn
	if err := json.Unmarshal(got[0], &first); err != nil || first.UUID != "s1" || first.SourceType != "snapshot" {
		t.Fatalf("first mapping %s: %+v %v", got[0], first, err)
	}
	// The request's vdb replaces the image's.
	merged := mergeBDMs(got, []json.RawMessage{json.RawMessage(`{"source_type":"blank","destination_type":"volume","volume_size":1,"device_name":"vdb"}`)})
	if len(merged) != 2 || string(merged[0]) != string(got[0]) {
		t.Fatalf("merged %s", merged)
	}
	if got, _, err := imageBDMs(&store.Image{Properties: `{"block_device_mapping":"[]","bdm_v2":"False"}`}); err == nil {
		t.Fatalf("bdm v1 image: %s, want an error", got)
	}
	if got, _, err := imageBDMs(&store.Image{Properties: `{"os_distro":"x"}`}); err != nil || got != nil {
		t.Fatalf("plain image: %s %v", got, err)
	}
}

// A volume-backed server is rescued from 2.87 (Nova's rule; 400 below),
// with the image its boot volume was filled from.
func TestVolumeBackedRescue(t *testing.T) {
	f := newFixture(t)
	id, _ := f.bootedFromVolume("h1", 1)
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "demo", `{"rescue":null}`, "OpenStack-API-Version", "compute 2.86")
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", action, "other", `{"rescue":null}`, "OpenStack-API-Version", "compute 2.87")
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", action, "demo", `{"rescue":null}`, "OpenStack-API-Version", "compute 2.87")
	if resp.StatusCode != 200 {
		t.Fatalf("rescue at 2.87: %d %v", resp.StatusCode, body)
	}
	sent := f.sentTo("h1", protocol.KindInstanceAction)
	if len(sent) != 1 {
		t.Fatalf("rescue work sent to h1: %d", len(sent))
	}
	var act protocol.InstanceAction
	if err := json.Unmarshal(sent[0].Body, &act); err != nil || act.RescueImage != "127.0.0.1:5050/capsule/busybox:latest" {
		t.Fatalf("rescue work %+v %v", act, err)
	}
}
