package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

func TestResizeAppliesLimitsLiveAndReports(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-r", "req-1", fakeImage)
	if r := e.waitReport("i-r", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	before, _ := drv.get("i-r")

	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-2", InstanceID: "i-r",
		Spec: protocol.InstanceSpec{ID: "i-r", VCPUs: 2, MemoryMB: 256, ExtraSpecs: map[string]string{"quota:cpu_quota": "50000"}},
		Old:  protocol.InstanceSpec{ID: "i-r", VCPUs: 1, MemoryMB: 64}})
	r := e.waitReport("i-r", 2, 5*time.Second)
	if !r.OK || r.Action != lifecycle.ActResize || r.Event != EventResize || r.RequestID != "req-2" || r.PowerState != 1 {
		t.Fatalf("resize report %+v", r)
	}
	after, _ := drv.get("i-r")
	if after.Spec.VCPUs != 2 || after.Spec.MemoryMB != 256 || after.Spec.Limits.CPU.QuotaUS != 50000 || after.Resizes != 1 {
		t.Errorf("driver spec after resize: %+v", after.Spec)
	}
	if after.Boots != before.Boots {
		t.Errorf("resize rebooted the instance: boots %d -> %d", before.Boots, after.Boots)
	}
	if after.Spec.PidsLimit != testConfig().PidsLimit {
		t.Errorf("pids limit %d, want the host default %d", after.Spec.PidsLimit, testConfig().PidsLimit)
	}

	// A revert applies the old size and reports revert_resize.
	e.publish(protocol.KindRevertResize, protocol.ResizeInstance{RequestID: "req-3", InstanceID: "i-r",
		Spec: protocol.InstanceSpec{ID: "i-r", VCPUs: 1, MemoryMB: 64}})
	r = e.waitReport("i-r", 3, 5*time.Second)
	if !r.OK || r.Action != lifecycle.ActRevertResize || r.Event != EventRevertResize {
		t.Fatalf("revert report %+v", r)
	}
	if got, _ := drv.get("i-r"); got.Spec.VCPUs != 1 || got.Spec.MemoryMB != 64 {
		t.Errorf("driver spec after revert: %+v", got.Spec)
	}

	// A driver failure is reported with its error, and its safe
	// message apart (what the user is shown).
	drv.setFail("resize", "i-r", errdefs.Wrap(errors.New("cgroup write refused"), errdefs.ErrFailedPrecondition, "the server uses more memory than the new flavor has"))
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-4", InstanceID: "i-r",
		Spec: protocol.InstanceSpec{ID: "i-r", VCPUs: 2, MemoryMB: 128}})
	r = e.waitReport("i-r", 4, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "cgroup write refused") || r.Action != lifecycle.ActResize ||
		r.ErrorMessage != "the server uses more memory than the new flavor has" {
		t.Fatalf("failed resize report %+v", r)
	}
	// Unknown instance and bad extra specs fail cleanly too.
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-5", InstanceID: "i-missing",
		Spec: protocol.InstanceSpec{ID: "i-missing", VCPUs: 1, MemoryMB: 64}})
	if r := e.waitReport("i-missing", 1, 5*time.Second); r.OK {
		t.Errorf("resize of a missing instance reported OK")
	}
}

// TestColdResize: a change the driver can make only to a stopped
// instance (drivers.ErrNeedsRestart) is made cold — stop, resize, start —
// and reported as a resize; when the instance does not start with the new
// size, the old one is put back and started.
func TestColdResize(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-c", "req-1", fakeImage)
	if r := e.waitReport("i-c", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	before, _ := drv.get("i-c")
	needsRestart := fmt.Errorf("memory below usage: %w", drivers.ErrNeedsRestart)
	// The fake refuses the live resize; once stopped, it takes it.
	drv.setFail("resize", "i-c", needsRestart)
	drv.setHook(func(op, id string) {
		if op == "stop" && id == "i-c" {
			drv.setFail("resize", "i-c", nil)
		}
	})
	newSpec := protocol.InstanceSpec{ID: "i-c", VCPUs: 1, MemoryMB: 32}
	oldSpec := protocol.InstanceSpec{ID: "i-c", VCPUs: before.Spec.VCPUs, MemoryMB: before.Spec.MemoryMB}
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-2", InstanceID: "i-c", Spec: newSpec, Old: oldSpec})
	r := e.waitReport("i-c", 2, 5*time.Second)
	if !r.OK || r.Action != lifecycle.ActResize || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("cold resize report %+v", r)
	}
	after, _ := drv.get("i-c")
	if after.Spec.MemoryMB != 32 || after.Power != drivers.PowerRunning || after.Boots != before.Boots+1 {
		t.Errorf("after the cold resize: memory %d MB, power %d, boots %d -> %d; want 32 MB, running, one boot more",
			after.Spec.MemoryMB, after.Power, before.Boots, after.Boots)
	}
	if n := len(drv.callsOf("stop")); n != 1 {
		t.Errorf("%d stops, want 1", n)
	}

	// It does not start with the new size: the old one runs again.
	drv.setFail("resize", "i-c", needsRestart)
	startFailed := false
	drv.setHook(func(op, id string) {
		switch {
		case op == "stop" && id == "i-c":
			drv.setFail("resize", "i-c", nil)
			drv.setFail("start", "i-c", errors.New("exec format error"))
		case op == "start" && id == "i-c" && !startFailed:
			startFailed = true
			drv.setFail("start", "i-c", nil) // after this call
		}
	})
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-3", InstanceID: "i-c",
		Spec: protocol.InstanceSpec{ID: "i-c", VCPUs: 1, MemoryMB: 16}, Old: newSpec})
	r = e.waitReport("i-c", 3, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "exec format error") || r.ErrorMessage != "the server did not start with the new flavor" ||
		r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("failed cold resize report %+v", r)
	}
	if got, _ := drv.get("i-c"); got.Spec.MemoryMB != 32 || got.Power != drivers.PowerRunning {
		t.Errorf("after the failed cold resize: memory %d MB, power %d; want the old 32 MB, running", got.Spec.MemoryMB, got.Power)
	}

	// A stopped instance takes the change as it is: no cold resize.
	drv.setHook(nil)
	e.publish(protocol.KindInstanceAction, protocol.InstanceAction{RequestID: "req-4", InstanceID: "i-c", Action: lifecycle.ActStop})
	if r := e.waitReport("i-c", 4, 5*time.Second); !r.OK {
		t.Fatalf("stop: %+v", r)
	}
	stops := len(drv.callsOf("stop"))
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-5", InstanceID: "i-c",
		Spec: protocol.InstanceSpec{ID: "i-c", VCPUs: 1, MemoryMB: 48}, Old: newSpec})
	if r := e.waitReport("i-c", 5, 5*time.Second); !r.OK || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("resize of the stopped instance: %+v", r)
	}
	if got, _ := drv.get("i-c"); got.Spec.MemoryMB != 48 || got.Power != drivers.PowerShutdown || len(drv.callsOf("stop")) != stops {
		t.Errorf("stopped instance after its resize: memory %d MB, power %d, stops %d -> %d", got.Spec.MemoryMB, got.Power, stops, len(drv.callsOf("stop")))
	}
}

// TestColdResizeRedeliveredAfterCrash: the agent died during a cold
// resize, after the stop and before the start; the redelivered request
// finds the running server's container stopped, applies the new flavor,
// starts it and reports a resize of a running server (VERIFY_RESIZE,
// power running). A stopped server's resize leaves it stopped.
func TestColdResizeRedeliveredAfterCrash(t *testing.T) {
	e, drv := startFake(t)
	e.build("i-r", "req-1", fakeImage)
	if r := e.waitReport("i-r", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	before, _ := drv.get("i-r")
	// What the first delivery left when the agent died: the container
	// stopped with its old flavor.
	if err := drv.Driver.Stop(context.Background(), "i-r", time.Second); err != nil {
		t.Fatal(err)
	}
	drv.resetCalls()
	// Live, the driver would refuse the new flavor.
	drv.setHook(func(op, id string) {
		if op == "resize" {
			if in, _ := drv.get(id); in.Power == drivers.PowerRunning {
				t.Errorf("resize applied to the running instance %s, want it applied while stopped", id)
			}
		}
	})
	newSpec := protocol.InstanceSpec{ID: "i-r", VCPUs: 1, MemoryMB: 32}
	oldSpec := protocol.InstanceSpec{ID: "i-r", VCPUs: before.Spec.VCPUs, MemoryMB: before.Spec.MemoryMB}
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-2", InstanceID: "i-r",
		Spec: newSpec, Old: oldSpec, Running: true})
	r := e.waitReport("i-r", 2, 5*time.Second)
	if !r.OK || r.Action != lifecycle.ActResize || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("redelivered cold resize report %+v, want ok, resize, running", r)
	}
	after, _ := drv.get("i-r")
	if after.Spec.MemoryMB != 32 || after.Power != drivers.PowerRunning || after.Boots != before.Boots+1 {
		t.Errorf("after the redelivered cold resize: memory %d MB, power %d, boots %d -> %d; want 32 MB, running, one boot more",
			after.Spec.MemoryMB, after.Power, before.Boots, after.Boots)
	}
	if n := len(drv.callsOf("stop")); n != 0 {
		t.Errorf("%d stops of the stopped instance, want none", n)
	}

	// The same redelivery for a server that was stopped: it stays so.
	e.publish(protocol.KindInstanceAction, protocol.InstanceAction{RequestID: "req-3", InstanceID: "i-r", Action: lifecycle.ActStop})
	if r := e.waitReport("i-r", 3, 5*time.Second); !r.OK {
		t.Fatalf("stop: %+v", r)
	}
	starts := len(drv.callsOf("start"))
	e.publish(protocol.KindResizeInstance, protocol.ResizeInstance{RequestID: "req-4", InstanceID: "i-r",
		Spec: protocol.InstanceSpec{ID: "i-r", VCPUs: 1, MemoryMB: 48}, Old: newSpec})
	if r := e.waitReport("i-r", 4, 5*time.Second); !r.OK || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("resize of the stopped instance: %+v", r)
	}
	if got, _ := drv.get("i-r"); got.Spec.MemoryMB != 48 || got.Power != drivers.PowerShutdown || len(drv.callsOf("start")) != starts {
		t.Errorf("stopped server after its resize: memory %d MB, power %d, starts %d -> %d; want 48 MB, stopped, no start",
			got.Spec.MemoryMB, got.Power, starts, len(drv.callsOf("start")))
	}
}
