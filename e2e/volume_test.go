package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
// deleted server. Then the server with the volume is cold-migrated back:
// the volume goes along (same checksum on the new host), a revert returns
// to the source's untouched copy, a confirmed migration leaves the volume
// on the new host with the old copy and every transfer tag gone.
func TestVolumeLifecycleTwoHosts(t *testing.T) {
	t.Parallel()
	c, reg := migrationCloud(t)
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

	// A cold migration takes the volume along (hb -> ha): the copy on ha
	// is mounted in the moved server with the same data.
	imgOn := func(h *computeHost) string { return filepath.Join(c.dir, "volumes", h.name, volID+".img") }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	must("server", "migrate", "--wait", bID)
	waitStatus(t, cc, bID, "VERIFY_RESIZE", 5*time.Minute)
	if h := serverHost(t, cc, bID); h != ha.name {
		t.Fatalf("after migrate the server is on %q, want %s", h, ha.name)
	}
	bm := b.moved(ha)
	if got := sha256Of(t, bm, mnt+"/data"); got != sum {
		t.Fatalf("volume data on the migration's target: sha256 %s, want %s", got, sum)
	}
	if out, err := bm.exec("sh", "-c", "echo target > "+mnt+"/written-on-target && sync"); err != nil {
		t.Fatalf("write on the target: %v %s", err, out)
	}
	// Revert: back on hb with hb's copy as it was; ha's copy is gone.
	must("server", "resize", "revert", bID)
	waitStatus(t, cc, bID, "ACTIVE", 3*time.Minute)
	if h := serverHost(t, cc, bID); h != hb.name {
		t.Fatalf("after revert the server is on %q, want %s", h, hb.name)
	}
	eventually(t, time.Minute, "volume mounted again in the reverted server", func() bool {
		out, _ := b.exec("sh", "-c", "grep -c ' "+mnt+" ' /proc/mounts")
		return out == "1"
	})
	if got := sha256Of(t, b, mnt+"/data"); got != sum {
		t.Fatalf("volume data after revert: sha256 %s, want %s", got, sum)
	}
	if out, _ := b.exec("sh", "-c", "test -e "+mnt+"/written-on-target && echo present"); out == "present" {
		t.Errorf("a file written on the reverted target is in the source's copy")
	}
	eventually(t, time.Minute, "the reverted target's copy deleted", func() bool { return !exists(imgOn(ha)) })
	// Migrated and confirmed: the volume is ha's, hb's copy goes.
	must("server", "migrate", "--wait", bID)
	waitStatus(t, cc, bID, "VERIFY_RESIZE", 5*time.Minute)
	must("server", "resize", "confirm", bID)
	waitStatus(t, cc, bID, "ACTIVE", time.Minute)
	if got := sha256Of(t, bm, mnt+"/data"); got != sum {
		t.Fatalf("volume data after the confirmed migration: sha256 %s, want %s", got, sum)
	}
	if host := must("volume", "show", volID, "-f", "value", "-c", "os-vol-host-attr:host"); !strings.HasPrefix(host, ha.name+"@") {
		t.Errorf("volume host after the confirm %q, want %s@...", host, ha.name)
	}
	eventually(t, time.Minute, "the confirmed source's copy deleted", func() bool { return !exists(imgOn(hb)) && exists(imgOn(ha)) })
	eventually(t, time.Minute, "the volume's transfer tags deleted", func() bool {
		return len(reg.tags(t, "capsule/volumes/"+volID)) == 0
	})

	// Deleting the server keeps the volume.
	if err := servers.Delete(ctx, cc, bID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	volStatus(volID, "available", 3*time.Minute)

	must("volume", "delete", volID)
}
