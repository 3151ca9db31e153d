package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/fake"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/protocol"
)

const (
	srcHost = "node-src"
	dstHost = "node-dst"
	migRef  = "registry.test/capsule/migrations:mig-uuid-1"
)

// migConductor stands in for the conductor of a migration between two
// agents: it records migration reports and progress, answers migration
// checks (check decides; nil proceeds) and instances_on_host per host.
type migConductor struct {
	mu       sync.Mutex
	check    func(protocol.MigrationCheck) (protocol.MigrationCheckReply, error)
	checks   []protocol.MigrationCheck
	reports  []protocol.MigrationReport
	progress []protocol.MigrationProgress
	instReps []protocol.InstanceReport
	syncs    map[string][]protocol.PowerSync
	expected map[string][]protocol.ExpectedInstance
}

func (c *migConductor) handle(_ context.Context, m bus.Message) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.Kind {
	case protocol.KindMigrationReport:
		var r protocol.MigrationReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.reports = append(c.reports, r)
	case protocol.KindMigrationProgress:
		var r protocol.MigrationProgress
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.progress = append(c.progress, r)
	case protocol.KindMigrationCheck:
		var r protocol.MigrationCheck
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.checks = append(c.checks, r)
		if c.check != nil {
			return c.check(r)
		}
		return protocol.MigrationCheckReply{Proceed: true}, nil
	case protocol.KindInstanceReport:
		var r protocol.InstanceReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.instReps = append(c.instReps, r)
	case protocol.KindPowerSync:
		var r protocol.PowerSync
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.syncs[r.Host] = append(c.syncs[r.Host], r)
	case protocol.KindHostReport:
	case protocol.KindInstancesOnHost:
		var r protocol.InstancesOnHostRequest
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return protocol.InstancesOnHostReply{Instances: c.expected[r.Host]}, nil
	default:
		return nil, fmt.Errorf("migration conductor stand-in: unexpected kind %s", m.Kind)
	}
	return nil, nil
}

func (c *migConductor) setCheck(f func(protocol.MigrationCheck) (protocol.MigrationCheckReply, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.check = f
}

func (c *migConductor) setExpected(host string, e ...protocol.ExpectedInstance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expected[host] = e
}

func (c *migConductor) migReports() []protocol.MigrationReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.reports)
}

func (c *migConductor) progressOf(step string) []protocol.MigrationProgress {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []protocol.MigrationProgress
	for _, p := range c.progress {
		if p.Step == step {
			out = append(out, p)
		}
	}
	return out
}

func (c *migConductor) checksMade() []protocol.MigrationCheck {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.checks)
}

func (c *migConductor) lastSync(host string) protocol.PowerSync {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.syncs[host]
	if len(s) == 0 {
		return protocol.PowerSync{}
	}
	return s[len(s)-1]
}

func (c *migConductor) buildReport(id string) (protocol.InstanceReport, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.instReps {
		if r.InstanceID == id && r.Action == lifecycle.ActCreate {
			return r, true
		}
	}
	return protocol.InstanceReport{}, false
}

// migHost is one agent of a migration test with its fake driver and
// plumbing.
type migHost struct {
	name  string
	agent *Agent
	drv   *fakeDriver
	plumb *fakePlumber
}

// migEnv is a source and a target agent on one bus, sharing a registry.
type migEnv struct {
	t        *testing.T
	bus      *bus.Mem
	cond     *migConductor
	src, dst *migHost
}

func newMigEnv(t *testing.T) *migEnv {
	t.Helper()
	e := newMigBus(t)
	reg := fake.NewRegistry()
	for _, h := range []**migHost{&e.src, &e.dst} {
		name := srcHost
		if h == &e.dst {
			name = dstHost
		}
		drv := newFakeDriver()
		drv.UseRegistry(reg)
		p := newFakePlumber(drv)
		*h = &migHost{name: name, agent: e.runAgent(name, drv, WithPlumber(p)), drv: drv, plumb: p}
	}
	return e
}

// newMigBus returns a bus with the conductor stand-in serving it and no
// agents yet.
func newMigBus(t *testing.T) *migEnv {
	t.Helper()
	b := bus.NewMem(bus.MemLogger(testLogger(t)))
	t.Cleanup(func() { b.Close() })
	e := &migEnv{t: t, bus: b, cond: &migConductor{
		syncs: map[string][]protocol.PowerSync{}, expected: map[string][]protocol.ExpectedInstance{}}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := b.Consume(ctx, bus.ConductorQueue, e.cond.handle); err != nil {
		t.Fatal(err)
	}
	return e
}

// runAgent runs an agent for host name on drv until the test ends and
// waits until it serves its queue.
func (e *migEnv) runAgent(name string, drv drivers.Driver, opts ...Option) *Agent {
	t := e.t
	t.Helper()
	cfg := testConfig()
	cfg.Host = name
	opts = append([]Option{WithReconcileInterval(0), WithCallTimeout(2 * time.Second),
		WithReconcileBackoff(20 * time.Millisecond)}, opts...)
	a := New(cfg, drv, e.bus, testLogger(t).With("host", name), opts...)
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent %s: Run returned %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("agent %s did not stop", name)
		}
	})
	waitFor(t, 5*time.Second, "the start-up power sync of "+name, func() bool {
		return e.cond.lastSync(name).Host == name
	})
	return a
}

func (e *migEnv) send(host, kind string, w protocol.MigrationWork) {
	e.t.Helper()
	m, err := bus.NewMessage(kind, w)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.bus.Publish(context.Background(), bus.ComputeQueue(host), m); err != nil {
		e.t.Fatal(err)
	}
}

// waitMig waits for the n-th (1-based) migration report.
func (e *migEnv) waitMig(n int) protocol.MigrationReport {
	e.t.Helper()
	return e.waitMigFor(n, 5*time.Second)
}

func (e *migEnv) waitMigFor(n int, timeout time.Duration) protocol.MigrationReport {
	e.t.Helper()
	waitFor(e.t, timeout, fmt.Sprintf("migration report #%d", n), func() bool { return len(e.cond.migReports()) >= n })
	return e.cond.migReports()[n-1]
}

// buildSource builds id with NICs on the source, running, with a file
// on its disk.
func (e *migEnv) buildSource(id string) protocol.InstanceSpec {
	e.t.Helper()
	s := netSpec(id)
	m, err := bus.NewMessage(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-build", Attempt: 1, Spec: s})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.bus.Publish(context.Background(), bus.ComputeQueue(srcHost), m); err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, 5*time.Second, "the build report", func() bool { _, ok := e.cond.buildReport(id); return ok })
	if r, _ := e.cond.buildReport(id); !r.OK {
		e.t.Fatalf("build: %+v", r)
	}
	if err := e.src.drv.WriteFile(id, "/root/data", "tenant-data"); err != nil {
		e.t.Fatal(err)
	}
	e.src.drv.resetCalls()
	return s
}

func work(id, step string) protocol.MigrationWork {
	return protocol.MigrationWork{RequestID: "req-mig", MigrationID: 7, MigrationUUID: "mig-uuid-1",
		InstanceID: id, Step: step, Ref: migRef, Deadline: time.Now().Add(time.Minute)}
}

// wantReport checks the fields every report echoes.
func wantReport(t *testing.T, r protocol.MigrationReport, kind, step, host, event string, ok bool) {
	t.Helper()
	if r.Kind != kind || r.Step != step || r.Host != host || r.Event != event || r.MigrationID != 7 ||
		r.RequestID != "req-mig" || r.OK != ok || r.Started.IsZero() || r.Finished.Before(r.Started) {
		t.Fatalf("report %+v; want kind %s step %s host %s event %s ok %v", r, kind, step, host, event, ok)
	}
	if ok && r.Error != "" {
		t.Fatalf("ok report with error %q", r.Error)
	}
}

// exportAndImport runs the two steps of a migration of a built instance
// with a bigger flavor and checks each report.
func (e *migEnv) exportAndImport(t *testing.T, id string, spec protocol.InstanceSpec) {
	t.Helper()
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	r := e.waitMig(1)
	wantReport(t, r, protocol.KindMigrationExport, "exporting", srcHost, EventResize, true)
	if !strings.HasPrefix(r.Digest, "sha256:") || r.Bytes <= 0 || r.PowerState != int(drivers.PowerShutdown) || r.Skipped {
		t.Fatalf("export report %+v", r)
	}
	if inst, _ := e.src.drv.get(id); inst.Power != drivers.PowerShutdown {
		t.Fatalf("source after export: power %v, want shut down", inst.Power)
	}
	if _, plugged := e.src.plumb.get(id); plugged {
		t.Fatal("source still plugged after export")
	}
	// Stopped before the commit; unplugged (while the commit is pushed)
	// before the report.
	if got := e.src.drv.seq(id, "stop", "unplug", "snapshot"); len(got) != 3 || got[0] != "stop" ||
		!slices.Contains(got, "unplug") || !slices.Contains(got, "snapshot") {
		t.Fatalf("source steps %v, want stop, then unplug and snapshot", got)
	}
	if img, ok := e.src.drv.Registry().Get(migRef); !ok || img.Files["/root/data"] != "tenant-data" {
		t.Fatalf("registry holds %+v, %v", img, ok)
	}
	waitFor(t, 5*time.Second, "export progress", func() bool { return len(e.cond.progressOf("exporting")) > 0 })
	if p := e.cond.progressOf("exporting"); p[0].Bytes <= 0 || p[0].Host != srcHost || p[0].MigrationID != 7 {
		t.Errorf("export progress %+v", p)
	}

	w := work(id, "importing")
	w.Spec = spec
	w.Start = true
	e.send(dstHost, protocol.KindMigrationImport, w)
	r = e.waitMig(2)
	wantReport(t, r, protocol.KindMigrationImport, "importing", dstHost, EventFinishResize, true)
	if r.Bytes <= 0 || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("import report %+v", r)
	}
	waitFor(t, 5*time.Second, "import progress", func() bool { return len(e.cond.progressOf("importing")) > 0 })
	if p := e.cond.progressOf("importing"); p[0].Bytes <= 0 || p[0].Host != dstHost {
		t.Errorf("import progress %+v", p)
	}
	wantJoined(t, e.dst.drv, e.dst.plumb, id)
}

func resizedSpec(id string) protocol.InstanceSpec {
	s := netSpec(id)
	s.ImageRef = migRef
	s.VCPUs, s.MemoryMB = 2, 128
	s.ExtraSpecs = map[string]string{limits.KeyPidsMax: "77"}
	return s
}

// TestMigrationMovesTheInstanceAndConfirms: export stops, unplugs and
// pushes the source; import pulls and creates the same instance (UUID,
// disk, NICs) with the new flavor on the target and starts it; reconcile
// on either host undoes nothing meanwhile; the confirm's cleanup removes
// the source.
func TestMigrationMovesTheInstanceAndConfirms(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-mig"
	e.buildSource(id)
	spec := resizedSpec(id)
	e.exportAndImport(t, id, spec)

	inst, _ := e.dst.drv.get(id)
	if inst.Files["/root/data"] != "tenant-data" {
		t.Errorf("target disk %v lacks the source's file", inst.Files)
	}
	if inst.Spec.Image != migRef || inst.Spec.VCPUs != 2 || inst.Spec.MemoryMB != 128 || inst.Spec.PidsLimit != 77 ||
		inst.Spec.Labels[LabelHost] != dstHost || !inst.Spec.Networked || len(inst.Spec.DNS) != 3 {
		t.Errorf("target spec %+v", inst.Spec)
	}
	if pl, _ := e.dst.plumb.get(id); !slices.EqualFunc(pl.nics, spec.NICs, func(a, b protocol.NIC) bool { return a.PortID == b.PortID && a.MAC == b.MAC }) {
		t.Errorf("target plugged %+v", pl.nics)
	}
	if !e.dst.drv.HasImage(migRef) {
		t.Error("target has not the migration image")
	}

	// Mid-migration reconciles: the conductor still places the instance
	// on the source (stopped, task resize_migrated) and not on the
	// target, where it is an orphan: reported, left running and plugged.
	e.cond.setExpected(srcHost, protocol.ExpectedInstance{Spec: netSpec(id), VMState: lifecycle.Active, TaskState: lifecycle.ResizeMigrated})
	e.src.drv.resetCalls()
	e.dst.drv.resetCalls()
	ctx := context.Background()
	for _, h := range []*migHost{e.src, e.dst} {
		if err := h.agent.Reconcile(ctx); err != nil {
			t.Fatalf("reconcile %s: %v", h.name, err)
		}
	}
	if got := e.dst.drv.seq(id, netOps...); len(got) != 0 {
		t.Errorf("reconcile on the target touched the imported instance: %v", got)
	}
	if got := e.src.drv.seq(id, netOps...); len(got) != 0 {
		t.Errorf("reconcile on the source touched the migrating instance: %v", got)
	}
	waitFor(t, 5*time.Second, "the target's power sync reporting the import as an orphan", func() bool {
		return slices.Contains(e.cond.lastSync(dstHost).Orphans, id)
	})
	wantJoined(t, e.dst.drv, e.dst.plumb, id)
	if _, ok := e.src.drv.get(id); !ok {
		t.Fatal("reconcile removed the source container")
	}

	// Confirm: the source goes (container, plumbing by instance tag,
	// image), the target stays.
	e.cond.setExpected(srcHost)
	e.send(srcHost, protocol.KindMigrationCleanup, work(id, stepConfirming))
	r := e.waitMig(3)
	wantReport(t, r, protocol.KindMigrationCleanup, stepConfirming, srcHost, EventConfirmResize, true)
	if _, ok := e.src.drv.get(id); ok {
		t.Error("source container left after the confirm")
	}
	if got := e.src.drv.seq(id, "destroy", "unplug_instance", "unplug"); !slices.Equal(got, []string{"destroy", "unplug_instance"}) {
		t.Errorf("source cleanup steps %v, want destroy, unplug_instance", got)
	}
	if got := e.src.drv.callsOf("remove_image"); !slices.Equal(got, []string{migRef}) {
		t.Errorf("source image removals %v", got)
	}
	if e.src.agent.nics.has(id) {
		t.Error("source still remembers the NICs")
	}
	wantJoined(t, e.dst.drv, e.dst.plumb, id)
	if n := e.src.agent.locks.held() + e.dst.agent.locks.held(); n != 0 {
		t.Errorf("%d instance locks left", n)
	}
}

// TestMigrationRevert: the target's cleanup removes the import and its
// image, the restore brings the stopped source back, plumbed and running.
func TestMigrationRevert(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-rev"
	orig := e.buildSource(id)
	e.exportAndImport(t, id, resizedSpec(id))

	e.send(dstHost, protocol.KindMigrationCleanup, work(id, "revert_target"))
	r := e.waitMig(3)
	wantReport(t, r, protocol.KindMigrationCleanup, "revert_target", dstHost, EventRevertResize, true)
	if _, ok := e.dst.drv.get(id); ok {
		t.Error("target container left after the revert")
	}
	if _, ok := e.dst.plumb.get(id); ok {
		t.Error("target still plugged after the revert")
	}
	if e.dst.drv.HasImage(migRef) {
		t.Error("target kept the migration image")
	}

	w := work(id, "revert_source")
	w.Spec = orig
	w.Start = true
	e.send(srcHost, protocol.KindMigrationRestore, w)
	r = e.waitMig(4)
	wantReport(t, r, protocol.KindMigrationRestore, "revert_source", srcHost, EventFinishRevertResize, true)
	if r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("restore report %+v", r)
	}
	wantJoined(t, e.src.drv, e.src.plumb, id)
	if inst, _ := e.src.drv.get(id); inst.Spec.VCPUs != 1 || inst.Files["/root/data"] != "tenant-data" {
		t.Errorf("restored source %+v", inst)
	}
	// The source was plugged before it started.
	if got := e.src.drv.seq(id, "plug", "start"); len(got) < 2 || got[len(got)-2] != "plug" || got[len(got)-1] != "start" {
		t.Errorf("restore steps %v, want plug then start", got)
	}
}

// TestMigrationImportStopped: an instance that was stopped comes over
// created and stopped, unplugged, with its NICs known for a later start.
func TestMigrationImportStopped(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-stopped"
	e.buildSource(id)
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	if r := e.waitMig(1); !r.OK {
		t.Fatalf("export %+v", r)
	}
	w := work(id, "importing")
	w.Spec = resizedSpec(id)
	e.send(dstHost, protocol.KindMigrationImport, w)
	r := e.waitMig(2)
	wantReport(t, r, protocol.KindMigrationImport, "importing", dstHost, EventFinishResize, true)
	if r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("import report %+v", r)
	}
	if inst, ok := e.dst.drv.get(id); !ok || inst.Power != drivers.PowerShutdown || inst.Boots != 0 {
		t.Fatalf("target instance %+v, %v", inst, ok)
	}
	if _, ok := e.dst.plumb.get(id); ok {
		t.Error("a stopped import is plugged")
	}
	if nics, ok := e.dst.agent.nics.get(id); !ok || len(nics) != 2 {
		t.Errorf("target NIC cache %v, %v", nics, ok)
	}

	// A restore without start leaves the source stopped.
	w = work(id, "rollback_source")
	w.Spec = netSpec(id)
	e.send(srcHost, protocol.KindMigrationRestore, w)
	if r := e.waitMig(3); !r.OK || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("restore %+v", r)
	}
	if _, ok := e.src.plumb.get(id); ok {
		t.Error("a restore without start plugged the source")
	}
}

// TestMigrationSkipsWhatTheConductorNoLongerWaitsFor: a check answered
// "no" and a deadline passed both skip the work without touching the
// instance; the deadline does not even ask.
func TestMigrationSkipsWhatTheConductorNoLongerWaitsFor(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-skip"
	e.buildSource(id)
	e.cond.setCheck(func(c protocol.MigrationCheck) (protocol.MigrationCheckReply, error) {
		return protocol.MigrationCheckReply{Proceed: false, Reason: "migration 7 is rolling back"}, nil
	})
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	r := e.waitMig(1)
	wantReport(t, r, protocol.KindMigrationExport, "exporting", srcHost, EventResize, false)
	if !r.Skipped || !strings.Contains(r.Error, "rolling back") {
		t.Fatalf("skipped report %+v", r)
	}
	if c := e.cond.checksMade(); len(c) != 1 || c[0] != (protocol.MigrationCheck{MigrationID: 7, Host: srcHost, Step: "exporting"}) {
		t.Errorf("checks %+v", c)
	}
	// Skipped imports, cleanups and restores do nothing either.
	w := work(id, "importing")
	w.Spec, w.Start = resizedSpec(id), true
	e.send(dstHost, protocol.KindMigrationImport, w)
	e.send(srcHost, protocol.KindMigrationCleanup, work(id, stepConfirming))
	e.send(srcHost, protocol.KindMigrationRestore, work(id, "revert_source"))
	waitFor(t, 5*time.Second, "4 reports", func() bool { return len(e.cond.migReports()) >= 4 })
	for _, r := range e.cond.migReports() {
		if !r.Skipped || r.OK {
			t.Errorf("report %+v, want skipped", r)
		}
	}
	if got := e.src.drv.seq(id, append(netOps, "snapshot", "volumes")...); len(got) != 0 {
		t.Errorf("skipped work touched the source: %v", got)
	}
	if _, ok := e.dst.drv.get(id); ok || len(e.dst.drv.callsOf("pull")) != 0 {
		t.Error("a skipped import pulled or created")
	}
	wantJoined(t, e.src.drv, e.src.plumb, id)

	// Past its deadline: skipped without asking.
	e.cond.setCheck(nil)
	before := len(e.cond.checksMade())
	w = work(id, "exporting")
	w.Deadline = time.Now().Add(-time.Second)
	e.send(srcHost, protocol.KindMigrationExport, w)
	r = e.waitMig(5)
	if !r.Skipped || r.OK || !strings.Contains(r.Error, "deadline") {
		t.Fatalf("late report %+v", r)
	}
	if n := len(e.cond.checksMade()); n != before {
		t.Errorf("late work asked the conductor (%d checks, had %d)", n, before)
	}
	wantJoined(t, e.src.drv, e.src.plumb, id)
}

// TestMigrationCheckFailureIsRetried: work whose check cannot reach the
// conductor goes back to the queue, then runs once it answers, and is
// reported once.
func TestMigrationCheckFailureIsRetried(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-retry"
	e.buildSource(id)
	var mu sync.Mutex
	fails := 2
	e.cond.setCheck(func(protocol.MigrationCheck) (protocol.MigrationCheckReply, error) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return protocol.MigrationCheckReply{}, errors.New("database unavailable")
		}
		return protocol.MigrationCheckReply{Proceed: true}, nil
	})
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	if r := e.waitMig(1); !r.OK {
		t.Fatalf("export after retries %+v", r)
	}
	if n := len(e.cond.checksMade()); n != 3 {
		t.Errorf("%d checks, want 3", n)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(e.cond.migReports()); n != 1 {
		t.Errorf("%d reports, want 1", n)
	}
	if got := e.src.drv.callsOf("snapshot"); len(got) != 1 {
		t.Errorf("snapshots %v, want one", got)
	}
}

// TestMigrationExportRefusesVolumes: data in volumes fails the export
// before the instance is stopped.
func TestMigrationExportRefusesVolumes(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-vol"
	e.buildSource(id)
	if err := e.src.drv.SetVolumes(id, "pgdata", "/srv/share"); err != nil {
		t.Fatal(err)
	}
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	r := e.waitMig(1)
	wantReport(t, r, protocol.KindMigrationExport, "exporting", srcHost, EventResize, false)
	if !strings.Contains(r.Error, drivers.ErrHasVolumes.Error()) || !strings.Contains(r.Error, "pgdata") ||
		!strings.Contains(r.Error, "/srv/share") || r.PowerState != int(drivers.PowerRunning) || r.Skipped {
		t.Fatalf("report %+v", r)
	}
	if got := e.src.drv.seq(id, "stop", "unplug", "snapshot"); len(got) != 0 {
		t.Errorf("refused export still did %v", got)
	}
	wantJoined(t, e.src.drv, e.src.plumb, id)
	if _, ok := e.src.drv.Registry().Get(migRef); ok {
		t.Error("refused export pushed")
	}
}

// TestMigrationFailures: a failed push leaves the source stopped (the
// conductor restores it), a failed import leaves nothing on the target,
// a restore of a missing container says so.
func TestMigrationFailures(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-fail"
	e.buildSource(id)
	e.src.drv.setFail("snapshot", id, errors.New("registry unreachable"))
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	r := e.waitMig(1)
	if r.OK || !strings.Contains(r.Error, "registry unreachable") || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("failed export %+v", r)
	}
	if got := e.src.drv.callsOf("start"); len(got) != 0 {
		t.Errorf("a failed export restarted the source: %v", got)
	}

	// A pull of what was never pushed fails before creating anything.
	w := work(id, "importing")
	w.Spec, w.Start = resizedSpec(id), true
	e.send(dstHost, protocol.KindMigrationImport, w)
	r = e.waitMig(2)
	if r.OK || !strings.Contains(r.Error, "manifest unknown") || r.Bytes != 0 {
		t.Fatalf("failed pull %+v", r)
	}
	if got := e.dst.drv.callsOf("create"); len(got) != 0 {
		t.Errorf("created after a failed pull: %v", got)
	}

	// A start failure after the pull destroys what the import made.
	e.src.drv.setFail("snapshot", id, nil)
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	if r := e.waitMig(3); !r.OK {
		t.Fatalf("export %+v", r)
	}
	e.dst.drv.setFail("start", id, errors.New("cgroup refused"))
	e.send(dstHost, protocol.KindMigrationImport, w)
	r = e.waitMig(4)
	if r.OK || !strings.Contains(r.Error, "cgroup refused") || r.Bytes <= 0 {
		t.Fatalf("failed import %+v", r)
	}
	if _, ok := e.dst.drv.get(id); ok {
		t.Error("failed import left its container")
	}
	if _, ok := e.dst.plumb.get(id); ok {
		t.Error("failed import left its plumbing")
	}

	e.src.drv.Remove(id)
	w = work(id, "rollback_source")
	w.Spec, w.Start = netSpec(id), true
	e.send(srcHost, protocol.KindMigrationRestore, w)
	r = e.waitMig(5)
	if r.OK || !strings.Contains(r.Error, "missing") || r.PowerState != int(drivers.PowerNoState) {
		t.Fatalf("restore of a missing container %+v", r)
	}
	// Cleaning up what is gone succeeds.
	e.send(srcHost, protocol.KindMigrationCleanup, work(id, "rollback_target"))
	if r := e.waitMig(6); !r.OK || r.Event != EventRevertResize {
		t.Fatalf("cleanup of a missing container %+v", r)
	}
}

// TestMigrationProgressIsThrottled: a driver reporting progress often
// gets at most one MigrationProgress a second through.
func TestMigrationProgressIsThrottled(t *testing.T) {
	b := bus.NewMem(bus.MemLogger(testLogger(t)))
	t.Cleanup(func() { b.Close() })
	cfg := testConfig()
	a := New(cfg, newFakeDriver(), b, testLogger(t))
	p := a.newProgress(context.Background(), work("i-p", "exporting"))
	start := time.Now()
	for i := range 200 {
		p.report(int64(i + 1))
		time.Sleep(time.Millisecond)
	}
	p.wait()
	elapsed := time.Since(start)
	sent := b.Sent(bus.ConductorQueue)
	if most := int(elapsed/progressInterval) + 1; len(sent) == 0 || len(sent) > most {
		t.Fatalf("%d progress messages in %s, want 1..%d", len(sent), elapsed, most)
	}
	var first protocol.MigrationProgress
	if err := sent[0].Decode(&first); err != nil || first.Bytes != 1 || first.Step != "exporting" || first.Host != testHost {
		t.Errorf("first progress %+v, %v", first, err)
	}
	if p.latest() != 200 {
		t.Errorf("latest %d", p.latest())
	}
}

// TestMigrationDuplicateWorkNotRunAgain: the same step's work sent twice
// (two conductors each sent it; the conductor stand-in's check still says
// proceed, as it does while the first report waits in its queue) runs
// once: the duplicate is answered with the first report again, and the
// source is not stopped, committed or pushed a second time.
func TestMigrationDuplicateWorkNotRunAgain(t *testing.T) {
	e := newMigEnv(t)
	const id = "i-dup"
	e.buildSource(id)
	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	first := e.waitMig(1)
	wantReport(t, first, protocol.KindMigrationExport, "exporting", srcHost, EventResize, true)
	snapshots := len(e.src.drv.callsOf("snapshot"))

	e.send(srcHost, protocol.KindMigrationExport, work(id, "exporting"))
	again := e.waitMig(2)
	if again.OK != first.OK || again.Digest != first.Digest || again.Skipped || !again.Started.Equal(first.Started) {
		t.Errorf("duplicate answered %+v, want the first report %+v again", again, first)
	}
	if n := len(e.src.drv.callsOf("snapshot")); n != snapshots {
		t.Errorf("the duplicate committed the source again (%d snapshots, had %d)", n, snapshots)
	}
	if n := len(e.cond.checksMade()); n != 1 {
		t.Errorf("%d checks, want 1 (the duplicate needs none)", n)
	}
}
