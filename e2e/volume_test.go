package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// The volume proofs of issue 17 on two simulated compute hosts, with the
// openstack CLI: a volume attached live to a running server (same PID 1)
// takes 50 MiB, holds its size limit (ENOSPC past it), moves with a
// detach and an attach to a server of the other host (same checksum:
// the local volume's data moved through the registry), and outlives a
// deleted server.
func TestVolumeLifecycleTwoHosts(t *testing.T) {
	t.Parallel()
	c, _ := migrationCloud(t)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "vol-net", 312, "10.31.2.0/24", true)
	aID := c.bootOn(t, cc, "vol-a", ha, netID, "")
	bID := c.bootOn(t, cc, "vol-b", hb, netID, "")
	a := activeServer(t, cc, nc, "vol-a", aID, ha)
	b := activeServer(t, cc, nc, "vol-b", bID, hb)

	cli := func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command("openstack", args...)
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	volStatus := func(id, want string, timeout time.Duration) {
		t.Helper()
		var last string
		eventually(t, timeout, "volume "+id+" "+want, func() bool {
			last, _ = cli("volume", "show", id, "-f", "value", "-c", "status")
			if strings.HasPrefix(last, "error") {
				t.Fatalf("volume %s went to %s", id, last)
			}
			return last == want
		})
	}
	workloadPID := func(s *netServer) string {
		t.Helper()
		out, err := s.host.docker("inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}", s.workload())
		if err != nil {
			t.Fatalf("inspect %s: %v %s", s.name, err, out)
		}
		return out
	}

	volID := must("volume", "create", "--size", "1", "vol-e2e", "-f", "value", "-c", "id")
	t.Cleanup(func() { _, _ = cli("volume", "delete", "--force", volID) })
	volStatus(volID, "available", 2*time.Minute)
	mnt := "/mnt/" + volID

	// Live attach to a running server: same PID 1, same start.
	before := workloadPID(a)
	must("server", "add", "volume", aID, volID)
	volStatus(volID, "in-use", 3*time.Minute)
	if after := workloadPID(a); after != before {
		t.Fatalf("the server restarted for the attach: %s -> %s", before, after)
	}
	sum := writeData(t, a, mnt+"/data", 50)
	// The size limit holds: 1 GB, writing 1.2 GB more fails with ENOSPC.
	out, err := a.exec("sh", "-c", "dd if=/dev/zero of="+mnt+"/fill bs=1M count=1200 2>&1; sync")
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("writing past the volume's size: %v %s, want ENOSPC", err, out)
	}
	if out, err := a.exec("rm", "-f", mnt+"/fill"); err != nil {
		t.Fatalf("%v %s", err, out)
	}

	// Detach live (the server keeps running), attach to the other host's
	// server: same data.
	must("server", "remove", "volume", aID, volID)
	volStatus(volID, "available", 3*time.Minute)
	if out, _ := a.exec("sh", "-c", "grep -c ' "+mnt+" ' /proc/mounts"); out != "0" {
		t.Errorf("the volume is still mounted in the server after detach: %s", out)
	}
	if after := workloadPID(a); after != before {
		t.Fatalf("the server restarted for the detach: %s -> %s", before, after)
	}
	must("server", "add", "volume", bID, volID)
	volStatus(volID, "in-use", 5*time.Minute)
	if got := sha256Of(t, b, mnt+"/data"); got != sum {
		t.Fatalf("checksum on the other host's server %s, want %s", got, sum)
	}

	// Deleting the server keeps the volume.
	if err := servers.Delete(ctx, cc, bID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	volStatus(volID, "available", 3*time.Minute)

	must("volume", "delete", volID)
}
