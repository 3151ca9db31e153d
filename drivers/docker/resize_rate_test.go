//go:build ratetest

package docker_test

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// TestRateLiveResizeDisk (issue 20's proof): a server writing with direct
// IO at 10 MB/s under its flavor's quota:disk_write_bytes_sec is resized
// live to a flavor of 20 MB/s: same PID 1, and its measured write rate
// follows; resizing back (what a revert does) brings 10 MB/s back. The
// rate is what the server's cgroup saw reach the disk over dd's run.
func TestRateLiveResizeDisk(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:disk_write_bytes_sec": "10000000"})
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	workloadPID := func() int { return pidOf(t, ctx, d, docker.ContainerName(spec.ID)) }
	measure := func(what string, want float64) {
		t.Helper()
		const size = 60 << 20
		n, _, dur := ddRun(t, ctx, d, spec.ID, true, "if=/dev/zero of=/f bs=1M count=60 oflag=direct")
		rate := float64(n) / dur.Seconds()
		t.Logf("MEASURED disk write %s: %d bytes in %v = %.2f MB/s (limit %.0f MB/s)", what, n, dur.Round(time.Millisecond), rate/1e6, want/1e6)
		if n < size {
			t.Errorf("%s: the cgroup saw %d bytes written, want >= %d: direct IO did not reach the disk", what, n, size)
		}
		if !within(rate, want, want*0.15) {
			t.Errorf("%s: direct writes ran at %.2f MB/s, want %.0f ± 15%%", what, rate/1e6, want/1e6)
		}
	}
	resize := func(rate string) {
		t.Helper()
		l, err := limits.Parse(map[string]string{"quota:disk_write_bytes_sec": rate}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Resize(ctx, spec.ID, 1, spec.MemoryMB, l); err != nil {
			t.Fatalf("live resize to %s B/s: %v", rate, err)
		}
	}

	pid := workloadPID()
	measure("before the resize", 10e6)
	resize("20000000")
	if p := workloadPID(); p != pid {
		t.Fatalf("the resize restarted the server: pid %d -> %d", pid, p)
	}
	measure("after the live resize", 20e6)
	resize("10000000")
	if p := workloadPID(); p != pid {
		t.Fatalf("the resize back restarted the server: pid %d -> %d", pid, p)
	}
	measure("after the resize back", 10e6)
}
