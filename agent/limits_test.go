package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/protocol"
)

// buildWithSpecs builds id with the flavor extra specs given.
func (e *env) buildWithSpecs(id, reqID, image string, vcpus int, extra map[string]string) {
	e.publish(protocol.KindBuildInstance, protocol.BuildInstance{
		RequestID: reqID, Attempt: 1,
		Spec: protocol.InstanceSpec{ID: id, Name: "srv-" + id, ProjectID: "proj-1", ImageRef: image,
			VCPUs: vcpus, MemoryMB: 64, DiskGB: 1, ExtraSpecs: extra},
	})
}

// The driver gets the flavor's extra specs parsed into its Spec, and
// capsule:pids_max replaces the host's default pid cap.
func TestBuildPassesLimits(t *testing.T) {
	e, drv := startFake(t)
	extra := map[string]string{"quota:cpu_quota": "50000", "quota:disk_write_iops_sec": "100",
		"quota:vif_inbound_average": "1250", "capsule:pids_max": "200", "trait:X": "required"}
	e.buildWithSpecs("i-lim", "req-l", fakeImage, 2, extra)
	if r := e.waitReport("i-lim", 1, 5*time.Second); !r.OK {
		t.Fatalf("report = %+v", r)
	}
	inst, ok := drv.get("i-lim")
	if !ok {
		t.Fatal("no instance")
	}
	want := limits.Limits{CPU: limits.CPU{QuotaUS: 50000}, Disk: limits.Disk{WriteIOPSSec: 100},
		VIF: limits.VIF{Inbound: limits.Shaping{AverageKBps: 1250}}, PidsMax: 200}
	if inst.Spec.Limits != want {
		t.Errorf("spec limits = %+v, want %+v", inst.Spec.Limits, want)
	}
	if inst.Spec.PidsLimit != 200 {
		t.Errorf("pids limit = %d, want the flavor's 200 over the host's 321", inst.Spec.PidsLimit)
	}
	if inst.Spec.ExtraSpecs["trait:X"] != "required" {
		t.Errorf("extra specs = %v", inst.Spec.ExtraSpecs)
	}
}

// A flavor with a bad extra spec (one set before the API validated them)
// fails the build with an error naming the key; nothing is created.
func TestBuildRefusesBadLimits(t *testing.T) {
	e, drv := startFake(t)
	e.buildWithSpecs("i-badlim", "req-bl", fakeImage, 1, map[string]string{"quota:cpu_quota": "lots"})
	r := e.waitReport("i-badlim", 1, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "quota:cpu_quota") {
		t.Fatalf("report = %+v, want a failure naming quota:cpu_quota", r)
	}
	if got := drv.callsOf("create"); len(got) != 0 {
		t.Errorf("create called for a server with bad limits: %v", got)
	}
}

// Through the agent onto a real container: the flavor's CPU quota (per
// vCPU) and pid cap are what the kernel enforces.
func TestAgentAppliesLimitsWithDocker(t *testing.T) {
	image := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, drv, id := newDockerEnv(t, ctx)
	e.buildWithSpecs(id, "req-dl", image, 2, map[string]string{"quota:cpu_quota": "25000", "capsule:pids_max": "100"})
	r := e.waitReport(id, 1, 2*time.Minute)
	if !r.OK || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("build report = %+v", r)
	}
	c, err := drv.Client().ContainerInspect(ctx, docker.ContainerName(id))
	if err != nil {
		t.Fatal(err)
	}
	lim, err := cgroup.LimitsOf(c.State.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// 2 vCPUs × 25 ms per 100 ms period = half a CPU for the server.
	if lim.CPUQuotaUS != 50000 || lim.CPUPeriodUS != 100000 || lim.PidsMax != 100 {
		t.Errorf("kernel limits = %+v, want quota 50000/100000 and 100 pids", lim)
	}
}
