package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// TestSuspendResumeFreezeThroughPause: suspend and resume run the
// driver's Pause and Unpause (the cgroup freezer) under Nova's event
// names; the driver's power state (paused) is what the report carries,
// the conductor turns it into SUSPENDED.
func TestSuspendResumeFreezeThroughPause(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-su", "req-b", fakeImage)
	e.waitReport("i-su", 1, 5*time.Second)

	e.action("i-su", "req-s", lifecycle.ActSuspend)
	r := e.waitReport("i-su", 2, 5*time.Second)
	if !r.OK || r.Event != "compute_suspend_instance" || r.PowerState != int(drivers.PowerPaused) || r.Action != lifecycle.ActSuspend {
		t.Fatalf("suspend report = %+v", r)
	}
	if in, _ := drv.get("i-su"); in.Power != drivers.PowerPaused {
		t.Errorf("fake power after suspend = %d, want paused", in.Power)
	}
	if got := drv.callsOf("pause"); len(got) != 1 || got[0] != "i-su" {
		t.Errorf("pause calls = %v", got)
	}

	e.action("i-su", "req-r", lifecycle.ActResume)
	r = e.waitReport("i-su", 3, 5*time.Second)
	if !r.OK || r.Event != "compute_resume_instance" || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("resume report = %+v", r)
	}
	if got := drv.callsOf("unpause"); len(got) != 1 {
		t.Errorf("unpause calls = %v", got)
	}

	// A redelivered resume is harmless: still running.
	e.action("i-su", "req-r", lifecycle.ActResume)
	r = e.waitReport("i-su", 4, 5*time.Second)
	if !r.OK || r.PowerState != int(drivers.PowerRunning) {
		t.Errorf("repeated resume: %+v", r)
	}
}

func TestSuspendWithoutPauseCapabilityFails(t *testing.T) {
	drv := newFakeDriver()
	drv.Caps.Pause = false
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	e.build("i-np", "req-c", fakeImage)
	e.waitReport("i-np", 1, 5*time.Second)
	e.action("i-np", "req-s", lifecycle.ActSuspend)
	r := e.waitReport("i-np", 2, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, drivers.ErrNotSupported.Error()) || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("report = %+v, want a not-supported failure, still running", r)
	}
	if got := drv.callsOf("pause"); len(got) != 0 {
		t.Errorf("driver Pause called without the capability: %v", got)
	}
}

// TestReconcileLeavesSuspendedFrozen: reconcile reports a suspended
// server as the driver sees it (paused) and neither thaws nor touches it.
func TestReconcileLeavesSuspendedFrozen(t *testing.T) {
	drv := newFakeDriver()
	drv.put(t, "i-frozen", drivers.PowerPaused)
	e := newEnv(t, drv, testConfig())
	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-frozen"}, VMState: lifecycle.Suspended})
	e.serveConductor()
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the power sync", func() bool { return len(e.cond.powerSyncs()) > 0 })
	syncs := e.cond.powerSyncs()
	if len(syncs) != 1 || syncs[0].States["i-frozen"] != int(drivers.PowerPaused) {
		t.Fatalf("power syncs = %+v, want i-frozen paused", syncs)
	}
	if in, _ := drv.get("i-frozen"); in.Power != drivers.PowerPaused {
		t.Errorf("reconcile changed the frozen instance: power %d", in.Power)
	}
	if got := drv.callsOf("unpause"); len(got) != 0 {
		t.Errorf("reconcile unpaused: %v", got)
	}
}

// TestSnapshotEchoesBackupRotation: the rotation of a createBackup comes
// back in the report, for the conductor to prune with.
func TestSnapshotEchoesBackupRotation(t *testing.T) {
	e, _ := startFake(t)
	e.build("i-bk", "req-1", fakeImage)
	e.waitReport("i-bk", 1, 5*time.Second)
	ref := "127.0.0.1:5050/capsule/snapshots:img-b"
	rot := &protocol.BackupRotation{Type: "daily", Rotation: 2}
	e.publish(protocol.KindSnapshotInstance, protocol.SnapshotInstance{RequestID: "req-2", InstanceID: "i-bk", ImageID: "img-b",
		Ref: ref, Backup: rot})
	r := e.waitSnapshot(1)
	if !r.OK || r.Backup == nil || *r.Backup != *rot {
		t.Fatalf("backup snapshot report %+v (backup %+v)", r, r.Backup)
	}
}
