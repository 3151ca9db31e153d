package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// TestReconcileResumesAfterHostBoot: the agent's first reconcile starts
// again what the cloud records as running or paused and finds stopped
// (paused ones paused again, a running server in VERIFY_RESIZE running and
// nothing else done to it), leaves what the owner stopped and what has a
// task, reports what it could not resume instead of a power state, and
// later reconciles no longer resume.
func TestReconcileResumesAfterHostBoot(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-run", drivers.PowerRunning)
	drv.put(t, "i-off", drivers.PowerShutdown)
	drv.put(t, "i-crashed", drivers.PowerCrashed)
	drv.put(t, "i-paused", drivers.PowerShutdown)
	drv.put(t, "i-susp", drivers.PowerShutdown)
	drv.put(t, "i-stopped", drivers.PowerShutdown)
	drv.put(t, "i-task", drivers.PowerShutdown)
	drv.put(t, "i-fail", drivers.PowerShutdown)
	drv.put(t, "i-verify", drivers.PowerShutdown)
	drv.put(t, "i-verify-off", drivers.PowerShutdown)
	drv.setFail("start", "i-fail", errors.New("no space left on device"))
	e := newEnv(t, drv, testConfig())
	exp := func(id string, vm lifecycle.VMState, task lifecycle.TaskState) protocol.ExpectedInstance {
		return protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: id}, VMState: vm, TaskState: task}
	}
	e.cond.setExpected(
		exp("i-run", lifecycle.Active, lifecycle.NoTask),
		exp("i-off", lifecycle.Active, lifecycle.NoTask),
		exp("i-crashed", lifecycle.Active, lifecycle.NoTask),
		exp("i-paused", lifecycle.Paused, lifecycle.NoTask),
		exp("i-susp", lifecycle.Suspended, lifecycle.NoTask),
		exp("i-stopped", lifecycle.Stopped, lifecycle.NoTask),
		exp("i-task", lifecycle.Active, lifecycle.PoweringOff),
		exp("i-fail", lifecycle.Active, lifecycle.NoTask),
		exp("i-missing", lifecycle.Active, lifecycle.NoTask),
		// VERIFY_RESIZE of a running server, and of a stopped one.
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-verify"}, VMState: lifecycle.Resized,
			PowerState: int(lifecycle.Running)},
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-verify-off"}, VMState: lifecycle.Resized,
			PowerState: int(lifecycle.Shutdown)},
	)
	e.serveConductor()
	e.start()

	ps := e.cond.powerSyncs()[0]
	want := map[string]drivers.PowerState{
		"i-run": drivers.PowerRunning, "i-off": drivers.PowerRunning, "i-crashed": drivers.PowerRunning,
		"i-paused": drivers.PowerPaused, "i-susp": drivers.PowerPaused,
		"i-stopped": drivers.PowerShutdown, "i-task": drivers.PowerShutdown,
		"i-verify": drivers.PowerRunning, "i-verify-off": drivers.PowerShutdown,
	}
	if len(ps.States) != len(want) {
		t.Errorf("power sync states = %v, want %v", ps.States, want)
	}
	for id, p := range want {
		if got, ok := ps.States[id]; !ok || got != int(p) {
			t.Errorf("reported state of %s = %d (present %v), want %d", id, got, ok, p)
		}
		in, _ := drv.get(id)
		if in.Power != p {
			t.Errorf("%s is in power state %d, want %d", id, in.Power, p)
		}
	}
	if len(ps.ResumeFailed) != 2 || !strings.HasPrefix(ps.ResumeFailed["i-fail"], "start: ") ||
		!strings.Contains(ps.ResumeFailed["i-fail"], "no space left on device") ||
		!strings.Contains(ps.ResumeFailed["i-missing"], "container is missing") {
		t.Errorf("resume failures = %v, want i-fail (start: ...) and i-missing (container is missing)", ps.ResumeFailed)
	}
	starts := drv.callsOf("start")
	slices.Sort(starts)
	if !slices.Equal(starts, []string{"i-crashed", "i-fail", "i-off", "i-paused", "i-susp", "i-verify"}) {
		t.Errorf("start calls = %v, want only the servers the cloud records as running or paused", starts)
	}

	// A server that stops while the agent runs stopped itself: reported
	// as it is, not started again.
	waitFor(t, 5*time.Second, "the start-up reconcile to end its resume", func() bool { return !e.agent.resumeDue.Load() })
	if err := drv.Crash("i-off", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the second power sync", func() bool { return len(e.cond.powerSyncs()) >= 2 })
	syncs := e.cond.powerSyncs()
	last := syncs[len(syncs)-1]
	if got := last.States["i-off"]; got != int(drivers.PowerCrashed) || len(last.ResumeFailed) != 0 {
		t.Errorf("later reconcile: i-off reported %d, resume failures %v; want crashed (6) and none", got, last.ResumeFailed)
	}
	if n := len(drv.callsOf("start")); n != 6 {
		t.Errorf("a later reconcile started servers again (%d starts in all)", n)
	}
}

// watchingDriver is a fake driver whose runtime "restarts" when the test
// says so (drivers.RuntimeWatcher).
type watchingDriver struct {
	*fakeDriver
	restart chan struct{}
}

func (d *watchingDriver) WatchRuntime(ctx context.Context, restarted func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.restart:
			restarted()
		}
	}
}

// TestRuntimeRestartResumesAndReconciles: when the runtime comes back
// after an outage the agent reconciles at once (no periodic reconcile is
// configured here) and starts again what the outage stopped.
func TestRuntimeRestartResumesAndReconciles(t *testing.T) {
	drv := &watchingDriver{fakeDriver: newFakeDriver(), restart: make(chan struct{})}
	drv.put(t, "i-a", drivers.PowerRunning)
	drv.put(t, "i-b", drivers.PowerRunning)
	e := newEnv(t, drv, testConfig())
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-a"}, VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-b"}, VMState: lifecycle.Active},
	)
	e.serveConductor()
	e.start()
	waitFor(t, 5*time.Second, "the start-up reconcile to end its resume", func() bool { return !e.agent.resumeDue.Load() })
	if n := len(drv.callsOf("start")); n != 0 {
		t.Fatalf("%d starts of running servers at start-up", n)
	}

	// The outage stopped both containers; the runtime answers again.
	for _, id := range []string{"i-a", "i-b"} {
		if err := drv.Crash(id, 137); err != nil {
			t.Fatal(err)
		}
	}
	drv.restart <- struct{}{}
	waitFor(t, 5*time.Second, "a power sync after the runtime came back", func() bool { return len(e.cond.powerSyncs()) >= 2 })
	ps := e.cond.powerSyncs()[1]
	for _, id := range []string{"i-a", "i-b"} {
		if ps.States[id] != int(drivers.PowerRunning) {
			t.Errorf("after the runtime restart %s reported %d, want running (1)", id, ps.States[id])
		}
		if in, _ := drv.get(id); in.Power != drivers.PowerRunning {
			t.Errorf("%s not started again after the runtime restart (power %d)", id, in.Power)
		}
	}
}
