package docker_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// TestLiveResizeMeasured: a CPU burner held at 0.5 CPU by its flavor's
// quota gets 1 CPU after a live resize, in the same container with the
// same PID 1, with the new memory and pid limits in the kernel; a resize
// the driver must refuse changes no limit.
func TestLiveResizeMeasured(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:cpu_quota": "50000"})
	spec.Command = []string{"sh", "-c", "while :; do :; done"}
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	pidOf := func() int {
		t.Helper()
		c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID))
		if err != nil {
			t.Fatal(err)
		}
		return c.State.Pid
	}
	measure := func() float64 {
		t.Helper()
		s1, t1 := stats(t, ctx, d, spec.ID), time.Now()
		wait(ctx, t, 3*time.Second)
		s2, t2 := stats(t, ctx, d, spec.ID), time.Now()
		return float64(s2.CPUUsageNS-s1.CPUUsageNS) / float64(t2.Sub(t1).Nanoseconds())
	}
	pid := pidOf()
	if cpus := measure(); !within(cpus, 0.5, 0.1) {
		t.Errorf("before resize: %.3f CPU, want 0.5 ± 0.1", cpus)
	}

	if err := d.Resize(ctx, spec.ID, 1, 128, limits.Limits{PidsMax: 100}); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if p := pidOf(); p != pid {
		t.Fatalf("resize restarted the container: pid %d -> %d", pid, p)
	}
	lim, err := cgroup.LimitsOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	if lim.CPUQuotaUS != 100000 || lim.MemoryBytes != 128<<20 || lim.PidsMax != 100 {
		t.Errorf("kernel limits after resize: %+v, want quota 100000, 128 MiB, 100 pids", lim)
	}
	cpus := measure()
	t.Logf("MEASURED after live resize: %.3f CPU", cpus)
	if !within(cpus, 1, 0.15) {
		t.Errorf("after resize: %.3f CPU, want 1 ± 0.15", cpus)
	}

	// Disk throttles cannot change on a running container: refused
	// before anything changes.
	err = d.Resize(ctx, spec.ID, 1, 64, limits.Limits{Disk: limits.Disk{WriteBytesSec: 10 << 20}})
	if !errors.Is(err, drivers.ErrNotSupported) {
		t.Fatalf("resize changing disk throttles: %v, want ErrNotSupported", err)
	}
	if after, _ := cgroup.LimitsOf(pid); !reflect.DeepEqual(after, lim) {
		t.Errorf("a refused resize changed limits: %+v -> %+v", lim, after)
	}

	// Back to half a CPU, as a revert does.
	l, _ := limits.Parse(map[string]string{"quota:cpu_quota": "50000"}, 1)
	if err := d.Resize(ctx, spec.ID, 1, 64, l); err != nil {
		t.Fatalf("resize back: %v", err)
	}
	if cpus := measure(); !within(cpus, 0.5, 0.1) {
		t.Errorf("after resize back: %.3f CPU, want 0.5 ± 0.1", cpus)
	}
}
