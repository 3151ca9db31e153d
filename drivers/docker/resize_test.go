package docker_test

import (
	"slices"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// TestLiveResize: a server held at 0.5 CPU by its flavor's quota is
// resized live to 1 CPU, in the same container with the same PID 1, with
// the new CPU, memory and pid limits in the kernel. (TestRateLiveResizeCPU measures the CPU a
// burner gets through the same resizes.)
func TestLiveResize(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:cpu_quota": "50000"})
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	workloadPID := func() int { return pidOf(t, ctx, d, docker.ContainerName(spec.ID)) }
	pid := workloadPID()
	if lim, err := cgroup.LimitsOf(pid); err != nil || lim.CPUQuotaUS != 50000 {
		t.Errorf("kernel limits before resize: %+v %v, want quota 50000", lim, err)
	}

	if err := d.Resize(ctx, spec.ID, 1, 128, limits.Limits{PidsMax: 100}); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if p := workloadPID(); p != pid {
		t.Fatalf("resize restarted the container: pid %d -> %d", pid, p)
	}
	lim, err := cgroup.LimitsOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	if lim.CPUQuotaUS != 100000 || lim.MemoryBytes != 128<<20 || lim.PidsMax != 100 {
		t.Errorf("kernel limits after resize: %+v, want quota 100000, 128 MiB, 100 pids", lim)
	}

	// Back to half a CPU, as a revert does.
	l, _ := limits.Parse(map[string]string{"quota:cpu_quota": "50000"}, 1)
	if err := d.Resize(ctx, spec.ID, 1, 64, l); err != nil {
		t.Fatalf("resize back: %v", err)
	}
	if back, err := cgroup.LimitsOf(pid); err != nil || back.CPUQuotaUS != 50000 || back.MemoryBytes != 64<<20 {
		t.Errorf("kernel limits after resize back: %+v %v, want quota 50000, 64 MiB", back, err)
	}
}

// TestLiveResizeDiskThrottles: a live resize changes a running server's
// disk IO throttles in its cgroup (the kernel's view, read back), same
// PID 1: raised, with a new kind of throttle, lifted; re-applying the
// flavor after a change made behind the cloud's back puts it back (what
// the agent's drift repair does). A reboot, or a stop and a start, keep
// the live resize's throttles (Docker would apply the create's). A
// stopped server's new throttles (there is no cgroup to write) take effect
// at its next start, as do the create's when it is resized back to them.
func TestLiveResizeDiskThrottles(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:disk_write_bytes_sec": "10000000"})
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	pid := c.State.Pid
	throttles := func() []cgroup.DiskThrottle {
		t.Helper()
		lim, err := cgroup.LimitsOf(pid)
		if err != nil {
			t.Fatalf("the server's limits (did it restart?): %v", err)
		}
		return lim.Disk
	}
	before := throttles()
	if len(before) != 1 || before[0].WriteBPS != 10_000_000 {
		t.Fatalf("kernel disk throttles at boot = %+v, want write 10 MB/s on one device", before)
	}
	dev := before[0].Device
	resize := func(extra map[string]string) {
		t.Helper()
		l, err := limits.Parse(extra, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Resize(ctx, spec.ID, 1, spec.MemoryMB, l); err != nil {
			t.Fatalf("resize to %v: %v", extra, err)
		}
	}
	check := func(what string, want []cgroup.DiskThrottle) {
		t.Helper()
		if got := throttles(); !slices.Equal(got, want) {
			t.Errorf("%s: kernel disk throttles = %+v, want %+v", what, got, want)
		}
	}

	bigger := map[string]string{"quota:disk_write_bytes_sec": "20000000", "quota:disk_read_iops_sec": "300"}
	resize(bigger)
	check("after a live resize", []cgroup.DiskThrottle{{Device: dev, WriteBPS: 20_000_000, ReadIOPS: 300}})
	// A resize changing only memory keeps them (docker update writes
	// Docker's record, the create's throttles, back to the cgroup).
	if l, err := limits.Parse(bigger, 1); err != nil {
		t.Fatal(err)
	} else if err := d.Resize(ctx, spec.ID, 1, spec.MemoryMB*2, l); err != nil {
		t.Fatalf("memory-only resize: %v", err)
	}
	check("after a memory-only resize", []cgroup.DiskThrottle{{Device: dev, WriteBPS: 20_000_000, ReadIOPS: 300}})

	// Drift: the throttles lifted by hand; the flavor applied again
	// restores them.
	if err := cgroup.SetDiskThrottles(pid, nil); err != nil {
		t.Fatal(err)
	}
	check("lifted by hand", nil)
	resize(bigger)
	check("re-applied after drift", []cgroup.DiskThrottle{{Device: dev, WriteBPS: 20_000_000, ReadIOPS: 300}})

	resize(nil)
	check("resized to a flavor without throttles", nil)
	resize(map[string]string{"quota:disk_write_bytes_sec": "10000000"})
	check("resized back", before)
	if c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID)); err != nil || c.State.Pid != pid || !c.State.Running {
		t.Fatalf("the resizes restarted the server: pid %d -> %+v, %v", pid, c.State, err)
	}

	// A start applies Docker's record of the container (the create's
	// throttles): the driver writes the live resize's back.
	want := []cgroup.DiskThrottle{{Device: dev, WriteBPS: 20_000_000, ReadIOPS: 300}}
	resize(bigger)
	pidNow := func() int {
		t.Helper()
		c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID))
		if err != nil || !c.State.Running {
			t.Fatalf("the server does not run: %+v %v", c.State, err)
		}
		return c.State.Pid
	}
	if err := d.Reboot(ctx, spec.ID, false); err != nil {
		t.Fatal(err)
	}
	pid = pidNow()
	check("after a soft reboot", want)
	if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	pid = pidNow()
	check("after a stop and a start", want)

	// Stopped: a resize keeping the throttles changes nothing of them; one
	// changing them leaves Docker's record alone (it cannot change it)
	// and the next start applies the new throttles.
	if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	l, _ := limits.Parse(bigger, 1)
	if err := d.Resize(ctx, spec.ID, 1, spec.MemoryMB*2, l); err != nil {
		t.Fatalf("resize of a stopped server keeping its throttles: %v", err)
	}
	stopped := map[string]string{"quota:disk_write_bytes_sec": "30000000"}
	resize(stopped)
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	pid = pidNow()
	check("resized while stopped, then started", []cgroup.DiskThrottle{{Device: dev, WriteBPS: 30_000_000}})
	if err := d.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	// Back to the create's throttles, stopped: the start applies them.
	resize(map[string]string{"quota:disk_write_bytes_sec": "10000000"})
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	pid = pidNow()
	check("resized back while stopped, then started", before)
}
