//go:build ratetest

package docker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// Rate tests (build tag ratetest): what the kernel gives a server under
// its flavor's extra specs, measured from the server's own cgroup
// counters against a tolerance. deploy/test.sh runs them on their own, on
// a quiet machine; the waits are measurement windows, not assertions.

// TestRateCPUQuota: a CPU burner in a 1-vCPU server whose flavor has
// quota:cpu_quota=50000 / quota:cpu_period=100000 gets 0.5 CPU.
func TestRateCPUQuota(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:cpu_quota": "50000", "quota:cpu_period": "100000"})
	spec.Command = []string{"sh", "-c", "while :; do :; done"}
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)

	// That the quota is in Docker and in the kernel is TestFlavorLimitsApplied's;
	// this measures what the server gets under it.

	s1, t1 := stats(t, ctx, d, spec.ID), time.Now()
	if s1.MemoryLimitBytes != uint64(spec.MemoryMB)<<20 || s1.PidsLimit != uint64(spec.PidsLimit) || s1.MemoryUsageBytes == 0 || s1.Pids == 0 {
		t.Errorf("stats of the server: %+v, want memory limit %d MiB and pids limit %d", s1, spec.MemoryMB, spec.PidsLimit)
	}
	wait(ctx, t, 3*time.Second)
	s2, t2 := stats(t, ctx, d, spec.ID), time.Now()
	cpus := float64(s2.CPUUsageNS-s1.CPUUsageNS) / float64(t2.Sub(t1).Nanoseconds())
	throttled := s2.CPUThrottledPeriods - s1.CPUThrottledPeriods
	periods := s2.CPUPeriods - s1.CPUPeriods
	t.Logf("MEASURED cpu: %.3f CPU over %v (cgroup v%d), throttled in %d of %d periods", cpus, t2.Sub(t1).Round(time.Millisecond), s2.CgroupVersion, throttled, periods)
	if !within(cpus, 0.5, 0.1) {
		t.Errorf("burner used %.3f CPU, want 0.5 ± 0.1", cpus)
	}
	// The quota, not a busy host, is what held it: most periods ran out.
	if periods == 0 || float64(throttled) < 0.7*float64(periods) {
		t.Errorf("throttled in %d of %d periods; a burner under a quota is throttled in nearly all", throttled, periods)
	}
}

// ddRun runs dd in the server and returns the bytes and operations its
// cgroup did on the disk in that direction, and how long it took.
func ddRun(t *testing.T, ctx context.Context, d *docker.Driver, id string, write bool, args string) (bytes, ops uint64, dur time.Duration) {
	t.Helper()
	s1, t1 := stats(t, ctx, d, id), time.Now()
	code, out, err := execIn(ctx, d.Client(), docker.ContainerName(id), "sh", "-c", "dd "+args+" 2>&1")
	t2 := time.Now()
	if err != nil || code != 0 {
		t.Fatalf("dd %s: exit %d, %v: %s", args, code, err, out)
	}
	s2 := stats(t, ctx, d, id)
	if write {
		return s2.DiskWriteBytes - s1.DiskWriteBytes, s2.DiskWriteOps - s1.DiskWriteOps, t2.Sub(t1)
	}
	return s2.DiskReadBytes - s1.DiskReadBytes, s2.DiskReadOps - s1.DiskReadOps, t2.Sub(t1)
}

// TestRateDiskBandwidth: direct-IO writes in a server with
// quota:disk_write_bytes_sec=10 MB/s run at 10 ± 1.5 MB/s, reads with
// quota:disk_read_bytes_sec=20 MB/s at 20 ± 3. The IO goes to the
// server's writable layer (overlay2 on the disk holding Docker's data,
// which passes O_DIRECT through: the cgroup sees every byte).
func TestRateDiskBandwidth(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	const wantW, wantR = 10_000_000, 20_000_000
	spec := limitedSpec(t, image, 1, map[string]string{
		"quota:disk_write_bytes_sec": fmt.Sprint(wantW), "quota:disk_read_bytes_sec": fmt.Sprint(wantR)})
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	checkThrottle(t, ctx, d, spec.ID, func(hc *container.HostConfig) (string, uint64) {
		return "write bps", rateOf(hc.BlkioDeviceWriteBps)
	}, wantW)

	const size = 40 << 20
	n, _, dur := ddRun(t, ctx, d, spec.ID, true, "if=/dev/zero of=/f bs=1M count=40 oflag=direct")
	rate := float64(n) / dur.Seconds()
	t.Logf("MEASURED disk write: %d bytes in %v = %.2f MB/s (limit 10 MB/s)", n, dur.Round(time.Millisecond), rate/1e6)
	if n < size {
		t.Errorf("the cgroup saw %d bytes written, want >= %d: direct IO did not reach the disk", n, size)
	}
	if !within(rate, wantW, 1.5e6) {
		t.Errorf("direct writes ran at %.2f MB/s, want 10 ± 1.5", rate/1e6)
	}

	n, _, dur = ddRun(t, ctx, d, spec.ID, false, "if=/f of=/dev/null bs=1M iflag=direct")
	rate = float64(n) / dur.Seconds()
	t.Logf("MEASURED disk read: %d bytes in %v = %.2f MB/s (limit 20 MB/s)", n, dur.Round(time.Millisecond), rate/1e6)
	if n < size {
		t.Errorf("the cgroup saw %d bytes read, want >= %d", n, size)
	}
	if !within(rate, wantR, 3e6) {
		t.Errorf("direct reads ran at %.2f MB/s, want 20 ± 3", rate/1e6)
	}
}

// TestRateDiskIOPS: 4 KiB direct writes under
// quota:disk_total_iops_sec=100 (applied to each direction) run at 100 ±
// 15 operations per second.
func TestRateDiskIOPS(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := limitedSpec(t, image, 1, map[string]string{"quota:disk_total_iops_sec": "100"})
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	checkThrottle(t, ctx, d, spec.ID, func(hc *container.HostConfig) (string, uint64) {
		return "write iops", rateOf(hc.BlkioDeviceWriteIOps)
	}, 100)

	_, ops, dur := ddRun(t, ctx, d, spec.ID, true, "if=/dev/zero of=/f bs=4k count=400 oflag=direct")
	rate := float64(ops) / dur.Seconds()
	t.Logf("MEASURED disk write IOPS: %d ops in %v = %.1f IOPS (limit 100)", ops, dur.Round(time.Millisecond), rate)
	if ops < 400 {
		t.Errorf("the cgroup saw %d write ops, want >= 400", ops)
	}
	if !within(rate, 100, 15) {
		t.Errorf("direct 4k writes ran at %.1f IOPS, want 100 ± 15", rate)
	}
}

// checkThrottle: Docker got the throttle on a whole disk (not a partition)
// and the kernel enforces it on one device.
func checkThrottle(t *testing.T, ctx context.Context, d *docker.Driver, id string, get func(*container.HostConfig) (string, uint64), want uint64) {
	t.Helper()
	c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(id))
	if err != nil {
		t.Fatal(err)
	}
	name, got := get(c.HostConfig)
	if got != want {
		t.Fatalf("docker %s = %d, want %d (host config %+v)", name, got, want, c.HostConfig.Resources)
	}
	lim, err := cgroup.LimitsOf(c.State.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(lim.Disk) != 1 || !slices.Contains([]uint64{lim.Disk[0].ReadBPS, lim.Disk[0].WriteBPS, lim.Disk[0].ReadIOPS, lim.Disk[0].WriteIOPS}, want) {
		t.Fatalf("kernel disk throttles = %+v, want %s %d on one device", lim.Disk, name, want)
	}
}

// TestRateForkBombStopsAtPidsLimit: a fork bomb in a server whose flavor has
// capsule:pids_max=48 stops at 48 tasks, while the host and a neighbouring
// server can still start processes (the thread-leak lesson). A rate
// test: it samples a bomb that reaches its cap for moments only, which a
// busy machine makes it miss.
func TestRateForkBombStopsAtPidsLimit(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	const max = 48
	bomb := limitedSpec(t, image, 1, map[string]string{"capsule:pids_max": fmt.Sprint(max)})
	bomb.PidsLimit = 1024 // the host default the flavor overrides
	bomb.MemoryMB = 256   // room for every task: the pid cap must be what stops them
	neighbour := drivertest.Spec(image)
	drivertest.Boot(t, d, bomb)
	drivertest.Boot(t, d, neighbour)
	ctx := drivertest.Ctx(t)

	if s := stats(t, ctx, d, bomb.ID); s.PidsLimit != max {
		t.Fatalf("pids limit = %d, want the flavor's %d", s.PidsLimit, max)
	}
	// The bomb: every shell forks shells as fast as it can. It grows
	// to the cap, never past it; busybox sh exits when a fork is
	// refused, so it then collapses on its own.
	startExec(t, ctx, d, bomb.ID, "b() { while :; do b & done; }; b")
	deadline := time.Now().Add(30 * time.Second)
	var peak uint64
	for peak < max-1 && time.Now().Before(deadline) {
		peak = max64(peak, stats(t, ctx, d, bomb.ID).Pids)
		wait(ctx, t, 5*time.Millisecond)
	}
	// Sampled every few ms, the bomb's brief visit to the cap itself may
	// be missed; one short of it is the cap reached (the leak below then
	// holds it), one above is a failure (checked at the end).
	// The kernel's own record settles a peak the sampling missed: the
	// pids controller counts the forks it refused at the cap.
	if refused := pidsCapRefusals(t, ctx, d, bomb.ID); peak < max-1 && refused == 0 {
		t.Fatalf("fork bomb peaked at %d tasks and no fork was refused at the cap, want it to reach and stop at %d", peak, max)
	} else if peak < max-1 {
		t.Logf("fork bomb sampled at %d tasks at most; the kernel refused %d forks at the cap %d", peak, refused, max)
	}
	// Let the bomb die out first (each of its shells exits once a fork
	// is refused): tasks it leaves behind would otherwise count towards
	// the cap below and then vanish mid-check.
	for stats(t, ctx, d, bomb.ID).Pids > 3 && time.Now().Before(deadline) {
		wait(ctx, t, 20*time.Millisecond)
	}
	// Then a leak that holds the cap: sleepers forked until the kernel
	// refuses, which leaves the server one task short of its cap for
	// as long as the checks below take.
	// Its own deadline: a slow die-out must not leave it none.
	deadline = time.Now().Add(30 * time.Second)
	startExec(t, ctx, d, bomb.ID, "while :; do sleep 1000 & done")
	var held uint64
	for held < max-1 && time.Now().Before(deadline) {
		held = stats(t, ctx, d, bomb.ID).Pids
		peak = max64(peak, held)
		wait(ctx, t, 5*time.Millisecond)
	}
	if held < max-1 {
		t.Fatalf("the leak holds %d tasks, want %d", held, max-1)
	}

	// With the server at its cap: the host forks...
	start := time.Now()
	for i := 0; i < 20; i++ {
		if out, err := exec.CommandContext(ctx, "sh", "-c", "true").CombinedOutput(); err != nil {
			t.Fatalf("the host cannot start a process during the bomb: %v %s", err, out)
		}
	}
	hostDur := time.Since(start)
	// The server was still at its cap while the host forked (checked
	// right away: the leaking shell's orphans are not guaranteed to
	// outlive its docker exec session much longer).
	mid := stats(t, ctx, d, bomb.ID).Pids
	peak = max64(peak, mid)
	if mid < max-1 {
		t.Errorf("server down to %d tasks while the host forked, want it held at its cap %d", mid, max)
	}
	// ...and so does the neighbour, 20 tasks at once.
	code, out, err := execIn(ctx, d.Client(), docker.ContainerName(neighbour.ID), "sh", "-c",
		"i=0; while [ $i -lt 20 ]; do sleep 3 & i=$((i+1)); done; echo started $i")
	if err != nil || code != 0 || !strings.Contains(out, "started 20") {
		t.Fatalf("the neighbour cannot start processes during the bomb: exit %d, %v, %q", code, err, out)
	}
	ns := stats(t, ctx, d, neighbour.ID)
	for i := 0; i < 10; i++ {
		peak = max64(peak, stats(t, ctx, d, bomb.ID).Pids)
	}

	t.Logf("MEASURED fork bomb: peak %d tasks (limit %d), held at %d while the host ran 20 processes in %v; neighbour at %d tasks; %d forks refused at the cap",
		peak, max, mid, hostDur.Round(time.Millisecond), ns.Pids, pidsCapRefusals(t, ctx, d, bomb.ID))
	if peak > max {
		t.Errorf("fork bomb reached %d tasks, above its limit %d", peak, max)
	}
	if ns.Pids < 21 {
		t.Errorf("neighbour has %d tasks, want its 20 sleeps and init", ns.Pids)
	}
}

// startExec starts cmd in the server, detached; the server may be at its
// pid cap for a moment (the exec then fails to start), so it retries.
func startExec(t *testing.T, ctx context.Context, d *docker.Driver, id, cmd string) {
	t.Helper()
	var err error
	for range 50 {
		var ex container.ExecCreateResponse
		ex, err = d.Client().ContainerExecCreate(ctx, docker.ContainerName(id), container.ExecOptions{Cmd: []string{"sh", "-c", cmd}})
		if err != nil {
			t.Fatal(err)
		}
		if err = d.Client().ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{Detach: true}); err == nil {
			return
		}
		wait(ctx, t, 50*time.Millisecond)
	}
	t.Fatalf("start %q in %s: %v", cmd, id, err)
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// TestRateLiveResizeCPU: a CPU burner held at 0.5 CPU by its flavor's
// quota gets 1 CPU after a live resize, and 0.5 again after the resize
// back a revert does.
func TestRateLiveResizeCPU(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	half, err := limits.Parse(map[string]string{"quota:cpu_quota": "50000"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	spec := limitedSpec(t, image, 1, map[string]string{"quota:cpu_quota": "50000"})
	spec.Command = []string{"sh", "-c", "while :; do :; done"}
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	measure := func(what string, want, tol float64) {
		t.Helper()
		s1, t1 := stats(t, ctx, d, spec.ID), time.Now()
		wait(ctx, t, 3*time.Second)
		s2, t2 := stats(t, ctx, d, spec.ID), time.Now()
		cpus := float64(s2.CPUUsageNS-s1.CPUUsageNS) / float64(t2.Sub(t1).Nanoseconds())
		t.Logf("MEASURED %s: %.3f CPU", what, cpus)
		if !within(cpus, want, tol) {
			t.Errorf("%s: %.3f CPU, want %.2f ± %.2f", what, cpus, want, tol)
		}
	}
	measure("before resize", 0.5, 0.1)
	if err := d.Resize(ctx, spec.ID, 1, 128, limits.Limits{PidsMax: 100}); err != nil {
		t.Fatalf("resize: %v", err)
	}
	measure("after live resize", 1, 0.15)
	if err := d.Resize(ctx, spec.ID, 1, 64, half); err != nil {
		t.Fatalf("resize back: %v", err)
	}
	measure("after resize back", 0.5, 0.1)
}

// pidsCapRefusals is how many forks the pids controller refused server
// id for its cap ("max" in pids.events of its cgroup, v1 or v2).
func pidsCapRefusals(t *testing.T, ctx context.Context, d *docker.Driver, id string) int {
	t.Helper()
	c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(id))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.State.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var file string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		switch {
		case len(f) != 3:
		case slices.Contains(strings.Split(f[1], ","), "pids"):
			file = filepath.Join("/sys/fs/cgroup/pids", f[2], "pids.events")
		case f[0] == "0" && f[1] == "" && file == "":
			file = filepath.Join("/sys/fs/cgroup", f[2], "pids.events")
		}
	}
	ev, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("pids events of %s: %v", id, err)
	}
	for _, line := range strings.Split(string(ev), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "max" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}
