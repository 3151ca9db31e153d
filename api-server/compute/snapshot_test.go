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
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

func (f *fixture) snapshotReport(c *conductor.Conductor, rep protocol.SnapshotReport) {
	f.t.Helper()
	m, err := bus.NewMessage(protocol.KindSnapshotReport, rep)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := c.Handle(context.Background(), m); err != nil {
		f.t.Fatalf("conductor: %v", err)
	}
}

func TestCreateImageFlow(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "snap")
	f.placeActive(id, 2)
	action := "/v2.1/servers/" + id + "/action"
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))

	resp, body := f.do("POST", action, "demo", `{"createImage":{}}`)
	expectFault(t, resp, body, 400, "badRequest")
	// Another project's server does not exist for the caller.
	resp, body = f.do("POST", action, "other", `{"createImage":{"name":"x"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")

	// 2.1: empty body, Location of the image.
	resp, body = f.do("POST", action, "demo", `{"createImage":{"name":"snap-1","metadata":{"k":"v"}}}`)
	if resp.StatusCode != 202 || body != nil {
		t.Fatalf("createImage 2.1 = %d %v", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	i := strings.LastIndex(loc, "/v2/images/")
	if i < 0 {
		t.Fatalf("Location %q", loc)
	}
	img1 := loc[i+len("/v2/images/"):]
	var img store.Image
	if err := f.st.DB.Where("id = ?", img1).First(&img).Error; err != nil {
		t.Fatal(err)
	}
	var props map[string]string
	_ = json.Unmarshal([]byte(img.Properties), &props)
	if img.Status != "queued" || img.Owner != "p-demo" || img.Visibility != "private" || img.ContainerFormat != "docker" ||
		img.MinRAM != 128 || img.MinDisk != 1 || props["image_type"] != "snapshot" || props["instance_uuid"] != id ||
		props["base_image_ref"] != imageID || props["k"] != "v" {
		t.Errorf("image %+v props %v", img, props)
	}
	if got := f.instance(id); got.TaskState != "image_snapshot" || got.VMState != "active" {
		t.Errorf("instance %s/%s", got.VMState, got.TaskState)
	}
	sent := f.bus.Sent(bus.ComputeQueue("h1"))
	if len(sent) != 1 || sent[0].Kind != protocol.KindSnapshotInstance {
		t.Fatalf("compute queue got %v", sent)
	}
	var req protocol.SnapshotInstance
	if err := sent[0].Decode(&req); err != nil {
		t.Fatal(err)
	}
	if req.InstanceID != id || req.ImageID != img1 || req.Ref != "127.0.0.1:5050/capsule/snapshots/"+img1+":"+img1 {
		t.Errorf("snapshot message %+v", req)
	}
	// A second snapshot while one runs conflicts.
	resp, body = f.do("POST", action, "demo", `{"createImage":{"name":"again"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	// Success: image active with what was pushed, task cleared.
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: img1, Host: "h1",
		Ref: req.Ref, OK: true, Digest: "sha256:abc", Size: 1234})
	f.st.DB.Where("id = ?", img1).First(&img)
	if img.Status != "active" || img.Size == nil || *img.Size != 1234 || img.Checksum != "abc" || img.RegistryRef != req.Ref {
		t.Errorf("after push: %+v", img)
	}
	if got := f.instance(id); got.TaskState != "" {
		t.Errorf("task after snapshot %q", got.TaskState)
	}

	// 2.45: {"image_id"}; a failed push kills and removes the image.
	resp, body = f.do("POST", action, "demo", `{"createImage":{"name":"snap-2"}}`, "X-OpenStack-Nova-API-Version", "2.45")
	img2, _ := body["image_id"].(string)
	if resp.StatusCode != 202 || img2 == "" || len(body) != 1 || !strings.HasSuffix(resp.Header.Get("Location"), img2) {
		t.Fatalf("createImage 2.45 = %d %v", resp.StatusCode, body)
	}
	f.snapshotReport(cond, protocol.SnapshotReport{InstanceID: id, ImageID: img2, Host: "h1", Error: "push failed"})
	var n int64
	f.st.DB.Model(&store.Image{}).Where("id = ?", img2).Count(&n)
	if n != 0 {
		t.Errorf("failed snapshot image still there")
	}
	if got := f.instance(id); got.TaskState != "" {
		t.Errorf("task after failed snapshot %q", got.TaskState)
	}

	// Wrong state: a server being stopped cannot be snapshotted.
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("task_state", "powering-off").Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "demo", `{"createImage":{"name":"busy"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	f.st.DB.Model(&store.Image{}).Where("name = ?", "busy").Count(&n)
	if n != 0 {
		t.Errorf("refused snapshot left an image")
	}
}
