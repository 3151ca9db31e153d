package docker_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/docker/docker/api/types/blkiodev"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// What a server gets under its flavor's extra specs: here, that Docker and
// the kernel hold the limits; limits_rate_test.go (build tag ratetest)
// measures what the kernel then gives, from the server's own cgroup
// counters, each against a tolerance.

// limitedSpec is a spec whose limits come from Nova-style extra specs,
// parsed as the agent parses them.
func limitedSpec(t *testing.T, image string, vcpus int, extra map[string]string) drivers.Spec {
	t.Helper()
	lim, err := limits.Parse(extra, vcpus)
	if err != nil {
		t.Fatalf("parse %v: %v", extra, err)
	}
	spec := drivertest.Spec(image)
	spec.VCPUs = vcpus
	spec.ExtraSpecs = extra
	spec.Limits = lim
	return spec
}

func stats(t *testing.T, ctx context.Context, d *docker.Driver, id string) cgroup.Stats {
	t.Helper()
	s, err := d.InstanceStats(ctx, id)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return s.Stats
}

func within(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

// wait blocks for a measurement window.
func wait(ctx context.Context, t *testing.T, dur time.Duration) {
	t.Helper()
	select {
	case <-time.After(dur):
	case <-ctx.Done():
		t.Fatalf("measurement window: %v", ctx.Err())
	}
}

// TestFlavorLimitsApplied: a server whose flavor sets a CPU quota, disk
// throttles and a pids cap has them in Docker's host config (on a whole
// disk, not a partition), in the kernel and in its stats.
func TestFlavorLimitsApplied(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{
		"quota:cpu_quota": "50000", "quota:cpu_period": "100000",
		"quota:disk_write_bytes_sec": "10000000", "quota:disk_read_bytes_sec": "20000000",
		"quota:disk_total_iops_sec": "100", "capsule:pids_max": "48"})
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)

	c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	if c.HostConfig.CPUQuota != 50000 || c.HostConfig.CPUPeriod != 100000 {
		t.Errorf("docker cpu quota/period = %d/%d, want 50000/100000", c.HostConfig.CPUQuota, c.HostConfig.CPUPeriod)
	}
	// rateOf is 0 unless the throttle is on exactly one device: the
	// whole disk, not a partition.
	hc := c.HostConfig
	for _, th := range []struct {
		name      string
		got, want uint64
	}{
		{"write bps", rateOf(hc.BlkioDeviceWriteBps), 10_000_000},
		{"read bps", rateOf(hc.BlkioDeviceReadBps), 20_000_000},
		{"write iops", rateOf(hc.BlkioDeviceWriteIOps), 100},
		{"read iops", rateOf(hc.BlkioDeviceReadIOps), 100},
	} {
		if th.got != th.want {
			t.Errorf("docker %s = %d, want %d (host config %+v)", th.name, th.got, th.want, hc.Resources)
		}
	}
	lim, err := cgroup.LimitsOf(c.State.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if lim.CPUQuotaUS != 50000 || lim.CPUPeriodUS != 100000 || lim.PidsMax != 48 {
		t.Errorf("kernel cpu quota/period = %d/%d, pids.max %d, want 50000/100000 and 48", lim.CPUQuotaUS, lim.CPUPeriodUS, lim.PidsMax)
	}
	want := cgroup.DiskThrottle{ReadBPS: 20_000_000, WriteBPS: 10_000_000, ReadIOPS: 100, WriteIOPS: 100}
	if len(lim.Disk) != 1 || func(d cgroup.DiskThrottle) cgroup.DiskThrottle { d.Device = ""; return d }(lim.Disk[0]) != want {
		t.Errorf("kernel disk throttles = %+v, want %+v on one device", lim.Disk, want)
	}
	s := stats(t, ctx, d, spec.ID)
	if s.MemoryLimitBytes != uint64(spec.MemoryMB)<<20 || s.PidsLimit != 48 || s.MemoryUsageBytes == 0 || s.Pids == 0 {
		t.Errorf("stats of the server: %+v, want memory limit %d MiB and pids limit 48", s, spec.MemoryMB)
	}
}

func rateOf(ts []*blkiodev.ThrottleDevice) uint64 {
	if len(ts) != 1 {
		return 0
	}
	return ts[0].Rate
}

// TestStatsCountOOMKills: a process blowing the server's memory limit is
// OOM-killed inside the server, and the kill shows in its stats (what
// diagnostics and OOM alarms read) while the server keeps running.
func TestStatsCountOOMKills(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	spec.MemoryMB = 32
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	before := stats(t, ctx, d, spec.ID)
	// tail keeps the current line in memory; /dev/zero has no newline.
	code, out, err := execIn(ctx, d.Client(), docker.ContainerName(spec.ID), "tail", "/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	after := stats(t, ctx, d, spec.ID)
	t.Logf("MEASURED oom: exit %d, oom kills %d -> %d, memory %d of %d bytes", code, before.OOMKills, after.OOMKills, after.MemoryUsageBytes, after.MemoryLimitBytes)
	if code != 137 || after.OOMKills <= before.OOMKills {
		t.Errorf("memory hog: exit %d (%q), oom kills %d -> %d; want a SIGKILL counted as an OOM kill", code, out, before.OOMKills, after.OOMKills)
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerRunning)
}
