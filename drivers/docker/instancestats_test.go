package docker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// TestInstanceStats: a running server's counters are its container's
// cgroup's: the spec's memory and pid limits, some memory in use, its
// tasks, its start time; a stopped one has none (ErrInvalidState), a
// missing one is ErrNotFound.
func TestInstanceStats(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	spec.MemoryMB = 96
	spec.PidsLimit = 77
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)

	s, err := d.InstanceStats(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v", s)
	if s.MemoryLimitBytes != 96<<20 || s.PidsLimit != 77 || s.Pids < 1 || s.MemoryUsageBytes == 0 || s.CPUUsageNS == 0 {
		t.Errorf("stats = %+v", s)
	}
	if s.StartedAt.IsZero() || time.Since(s.StartedAt) > time.Minute || s.StartedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("started at %v", s.StartedAt)
	}
	if s.MemoryRSSBytes+s.MemoryCacheBytes == 0 {
		t.Errorf("no memory split: %+v", s)
	}

	if err := d.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := d.InstanceStats(ctx, spec.ID); !errors.Is(err, drivers.ErrInvalidState) {
		t.Errorf("stats of a stopped server: %v, want ErrInvalidState", err)
	}
	if _, err := d.InstanceStats(ctx, "00000000-0000-4000-8000-00000000dead"); !errors.Is(err, drivers.ErrNotFound) {
		t.Errorf("stats of a missing server: %v, want ErrNotFound", err)
	}
}
