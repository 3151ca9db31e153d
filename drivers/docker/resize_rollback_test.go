package docker_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// TestLiveResizeFailureRollsBack makes a real docker update fail: the
// server holds 150 MiB of anonymous memory (a dd whose buffer waits on a
// pipe nobody reads; not reclaimable: there is no swap), so the kernel refuses a memory limit of 64 MiB, while the same
// update also asks for more CPU and pids and other disk throttles. Every
// limit — CPU quota, cpuset, memory, pids, disk throttles — must be what
// it was before, and the server still runs
// with the same PID 1.
func TestLiveResizeFailureRollsBack(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:cpu_quota": "50000", "quota:disk_write_bytes_sec": "10000000"})
	spec.MemoryMB = 256
	spec.Command = []string{"sh", "-c", "dd if=/dev/zero bs=150M count=1 | sleep 3600"}
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	pid := c.State.Pid
	// Wait until the 150 MiB are charged to the server.
	for i := 0; ; i++ {
		if s := stats(t, ctx, d, spec.ID); s.MemoryUsageBytes >= 150<<20 {
			break
		}
		if i == 100 {
			t.Fatalf("the server never held 150 MiB (usage %d)", stats(t, ctx, d, spec.ID).MemoryUsageBytes)
		}
		wait(ctx, t, 100*time.Millisecond)
	}
	before, err := cgroup.LimitsOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's view, not Docker's record: runc sets the cpuset
	// before the memory limit, so a half-applied update shows here.
	cpuset := func() string {
		t.Helper()
		st, err := readProcStatus(pid)
		if err != nil {
			t.Fatal(err)
		}
		return st["Cpus_allowed_list"]
	}
	setBefore := cpuset()

	err = d.Resize(ctx, spec.ID, 2, 64, limits.Limits{PidsMax: 50, Disk: limits.Disk{WriteBytesSec: 20_000_000, ReadIOPSSec: 300}})
	if err == nil {
		t.Fatalf("resize to 64 MiB under 150 MiB of shared memory succeeded; want the kernel to refuse it")
	}
	t.Logf("resize refused as expected: %v", err)
	if msg := errdefs.Message(err); msg != "the server uses more memory than the new flavor has" {
		t.Errorf("the refusal's safe message is %q, want the memory reason", msg)
	}
	after, err := cgroup.LimitsOf(pid)
	if err != nil {
		t.Fatalf("the server died with the failed resize: %v", err)
	}
	if !reflect.DeepEqual(after, before) {
		t.Errorf("limits after a failed resize: %+v, want the old %+v", after, before)
	}
	if got := cpuset(); got != setBefore {
		t.Errorf("cpuset after a failed resize: %q, want the old %q", got, setBefore)
	}
	if c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID)); err != nil || c.State.Pid != pid || !c.State.Running {
		t.Errorf("after a failed resize the server is not the same running process (pid %d -> %v, err %v)", pid, c.State, err)
	}
}
