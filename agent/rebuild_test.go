package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/fake"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// TestRebuildReplacesTheWorkloadAndReports: the server comes back on its
// new image with the new key and none of its old disk, started when it
// ran and left off when it was SHUTOFF; a driver failure is reported.
func TestRebuildReplacesTheWorkloadAndReports(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-r", "req-b", fakeImage)
	if r := e.waitReport("i-r", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	if err := drv.WriteFile("i-r", "/root/data", "old disk"); err != nil {
		t.Fatal(err)
	}
	const newImage = "registry.test/capsule/other:2"
	spec := protocol.InstanceSpec{ID: "i-r", Name: "rebuilt", ProjectID: "proj-1", ImageRef: newImage,
		VCPUs: 1, MemoryMB: 64, DiskGB: 1, AuthorizedKeys: testKey}
	e.publish(protocol.KindRebuildInstance, protocol.RebuildInstance{RequestID: "req-r1", Spec: spec, Start: true})
	r := e.waitReport("i-r", 2, 5*time.Second)
	if !r.OK || r.Action != lifecycle.ActRebuild || r.PowerState != int(drivers.PowerRunning) || r.Event != "compute_rebuild_instance" {
		t.Fatalf("rebuild report %+v", r)
	}
	inst, _ := drv.get("i-r")
	if inst.Spec.Image != newImage || inst.Spec.Name != "rebuilt" || inst.Files["/root/data"] != "" ||
		inst.Files[fake.AuthorizedKeysPath] != testKey+"\n" {
		t.Errorf("after rebuild: image %s name %s files %v", inst.Spec.Image, inst.Spec.Name, inst.Files)
	}

	e.publish(protocol.KindRebuildInstance, protocol.RebuildInstance{RequestID: "req-r2", Spec: spec, Start: false})
	if r := e.waitReport("i-r", 3, 5*time.Second); !r.OK || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("rebuild of a server left off: %+v", r)
	}

	drv.setFail(string(fake.OpRebuild), "i-r", errors.New("pull: manifest unknown"))
	e.publish(protocol.KindRebuildInstance, protocol.RebuildInstance{RequestID: "req-r3", Spec: spec, Start: true})
	if r := e.waitReport("i-r", 4, 5*time.Second); r.OK || r.Error == "" {
		t.Fatalf("a failed rebuild reported %+v", r)
	}
}
