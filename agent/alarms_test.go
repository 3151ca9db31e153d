package agent

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/metrics"
	"github.com/capsule-cloud/capsule/metrics/metricstest"
	"github.com/capsule-cloud/capsule/protocol"
)

var alarmT0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func testAlarms() *alarms {
	cfg := config.Default().Agent.Alarms
	al := newAlarms("h-alarm", cfg)
	n := 0
	al.newID = func() string { n++; return fmt.Sprintf("ev-%d", n) }
	return al
}

// round is one alarm round at t0 + i seconds with the servers given.
func round(i int, servers ...serverFigures) alarmRound {
	return alarmRound{At: alarmT0.Add(time.Duration(i) * time.Second), Listed: true, Servers: servers}
}

// srv is a measured server started at t0 with nothing near a limit.
func srv(id string) serverFigures {
	return serverFigures{ID: id, StartedAt: alarmT0, Measured: true, Stats: cgroup.Stats{Pids: 1, PidsLimit: 48,
		MemoryWorkingSetBytes: 1 << 20, MemoryUsageBytes: 1 << 20, MemoryLimitBytes: 64 << 20}}
}

func kinds(evs []protocol.HostEvent) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.InstanceID+":"+string(e.Kind))
	}
	return out
}

// A pids alarm raises once when crossed, stays quiet while the figure
// hovers above the re-arm level, and raises again only after it fell
// below it: no event storm.
func TestAlarmHysteresis(t *testing.T) {
	al := testAlarms()
	s := srv("i-1")
	steps := []struct {
		pids uint64
		want int // events
	}{
		{40, 0}, // 83 %: below 90 %
		{44, 1}, // 92 %: raised
		{46, 0}, // still above: already raised
		{40, 0}, // 83 %: above the re-arm level (81 %)
		{44, 0}, // crossed again, not re-armed: quiet
		{38, 0}, // 79 %: re-armed
		{48, 1}, // at the cap: raised again, critical
	}
	for i, st := range steps {
		s.Pids = st.pids
		evs := al.evaluate(round(i, s))
		if len(evs) != st.want {
			t.Fatalf("step %d (pids %d): events %v, want %d", i, st.pids, kinds(evs), st.want)
		}
		for _, e := range evs {
			if e.Kind != protocol.EventPidsAlarm || e.InstanceID != "i-1" || e.Host != "h-alarm" || e.Value != float64(st.pids) ||
				e.Threshold != 0.9*48 || !e.At.Equal(alarmT0.Add(time.Duration(i)*time.Second)) || e.ID == "" || e.Message == "" {
				t.Errorf("step %d: event %+v", i, e)
			}
			wantSev := protocol.SeverityWarning
			if st.pids >= 48 {
				wantSev = protocol.SeverityCritical
			}
			if e.Severity != wantSev {
				t.Errorf("step %d: severity %s, want %s", i, e.Severity, wantSev)
			}
		}
	}
}

// Every OOM kill is an event, however many and however close together;
// kills before the agent's first look are a baseline; a restarted
// server's counter starts again; a new server's kills all count; a
// workload that died of an OOM kill is one too.
func TestAlarmOOMAlwaysRaised(t *testing.T) {
	al := testAlarms()
	s := srv("i-1")
	s.OOMKills = 3
	if evs := al.evaluate(round(0, s)); len(evs) != 0 {
		t.Fatalf("kills before the first round raised %v", kinds(evs))
	}
	check := func(i int, want float64, evs []protocol.HostEvent) {
		t.Helper()
		if len(evs) != 1 || evs[0].Kind != protocol.EventOOMKill || evs[0].Severity != protocol.SeverityCritical || evs[0].Value != want {
			t.Fatalf("round %d: events %+v, want one OOM kill event of %v", i, evs, want)
		}
	}
	s.OOMKills = 4
	check(1, 1, al.evaluate(round(1, s)))
	if evs := al.evaluate(round(2, s)); len(evs) != 0 {
		t.Fatalf("no new kill raised %v", kinds(evs))
	}
	s.OOMKills = 6
	check(3, 2, al.evaluate(round(3, s)))
	s.OOMKills = 7 // no hysteresis: the next kill right after is an event too
	check(4, 1, al.evaluate(round(4, s)))

	// Restarted: a new cgroup, its counter from 0.
	s.StartedAt, s.OOMKills = alarmT0.Add(5*time.Second), 1
	check(5, 1, al.evaluate(round(5, s)))

	// A server created since the first round: all its kills are new.
	n := srv("i-2")
	n.OOMKills = 2
	evs := al.evaluate(round(6, s, n))
	if len(evs) != 1 || evs[0].InstanceID != "i-2" || evs[0].Value != 2 {
		t.Fatalf("new server: %+v", evs)
	}

	// A figures read that failed once loses nothing.
	s.Measured = false
	if evs := al.evaluate(round(7, s, n)); len(evs) != 0 {
		t.Fatalf("unmeasured round raised %v", kinds(evs))
	}
	s.Measured, s.OOMKills = true, 2
	check(8, 1, al.evaluate(round(8, s, n)))

	// The workload itself killed: the driver says so once it stopped.
	dead := serverFigures{ID: "i-2", StartedAt: n.StartedAt, DiedOOM: true}
	evs = al.evaluate(round(9, s, dead))
	if len(evs) != 1 || evs[0].InstanceID != "i-2" || evs[0].Kind != protocol.EventOOMKill {
		t.Fatalf("died of OOM: %+v", evs)
	}
	if evs := al.evaluate(round(10, s, dead)); len(evs) != 0 {
		t.Fatalf("a dead server raised again: %v", kinds(evs))
	}
}

// Memory alarms count what the kernel cannot reclaim: a server whose
// usage is mostly inactive page cache is fine; the same usage in
// anonymous memory or tmpfs raises.
func TestAlarmMemoryWorkingSet(t *testing.T) {
	al := testAlarms()
	s := srv("i-1")
	s.MemoryUsageBytes, s.MemoryWorkingSetBytes = 62<<20, 20<<20 // 42 MiB of cold cache
	if evs := al.evaluate(round(0, s)); len(evs) != 0 {
		t.Fatalf("page cache raised %v", kinds(evs))
	}
	s.MemoryWorkingSetBytes = 60 << 20
	evs := al.evaluate(round(1, s))
	if len(evs) != 1 || evs[0].Kind != protocol.EventMemoryAlarm || evs[0].Value != 60<<20 || evs[0].Threshold != 0.9*(64<<20) {
		t.Fatalf("events %+v, want one memory alarm", evs)
	}
	if !strings.Contains(evs[0].Message, "60.0 MiB") || !strings.Contains(evs[0].Message, "64.0 MiB") {
		t.Errorf("message %q", evs[0].Message)
	}
	// A driver that cannot split the usage: all of it counts.
	al = testAlarms()
	s.MemoryWorkingSetBytes = 0
	if evs := al.evaluate(round(0, s)); len(evs) != 1 || evs[0].Value != 62<<20 {
		t.Fatalf("without a split, 62 of 64 MiB used: %+v, want one memory alarm", evs)
	}
}

// CPU throttling is a ratio over the interval; an idle server re-arms.
func TestAlarmCPUThrottled(t *testing.T) {
	al := testAlarms()
	s := srv("i-1")
	s.CPUPeriods, s.CPUThrottledPeriods = 1000, 10
	al.evaluate(round(0, s))
	s.CPUPeriods, s.CPUThrottledPeriods = 1100, 105 // 95 of 100
	evs := al.evaluate(round(1, s))
	if len(evs) != 1 || evs[0].Kind != protocol.EventCPUAlarm || evs[0].Value != 0.95 {
		t.Fatalf("events %+v, want a CPU alarm of 0.95", evs)
	}
	s.CPUPeriods, s.CPUThrottledPeriods = 1200, 200 // still throttled: quiet
	if evs := al.evaluate(round(2, s)); len(evs) != 0 {
		t.Fatalf("raised again: %v", kinds(evs))
	}
	s.CPUPeriods, s.CPUThrottledPeriods = 1203, 203 // 3 periods: idle, re-arms
	al.evaluate(round(3, s))
	s.CPUPeriods, s.CPUThrottledPeriods = 1303, 300
	if evs := al.evaluate(round(4, s)); len(evs) != 1 {
		t.Fatalf("after idling: %v, want a new CPU alarm", kinds(evs))
	}
}

// Host figures raise host events (no instance); 0 disables an alarm; a
// listing that failed keeps the servers' state.
func TestAlarmHostAndDisabled(t *testing.T) {
	al := testAlarms()
	r := alarmRound{At: alarmT0, Host: hostFigures{Tasks: 27000, PidMax: 32768, HasPids: true,
		Conntrack: 900, ConntrackMax: 1000, HasConntrack: true}}
	evs := al.evaluate(r)
	if len(evs) != 2 || evs[0].Kind != protocol.EventHostPids || evs[1].Kind != protocol.EventConntrack ||
		evs[0].InstanceID != "" || evs[0].Severity != protocol.SeverityCritical || evs[0].Threshold != 0.8*32768 {
		t.Fatalf("host events %+v", evs)
	}
	if evs[0].Message != "host runs 27000 tasks of kernel.pid_max 32768 (82%); alarm at 80%: forks fail for every server once it is reached" ||
		evs[1].Message != "host tracks 900 connections of nf_conntrack_max 1000 (90%); alarm at 80%: new connections are dropped once it is full" ||
		evs[1].Value != 900 || evs[1].Threshold != 800 {
		t.Errorf("host events %+v", evs)
	}
	if evs := al.evaluate(r); len(evs) != 0 {
		t.Fatalf("host alarms raised twice: %v", kinds(evs))
	}

	al = testAlarms()
	al.cfg.ServerPids, al.cfg.HostPids = 0, 0
	s := srv("i-1")
	s.Pids = 48
	r.Listed, r.Servers = true, []serverFigures{s}
	for _, e := range al.evaluate(r) {
		if e.Kind == protocol.EventPidsAlarm || e.Kind == protocol.EventHostPids {
			t.Errorf("disabled alarm raised: %+v", e)
		}
	}
}

// A host whose data root cannot cap root disks raises one warning event
// naming the host and the reason; not again while it stays so; again
// after it could cap and then could not.
func TestAlarmRootDiskNotEnforced(t *testing.T) {
	al := testAlarms()
	r := round(0)
	r.RootDisk = drivers.RootDiskUnprobed
	if evs := al.evaluate(r); len(evs) != 0 {
		t.Fatalf("unprobed root disk raised %v", kinds(evs))
	}
	r.RootDisk = drivers.RootDiskNotEnforced + `: overlay2 data root on "extfs", not xfs with pquota`
	evs := al.evaluate(r)
	if len(evs) != 1 || evs[0].Kind != protocol.EventRootDisk || evs[0].Severity != protocol.SeverityWarning || evs[0].InstanceID != "" ||
		!strings.HasPrefix(evs[0].Message, `root disk not enforced on host h-alarm: overlay2 data root on "extfs"`) {
		t.Fatalf("root disk events %+v", evs)
	}
	if evs := al.evaluate(r); len(evs) != 0 {
		t.Fatalf("root disk event raised twice: %v", kinds(evs))
	}
	r.RootDisk = drivers.RootDiskEnforced
	if evs := al.evaluate(r); len(evs) != 0 {
		t.Fatalf("enforced root disk raised %v", kinds(evs))
	}
	r.RootDisk = drivers.RootDiskNotEnforced + ": again"
	if evs := al.evaluate(r); len(evs) != 1 || evs[0].Kind != protocol.EventRootDisk {
		t.Fatalf("root disk not enforced again: %v", kinds(evs))
	}
}

// eventRecorder consumes the conductor queue of a Mem bus, keeping the
// host events (and answering everything else with nothing).
type eventRecorder struct {
	mu     sync.Mutex
	events []protocol.HostEvent
	at     []time.Time
}

func recordEvents(t *testing.T, b bus.Bus) *eventRecorder {
	t.Helper()
	rec := &eventRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := b.Consume(ctx, bus.ConductorQueue, func(_ context.Context, m bus.Message) (any, error) {
		if m.Kind != protocol.KindHostEvent {
			return nil, nil
		}
		var ev protocol.HostEvent
		if err := m.Decode(&ev); err != nil {
			return nil, err
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.events, rec.at = append(rec.events, ev), append(rec.at, time.Now())
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// wait returns the first event of kind about instance and when it arrived.
func (r *eventRecorder) wait(t *testing.T, instance string, kind protocol.EventKind, timeout time.Duration) (protocol.HostEvent, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		for i, e := range r.events {
			if e.InstanceID == instance && e.Kind == kind {
				r.mu.Unlock()
				return e, r.at[i]
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no %s event about %s within %s", kind, instance, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *eventRecorder) count(instance string, kind protocol.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.InstanceID == instance && e.Kind == kind {
			n++
		}
	}
	return n
}

// alarmDocker is an agent on the real dockerd whose alarm loop alone runs
// (every interval), publishing to a Mem bus whose conductor queue rec
// records.
type alarmDocker struct {
	agent *Agent
	drv   *docker.Driver
	rec   *eventRecorder
	host  string
}

func startAlarmDocker(t *testing.T, interval time.Duration, tune func(*config.Alarms)) *alarmDocker {
	t.Helper()
	host := testenv.DockerHost(t)
	image := testenv.Image(t)
	ctx := context.Background()
	drv, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, Logger: testLogger(t), SandboxImage: image, NetworkMode: testenv.NetworkMode()})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { drv.Close() })
	drv.Client().NegotiateAPIVersion(ctx)
	b := bus.NewMem(bus.MemLogger(testLogger(t)))
	t.Cleanup(func() { b.Close() })
	cfg := testConfig()
	cfg.Alarms.Interval = interval
	if tune != nil {
		tune(&cfg.Alarms)
	}
	a := New(cfg, drv, b, testLogger(t), WithCallTimeout(5*time.Second))
	d := &alarmDocker{agent: a, drv: drv, rec: recordEvents(t, b), host: host}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.alarmLoop(lctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// server creates and starts a server of memoryMB and pids cap, destroyed
// at cleanup; command, when given, replaces the image's init.
func (d *alarmDocker) server(t *testing.T, memoryMB int, pids int64, command ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := "agalarm-" + uuid.NewString()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.drv.Destroy(cctx, id); err != nil {
			t.Errorf("cleanup: destroy %s: %v", id, err)
		}
	})
	spec := drivers.Spec{ID: id, Name: id, Hostname: "alarm", Image: testenv.Image(t), VCPUs: 1, MemoryMB: memoryMB, DiskGB: 1, PidsLimit: pids,
		Command: command}
	if err := d.drv.Create(ctx, spec); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := d.drv.Start(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	return id
}

// exec runs a shell command in id's workload through the docker CLI.
func (d *alarmDocker) exec(id, script string) (string, error) {
	out, err := exec.Command("docker", "-H", d.host, "exec", docker.ContainerName(id), "sh", "-c", script).CombinedOutput()
	return string(out), err
}

// A process that eats memory in a 32 MiB server is OOM-killed; the alarm
// loop raises an oom_kill event (TestRateAlarmOOMKillLatency: within about
// one interval); nothing else raises it twice.
func TestAlarmOOMKillWithDocker(t *testing.T) {
	d := startAlarmDocker(t, time.Second, nil)
	id, _ := d.oomKill(t)
	ev, _ := d.rec.wait(t, id, protocol.EventOOMKill, 10*time.Second)
	t.Logf("OOM kill event: %+v", ev)
	if ev.Severity != protocol.SeverityCritical || ev.Value < 1 || ev.Host != testHost || ev.ID == "" {
		t.Errorf("event %+v", ev)
	}
	st, err := d.drv.Status(context.Background(), id)
	if err != nil || st.Power != drivers.PowerRunning {
		t.Errorf("the server itself should survive its hog: %+v %v", st, err)
	}
	time.Sleep(2500 * time.Millisecond)
	if n := d.rec.count(id, protocol.EventOOMKill); n != 1 {
		t.Errorf("%d OOM kill events for one kill", n)
	}
}

// oomKill starts a 32 MiB server and, once an alarm round has seen it
// running (its baseline), has a process in it eat memory until the OOM
// killer ends it; it returns the server and when the kill was seen.
func (d *alarmDocker) oomKill(t *testing.T) (id string, killed time.Time) {
	t.Helper()
	id = d.server(t, 32, 64)
	time.Sleep(1500 * time.Millisecond) // a round saw it running: its baseline

	// tail buffers its "line" of zeros until the OOM killer ends it.
	out, err := d.exec(id, "tail /dev/zero")
	killed = time.Now()
	if err == nil {
		t.Fatalf("the memory hog was not killed: %s", out)
	}
	return id, killed
}

// A server whose workload itself is OOM-killed stops, its cgroup (and
// counter) gone with it: the driver's word for it raises the event.
func TestAlarmWorkloadOOMKilledWithDocker(t *testing.T) {
	d := startAlarmDocker(t, time.Second, nil)
	id := d.server(t, 32, 64, "sh", "-c", "sleep 3; exec tail /dev/zero")
	ev, _ := d.rec.wait(t, id, protocol.EventOOMKill, 15*time.Second)
	t.Logf("event: %+v", ev)
	st, err := d.drv.Status(context.Background(), id)
	if err != nil || st.Power == drivers.PowerRunning {
		t.Errorf("status %+v %v, want stopped", st, err)
	}
	time.Sleep(2 * time.Second)
	if n := d.rec.count(id, protocol.EventOOMKill); n != 1 {
		t.Errorf("%d events for one death", n)
	}
}

// Page cache is counted where it belongs: a file written in a server
// shows in its usage and cache series, while its working set (and so its
// memory alarm) leaves cold cache out; tmpfs files cannot be reclaimed
// and raise the memory alarm.
func TestAlarmMemoryPageCacheWithDocker(t *testing.T) {
	d := startAlarmDocker(t, time.Second, func(a *config.Alarms) { a.ServerMemory = 0.6 })
	id := d.server(t, 96, 64)
	ctx := context.Background()
	before, err := d.agent.serverStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := d.exec(id, "mkdir -p /var/tmp && dd if=/dev/zero of=/var/tmp/cache bs=1M count=64 2>&1 && sync"); err != nil {
		t.Fatalf("write a file: %v %s", err, out)
	}
	reg := d.agent.MetricsRegistry(nil)
	got := metricstest.Scrape(t, metrics.Handler(reg))
	lbl := fmt.Sprintf(`{host="%s",instance="%s",project=""}`, testHost, id)
	usage, cache, ws := got["capsule_server_memory_usage_bytes"+lbl], got["capsule_server_memory_cache_bytes"+lbl],
		got["capsule_server_memory_working_set_bytes"+lbl]
	t.Logf("after 64 MiB written to disk: usage %s (before %s), cache %s, working set %s",
		mib(uint64(usage)), mib(before.MemoryUsageBytes), mib(uint64(cache)), mib(uint64(ws)))
	if usage < 60<<20 || cache < 60<<20 {
		t.Errorf("page cache not counted: usage %v, cache %v after writing 64 MiB", usage, cache)
	}
	if ws <= 0 || ws > usage {
		t.Errorf("working set %v of usage %v", ws, usage)
	}
	time.Sleep(1500 * time.Millisecond)
	if ws < 0.6*(96<<20) && d.rec.count(id, protocol.EventMemoryAlarm) != 0 {
		t.Errorf("memory alarm on cold page cache (working set %s)", mib(uint64(ws)))
	}

	// 64 MiB in tmpfs: not reclaimable without swap.
	if out, err := d.exec(id, "rm -f /var/tmp/cache; mkdir -p /dev/shm && dd if=/dev/zero of=/dev/shm/pinned bs=1M count=64 2>&1"); err != nil {
		t.Fatalf("write tmpfs: %v %s", err, out)
	}
	ev, _ := d.rec.wait(t, id, protocol.EventMemoryAlarm, 10*time.Second)
	t.Logf("memory alarm: %+v", ev)
	// The alarm may fire mid-write, as soon as the pinned pages cross the
	// threshold: its value is above the threshold, not necessarily 64 MiB.
	if ev.Value < ev.Threshold || math.Abs(ev.Threshold-0.6*(96<<20)) > 1 {
		t.Errorf("memory alarm %+v, want a value above 60 %% of 96 MiB", ev)
	}
}

// A fork leak in a server with a 48-task cap raises a pids alarm within
// seconds, and the host keeps forking while the server is at its cap.
func TestAlarmPidsLeakWithDocker(t *testing.T) {
	d := startAlarmDocker(t, time.Second, nil)
	id := d.server(t, 64, 48)
	if out, err := exec.Command("docker", "-H", d.host, "exec", "-d", docker.ContainerName(id), "sh", "-c",
		"while true; do sleep 1000 & done").CombinedOutput(); err != nil {
		t.Fatalf("start the leak: %v %s", err, out)
	}
	ev, _ := d.rec.wait(t, id, protocol.EventPidsAlarm, 15*time.Second)
	t.Logf("pids alarm: %+v", ev)
	if ev.Value < 0.9*48 || ev.Value > 48 || ev.Threshold != 0.9*48 {
		t.Errorf("pids alarm %+v", ev)
	}
	for i := range 20 {
		if err := exec.Command("true").Run(); err != nil {
			t.Fatalf("the host cannot fork while a server leaks (try %d): %v", i, err)
		}
	}
	s, err := d.agent.serverStats(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pids > 48 || s.PidsLimit != 48 {
		t.Errorf("server at %d of %d tasks", s.Pids, s.PidsLimit)
	}
	time.Sleep(2 * time.Second)
	if n := d.rec.count(id, protocol.EventPidsAlarm); n != 1 {
		t.Errorf("%d pids alarms while the leak holds the cap, want 1", n)
	}
}

// flakyBus refuses publishes while down, and records what it took.
type flakyBus struct {
	bus.Bus
	mu   sync.Mutex
	down bool
	got  []protocol.HostEvent
}

func (b *flakyBus) Publish(_ context.Context, _ string, m bus.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return fmt.Errorf("broker unreachable")
	}
	var ev protocol.HostEvent
	if err := m.Decode(&ev); err != nil {
		return err
	}
	b.got = append(b.got, ev)
	return nil
}

// Events the bus did not take are sent, in order, once it is back.
func TestAlarmEventsSurviveBusOutage(t *testing.T) {
	b := &flakyBus{down: true}
	a := New(testConfig(), newFakeDriver(), b, testLogger(t), WithCallTimeout(50*time.Millisecond))
	evs := []protocol.HostEvent{{ID: "e1", Kind: protocol.EventOOMKill}, {ID: "e2", Kind: protocol.EventPidsAlarm}}
	ctx := context.Background()
	pending := a.publishEvents(ctx, evs)
	if len(pending) != 2 {
		t.Fatalf("pending %v while the bus is down", pending)
	}
	b.mu.Lock()
	b.down = false
	b.mu.Unlock()
	if rest := a.publishEvents(ctx, pending); len(rest) != 0 {
		t.Fatalf("still pending: %v", rest)
	}
	if len(b.got) != 2 || b.got[0].ID != "e1" || b.got[1].ID != "e2" {
		t.Errorf("sent %v", b.got)
	}
}
