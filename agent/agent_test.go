package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/fake"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

const fakeImage = "registry.test/capsule/busybox:latest"

func startFake(t *testing.T, opts ...Option) (*env, *fakeDriver) {
	t.Helper()
	drv := newFakeDriver()
	e := newEnv(t, drv, testConfig(), opts...)
	e.serveConductor()
	e.start()
	return e, drv
}

func TestBuildCreatesAndStartsAndReports(t *testing.T) {
	e, drv := startFake(t)
	before := time.Now().UTC()
	e.build("i-1", "req-1", fakeImage)
	r := e.waitReport("i-1", 1, 5*time.Second)

	if !r.OK || r.Error != "" {
		t.Fatalf("report not ok: %+v", r)
	}
	if r.Action != lifecycle.ActCreate || r.Event != "compute__do_build_and_run_instance" {
		t.Errorf("action/event = %s/%s", r.Action, r.Event)
	}
	if r.PowerState != int(drivers.PowerRunning) || r.Host != testHost || r.RequestID != "req-1" || r.Attempt != 1 {
		t.Errorf("report = %+v", r)
	}
	if r.Started.Before(before.Add(-time.Second)) || r.Finished.Before(r.Started) {
		t.Errorf("times: started %v finished %v (test began %v)", r.Started, r.Finished, before)
	}
	inst, ok := drv.get("i-1")
	if !ok || inst.Power != drivers.PowerRunning {
		t.Fatalf("fake instance = %+v, %v; want running", inst, ok)
	}
	if inst.Spec.PidsLimit != 321 {
		t.Errorf("pids limit = %d, want the configured 321", inst.Spec.PidsLimit)
	}
	if inst.Spec.Labels[LabelProject] != "proj-1" || inst.Spec.Labels[LabelHost] != testHost {
		t.Errorf("labels = %v", inst.Spec.Labels)
	}
	if inst.Spec.Image != fakeImage || inst.Spec.VCPUs != 1 || inst.Spec.MemoryMB != 64 || inst.Spec.Hostname != "srv-i-1" {
		t.Errorf("spec = %+v", inst.Spec)
	}
	if n := e.agent.locks.held(); n != 0 {
		t.Errorf("%d instance locks left held", n)
	}
}

func TestPidsLimitNeverZero(t *testing.T) {
	cfg := testConfig()
	cfg.PidsLimit = 0
	a := New(cfg, newFakeDriver(), bus.NewMem(), testLogger(t))
	if a.cfg.PidsLimit <= 0 {
		t.Fatalf("pids limit = %d, want a default > 0", a.cfg.PidsLimit)
	}
}

func TestBuildFailureDestroysAndReports(t *testing.T) {
	e, drv := startFake(t)
	drv.setFail("start", "i-bad", errors.New("boom: no such image entrypoint"))
	e.build("i-bad", "req-2", fakeImage)
	r := e.waitReport("i-bad", 1, 5*time.Second)

	if r.OK || !strings.Contains(r.Error, "boom") || r.PowerState != 0 || r.Event != EventBuild {
		t.Fatalf("report = %+v, want a failure carrying the driver error", r)
	}
	if !slices.Contains(drv.callsOf("destroy"), "i-bad") {
		t.Errorf("Destroy not called after the failed build; calls: %v", drv.callsOf("destroy"))
	}
	if _, ok := drv.get("i-bad"); ok {
		t.Errorf("the failed instance leaked in the driver")
	}
}

func TestRedeliveredBuildIsHarmless(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-2", "req-3", fakeImage)
	e.waitReport("i-2", 1, 5*time.Second)
	e.build("i-2", "req-3", fakeImage) // as after an agent crash before the ack
	r := e.waitReport("i-2", 2, 5*time.Second)
	if !r.OK || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("second report = %+v", r)
	}
	if got := drv.callsOf("create"); len(got) != 2 {
		t.Errorf("create calls = %v", got)
	}
	if got := drv.callsOf("destroy"); len(got) != 0 {
		t.Errorf("a redelivered build destroyed the instance: %v", got)
	}
	list, _ := drv.List(context.Background())
	if len(list) != 1 {
		t.Errorf("driver has %d instances, want 1", len(list))
	}
}

func TestBuildFailsWhenInstanceDoesNotStayRunning(t *testing.T) {
	e, drv := startFake(t)
	// Its process exits at once: Start works, yet it is down just after.
	drv.setHook(func(op, id string) {
		if op == string(fake.OpStatus) && id == "i-dies" {
			_ = drv.Crash(id, 1)
		}
	})
	e.build("i-dies", "req-x", fakeImage)
	r := e.waitReport("i-dies", 1, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "not running") {
		t.Fatalf("report = %+v, want a failure: the server is not running", r)
	}
	if _, ok := drv.get("i-dies"); ok {
		t.Errorf("the crashed instance was not cleaned up")
	}
}

func TestActionsReportResultingPowerState(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-3", "req-b", fakeImage)
	e.waitReport("i-3", 1, 5*time.Second)

	steps := []struct {
		act   lifecycle.Action
		event string
		power drivers.PowerState
	}{
		{lifecycle.ActStop, "compute_stop_instance", drivers.PowerShutdown},
		{lifecycle.ActStart, "compute_start_instance", drivers.PowerRunning},
		{lifecycle.ActReboot, "compute_reboot_instance", drivers.PowerRunning},
		{lifecycle.ActRebootHard, "compute_reboot_instance", drivers.PowerRunning},
		{lifecycle.ActPause, "compute_pause_instance", drivers.PowerPaused},
		{lifecycle.ActUnpause, "compute_unpause_instance", drivers.PowerRunning},
		{lifecycle.ActStop, "compute_stop_instance", drivers.PowerShutdown},
		{lifecycle.ActDelete, "compute_terminate_instance", drivers.PowerNoState},
	}
	for i, s := range steps {
		e.action("i-3", "req-a"+string(rune('0'+i)), s.act)
		r := e.waitReport("i-3", i+2, 5*time.Second)
		if !r.OK || r.Action != s.act || r.Event != s.event || r.PowerState != int(s.power) || r.Host != testHost {
			t.Fatalf("step %d %s: report = %+v, want ok, event %s, power %d", i, s.act, r, s.event, s.power)
		}
		inst, ok := drv.get("i-3")
		if s.act == lifecycle.ActDelete {
			if ok {
				t.Fatalf("instance still in the driver after delete")
			}
			continue
		}
		if !ok || inst.Power != s.power {
			t.Fatalf("step %d %s: fake power = %d (present %v), want %d", i, s.act, inst.Power, ok, s.power)
		}
	}
	if got := drv.callsOf("reboot_hard"); len(got) != 1 {
		t.Errorf("hard reboot calls = %v", got)
	}
	if got := drv.callsOf("reboot"); len(got) != 2 { // the fake's Op does not tell hard from soft
		t.Errorf("reboot calls = %v", got)
	}
}

func TestPauseWithoutCapabilityFails(t *testing.T) {
	drv := newFakeDriver()
	drv.Caps.Pause = false
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	e.build("i-4", "req-c", fakeImage)
	e.waitReport("i-4", 1, 5*time.Second)

	e.action("i-4", "req-p", lifecycle.ActPause)
	r := e.waitReport("i-4", 2, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, drivers.ErrNotSupported.Error()) {
		t.Fatalf("report = %+v, want a failure saying %q", r, drivers.ErrNotSupported)
	}
	if r.PowerState != int(drivers.PowerRunning) || r.Event != EventPause {
		t.Errorf("report = %+v, want the unchanged running power state", r)
	}
	if got := drv.callsOf("pause"); len(got) != 0 {
		t.Errorf("driver Pause called without the capability: %v", got)
	}
}

func TestActionOnMissingContainer(t *testing.T) {
	e, drv := startFake(t)
	e.action("i-gone", "req-s", lifecycle.ActStop)
	r := e.waitReport("i-gone", 1, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "missing") || r.PowerState != 0 {
		t.Fatalf("stop of a missing container: report = %+v", r)
	}
	if got := drv.callsOf("stop"); len(got) != 0 {
		t.Errorf("driver Stop called on a missing instance: %v", got)
	}

	e.action("i-gone", "req-d", lifecycle.ActDelete)
	r = e.waitReport("i-gone", 2, 5*time.Second)
	if !r.OK || r.PowerState != 0 || r.Event != EventTerminate {
		t.Fatalf("delete of a missing container: report = %+v, want success", r)
	}
}

func TestDriverErrorOnActionReportsCurrentPower(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-5", "req-e", fakeImage)
	e.waitReport("i-5", 1, 5*time.Second)
	drv.setFail("stop", "i-5", errors.New("daemon hiccup"))
	e.action("i-5", "req-f", lifecycle.ActStop)
	r := e.waitReport("i-5", 2, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "daemon hiccup") || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("report = %+v, want failure with the still-running power state", r)
	}
}

func TestConsoleOutput(t *testing.T) {
	e, _ := startFake(t)
	e.build("i-6", "req-g", fakeImage)
	e.waitReport("i-6", 1, 5*time.Second)

	call := func(id string, lines int) (protocol.ConsoleOutputReply, error) {
		m, err := bus.NewMessage(protocol.KindConsoleOutput, protocol.ConsoleOutputRequest{InstanceID: id, Lines: lines})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var reply protocol.ConsoleOutputReply
		err = e.bus.Call(ctx, bus.ComputeQueue(testHost), m, &reply)
		return reply, err
	}
	reply, err := call("i-6", -1)
	if err != nil || strings.Count(reply.Output, "\n") != 5 || !strings.HasPrefix(reply.Output, "capsule-init: booting\n") {
		t.Fatalf("console output = %q, %v", reply.Output, err)
	}
	reply, err = call("i-6", 1)
	if err != nil || reply.Output != "capsule-init: ready\n" {
		t.Fatalf("console output (1 line) = %q, %v", reply.Output, err)
	}
	_, err = call("i-nope", 10)
	var re *bus.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "not found") {
		t.Fatalf("console output of a missing instance: err = %v, want a RemoteError saying not found", err)
	}
}

// TestReconcileRemovesEvacuated: a server the conductor says was
// evacuated from this host (rebuilt on another while this one was down)
// has what is left of it here destroyed and is reported as cleaned; an
// orphan the conductor does not name stays (an operator's decision); an
// evacuated server placed here again since is left running; one with
// nothing left here is reported cleaned too.
func TestReconcileRemovesEvacuated(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-gone-away", drivers.PowerRunning)
	drv.put(t, "i-orphan", drivers.PowerRunning)
	drv.put(t, "i-back", drivers.PowerRunning)
	e := newEnv(t, drv, testConfig())
	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-back"}, VMState: lifecycle.Active})
	e.cond.mu.Lock()
	e.cond.evacuated = []string{"i-back", "i-gone-away", "i-nothing-left"}
	e.cond.mu.Unlock()
	e.serveConductor()
	e.start()

	ps := e.cond.powerSyncs()[0]
	if _, ok := drv.get("i-gone-away"); ok {
		t.Error("the evacuated server's leftover container is still here")
	}
	if _, ok := drv.get("i-orphan"); !ok {
		t.Error("an orphan the conductor did not name was destroyed")
	}
	if _, ok := drv.get("i-back"); !ok || ps.States["i-back"] != int(drivers.PowerRunning) {
		t.Errorf("the server placed here again was touched: %v", ps.States)
	}
	if !slices.Equal(ps.Orphans, []string{"i-orphan"}) {
		t.Errorf("orphans = %v, want [i-orphan]", ps.Orphans)
	}
	if want := []string{"i-back", "i-gone-away", "i-nothing-left"}; !slices.Equal(ps.Evacuated, want) {
		t.Errorf("evacuated = %v, want %v", ps.Evacuated, want)
	}
}

func TestReconcileReportsPowerStatesAndOrphans(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-run", drivers.PowerRunning)
	drv.put(t, "i-off", drivers.PowerShutdown)
	drv.put(t, "i-del", drivers.PowerRunning)
	drv.put(t, "i-orphan", drivers.PowerRunning)
	// Without resume on host boot, a stopped or missing server is
	// reported as found (agent/resume_test.go covers the default).
	cfg := testConfig()
	off := false
	cfg.ResumeGuestsStateOnHostBoot = &off
	e := newEnv(t, drv, cfg)
	spec := func(id string) protocol.InstanceSpec { return protocol.InstanceSpec{ID: id} }
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: spec("i-run"), VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: spec("i-off"), VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: spec("i-missing"), VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: spec("i-del"), VMState: lifecycle.Active, TaskState: lifecycle.Deleting},
	)
	e.serveConductor()
	e.start()

	ps := e.cond.powerSyncs()[0]
	want := map[string]int{"i-run": 1, "i-off": 4, "i-missing": 0, "i-del": 0}
	if ps.Host != testHost || len(ps.States) != len(want) {
		t.Fatalf("power sync = %+v, want states %v", ps, want)
	}
	for id, p := range want {
		if got, ok := ps.States[id]; !ok || got != p {
			t.Errorf("state of %s = %d (present %v), want %d", id, got, ok, p)
		}
	}
	if !slices.Equal(ps.Orphans, []string{"i-orphan"}) {
		t.Errorf("orphans = %v, want [i-orphan]", ps.Orphans)
	}
	if _, ok := drv.get("i-orphan"); !ok {
		t.Errorf("the orphan was destroyed; orphans are an operator's decision")
	}
	if _, ok := drv.get("i-del"); ok {
		t.Errorf("the instance being deleted still has its container")
	}
	r := e.waitReport("i-del", 1, 5*time.Second)
	if !r.OK || r.Action != lifecycle.ActDelete || r.Event != EventTerminate {
		t.Errorf("delete report after reconcile = %+v", r)
	}
	if got := drv.callsOf("destroy"); !slices.Equal(got, []string{"i-del"}) {
		t.Errorf("destroy calls = %v, want only i-del", got)
	}
}

func TestReconcileRetriesUntilConductorAnswers(t *testing.T) {
	drv := newFakeDriver()
	e := newEnv(t, drv, testConfig(), WithCallTimeout(30*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.agent.Run(ctx) }()
	// Builds do not wait for the conductor: the reports wait in its queue.
	e.build("i-7", "req-h", fakeImage)
	waitFor(t, 5*time.Second, "the build while the conductor is down", func() bool {
		_, ok := drv.get("i-7")
		return ok
	})
	time.Sleep(150 * time.Millisecond) // several calls time out meanwhile
	calls := 0
	for _, m := range e.bus.Sent(bus.ConductorQueue) {
		if m.Kind == protocol.KindInstancesOnHost {
			calls++
		}
	}
	if calls < 2 {
		t.Errorf("%d instances_on_host calls while the conductor was down; want retries", calls)
	}
	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-7"}, VMState: lifecycle.Active})
	e.serveConductor()
	waitFor(t, 5*time.Second, "the power sync", func() bool { return len(e.cond.powerSyncs()) > 0 })
	if ps := e.cond.powerSyncs()[0]; ps.States["i-7"] != int(drivers.PowerRunning) || len(ps.Orphans) != 0 {
		t.Errorf("power sync = %+v", ps)
	}
	if r := e.waitReport("i-7", 1, 5*time.Second); !r.OK {
		t.Errorf("build report: %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestRunStopsWhileConductorDown(t *testing.T) {
	e := newEnv(t, newFakeDriver(), testConfig(), WithCallTimeout(20*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.agent.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return while the conductor was down")
	}
}

func TestPeriodicReconcileSeesDeadContainer(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-8", drivers.PowerRunning)
	e := newEnv(t, drv, testConfig(), WithReconcileInterval(30*time.Millisecond))
	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-8"}, VMState: lifecycle.Active})
	e.serveConductor()
	e.start()
	if p := e.cond.powerSyncs()[0].States["i-8"]; p != 1 {
		t.Fatalf("first sync: power %d", p)
	}
	// The container dies behind the agent's back.
	if err := drv.Crash("i-8", 137); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a sync reporting the dead container", func() bool {
		s := e.cond.powerSyncs()
		return s[len(s)-1].States["i-8"] == int(drivers.PowerCrashed)
	})
	// And then vanishes altogether.
	drv.Remove("i-8")
	waitFor(t, 5*time.Second, "a sync reporting the missing container", func() bool {
		s := e.cond.powerSyncs()
		p, ok := s[len(s)-1].States["i-8"]
		return ok && p == int(drivers.PowerNoState)
	})
}

func TestHeartbeatContent(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-a", drivers.PowerRunning)
	drv.put(t, "i-b", drivers.PowerShutdown)
	cfg := testConfig()
	cfg.HeartbeatInterval = 30 * time.Millisecond
	e := newEnv(t, drv, cfg)
	e.serveConductor()
	e.start()
	waitFor(t, 5*time.Second, "two heartbeats", func() bool { return len(e.cond.hostReports()) >= 2 })
	h := e.cond.hostReports()[0]
	want := protocol.HostReport{
		Host: testHost, Zone: "zone-t", HostIP: "192.0.2.10", HypervisorType: "fake", HypervisorVersion: 1000000,
		VCPUs: 8, MemoryMB: 16384, DiskGB: 200, CPUModel: "fake-cpu", Arch: "x86_64", RunningVMs: 2,
		CPUAllocationRatio: 8, RAMAllocationRatio: 1.5, DiskAllocationRatio: 2, ReservedMemoryMB: 256,
	}
	at := h.At
	h.At = time.Time{}
	if h != want {
		t.Errorf("heartbeat =\n%+v\nwant\n%+v", h, want)
	}
	if time.Since(at) > time.Minute || at.IsZero() {
		t.Errorf("heartbeat time %v", at)
	}
}

// TestHeartbeatSplitsDedicatedCPUs: with a cpu_dedicated_set the host
// reports those CPUs as PCPUs and only the others as VCPUs.
func TestHeartbeatSplitsDedicatedCPUs(t *testing.T) {
	cfg := testConfig()
	cfg.CPUDedicatedSet = "2-3,6"
	e := newEnv(t, newFakeDriver(), cfg)
	h, err := e.agent.HostReport(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.VCPUs != 5 || h.PCPUs != 3 {
		t.Errorf("vcpus/pcpus = %d/%d, want 5/3 of the fake's 8 CPUs", h.VCPUs, h.PCPUs)
	}
}

func TestHeartbeatIsImmediate(t *testing.T) {
	cfg := testConfig() // hour-long interval
	e := newEnv(t, newFakeDriver(), cfg)
	e.serveConductor()
	e.start()
	waitFor(t, 5*time.Second, "the first heartbeat", func() bool { return len(e.cond.hostReports()) >= 1 })
}

func TestOperationsSerializedPerInstance(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-9", "req-i", fakeImage)
	e.build("i-10", "req-j", fakeImage)
	e.waitReport("i-9", 1, 5*time.Second)
	e.waitReport("i-10", 1, 5*time.Second)

	release := make(chan struct{})
	stopping := make(chan struct{})
	drv.setHook(func(op, id string) {
		if op == "stop" && id == "i-9" {
			close(stopping)
			<-release
		}
	})
	e.action("i-9", "req-k", lifecycle.ActStop)
	<-stopping
	e.action("i-9", "req-l", lifecycle.ActDelete)
	e.action("i-10", "req-m", lifecycle.ActStop)

	// Another instance is not held up by i-9's slow stop.
	if r := e.waitReport("i-10", 2, 5*time.Second); !r.OK {
		t.Fatalf("stop of i-10: %+v", r)
	}
	time.Sleep(50 * time.Millisecond)
	if got := drv.callsOf("destroy"); slices.Contains(got, "i-9") {
		t.Fatalf("delete of i-9 ran while its stop was still running")
	}
	close(release)
	e.waitReport("i-9", 3, 5*time.Second)
	// The stand-in handles reports concurrently, so arrival order says
	// nothing: the times do.
	var stop, del protocol.InstanceReport
	for _, r := range e.cond.reportsFor("i-9") {
		switch r.Action {
		case lifecycle.ActStop:
			stop = r
		case lifecycle.ActDelete:
			del = r
		}
	}
	if !stop.OK || !del.OK || del.Started.Before(stop.Finished) {
		t.Fatalf("stop %+v\ndelete %+v\nwant both ok and the delete started after the stop finished", stop, del)
	}
	if n := e.agent.locks.held(); n != 0 {
		t.Errorf("%d instance locks left", n)
	}
}

func TestBuildAfterDeleteIsRefused(t *testing.T) {
	e, drv := startFake(t)
	e.action("i-11", "req-n", lifecycle.ActDelete)
	e.waitReport("i-11", 1, 5*time.Second)
	e.build("i-11", "req-o", fakeImage) // lost the race against its delete
	r := e.waitReport("i-11", 2, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "deleted") {
		t.Fatalf("late build report = %+v, want a refusal", r)
	}
	if _, ok := drv.get("i-11"); ok || len(drv.callsOf("create")) != 0 {
		t.Errorf("a build after the delete created the instance")
	}
}

func TestGracefulStopFinishesInFlightBuild(t *testing.T) {
	e, drv := startFake(t)
	creating := make(chan struct{})
	release := make(chan struct{})
	drv.setHook(func(op, id string) {
		if op == "create" {
			close(creating)
			<-release
		}
	})
	e.build("i-12", "req-q", fakeImage)
	<-creating
	e.cancel()
	e.cancel = nil
	select {
	case <-e.done:
		t.Fatal("Run returned while a build was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-e.done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the build finished")
	}
	// Published before Run returned (the stand-in may not have read it yet).
	var published []protocol.InstanceReport
	for _, m := range e.bus.Sent(bus.ConductorQueue) {
		var r protocol.InstanceReport
		if m.Kind == protocol.KindInstanceReport && m.Decode(&r) == nil && r.InstanceID == "i-12" {
			published = append(published, r)
		}
	}
	if len(published) != 1 || !published[0].OK {
		t.Fatalf("published reports = %+v, want the build's success published before Run returned", published)
	}
}

func TestMessagesDuringStopAreRequeued(t *testing.T) {
	e, _ := startFake(t)
	e.stop()
	e.build("i-13", "req-r", fakeImage)
	if p := e.bus.Pending(bus.ComputeQueue(testHost)); len(p) != 1 {
		t.Fatalf("pending after stop = %d, want the build kept for the next run", len(p))
	}
}

// failingConsumeBus refuses to consume, like a broker that went away.
type failingConsumeBus struct{ *bus.Mem }

func (failingConsumeBus) Consume(context.Context, string, bus.Handler) error {
	return errors.New("channel closed")
}

func TestRunFailsWhenItCannotConsume(t *testing.T) {
	e := newEnv(t, newFakeDriver(), testConfig())
	e.serveConductor()
	a := New(e.cfg, newFakeDriver(), failingConsumeBus{e.bus}, testLogger(t))
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "channel closed") {
			t.Fatalf("Run = %v, want the consume error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run hung after Consume failed")
	}
}

func TestReconcileSkipsInstancesWithAnOperationInFlight(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-busy", drivers.PowerRunning)
	drv.put(t, "i-idle", drivers.PowerRunning)
	e := newEnv(t, drv, testConfig())
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-busy"}, VMState: lifecycle.Active, TaskState: lifecycle.PoweringOff},
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-idle"}, VMState: lifecycle.Active},
	)
	e.serveConductor()
	e.start()

	release := make(chan struct{})
	stopping := make(chan struct{})
	drv.setHook(func(op, id string) {
		if op == "stop" {
			close(stopping)
			<-release
		}
	})
	e.action("i-busy", "req-z", lifecycle.ActStop)
	<-stopping
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(release)
	waitFor(t, 5*time.Second, "the second power sync", func() bool { return len(e.cond.powerSyncs()) >= 2 })
	ps := e.cond.powerSyncs()[1]
	if _, ok := ps.States["i-busy"]; ok || ps.States["i-idle"] != 1 || len(ps.Orphans) != 0 {
		t.Fatalf("power sync = %+v, want i-idle only and no orphan", ps)
	}
}

// TestReconcileSkipsInstancesOperatedOnSinceItListed: an operation that
// starts after reconcile's List and ends before the loop reaches its
// instance (here a start, while the loop destroys an instance being
// deleted) leaves the List's view stale; reporting it would mark a server
// that just became ACTIVE stopped (seen in the networked boot benchmark at
// concurrency 10: a build finished while reconcile destroyed another
// server, and the server went SHUTOFF 180 ms after ACTIVE).
func TestReconcileSkipsInstancesOperatedOnSinceItListed(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-del", drivers.PowerRunning)
	drv.put(t, "i-race", drivers.PowerShutdown)
	drv.put(t, "i-idle", drivers.PowerShutdown)
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-del"}, VMState: lifecycle.Active, TaskState: lifecycle.Deleting},
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-race"}, VMState: lifecycle.Stopped},
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-idle"}, VMState: lifecycle.Stopped},
	)
	ctx := context.Background()
	drv.setHook(func(op, id string) {
		if op != "destroy" || id != "i-del" {
			return
		}
		// A start of i-race runs to its end meanwhile.
		unlock, err := e.agent.locks.lock(ctx, "i-race")
		if err != nil {
			t.Error(err)
			return
		}
		if err := drv.Driver.Start(ctx, "i-race"); err != nil {
			t.Error(err)
		}
		unlock()
	})
	before := len(e.cond.powerSyncs())
	if err := e.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	drv.setHook(nil)
	waitFor(t, 5*time.Second, "the reconcile's power sync", func() bool { return len(e.cond.powerSyncs()) > before })
	ps := e.cond.powerSyncs()[before]
	if st, ok := ps.States["i-race"]; ok {
		t.Errorf("power sync reports i-race as %d, what List saw before its start ran: %+v", st, ps)
	}
	if ps.States["i-idle"] != int(drivers.PowerShutdown) || ps.States["i-del"] != int(drivers.PowerNoState) {
		t.Errorf("power sync = %+v, want i-idle shut down and i-del gone", ps)
	}
	if st, _ := drv.Status(ctx, "i-race"); st.Power != drivers.PowerRunning {
		t.Fatalf("i-race is %v after its start", st.Power)
	}
	// The next reconcile reports it as it is.
	if err := e.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the next power sync", func() bool { return len(e.cond.powerSyncs()) > before+1 })
	if st := e.cond.powerSyncs()[before+1].States["i-race"]; st != int(drivers.PowerRunning) {
		t.Errorf("next power sync reports i-race as %d, want running", st)
	}
}

// TestReconcileReappliesLimits: drift repair re-applies the flavor's
// limits to running servers with no operation in flight, and leaves
// stopped servers and servers mid-operation alone.
func TestReconcileReappliesLimits(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-run", drivers.PowerRunning)
	drv.put(t, "i-off", drivers.PowerShutdown)
	drv.put(t, "i-task", drivers.PowerRunning)
	e := newEnv(t, drv, testConfig())
	spec := func(id string) protocol.InstanceSpec {
		return protocol.InstanceSpec{ID: id, VCPUs: 2, MemoryMB: 256,
			ExtraSpecs: map[string]string{"quota:cpu_quota": "50000", "capsule:pids_max": "64"}}
	}
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: spec("i-run"), VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: spec("i-off"), VMState: lifecycle.Stopped},
		protocol.ExpectedInstance{Spec: spec("i-task"), VMState: lifecycle.Active, TaskState: lifecycle.ResizePrep},
	)
	e.serveConductor()
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	in, _ := drv.get("i-run")
	if in.Resizes != 1 || in.Spec.VCPUs != 2 || in.Spec.MemoryMB != 256 || in.Spec.Limits.PidsMax != 64 {
		t.Errorf("running instance after reconcile: resizes %d, spec %+v", in.Resizes, in.Spec)
	}
	for _, id := range []string{"i-off", "i-task"} {
		if in, _ := drv.get(id); in.Resizes != 0 {
			t.Errorf("%s had its limits re-applied (%d resizes)", id, in.Resizes)
		}
	}
}
