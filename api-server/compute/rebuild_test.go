package compute

import (
	"fmt"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// TestContractRebuild: the rebuild response is Tempest's rebuild schema at
// every microversion (basic view, adminPass, key_name from 2.54,
// user_data from 2.57), from ACTIVE, SHUTOFF and ERROR, and the agent is
// sent the new spec.
func TestContractRebuild(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	f.st.DB.Model(&store.Instance{}).Where("id = ?", w.errored).Update("host", "h1")
	other := "22222222-2222-4333-8444-555555555555"
	if err := f.st.DB.Create(&store.Image{ID: other, Name: "other", Owner: "p-admin", Visibility: "public", Status: "active",
		ContainerFormat: "docker", DiskFormat: "raw", RegistryRef: "127.0.0.1:5050/capsule/other:1"}).Error; err != nil {
		t.Fatal(err)
	}
	sent := 0
	versions := []apiVersion{{2, 1}, {2, 9}, {2, 19}, {2, 26}, {2, 47}, {2, 54}, {2, 57}, {2, 60}, {2, 63}, {2, 71}, {2, 73}, {2, 75}, maxVersion}
	for _, v := range versions {
		for _, id := range []string{w.active, w.shutoff, w.errored} {
			var before store.Instance
			f.st.DB.Where("id = ?", id).First(&before)
			body := fmt.Sprintf(`{"rebuild":{"imageRef":"%s","name":"rebuilt-%s","metadata":{"m":"1"}}}`, other, v)
			got := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/servers/" + id + "/action", body, "servers", "rebuild_server_with_admin_pass"})
			srv := got["server"].(map[string]any)
			if srv["status"] != "REBUILD" || srv["name"] != "rebuilt-"+v.String() || srv["adminPass"] == "" {
				t.Errorf("rebuild of %s at %s answered %v", id, v, srv)
			}
			if img := srv["image"].(map[string]any)["id"]; img != other {
				t.Errorf("rebuild at %s: image %v, want %s", v, img, other)
			}
			msgs := f.bus.Sent(bus.ComputeQueue(before.Host))
			sent++
			var req protocol.RebuildInstance
			if err := msgs[len(msgs)-1].Decode(&req); err != nil {
				t.Fatal(err)
			}
			wantStart := before.VMState != lifecycle.Stopped
			if req.Spec.ID != id || req.Spec.ImageRef != "127.0.0.1:5050/capsule/other:1" || req.Start != wantStart ||
				req.Spec.Name != "rebuilt-"+v.String() || req.Spec.Metadata["m"] != "1" {
				t.Errorf("rebuild cast %+v (start %v)", req.Spec, req.Start)
			}
			// A second rebuild while one runs conflicts.
			resp, b := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", body)
			expectFault(t, resp, b, 409, "conflictingRequest")
			// The agent's report would end it; here the test does.
			f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{"task_state": "", "image_id": f.image})
		}
	}
	if n := len(f.bus.Sent(bus.ComputeQueue("h1"))); n != sent {
		t.Errorf("%d messages cast to h1, want %d", n, sent)
	}
	var acts int64
	f.st.DB.Model(&store.InstanceAction{}).Where("instance_id = ? AND action = ?", w.active, "rebuild").Count(&acts)
	if acts != int64(len(versions)) {
		t.Errorf("%d rebuild actions recorded for the active server, want %d", acts, len(versions))
	}
}

// TestRebuildBadInput: every refusal is Nova's error and leaves the
// server untouched, nothing cast.
func TestRebuildBadInput(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	paused := f.create("demo", "paused")
	f.activate(paused, "h1")
	f.st.DB.Model(&store.Instance{}).Where("id = ?", paused).Update("vm_state", string(lifecycle.Paused))
	queued := "33333333-2222-4333-8444-555555555555"
	f.st.DB.Create(&store.Image{ID: queued, Name: "q", Owner: "p-demo", Visibility: "private", Status: "queued",
		ContainerFormat: "docker", DiskFormat: "raw"})
	big := "44444444-2222-4333-8444-555555555555"
	f.st.DB.Create(&store.Image{ID: big, Name: "big", Owner: "p-demo", Visibility: "private", Status: "active",
		ContainerFormat: "docker", DiskFormat: "raw", RegistryRef: "r/big:1", MinRAM: 4096})
	img := f.image
	cases := []struct {
		name, id, body, hdr string
		status              int
		fault               string
	}{
		{"no imageRef", id, `{"rebuild":{}}`, "2.1", 400, "badRequest"},
		{"not an object", id, `{"rebuild":"x"}`, "2.1", 400, "badRequest"},
		{"unknown image", id, `{"rebuild":{"imageRef":"99999999-2222-4333-8444-555555555555"}}`, "2.1", 400, "badRequest"},
		{"image not active", id, `{"rebuild":{"imageRef":"` + queued + `"}}`, "2.1", 400, "badRequest"},
		{"image too big for the flavor", id, `{"rebuild":{"imageRef":"` + big + `"}}`, "2.1", 400, "badRequest"},
		{"unknown key", id, `{"rebuild":{"imageRef":"` + img + `","frob":1}}`, "2.1", 400, "badRequest"},
		{"key_name before 2.54", id, `{"rebuild":{"imageRef":"` + img + `","key_name":null}}`, "2.53", 400, "badRequest"},
		{"user_data before 2.57", id, `{"rebuild":{"imageRef":"` + img + `","user_data":null}}`, "2.56", 400, "badRequest"},
		{"personality from 2.57", id, `{"rebuild":{"imageRef":"` + img + `","personality":[]}}`, "2.57", 400, "badRequest"},
		{"unknown key_name", id, `{"rebuild":{"imageRef":"` + img + `","key_name":"nope"}}`, "2.54", 400, "badRequest"},
		{"user_data not base64", id, `{"rebuild":{"imageRef":"` + img + `","user_data":"@@"}}`, "2.57", 400, "badRequest"},
		{"user_data too long", id, `{"rebuild":{"imageRef":"` + img + `","user_data":"` + strings.Repeat("A", 65536) + `"}}`, "2.57", 400, "badRequest"},
		{"bad name", id, `{"rebuild":{"imageRef":"` + img + `","name":""}}`, "2.1", 400, "badRequest"},
		{"bad metadata", id, `{"rebuild":{"imageRef":"` + img + `","metadata":{"k":1}}}`, "2.1", 400, "badRequest"},
		{"bad access IP", id, `{"rebuild":{"imageRef":"` + img + `","accessIPv4":"1.2.3"}}`, "2.1", 400, "badRequest"},
		{"paused server", paused, `{"rebuild":{"imageRef":"` + img + `"}}`, "2.1", 409, "conflictingRequest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := f.do("POST", "/v2.1/servers/"+c.id+"/action", "demo", c.body, "X-OpenStack-Nova-API-Version", c.hdr)
			expectFault(t, resp, body, c.status, c.fault)
		})
	}
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "other", `{"rebuild":{"imageRef":"`+img+`"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	if n := len(f.bus.Sent(bus.ComputeQueue("h1"))); n != 0 {
		t.Errorf("bad rebuilds cast %d messages", n)
	}
	var inst store.Instance
	f.st.DB.Where("id = ?", id).First(&inst)
	if inst.TaskState != "" || inst.Name != "vm" || inst.ImageID != img {
		t.Errorf("a refused rebuild changed the server: task %q name %q image %q", inst.TaskState, inst.Name, inst.ImageID)
	}
}
