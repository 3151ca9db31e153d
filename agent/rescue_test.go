package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// rescueFake is the agent tests' fake driver with a rescue that stops the
// workload, as the docker driver's does, then fails with err (or runs).
type rescueFake struct {
	*fakeDriver
	err error
}

func (r *rescueFake) Rescue(ctx context.Context, id, _ string, grace time.Duration) error {
	if err := r.fakeDriver.Stop(ctx, id, grace); err != nil {
		return err
	}
	return r.err
}

func (r *rescueFake) Unrescue(context.Context, string, time.Duration) error { return nil }

// A rescue that fails after stopping the workload starts it again: the
// report says so (running), and the server does not become SHUTOFF.
func TestFailedRescueStartsTheServerAgain(t *testing.T) {
	drv := &rescueFake{fakeDriver: newFakeDriver(), err: errors.New("rescue image pull failed")}
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.start()
	e.build("i-rs", "req-rs", "busybox")
	if r := e.waitReport("i-rs", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	e.publish(protocol.KindInstanceAction, protocol.InstanceAction{RequestID: "req-rs2", InstanceID: "i-rs",
		Action: lifecycle.ActRescue, RescueImage: "busybox"})
	r := e.waitReport("i-rs", 2, 5*time.Second)
	if r.OK {
		t.Fatalf("rescue report = %+v, want the failure", r)
	}
	if st, err := drv.Status(context.Background(), "i-rs"); err != nil || st.Power != drivers.PowerRunning {
		t.Errorf("after a failed rescue the server is %+v (%v), want running again", st, err)
	}
	if r.PowerState != int(drivers.PowerRunning) {
		t.Errorf("the failed rescue reported power %d, want running", r.PowerState)
	}
}
