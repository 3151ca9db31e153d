package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/hypervisors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/capsule-cloud/capsule/cgroup"
)

func waitStatus(t *testing.T, cc *gophercloud.ServiceClient, id, want string, timeout time.Duration) *servers.Server {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *servers.Server
	for time.Now().Before(deadline) {
		s, err := servers.Get(context.Background(), cc, id).Extract()
		if err != nil {
			t.Fatalf("get server %s: %v", id, err)
		}
		last = s
		if s.Status == want && s.TaskState == "" {
			return s
		}
		if s.Status == "ERROR" && want != "ERROR" {
			t.Fatalf("server %s went to ERROR: %+v", id, s.Fault)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("server %s did not reach %s within %s (last status %s task %q)", id, want, timeout, last.Status, last.TaskState)
	return nil
}

// waitVerifyResize waits for server id to wait in VERIFY_RESIZE after a
// resize or cold migration (up to timeout) and returns it; it fails at
// once, saying why, when the move cannot get there any more
// (resizeOutcome).
func waitVerifyResize(t *testing.T, cc *gophercloud.ServiceClient, id string, timeout time.Duration) *servers.Server {
	t.Helper()
	s, why := resizeOutcome(t, cc, id, timeout)
	if why != "" {
		t.Fatalf("server %s will not reach VERIFY_RESIZE: %s", id, why)
	}
	return s
}

// resizeOutcome waits for server id's resize or cold migration to end
// (up to timeout): the server waiting in VERIFY_RESIZE (why ""), or why
// it will not get there: it went ERROR, or it has no task left in
// another status (the move failed and was rolled back: ACTIVE or SHUTOFF
// again), with its fault, its newest migration's status (when cc may list
// them) and the failed events of its newest instance action; no need to
// wait out timeout for a move that failed.
func resizeOutcome(t *testing.T, cc *gophercloud.ServiceClient, id string, timeout time.Duration) (*servers.Server, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *servers.Server
	for time.Now().Before(deadline) {
		s, err := servers.Get(context.Background(), cc, id).Extract()
		if err != nil {
			t.Fatalf("get server %s: %v", id, err)
		}
		last = s
		switch {
		case s.Status == "VERIFY_RESIZE" && s.TaskState == "":
			return s, ""
		case s.Status == "ERROR", s.TaskState == "" && s.Status != "VERIFY_RESIZE":
			return s, "it is " + s.Status + "; " + moveFailure(t, cc, s)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("server %s did not reach VERIFY_RESIZE within %s (last status %s task %q)", id, timeout, last.Status, last.TaskState)
	return nil, ""
}

// moveFailure says why server s's resize or migration failed, from what
// the API shows: its fault, its newest migration (os-migrations, for an
// admin's cc) and the failed events of its newest instance action.
func moveFailure(t *testing.T, cc *gophercloud.ServiceClient, s *servers.Server) string {
	t.Helper()
	var why []string
	if s.Fault.Message != "" {
		why = append(why, fmt.Sprintf("fault %d %q %s", s.Fault.Code, s.Fault.Message, s.Fault.Details))
	}
	if code, body := rawV(t, cc, "2.59", "GET", "os-migrations?instance_uuid="+s.ID, ""); code == 200 {
		if migs, _ := body["migrations"].([]any); len(migs) > 0 {
			var newest map[string]any
			for _, m := range migs {
				mm, _ := m.(map[string]any)
				if newest == nil || fmt.Sprint(mm["created_at"]) >= fmt.Sprint(newest["created_at"]) {
					newest = mm
				}
			}
			why = append(why, fmt.Sprintf("migration %v %v -> %v: %v", newest["uuid"], newest["source_compute"], newest["dest_compute"], newest["status"]))
		}
	}
	if code, body := rawV(t, cc, "2.84", "GET", "servers/"+s.ID+"/os-instance-actions", ""); code == 200 {
		if acts, _ := body["instanceActions"].([]any); len(acts) > 0 {
			newest, _ := acts[0].(map[string]any) // newest first
			req := fmt.Sprint(newest["request_id"])
			if code, body := rawV(t, cc, "2.84", "GET", "servers/"+s.ID+"/os-instance-actions/"+req, ""); code == 200 {
				act, _ := body["instanceAction"].(map[string]any)
				evs, _ := act["events"].([]any)
				for _, e := range evs {
					ev, _ := e.(map[string]any)
					if ev["result"] == "Error" {
						why = append(why, fmt.Sprintf("%v event %v on %v failed: %v %v", newest["action"], ev["event"], ev["host"], ev["details"], ev["traceback"]))
					}
				}
			}
		}
	}
	if len(why) == 0 {
		return "no fault, migration or failed event recorded"
	}
	return strings.Join(why, "; ")
}

func waitGone(t *testing.T, cc *gophercloud.ServiceClient, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, err := servers.Get(context.Background(), cc, id).Extract()
		if gophercloud.ResponseCodeIs(err, 404) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("server %s still exists after %s", id, timeout)
}

// containerOf finds the Docker container of an instance.
func (c *cloud) containerOf(t *testing.T, id string) (cid string, running bool, pid int) {
	t.Helper()
	out, err := c.docker("ps", "-a", "--filter", "label=capsule.instance="+id, "--format", "{{.ID}}")
	if err != nil {
		t.Fatalf("docker ps: %v %s", err, out)
	}
	if out == "" {
		return "", false, 0
	}
	cid = strings.Fields(out)[0]
	st, err := c.docker("inspect", "-f", "{{.State.Running}} {{.State.Pid}}", cid)
	if err != nil {
		t.Fatalf("docker inspect: %v %s", err, st)
	}
	f := strings.Fields(st)
	pid, _ = strconv.Atoi(f[1])
	return cid, f[0] == "true", pid
}

// cgroupLimits reads the limits the kernel enforces on pid.
func cgroupLimits(t *testing.T, pid int) cgroup.Limits {
	t.Helper()
	l, err := cgroup.LimitsOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func hostUsage(t *testing.T, cc *gophercloud.ServiceClient, host string) (vcpus, ram int) {
	t.Helper()
	pages, err := hypervisors.List(cc, nil).AllPages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := hypervisors.ExtractHypervisors(pages)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.HypervisorHostname == host {
			return h.VCPUsUsed, h.MemoryMBUsed
		}
	}
	t.Fatalf("hypervisor %s not listed", host)
	return
}

// TestServerLifecycle is the spine: demo boots a server, it becomes a
// running container with the flavor's limits, and stop/start/reboot/
// console/delete behave as Nova's do, leaving nothing behind.
func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	serverLifecycle(t, startCloud(t))
}

// TestServerLifecycleOnPostgres runs the same journey with the database on
// PostgreSQL, the multi-host configuration.
func TestServerLifecycleOnPostgres(t *testing.T) {
	t.Parallel()
	serverLifecycle(t, startCloud(t, onPostgres))
}

func serverLifecycle(t *testing.T, c *cloud) {
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	vcpus0, ram0 := hostUsage(t, admin, c.host)

	images := c.imageIDs(t, "demo", c.demoPass, "demo")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "vm1", ImageRef: images["busybox"], FlavorRef: "2"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if srv.AdminPass == "" {
		t.Error("create response lacks adminPass")
	}
	first, err := servers.Get(ctx, demo, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != "BUILD" && first.Status != "ACTIVE" {
		t.Fatalf("new server status %s, want BUILD (or already ACTIVE)", first.Status)
	}
	active := waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)
	if active.PowerState != servers.RUNNING {
		t.Errorf("power state %v, want RUNNING", active.PowerState)
	}

	cid, running, pid := c.containerOf(t, srv.ID)
	if cid == "" || !running {
		t.Fatalf("no running container for ACTIVE server (cid=%q running=%v)", cid, running)
	}
	// m1.small = 1 vCPU, 512 MB: hard quota of one CPU, 512 MiB memory.
	lim := cgroupLimits(t, pid)
	if lim.CPUQuotaUS != 100000 {
		t.Errorf("cpu quota = %d µs, want 100000", lim.CPUQuotaUS)
	}
	if lim.MemoryBytes != 512<<20 {
		t.Errorf("memory limit = %d, want %d", lim.MemoryBytes, 512<<20)
	}
	if lim.PidsMax <= 0 {
		t.Errorf("pids max = %d, want a limit", lim.PidsMax)
	}
	priv, _ := c.docker("inspect", "-f", "{{.HostConfig.Privileged}}", cid)
	if priv != "false" {
		t.Errorf("container privileged = %s", priv)
	}
	if v, h := hostUsage(t, admin, c.host); v != vcpus0+1 || h != ram0+512 {
		t.Errorf("host usage after boot = %d vCPU / %d MB, want %d / %d", v, h, vcpus0+1, ram0+512)
	}

	// Console output: the base image's boot log (ACTIVE is the workload
	// started, not its boot finished: wait for its last line), tailed by
	// lines.
	var full string
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(full, "capsule-init: system ready"); {
		if time.Now().After(deadline) {
			t.Fatalf("full console output lacks the boot log: %q", full)
		}
		time.Sleep(100 * time.Millisecond)
		full, _ = servers.ShowConsoleOutput(ctx, demo, srv.ID, servers.ShowConsoleOutputOpts{}).Extract()
	}
	out, err := servers.ShowConsoleOutput(ctx, demo, srv.ID, servers.ShowConsoleOutputOpts{Length: 3}).Extract()
	if err != nil {
		t.Fatalf("console output: %v", err)
	}
	if n := len(strings.Split(out, "\n")); n != 3 {
		t.Errorf("console output with length 3 has %d lines: %q", n, out)
	}

	// Stop → SHUTOFF with the container stopped.
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	off := waitStatus(t, demo, srv.ID, "SHUTOFF", 60*time.Second)
	if off.PowerState != servers.SHUTDOWN {
		t.Errorf("power state after stop %v, want SHUTDOWN", off.PowerState)
	}
	if _, running, _ := c.containerOf(t, srv.ID); running {
		t.Error("container still running after SHUTOFF")
	}
	// Stopping a stopped server is a conflict.
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); !gophercloud.ResponseCodeIs(err, 409) {
		t.Errorf("stop of SHUTOFF server: got %v, want 409", err)
	}

	if err := servers.Start(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)
	if _, running, _ := c.containerOf(t, srv.ID); !running {
		t.Error("container not running after start")
	}

	if err := servers.Reboot(ctx, demo, srv.ID, servers.RebootOpts{Type: servers.HardReboot}).ExtractErr(); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)

	if err := servers.Pause(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("pause: %v", err)
	}
	waitStatus(t, demo, srv.ID, "PAUSED", 60*time.Second)
	if err := servers.Unpause(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("unpause: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)

	// Instance actions recorded, one per API call.
	pages, err := instanceactions.List(demo, srv.ID, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acts, err := instanceactions.ExtractInstanceActions(pages)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range acts {
		names = append(names, a.Action)
	}
	if strings.Join(names, ",") != "unpause,pause,reboot,start,stop,create" {
		t.Errorf("instance actions = %v", names)
	}

	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	waitGone(t, demo, srv.ID, 60*time.Second)
	if cid, _, _ := c.containerOf(t, srv.ID); cid != "" {
		t.Errorf("container %s left after delete", cid)
	}
	if v, h := hostUsage(t, admin, c.host); v != vcpus0 || h != ram0 {
		t.Errorf("host usage after delete = %d/%d, want %d/%d", v, h, vcpus0, ram0)
	}
}
