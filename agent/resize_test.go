package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

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
