package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// wantQuota checks the CPU quota the kernel holds for pid's cgroup, in µs
// per 100 ms period (drivers/docker's rate tests measure what a quota
// gives a burner).
func wantQuota(t *testing.T, what string, pid int, want int64) {
	t.Helper()
	if q := cgroupLimits(t, pid).CPUQuotaUS; q != want {
		t.Errorf("%s: cpu quota = %d µs, want %d", what, q, want)
	}
}

// TestLiveResize: a CPU-burning server with a 0.5-CPU quota is resized
// live to a 1-CPU flavor (same container, same PID 1: no restart), gets
// a one-CPU quota, is reverted to half a CPU; the host's usage follows; a
// resize to the same flavor and a stranger's resize are refused; then
// the openstack CLI resizes, confirms and reverts. It checks the quotas,
// not the CPU a burner then gets (TestRateLiveResizeCPU in drivers/docker
// measures that), so it runs side by side with the others.
func TestLiveResize(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	mkFlavor := func(name string, ram int, specs map[string]string) string {
		t.Helper()
		fl, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: name, RAM: ram, VCPUs: 1, Disk: gophercloud.IntToPointer(1)}).Extract()
		if err != nil {
			t.Fatalf("create flavor %s: %v", name, err)
		}
		if len(specs) > 0 {
			if _, err := flavors.CreateExtraSpecs(ctx, admin, fl.ID, flavors.ExtraSpecsOpts(specs)).Extract(); err != nil {
				t.Fatalf("extra specs of %s: %v", name, err)
			}
		}
		return fl.ID
	}
	half := mkFlavor("half-cpu", 128, map[string]string{"quota:cpu_quota": "50000"})
	full := mkFlavor("full-cpu", 256, nil)

	vcpus0, ram0 := hostUsage(t, admin, c.host)
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "burner", ImageRef: img, FlavorRef: half}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)
	cid, running, pid := c.containerOf(t, srv.ID)
	if !running {
		t.Fatal("server container not running")
	}
	if out, err := c.docker("exec", "-d", cid, "sh", "-c", "while :; do :; done"); err != nil {
		t.Fatalf("start the burner: %v %s", err, out)
	}
	if v, r := hostUsage(t, admin, c.host); v != vcpus0+1 || r != ram0+128 {
		t.Errorf("host usage after boot = %d vCPU/%d MB, want %d/%d", v, r, vcpus0+1, ram0+128)
	}
	wantQuota(t, "0.5-CPU flavor", pid, 50000)

	// Refusals first: they must change nothing.
	st, body := raw(t, demo, "POST", "servers/"+srv.ID+"/action", fmt.Sprintf(`{"resize": {"flavorRef": %q}}`, half))
	novaFault(t, "resize to the same flavor", st, body, 400, "badRequest")
	st, body = raw(t, demo, "POST", "servers/"+srv.ID+"/action", `{"resize": {"flavorRef": "no-such-flavor"}}`)
	novaFault(t, "resize to an unknown flavor", st, body, 400, "badRequest")
	other, err := servers.Create(ctx, admin, servers.CreateOpts{Name: "admins", ImageRef: img, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, admin, other.ID, "ACTIVE", 90*time.Second)
	st, body = raw(t, demo, "POST", "servers/"+other.ID+"/action", fmt.Sprintf(`{"resize": {"flavorRef": %q}}`, full))
	novaFault(t, "member resizes another project's server", st, body, 404, "itemNotFound")
	if err := servers.Delete(ctx, admin, other.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, admin, other.ID, 60*time.Second)

	// Live resize to one full CPU.
	if err := servers.Resize(ctx, demo, srv.ID, servers.ResizeOpts{FlavorRef: full}).ExtractErr(); err != nil {
		t.Fatalf("resize: %v", err)
	}
	s := waitStatus(t, demo, srv.ID, "VERIFY_RESIZE", 60*time.Second)
	if s.Flavor["original_name"] != "full-cpu" && s.Flavor["id"] != full {
		t.Errorf("flavor after resize = %v", s.Flavor)
	}
	cid2, running, pid2 := c.containerOf(t, srv.ID)
	if cid2 != cid || pid2 != pid || !running {
		t.Fatalf("resize restarted the server: container %s pid %d -> %s pid %d (running %v)", cid, pid, cid2, pid2, running)
	}
	if v, r := hostUsage(t, admin, c.host); v != vcpus0+1 || r != ram0+256 {
		t.Errorf("host usage after resize = %d vCPU/%d MB, want %d/%d", v, r, vcpus0+1, ram0+256)
	}
	wantQuota(t, "after live resize to 1 CPU", pid, 100000)

	// Revert: half a CPU again, same processes, ACTIVE.
	if err := servers.RevertResize(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("revert: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)
	if _, _, p := c.containerOf(t, srv.ID); p != pid {
		t.Fatalf("revert restarted the server: pid %d -> %d", pid, p)
	}
	if v, r := hostUsage(t, admin, c.host); v != vcpus0+1 || r != ram0+128 {
		t.Errorf("host usage after revert = %d vCPU/%d MB, want %d/%d", v, r, vcpus0+1, ram0+128)
	}
	wantQuota(t, "after revert", pid, 50000)

	// Confirm path: resize, confirm, the full CPU stays.
	if err := servers.Resize(ctx, demo, srv.ID, servers.ResizeOpts{FlavorRef: full}).ExtractErr(); err != nil {
		t.Fatalf("second resize: %v", err)
	}
	waitStatus(t, demo, srv.ID, "VERIFY_RESIZE", 60*time.Second)
	if err := servers.ConfirmResize(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 30*time.Second)
	// Confirm changes no limit: the kernel's quota is still one CPU.
	wantQuota(t, "after confirm", pid, 100000)
	if v, r := hostUsage(t, admin, c.host); v != vcpus0+1 || r != ram0+256 {
		t.Errorf("host usage after confirm = %d vCPU/%d MB, want %d/%d", v, r, vcpus0+1, ram0+256)
	}

	// The record: migrations (admin) and the server's actions.
	st, body = raw(t, admin, "GET", "os-migrations?instance_uuid="+srv.ID, "")
	if st != 200 {
		t.Fatalf("os-migrations = %d %v", st, body)
	}
	statuses := map[string]int{}
	for _, m := range body["migrations"].([]any) {
		statuses[m.(map[string]any)["status"].(string)]++
	}
	if statuses["reverted"] != 1 || statuses["confirmed"] != 1 {
		t.Errorf("migration statuses %v, want one reverted and one confirmed", statuses)
	}
	st, body = raw(t, demo, "GET", "servers/"+srv.ID+"/os-instance-actions", "")
	if st != 200 {
		t.Fatalf("os-instance-actions = %d %v", st, body)
	}
	var acts []string
	for _, a := range body["instanceActions"].([]any) {
		acts = append(acts, a.(map[string]any)["action"].(string))
	}
	if got := strings.Join(acts, ","); got != "confirmResize,resize,revertResize,resize,create" {
		t.Errorf("instance actions = %s", got)
	}

	// The openstack CLI: resize --wait, confirm; resize --wait, revert.
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack CLI (python3-openstackclient) is required: %v", err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("openstack", args...)
		cmd.Env = c.env("demo", c.demoPass, "demo")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	show := func() map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal([]byte(run("server", "show", "burner", "-f", "json")), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	run("server", "resize", "--flavor", "half-cpu", "--wait", "burner")
	if m := show(); m["status"] != "VERIFY_RESIZE" {
		t.Errorf("status after CLI resize = %v", m["status"])
	}
	run("server", "resize", "confirm", "burner")
	waitStatus(t, demo, srv.ID, "ACTIVE", 30*time.Second)
	wantQuota(t, "after CLI resize to 0.5 CPU", pid, 50000)
	run("server", "resize", "--flavor", "full-cpu", "--wait", "burner")
	run("server", "resize", "revert", "burner")
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)
	if m := show(); !strings.Contains(fmt.Sprint(m["flavor"]), "half-cpu") {
		t.Errorf("flavor after CLI revert = %v", m["flavor"])
	}
	if _, _, p := c.containerOf(t, srv.ID); p != pid {
		t.Errorf("the CLI resizes restarted the server: pid %d -> %d", pid, p)
	}

	// Flavors with Nova's extra specs from the CLI: an admin sets them, a
	// malformed one and a member are refused.
	asAdmin := func(args ...string) (string, error) {
		cmd := exec.Command("openstack", args...)
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asAdmin("flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "0",
		"--property", "quota:cpu_quota=25000", "--property", "quota:cpu_period=100000", "cli-quarter"); err != nil {
		t.Fatalf("openstack flavor create --property: %v\n%s", err, out)
	}
	out, err := asAdmin("flavor", "show", "cli-quarter", "-f", "json")
	if err != nil || !strings.Contains(out, "quota:cpu_quota") || !strings.Contains(out, "25000") {
		t.Errorf("flavor show = %v %s", err, out)
	}
	var quarter struct{ ID string }
	if err := json.Unmarshal([]byte(out), &quarter); err != nil || quarter.ID == "" {
		t.Fatalf("flavor show -f json: %v %s", err, out)
	}
	// Below microversion 2.86 (the CLI's flavor calls) Nova stores any
	// extra-spec value; Capsule refuses a server of that flavor up front
	// instead of failing it on the host.
	if out, err := asAdmin("flavor", "set", "--property", "quota:cpu_quota=lots", "cli-quarter"); err != nil {
		t.Errorf("openstack flavor set below 2.86: %v\n%s", err, out)
	}
	bad, err := flavors.ListExtraSpecs(ctx, admin, quarter.ID).Extract()
	if err != nil || bad["quota:cpu_quota"] != "lots" {
		t.Errorf("extra specs after set = %v %v", bad, err)
	}
	_, err = servers.Create(ctx, demo, servers.CreateOpts{Name: "malformed", ImageRef: img, FlavorRef: quarter.ID}, nil).Extract()
	if !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "quota:cpu_quota") {
		t.Errorf("a server of a flavor with a malformed quota:cpu_quota: %v, want 400 naming the spec", err)
	}
	cmd := exec.Command("openstack", "flavor", "set", "--property", "quota:cpu_shares=2048", "cli-quarter")
	cmd.Env = c.env("demo", c.demoPass, "demo")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("a member set an extra spec: %s", out)
	}

	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, demo, srv.ID, 60*time.Second)
	if v, r := hostUsage(t, admin, c.host); v != vcpus0 || r != ram0 {
		t.Errorf("host usage after delete = %d vCPU/%d MB, want %d/%d", v, r, vcpus0, ram0)
	}
}

// TestResizeDiskThrottles (issue 20): a server's disk IO throttles change
// live on resize — the kernel's throttle on its cgroup goes from 10 to
// 20 MB/s and back on revert, same container, same PID 1 (the rate the
// server then gets is measured by TestRateLiveResizeDisk in
// drivers/docker). A stopped server resized to new throttles (no cgroup
// to write then) has them when it starts.
func TestResizeDiskThrottles(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	mkFlavor := func(name, rate string, ramMB int) string {
		t.Helper()
		fl, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: name, RAM: ramMB, VCPUs: 1, Disk: gophercloud.IntToPointer(1)}).Extract()
		if err != nil {
			t.Fatalf("create flavor %s: %v", name, err)
		}
		if _, err := flavors.CreateExtraSpecs(ctx, admin, fl.ID, flavors.ExtraSpecsOpts{"quota:disk_write_bytes_sec": rate}).Extract(); err != nil {
			t.Fatalf("extra specs of %s: %v", name, err)
		}
		return fl.ID
	}
	io10, io20 := mkFlavor("io-10", "10000000", 256), mkFlavor("io-20", "20000000", 256)
	writeBPS := func(what string, pid int, want uint64) {
		t.Helper()
		d := cgroupLimits(t, pid).Disk
		if len(d) != 1 || d[0].WriteBPS != want {
			t.Errorf("%s: kernel disk throttles %+v, want write %d B/s on one device", what, d, want)
		}
	}

	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "writer", ImageRef: img, FlavorRef: io10}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)
	cid, _, pid := c.containerOf(t, srv.ID)
	writeBPS("at boot", pid, 10_000_000)

	if err := servers.Resize(ctx, demo, srv.ID, servers.ResizeOpts{FlavorRef: io20}).ExtractErr(); err != nil {
		t.Fatalf("resize: %v", err)
	}
	waitStatus(t, demo, srv.ID, "VERIFY_RESIZE", 60*time.Second)
	if cid2, running, pid2 := c.containerOf(t, srv.ID); cid2 != cid || pid2 != pid || !running {
		t.Fatalf("resize restarted the server: container %s pid %d -> %s pid %d (running %v)", cid, pid, cid2, pid2, running)
	}
	writeBPS("after the live resize", pid, 20_000_000)
	if err := servers.RevertResize(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("revert: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)
	if _, _, p := c.containerOf(t, srv.ID); p != pid {
		t.Fatalf("revert restarted the server: pid %d -> %d", pid, p)
	}
	writeBPS("after the revert", pid, 10_000_000)

	// Stopped: the new throttles wait for the next start.
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "SHUTOFF", 60*time.Second)
	if err := servers.Resize(ctx, demo, srv.ID, servers.ResizeOpts{FlavorRef: io20}).ExtractErr(); err != nil {
		t.Fatalf("resize of the stopped server: %v", err)
	}
	waitStatus(t, demo, srv.ID, "VERIFY_RESIZE", 60*time.Second)
	if err := servers.ConfirmResize(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	waitStatus(t, demo, srv.ID, "SHUTOFF", 60*time.Second)
	if err := servers.Start(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)
	_, _, pid = c.containerOf(t, srv.ID)
	writeBPS("resized while stopped, then started", pid, 20_000_000)

	// A resize the running server cannot take (less memory than it
	// uses) is a cold resize: TestColdResize. A failure that says why:
	// TestColdResize's induced one, and the agent's and conductor's
	// tests of a refused resize.

	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, demo, srv.ID, 60*time.Second)
}
