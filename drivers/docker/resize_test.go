package docker_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// TestLiveResize: a server held at 0.5 CPU by its flavor's quota is
// resized live to 1 CPU, in the same container with the same PID 1, with
// the new CPU, memory and pid limits in the kernel; a resize the driver
// must refuse changes no limit. (TestRateLiveResizeCPU measures the CPU a
// burner gets through the same resizes.)
func TestLiveResize(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:cpu_quota": "50000"})
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
	pid := pidOf()
	if lim, err := cgroup.LimitsOf(pid); err != nil || lim.CPUQuotaUS != 50000 {
		t.Errorf("kernel limits before resize: %+v %v, want quota 50000", lim, err)
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
	if back, err := cgroup.LimitsOf(pid); err != nil || back.CPUQuotaUS != 50000 || back.MemoryBytes != 64<<20 {
		t.Errorf("kernel limits after resize back: %+v %v, want quota 50000, 64 MiB", back, err)
	}
}
