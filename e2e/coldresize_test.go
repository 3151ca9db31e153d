package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestColdResize is issue 20's cold-resize proof, through the openstack
// CLI: a server holding more memory than the new flavor has cannot be
// resized live, so it is resized cold on its host — stopped, resized,
// started — and waits in VERIFY_RESIZE with its data, IP and MAC; revert
// gives the old flavor back, confirm keeps the new one. Then an induced
// agent-side failure (the server's container removed behind the cloud's
// back, then a hard reboot) says why in `openstack server show` (fault,
// the server in ERROR), `openstack server event show` (the admin's
// traceback), `capsule server show` and the portal's server page. The
// resizes and the failure are two servers of the one cloud, run side by
// side (subtests): each checks only its own server.
func TestColdResize(t *testing.T) {
	t.Parallel()
	c := startCloud(t, withBridge)
	h := c.hosts[0]
	adm := c.openstack(t, "admin", c.adminPass, "admin")
	vlan := 101 + rand.IntN(800)
	adm.run("network", "create", "--provider-network-type", "vlan", "--provider-physical-network", "physnet1",
		"--provider-segment", fmt.Sprint(vlan), "--share", "crnet")
	adm.run("subnet", "create", "--network", "crnet", "--subnet-range", "10.83.0.0/24", "crnet-sub")
	adm.run("flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "1", "cr.big")
	adm.run("flavor", "create", "--vcpus", "1", "--ram", "64", "--disk", "1", "cr.small")
	// boot creates server name as demo and returns demo's CLI, the
	// server and its status wait, all bound to subtest t.
	boot := func(t *testing.T, name, flavor string) (demo *openstackCLI, s *netServer, waitFor func(string) map[string]any) {
		t.Helper()
		demo = c.openstack(t, "demo", c.demoPass, "demo")
		demo.run("server", "create", "--image", "busybox", "--flavor", flavor, "--nic", "net-id=crnet", "--wait", name)
		show := func() map[string]any {
			t.Helper()
			var s map[string]any
			demo.json(&s, "server", "show", name)
			return s
		}
		waitFor = func(status string) map[string]any {
			t.Helper()
			var s map[string]any
			eventually(t, 2*time.Minute, name+" "+status, func() bool {
				s = show()
				return s["status"] == status
			})
			return s
		}
		return demo, &netServer{name: name, id: show()["id"].(string), host: h}, waitFor
	}
	sideBySide(t, map[string]func(*testing.T){
		"resize": func(t *testing.T) {
			demo, s, waitFor := boot(t, "crvm", "cr.big")
			coldResize(t, c, demo, s, waitFor)
		},
		"failure": func(t *testing.T) {
			demo, s, waitFor := boot(t, "crfail", "cr.small")
			inducedFailure(t, c, c.openstack(t, "admin", c.adminPass, "admin"), demo, s, waitFor)
		},
	})
}

// coldResize is TestColdResize's resizes of server s (flavor cr.big):
// cold to cr.small then revert, cold to cr.small then confirm.
func coldResize(t *testing.T, c *cloud, demo *openstackCLI, s *netServer, waitFor func(string) map[string]any) {
	h := s.host
	addrs, mac := s.eth0(t)
	if len(addrs) != 1 || mac == "" {
		t.Fatalf("eth0 of crvm: %v %s", addrs, mac)
	}
	if out, err := s.exec("sh", "-c", "echo kept > /root/before-resize"); err != nil {
		t.Fatalf("write a file: %v %s", err, out)
	}
	hold := func() {
		t.Helper()
		// 150 MiB of anonymous memory (a dd whose buffer waits on a
		// pipe): more than the small flavor's 64 MB.
		if out, err := h.docker("exec", "-d", s.workload(), "sh", "-c", "dd if=/dev/zero bs=150M count=1 | sleep 3600"); err != nil {
			t.Fatalf("docker exec: %v %s", err, out)
		}
		eventually(t, 30*time.Second, "crvm holds 150 MiB", func() bool {
			out, err := h.docker("stats", "--no-stream", "--format", "{{.MemUsage}}", s.workload())
			var used float64
			_, serr := fmt.Sscanf(out, "%fMiB", &used)
			return err == nil && serr == nil && strings.Contains(out, "MiB /") && used >= 150
		})
	}
	same := func(what string, wantMB int64) {
		t.Helper()
		if got, err := s.exec("cat", "/root/before-resize"); err != nil || strings.TrimSpace(got) != "kept" {
			t.Errorf("%s: the file written before is %q (%v)", what, got, err)
		}
		a, m := s.eth0(t)
		if !slices.Equal(a, addrs) || !strings.EqualFold(m, mac) {
			t.Errorf("%s: eth0 %v %s, want %v %s", what, a, m, addrs, mac)
		}
		if l := cgroupLimits(t, s.pid(t)); l.MemoryBytes != wantMB<<20 {
			t.Errorf("%s: memory limit %d, want %d MB", what, l.MemoryBytes, wantMB)
		}
	}
	flavorOf := func(v map[string]any) string { return fmt.Sprint(v["flavor"]) }

	// Cold resize, then revert.
	hold()
	pid := s.pid(t)
	demo.run("server", "resize", "--flavor", "cr.small", "--wait", s.name)
	if v := waitFor("VERIFY_RESIZE"); !strings.Contains(flavorOf(v), "cr.small") {
		t.Errorf("flavor in VERIFY_RESIZE: %v", v["flavor"])
	}
	if p := s.pid(t); p == pid {
		t.Errorf("the cold resize kept PID 1 %d: it did not restart the server", p)
	}
	same("after the cold resize", 64)
	demo.run("server", "resize", "revert", s.name)
	if v := waitFor("ACTIVE"); !strings.Contains(flavorOf(v), "cr.big") {
		t.Errorf("flavor after the revert: %v", v["flavor"])
	}
	same("after the revert", 256)

	// Cold resize, then confirm.
	hold()
	demo.run("server", "resize", "--flavor", "cr.small", "--wait", s.name)
	waitFor("VERIFY_RESIZE")
	demo.run("server", "resize", "confirm", s.name)
	if v := waitFor("ACTIVE"); !strings.Contains(flavorOf(v), "cr.small") || v["fault"] != nil {
		t.Errorf("after the confirm: flavor %v fault %v", v["flavor"], v["fault"])
	}
	same("after the confirm", 64)
	migs := migrations(t, c.computeClient(t, "admin", c.adminPass, "admin"), s.id)
	statuses := []string{}
	for _, m := range migs {
		statuses = append(statuses, fmt.Sprint(m["status"]))
	}
	slices.Sort(statuses)
	if !slices.Equal(statuses, []string{"confirmed", "reverted"}) {
		t.Errorf("migrations of crvm: %v, want one confirmed and one reverted", migs)
	}
}

// inducedFailure is TestColdResize's induced failure: server s's container
// is gone; a hard reboot fails at the agent, and every view says why.
func inducedFailure(t *testing.T, c *cloud, adm, demo *openstackCLI, s *netServer, waitFor func(string) map[string]any) {
	h := s.host
	const why = "the server's container is missing on its host"
	if out, err := h.docker("rm", "-f", s.workload()); err != nil {
		t.Fatalf("docker rm: %v %s", err, out)
	}
	demo.run("server", "reboot", "--hard", s.name)
	v := waitFor("ERROR")
	fault, _ := v["fault"].(map[string]any)
	if msg, _ := fault["message"].(string); !strings.Contains(msg, why) || fault["created"] == nil || fault["code"] != float64(500) {
		t.Errorf("openstack server show: fault %v, want code 500, created, and %q", v["fault"], why)
	}
	var acts []map[string]any
	adm.json(&acts, "server", "event", "list", s.id)
	if len(acts) == 0 || acts[0]["Action"] != "reboot" {
		t.Fatalf("openstack server event list: %v, want the failed reboot first", acts)
	}
	var act map[string]any
	adm.json(&act, "server", "event", "show", s.id, acts[0]["Request ID"].(string))
	if b, _ := json.Marshal(act["events"]); act["message"] != "Error" || !strings.Contains(string(b), "container is missing") {
		t.Errorf("openstack server event show (admin): message %v, events %s; want Error and why", act["message"], b)
	}

	cmd := exec.Command(buildCapsuleCLI(t), "-f", "json", "server", "show", s.id)
	cmd.Env = c.env("admin", c.adminPass, "admin")
	out, err := cmd.CombinedOutput()
	var rec map[string]any
	if err != nil || json.Unmarshal(out, &rec) != nil {
		t.Fatalf("capsule server show: %v %s", err, out)
	}
	if lf, _ := rec["last_failure"].(string); !strings.Contains(lf, why) {
		t.Errorf("capsule server show: last_failure %q, want %q", rec["last_failure"], why)
	}

	chromiumPath(t)
	b := newBrowser(t, c.portalURL(t))
	b.login("demo", c.demoPass, "demo")
	b.open("/servers/" + s.id)
	if got := b.text("dd.bad"); !strings.Contains(got, why) {
		t.Errorf("portal server page: fault %q, want %q", got, why)
	}

	demo.run("server", "delete", "--wait", s.name)
}
