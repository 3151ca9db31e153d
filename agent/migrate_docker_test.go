package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry/registrytest"
)

// The docker driver tells the bytes a migration pushed; a signature drift
// would silently fall back to Snapshot.
var _ migrationExporter = (*docker.Driver)(nil)

func dockerOn(t *testing.T, env string) *docker.Driver {
	t.Helper()
	host := testenv.Env(t, env, "a test host's dockerd")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drv, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, Logger: testLogger(t),
		SandboxImage: testenv.Image(t), NetworkMode: testenv.NetworkMode()})
	if err != nil {
		t.Fatalf("docker.New(%s): %v", host, err)
	}
	t.Cleanup(func() { drv.Close() })
	return drv
}

// TestMigrationWithDocker moves a running server between the two test
// dockerds through two agents: export, import (running, with its file),
// then the confirm's cleanup of the source.
func TestMigrationWithDocker(t *testing.T) {
	img := testenv.Image(t)
	registry := testenv.Registry(t)
	a, b := dockerOn(t, "CAPSULE_TEST_DOCKER_HOST_A"), dockerOn(t, "CAPSULE_TEST_DOCKER_HOST_B")
	e := newMigBus(t)
	e.runAgent(srcHost, a)
	e.runAgent(dstHost, b)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	id := uuid.NewString()
	t.Cleanup(func() {
		for _, d := range []*docker.Driver{a, b} {
			_ = d.Destroy(context.Background(), id)
		}
		_ = b.RemoveImage(context.Background(), registry+"/capsule/migrations-test-"+id[:8]+":mig-"+id[:8])
	})
	spec := protocol.InstanceSpec{ID: id, Name: "mig-" + id[:8], ProjectID: "proj-1", ImageRef: img, VCPUs: 1, MemoryMB: 64, DiskGB: 1}
	m, _ := bus.NewMessage(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-build", Attempt: 1, Spec: spec})
	if err := e.bus.Publish(ctx, bus.ComputeQueue(srcHost), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the build", func() bool { _, ok := e.cond.buildReport(id); return ok })
	if r, _ := e.cond.buildReport(id); !r.OK {
		t.Fatalf("build %+v", r)
	}
	if code, out, err := execInContainer(ctx, a, docker.ContainerName(id), "sh", "-c", "echo moved-data > /root/data"); err != nil || code != 0 {
		t.Fatalf("write: %d %q %v", code, out, err)
	}

	repo := "capsule/migrations-test-" + id[:8]
	tag := "mig-" + id[:8]
	ref := registry + "/" + repo + ":" + tag
	registrytest.DeleteAtCleanup(t, ref)
	w := work(id, "exporting")
	w.Ref = ref
	e.send(srcHost, protocol.KindMigrationExport, w)
	r := e.waitMigFor(1, 2*time.Minute)
	wantReport(t, r, protocol.KindMigrationExport, "exporting", srcHost, EventResize, true)
	// A few bytes written: the pushed layer is a small tarball, nothing
	// like the base image.
	if r.Bytes <= 0 || r.Bytes > 64<<10 || !strings.HasPrefix(r.Digest, "sha256:") || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("export report %+v", r)
	}
	t.Logf("export pushed %d bytes, digest %s", r.Bytes, r.Digest)

	w = work(id, "importing")
	w.Ref = ref
	w.Spec = spec
	w.Spec.ImageRef = ref
	w.Spec.MemoryMB = 96
	w.Start = true
	e.send(dstHost, protocol.KindMigrationImport, w)
	r = e.waitMigFor(2, 2*time.Minute)
	wantReport(t, r, protocol.KindMigrationImport, "importing", dstHost, EventFinishResize, true)
	if r.PowerState != int(drivers.PowerRunning) || r.Bytes <= 0 {
		t.Fatalf("import report %+v", r)
	}
	code, out, err := execInContainer(ctx, b, docker.ContainerName(id), "cat", "/root/data")
	if err != nil || code != 0 || strings.TrimSpace(out) != "moved-data" {
		t.Fatalf("data on the target: %d %q %v", code, out, err)
	}
	c, err := b.Client().ContainerInspect(ctx, docker.ContainerName(id))
	if err != nil || c.HostConfig.Memory != 96<<20 || c.Config.Labels[LabelHost] != dstHost {
		t.Fatalf("target container: memory %d, labels %v, %v", c.HostConfig.Memory, c.Config.Labels, err)
	}

	w = work(id, stepConfirming)
	w.Ref = ref
	e.send(srcHost, protocol.KindMigrationCleanup, w)
	r = e.waitMigFor(3, time.Minute)
	wantReport(t, r, protocol.KindMigrationCleanup, stepConfirming, srcHost, EventConfirmResize, true)
	if _, err := a.Status(ctx, id); err == nil {
		t.Error("source container left after the confirm")
	}
	if st, err := b.Status(ctx, id); err != nil || st.Power != drivers.PowerRunning {
		t.Errorf("target after the confirm: %+v, %v", st, err)
	}
}

// The docker driver pre-copies; a signature drift would silently skip it.
var _ migrationPrecopier = (*docker.Driver)(nil)

// TestPrecopyMigrationWithDocker moves a running server between the two
// test dockerds through two agents with a pre-copy: pre-copy (the server
// keeps running), pre-pull, then a file deleted and one written, export
// (only the change pushed) and import: the target has the change, not
// the deleted file, and keeps no pre-copy tag. With restarted, the source
// agent forgets its pre-copy before the export (as after a restart): the
// export pushes the whole writable layer and the outcome is the same.
func TestPrecopyMigrationWithDocker(t *testing.T) {
	for _, restarted := range []bool{false, true} {
		t.Run(map[bool]string{false: "delta", true: "source agent restarted"}[restarted], func(t *testing.T) {
			testPrecopyMigration(t, restarted)
		})
	}
}

func testPrecopyMigration(t *testing.T, restarted bool) {
	img := testenv.Image(t)
	registry := testenv.Registry(t)
	a, b := dockerOn(t, "CAPSULE_TEST_DOCKER_HOST_A"), dockerOn(t, "CAPSULE_TEST_DOCKER_HOST_B")
	e := newMigBus(t)
	e.runAgent(srcHost, a)
	e.runAgent(dstHost, b)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	id := uuid.NewString()
	repo := "capsule/migrations-test-" + id[:8]
	ref := registry + "/" + repo + ":mig-" + id[:8]
	preRef := ref + "-pre"
	registrytest.DeleteAtCleanup(t, ref)
	registrytest.DeleteAtCleanup(t, preRef)
	t.Cleanup(func() {
		for _, d := range []*docker.Driver{a, b} {
			_ = d.Destroy(context.Background(), id)
			_ = d.RemoveImage(context.Background(), ref)
			_ = d.RemoveImage(context.Background(), preRef)
		}
	})
	spec := protocol.InstanceSpec{ID: id, Name: "mig-" + id[:8], ProjectID: "proj-1", ImageRef: img, VCPUs: 1, MemoryMB: 64, DiskGB: 1}
	m, _ := bus.NewMessage(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-build", Attempt: 1, Spec: spec})
	if err := e.bus.Publish(ctx, bus.ComputeQueue(srcHost), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the build", func() bool { _, ok := e.cond.buildReport(id); return ok })
	if r, _ := e.cond.buildReport(id); !r.OK {
		t.Fatalf("build %+v", r)
	}
	sh := func(d *docker.Driver, script string) string {
		t.Helper()
		code, out, err := execInContainer(ctx, d, docker.ContainerName(id), "sh", "-c", script)
		if err != nil || code != 0 {
			t.Fatalf("%s: %d %q %v", script, code, out, err)
		}
		return strings.TrimSpace(out)
	}
	sh(a, "head -c 4194304 /dev/urandom > /root/big && echo doomed > /root/gone")
	time.Sleep(500 * time.Millisecond) // out of the pre-copy's racy window

	w := work(id, "precopy")
	w.Ref, w.PreRef = ref, preRef
	e.send(srcHost, protocol.KindMigrationPrecopy, w)
	r := e.waitMigFor(1, 2*time.Minute)
	wantReport(t, r, protocol.KindMigrationPrecopy, "precopy", srcHost, "", true)
	if r.Bytes < 4<<20 || !strings.HasPrefix(r.Digest, "sha256:") || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("pre-copy report %+v", r)
	}
	w = work(id, "prepull")
	w.Ref, w.PreRef = ref, preRef
	e.send(dstHost, protocol.KindMigrationPrepull, w)
	r = e.waitMigFor(2, 2*time.Minute)
	wantReport(t, r, protocol.KindMigrationPrepull, "prepull", dstHost, "", true)
	if r.Bytes < 4<<20 {
		t.Fatalf("pre-pull report %+v", r)
	}

	sh(a, "rm /root/gone && echo late > /root/late")
	if restarted {
		a.ForgetPrecopy(id)
	}
	w = work(id, "exporting")
	w.Ref, w.PreRef = ref, preRef
	e.send(srcHost, protocol.KindMigrationExport, w)
	r = e.waitMigFor(3, 2*time.Minute)
	wantReport(t, r, protocol.KindMigrationExport, "exporting", srcHost, EventResize, true)
	if !restarted && (r.Bytes <= 0 || r.Bytes > 64<<10) {
		t.Errorf("export over the pre-copy pushed %d bytes, want the few bytes changed", r.Bytes)
	}
	if restarted && r.Bytes < 4<<20 {
		t.Errorf("export without the pre-copy's state pushed %d bytes, want the whole writable layer", r.Bytes)
	}

	w = work(id, "importing")
	w.Ref, w.PreRef = ref, preRef
	w.Spec = spec
	w.Spec.ImageRef = ref
	w.Start = true
	e.send(dstHost, protocol.KindMigrationImport, w)
	r = e.waitMigFor(4, 2*time.Minute)
	wantReport(t, r, protocol.KindMigrationImport, "importing", dstHost, EventFinishResize, true)
	if got := sh(b, "cat /root/late; test -e /root/gone && echo gone-is-here; wc -c < /root/big"); got != "late\n4194304" {
		t.Errorf("files on the target: %q", got)
	}
	if _, err := b.Client().ImageInspect(ctx, preRef); err == nil {
		t.Errorf("pre-copy tag %s left on the target after the import", preRef)
	}
}
