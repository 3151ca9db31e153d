package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// diskFake is the fake driver with root disk caps fixed at create, as
// the docker driver's (drivers.RootDiskResizer): a cap per instance and
// the cap of the container a resize kept.
type diskFake struct {
	*fakeDriver
	dmu  sync.Mutex
	disk map[string]int
	kept map[string]int
	fail map[int]error // ResizeRootDisk to this size fails
}

func newDiskFake() *diskFake {
	return &diskFake{fakeDriver: newFakeDriver(), disk: map[string]int{}, kept: map[string]int{}, fail: map[int]error{}}
}

func (d *diskFake) RootDiskChange(_ context.Context, id string, gb int) (bool, error) {
	if _, ok := d.get(id); !ok {
		return false, fmt.Errorf("root disk %s: %w", id, drivers.ErrNotFound)
	}
	d.dmu.Lock()
	defer d.dmu.Unlock()
	return d.disk[id] != gb, nil
}

func (d *diskFake) ResizeRootDisk(_ context.Context, id string, gb int) error {
	if err := d.note("resize_root_disk", id); err != nil {
		return err
	}
	if in, _ := d.get(id); in.Power == drivers.PowerRunning {
		return fmt.Errorf("resize root disk of running %s: %w", id, drivers.ErrInvalidState)
	}
	d.dmu.Lock()
	defer d.dmu.Unlock()
	if err := d.fail[gb]; err != nil {
		return err
	}
	switch k, ok := d.kept[id]; {
	case d.disk[id] == gb:
	case ok && k == gb:
		d.disk[id] = gb
		delete(d.kept, id)
	default:
		d.kept[id] = d.disk[id]
		d.disk[id] = gb
	}
	return nil
}

func (d *diskFake) ConfirmRootDisk(_ context.Context, id string) error {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	delete(d.kept, id)
	return nil
}

func (d *diskFake) KeptRootDisks(context.Context) ([]string, error) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	var ids []string
	for id := range d.kept {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

func (d *diskFake) DropStrayResizeImages(context.Context) (int, error) { return 0, nil }

// A method the interface gains must be added here: the agent finds the
// capability by a type assertion, which would fail silently.
var _ drivers.RootDiskResizer = (*diskFake)(nil)

func (d *diskFake) state(id string) (disk int, kept int, hasKept bool) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	k, ok := d.kept[id]
	return d.disk[id], k, ok
}

// TestRootDiskResize: a resize to another root disk on a host that caps
// them makes the container again on the stopped server (stop, remake,
// limits, start), reports a running server; the confirm drops the kept
// container, a revert brings it back. A failed remake leaves the server
// running with its old disk and limits, and says why.
func TestRootDiskResize(t *testing.T) {
	drv := newDiskFake()
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	e.build("i-d", "req-1", fakeImage)
	if r := e.waitReport("i-d", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	drv.disk["i-d"] = 1
	before, _ := drv.get("i-d")
	small := protocol.InstanceSpec{ID: "i-d", VCPUs: 1, MemoryMB: 64, DiskGB: 1}
	big := protocol.InstanceSpec{ID: "i-d", VCPUs: 1, MemoryMB: 128, DiskGB: 2}

	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-2", InstanceID: "i-d", Spec: big, Old: small, Running: true})
	r := e.waitReport("i-d", 2, 5*time.Second)
	if !r.OK || r.Action != lifecycle.ActResize || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("root disk resize report %+v, want ok, running", r)
	}
	after, _ := drv.get("i-d")
	if disk, kept, ok := drv.state("i-d"); disk != 2 || !ok || kept != 1 {
		t.Errorf("after the resize: disk %d, kept %d (%v); want 2, 1 kept", disk, kept, ok)
	}
	if after.Spec.MemoryMB != 128 || after.Power != drivers.PowerRunning || after.Boots != before.Boots+1 {
		t.Errorf("after the resize: memory %d, power %d, boots %d -> %d; want 128, running, one boot more", after.Spec.MemoryMB, after.Power, before.Boots, after.Boots)
	}
	if got := drv.callsOf("stop"); len(got) != 1 {
		t.Errorf("stops %v, want one", got)
	}

	// A redelivery (the report was lost): nothing made again.
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-2", InstanceID: "i-d", Spec: big, Old: small, Running: true})
	if r := e.waitReport("i-d", 3, 5*time.Second); !r.OK {
		t.Fatalf("redelivered resize: %+v", r)
	}
	if n := len(drv.callsOf("resize_root_disk")); n != 1 {
		t.Errorf("%d root disk remakes after a redelivery, want 1", n)
	}

	// Revert: the kept container comes back with the old limits.
	e.publish(protocol.KindRevertResize, protocol.ResizeInstance{RequestID: "req-3", InstanceID: "i-d", Spec: small, Old: big, Running: true})
	if r := e.waitReport("i-d", 4, 5*time.Second); !r.OK || r.Action != lifecycle.ActRevertResize || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("revert report %+v", r)
	}
	if disk, _, ok := drv.state("i-d"); disk != 1 || ok {
		t.Errorf("after the revert: disk %d, kept %v; want 1, none kept", disk, ok)
	}
	if in, _ := drv.get("i-d"); in.Spec.MemoryMB != 64 || in.Power != drivers.PowerRunning {
		t.Errorf("after the revert: memory %d, power %d", in.Spec.MemoryMB, in.Power)
	}

	// Resize again, confirm: the kept container goes.
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-4", InstanceID: "i-d", Spec: big, Old: small, Running: true})
	if r := e.waitReport("i-d", 5, 5*time.Second); !r.OK {
		t.Fatalf("resize: %+v", r)
	}
	e.publish(protocol.KindConfirmResize, protocol.ResizeInstance{RequestID: "req-5", InstanceID: "i-d"})
	waitFor(t, 5*time.Second, "the kept container dropped", func() bool { _, _, ok := drv.state("i-d"); return !ok })

	// A remake that fails: the server runs again with its old disk and
	// limits, and the report says why.
	huge := protocol.InstanceSpec{ID: "i-d", VCPUs: 1, MemoryMB: 256, DiskGB: 3}
	drv.dmu.Lock()
	drv.fail[3] = errdefs.Wrap(fmt.Errorf("create: %w", drivers.ErrInvalidState), errdefs.ErrInternal, "the host could not make the server's container with the new root disk")
	drv.dmu.Unlock()
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-6", InstanceID: "i-d", Spec: huge, Old: big, Running: true})
	r = e.waitReport("i-d", 6, 5*time.Second)
	if r.OK || !strings.Contains(r.ErrorMessage, "new root disk") || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("failed remake report %+v, want an error naming the root disk, server running", r)
	}
	if disk, _, ok := drv.state("i-d"); disk != 2 || ok {
		t.Errorf("after the failed remake: disk %d, kept %v; want 2, none", disk, ok)
	}
	if in, _ := drv.get("i-d"); in.Spec.MemoryMB != 128 || in.Power != drivers.PowerRunning {
		t.Errorf("after the failed remake: memory %d, power %d; want the old 128, running", in.Spec.MemoryMB, in.Power)
	}

	// The server does not start with its new disk: the old container
	// comes back and runs.
	drv.dmu.Lock()
	delete(drv.fail, 3)
	drv.dmu.Unlock()
	drv.setFail("start", "i-d", fmt.Errorf("exec format error: %w", drivers.ErrInvalidState))
	drv.setHook(func(op, id string) {
		if op == "start" {
			drv.setFail("start", id, nil) // the first start only
		}
	})
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-7", InstanceID: "i-d", Spec: huge, Old: big, Running: true})
	r = e.waitReport("i-d", 7, 5*time.Second)
	if r.OK || !strings.Contains(r.ErrorMessage, "did not start") || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("failed start report %+v, want an error, server running", r)
	}
	if disk, _, ok := drv.state("i-d"); disk != 2 || ok {
		t.Errorf("after the failed start: disk %d, kept %v; want the old 2, none kept", disk, ok)
	}
}

// TestRootDiskResizeRedeliveredAfterCrash: the agent died during a root
// disk resize, its server stopped and its container not yet made again;
// the redelivered request finishes it and starts the server.
func TestRootDiskResizeRedeliveredAfterCrash(t *testing.T) {
	drv := newDiskFake()
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	e.build("i-c", "req-1", fakeImage)
	if r := e.waitReport("i-c", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	drv.disk["i-c"] = 1
	if err := drv.Driver.Stop(context.Background(), "i-c", time.Second); err != nil {
		t.Fatal(err)
	}
	drv.resetCalls()
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-2", InstanceID: "i-c",
		Spec: protocol.InstanceSpec{ID: "i-c", VCPUs: 1, MemoryMB: 64, DiskGB: 2},
		Old:  protocol.InstanceSpec{ID: "i-c", VCPUs: 1, MemoryMB: 64, DiskGB: 1}, Running: true})
	r := e.waitReport("i-c", 2, 5*time.Second)
	if !r.OK || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("redelivered root disk resize %+v, want ok, running", r)
	}
	if disk, _, _ := drv.state("i-c"); disk != 2 {
		t.Errorf("disk %d after the redelivery, want 2", disk)
	}
	if n := len(drv.callsOf("stop")); n != 0 {
		t.Errorf("%d stops of the stopped server, want none", n)
	}
}

// TestReconcileDropsKeptRootDisks: a kept container whose server is
// settled (its confirm's message lost) is dropped by the reconcile; one
// waiting in VERIFY_RESIZE, or in ERROR, is not.
func TestReconcileDropsKeptRootDisks(t *testing.T) {
	drv := newDiskFake()
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	for _, id := range []string{"i-ok", "i-vr", "i-err"} {
		drv.put(t, id, drivers.PowerRunning)
		drv.kept[id] = 1
		drv.disk[id] = 2
	}
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-ok"}, VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-vr"}, VMState: lifecycle.Resized},
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-err"}, VMState: lifecycle.Error})
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := drv.KeptRootDisks(context.Background()); !slices.Equal(got, []string{"i-err", "i-vr"}) {
		t.Errorf("kept after the reconcile: %v, want i-err and i-vr", got)
	}
}

// TestResizeKeepingTheDiskIsLive: a resize that keeps the flavor's disk
// stays live even when the container's cap is another (a server made
// before its host capped root disks): no restart.
func TestResizeKeepingTheDiskIsLive(t *testing.T) {
	drv := newDiskFake()
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	e.build("i-l", "req-1", fakeImage)
	if r := e.waitReport("i-l", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	before, _ := drv.get("i-l") // its cap: 0, uncapped
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-2", InstanceID: "i-l",
		Spec: protocol.InstanceSpec{ID: "i-l", VCPUs: 1, MemoryMB: 128, DiskGB: 1},
		Old:  protocol.InstanceSpec{ID: "i-l", VCPUs: 1, MemoryMB: 64, DiskGB: 1}, Running: true})
	if r := e.waitReport("i-l", 2, 5*time.Second); !r.OK {
		t.Fatalf("resize: %+v", r)
	}
	after, _ := drv.get("i-l")
	if n := len(drv.callsOf("resize_root_disk")); n != 0 || after.Boots != before.Boots || after.Spec.MemoryMB != 128 {
		t.Errorf("a resize keeping the disk: %d remakes, boots %d -> %d, memory %d; want live", n, before.Boots, after.Boots, after.Spec.MemoryMB)
	}
}
