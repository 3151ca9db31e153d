package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The volume-backed proofs of issue 17 on two simulated compute hosts,
// the user's way (the openstack CLI): a server booted from a new volume
// (--boot-from-volume) with data in its root is
// cold-migrated to the other host and keeps the data (sha256) and its
// address; a revert returns it to the source's untouched copy of the
// boot volume, a confirmed migration leaves the volume on the new host
// with the old copy and the transfer tags gone; a resize to a flavor
// with no root disk is taken (the flavor's disk means nothing to a
// volume-backed server, as in Nova); its snapshot (server image create)
// is an image of size 0 mapping a snapshot of the boot volume, which
// boots a new server with the data; a rescue (2.87) shows the boot
// volume at /mnt; the delete leaves the volume.
func TestVolumeBackedServerTwoHosts(t *testing.T) {
	t.Parallel()
	c, reg := migrationCloud(t)
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "vb-net", 331, "10.33.1.0/24", true)
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	val := func(args ...string) string { return strings.TrimSpace(osc.run(args...)) }

	id := val("server", "create", "--flavor", "m1.small", "--image", img, "--boot-from-volume", "1",
		"--nic", "net-id="+netID, "--availability-zone", "nova:"+ha.name, "-f", "value", "-c", "id", "vb-1")
	s := activeServer(t, cc, nc, "vb-1", id, ha)
	volID := val("server", "volume", "list", id, "-f", "value", "-c", "Volume ID")
	if volID == "" || strings.Contains(volID, "\n") {
		t.Fatalf("boot volume of the server: %q, want one", volID)
	}
	imgOn := func(h *computeHost) string { return filepath.Join(c.dir, "volumes", h.name, volID+".img") }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if !exists(imgOn(ha)) {
		t.Fatalf("the boot volume's image is not on %s", ha.name)
	}
	sum := writeData(t, s, "/root/data", 20)

	// A migration with nowhere to go (the only other host disabled) is
	// told apart from a slow one at once: no valid host, the migration
	// in error, the server ACTIVE on ha again.
	disableHost(t, c, hb)
	if code, body := rawV(t, cc, "2.1", "POST", "servers/"+id+"/action", `{"migrate":null}`); code != 202 {
		t.Fatalf("migrate with no other host: %d %v", code, body)
	}
	srv, why := resizeOutcome(t, cc, id, 5*time.Minute)
	if !strings.Contains(why, "it is ACTIVE") || !strings.Contains(why, ": error") {
		t.Fatalf("migration with no valid host: %q, want its failure (ACTIVE, migration error)", why)
	}
	// The failed event is recorded just after the rollback.
	eventually(t, time.Minute, "the failed migration's event says why", func() bool {
		return strings.Contains(moveFailure(t, cc, srv), "No valid host")
	})
	enableHost(t, c, hb)

	// Migrate: the boot volume goes along.
	val("server", "migrate", "--wait", id)
	waitVerifyResize(t, cc, id, 5*time.Minute)
	if h := serverHost(t, cc, id); h != hb.name {
		t.Fatalf("after migrate the server is on %q, want %s", h, hb.name)
	}
	m := s.moved(hb)
	if got := sha256Of(t, m, "/root/data"); got != sum {
		t.Fatalf("root data on the migration's target: sha256 %s, want %s", got, sum)
	}
	if addrs, _ := m.eth0(t); !slices.Contains(addrs, s.ip+"/24") {
		t.Errorf("eth0 after migration: %v, want %s/24", addrs, s.ip)
	}
	if out, err := m.exec("sh", "-c", "echo target > /root/written-on-target && sync"); err != nil {
		t.Fatalf("write on the target: %v %s", err, out)
	}
	// Revert: back on ha with ha's copy as it was; hb's copy goes.
	val("server", "resize", "revert", id)
	waitStatus(t, cc, id, "ACTIVE", 3*time.Minute)
	if h := serverHost(t, cc, id); h != ha.name {
		t.Fatalf("after revert the server is on %q, want %s", h, ha.name)
	}
	if got := sha256Of(t, s, "/root/data"); got != sum {
		t.Fatalf("root data after revert: sha256 %s, want %s", got, sum)
	}
	if out, _ := s.exec("sh", "-c", "test -e /root/written-on-target && echo present"); out == "present" {
		t.Errorf("a file written on the reverted target is in the source's boot volume")
	}
	eventually(t, time.Minute, "the reverted target's copy deleted", func() bool { return !exists(imgOn(hb)) })

	// Migrate and confirm: the volume is hb's, ha's copy goes.
	val("server", "migrate", "--wait", id)
	waitVerifyResize(t, cc, id, 5*time.Minute)
	val("server", "resize", "confirm", id)
	waitStatus(t, cc, id, "ACTIVE", time.Minute)
	if got := sha256Of(t, m, "/root/data"); got != sum {
		t.Fatalf("root data after the confirmed migration: sha256 %s, want %s", got, sum)
	}
	if addrs, _ := m.eth0(t); !slices.Contains(addrs, s.ip+"/24") {
		t.Errorf("eth0 after the confirmed migration: %v, want %s/24", addrs, s.ip)
	}
	if host := val("volume", "show", volID, "-f", "value", "-c", "os-vol-host-attr:host"); !strings.HasPrefix(host, hb.name+"@") {
		t.Errorf("boot volume host after the confirm %q, want %s@...", host, hb.name)
	}
	eventually(t, time.Minute, "the confirmed source's copy deleted", func() bool { return !exists(imgOn(ha)) && exists(imgOn(hb)) })
	eventually(t, time.Minute, "the volume's transfer tags deleted", func() bool {
		return len(reg.tags(t, "capsule/volumes/"+volID)) == 0
	})

	// Its snapshot (createImage) snapshots the boot volume, on hb now,
	// into an image of size 0 mapping it; that image boots a new server
	// (from a new volume made from the snapshot, on hb) with the data.
	snapImg := val("server", "image", "create", "--name", "vb-snap", "--wait", "-f", "value", "-c", "id", id)
	if p := val("image", "show", snapImg, "-f", "json", "-c", "properties", "-c", "size", "-c", "status"); !strings.Contains(p, `"bdm_v2": "True"`) ||
		!strings.Contains(p, "snapshot_id") || !strings.Contains(p, `"size": 0`) || !strings.Contains(p, `"status": "active"`) {
		t.Errorf("the snapshot image of a volume-backed server: %s", p)
	}
	eventually(t, 3*time.Minute, "the boot volume's snapshot available", func() bool {
		return val("volume", "snapshot", "list", "--volume", volID, "-f", "value", "-c", "Status") == "available"
	})
	id2 := val("server", "create", "--flavor", "m1.tiny", "--image", "vb-snap", "--nic", "net-id="+netID, "-f", "value", "-c", "id", "vb-2")
	s2 := activeServer(t, cc, nc, "vb-2", id2, hb)
	if got := sha256Of(t, s2, "/root/data"); got != sum {
		t.Fatalf("root data of the server booted from the snapshot image: sha256 %s, want %s", got, sum)
	}
	if img := val("server", "show", id2, "-f", "value", "-c", "image"); !strings.Contains(img, "booted from volume") && img != "" {
		t.Errorf("the server booted from the snapshot image shows image %q, want none (volume-backed)", img)
	}
	vol2 := val("server", "volume", "list", id2, "-f", "value", "-c", "Volume ID")
	val("server", "delete", "--wait", id2)
	eventually(t, 2*time.Minute, "the new server's boot volume available (its mapping kept the original's delete_on_termination, false)", func() bool {
		return val("volume", "show", vol2, "-f", "value", "-c", "status") == "available"
	})
	val("volume", "delete", vol2)

	// A flavor without a root disk fits a volume-backed server (Nova
	// ignores root_gb for it).
	val("flavor", "create", "--ram", "256", "--disk", "0", "--vcpus", "1", "vb.nodisk")
	val("server", "resize", "--flavor", "vb.nodisk", "--wait", id)
	waitVerifyResize(t, cc, id, 5*time.Minute)
	val("server", "resize", "confirm", id)
	waitStatus(t, cc, id, "ACTIVE", 2*time.Minute)
	if f := val("server", "show", id, "-f", "value", "-c", "flavor"); !strings.Contains(f, "vb.nodisk") {
		t.Errorf("flavor after the resize: %s", f)
	}
	if h := serverHost(t, cc, id); h == ha.name {
		m = s
	} else if h != hb.name {
		t.Fatalf("after the resize the server is on %q", h)
	}
	if got := sha256Of(t, m, "/root/data"); got != sum {
		t.Fatalf("root data after the resize: sha256 %s, want %s", got, sum)
	}

	// Rescue (Nova's rule: from 2.87; 400 below): the rescue system sees
	// the boot volume at /mnt, and what it writes there the server has
	// after the unrescue.
	if out, err := osc.try("server", "rescue", id); err == nil || !strings.Contains(out, "HTTP 400") {
		t.Errorf("rescue of a volume-backed server below 2.87: %v %s, want a 400", err, out)
	}
	val("--os-compute-api-version", "2.87", "server", "rescue", id)
	waitStatus(t, cc, id, "RESCUE", 2*time.Minute)
	rexec := func(args ...string) (string, error) {
		return m.host.docker(append([]string{"exec", "capsule-" + id + "-rescue"}, args...)...)
	}
	if out, err := rexec("sha256sum", "/mnt/root/data"); err != nil || !strings.HasPrefix(strings.TrimSpace(out), sum) {
		t.Fatalf("the boot volume's data from the rescue system: %q %v, want %s", out, err, sum)
	}
	if out, err := rexec("sh", "-c", "echo rescued > /mnt/root/rescued && sync"); err != nil {
		t.Fatalf("write from the rescue system: %v %s", err, out)
	}
	val("server", "unrescue", id)
	waitStatus(t, cc, id, "ACTIVE", 2*time.Minute)
	if out, err := m.exec("cat", "/root/rescued"); err != nil || strings.TrimSpace(out) != "rescued" {
		t.Errorf("the rescue system's write after the unrescue: %q %v", out, err)
	}
	if got := sha256Of(t, m, "/root/data"); got != sum {
		t.Fatalf("root data after the unrescue: sha256 %s, want %s", got, sum)
	}

	// The delete leaves the boot volume (--boot-from-volume: not
	// delete_on_termination); deleting it leaves no copy anywhere.
	val("server", "delete", "--wait", id)
	eventually(t, 2*time.Minute, "the boot volume available after its server's delete", func() bool {
		return val("volume", "show", volID, "-f", "value", "-c", "status") == "available"
	})
	val("volume", "snapshot", "delete", val("volume", "snapshot", "list", "--volume", volID, "-f", "value", "-c", "ID"))
	eventually(t, 2*time.Minute, "the snapshot deleted", func() bool {
		return val("volume", "snapshot", "list", "--volume", volID, "-f", "value", "-c", "ID") == ""
	})
	val("volume", "delete", volID)
	eventually(t, 2*time.Minute, "the boot volume deleted", func() bool {
		_, err := osc.try("volume", "show", volID)
		return err != nil && !exists(imgOn(ha)) && !exists(imgOn(hb))
	})
}

// Ephemeral disks (issue 17), the user's way: a flavor with a 2 GB
// ephemeral size, a server with two 1 GB ephemeral disks
// (--block-device source_type=blank,destination_type=local) sees two
// ext4 mounts of that size at /mnt/ephemeral0 and /mnt/ephemeral1
// (writing past one gives ENOSPC), invisible to the volume API; they
// follow a cold migration with their data; a swap disk and disks larger
// than the flavor allows are refused (400); the delete takes them.
func TestEphemeralDisksTwoHosts(t *testing.T) {
	t.Parallel()
	c, reg := migrationCloud(t)
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "eph-net", 332, "10.33.2.0/24", true)
	val := func(args ...string) string { return strings.TrimSpace(osc.run(args...)) }
	val("flavor", "create", "--ram", "128", "--disk", "1", "--ephemeral", "2", "--vcpus", "1", "eph.2")
	blank := "source_type=blank,destination_type=local,volume_size=1"

	for _, bad := range [][]string{
		{"--swap", "512"},
		{"--block-device", "source_type=blank,destination_type=local,volume_size=3"},
		{"--block-device", blank, "--block-device", blank, "--block-device", blank},
	} {
		args := append([]string{"server", "create", "--flavor", "eph.2", "--image", "busybox", "--nic", "net-id=" + netID}, bad...)
		out, err := osc.try(append(args, "eph-bad")...)
		if err == nil || !strings.Contains(out, "HTTP 400") {
			t.Errorf("server create %v: %v %s, want a 400", bad, err, out)
		}
		if bad[0] == "--swap" && !strings.Contains(out, "Swap disks") {
			t.Errorf("the swap refusal does not say why: %s", out)
		}
	}

	id := val("server", "create", "--flavor", "eph.2", "--image", "busybox", "--block-device", blank,
		"--block-device", blank+",guest_format=ext4", "--nic", "net-id="+netID, "--availability-zone", "nova:"+ha.name,
		"-f", "value", "-c", "id", "eph-1")
	s := activeServer(t, cc, nc, "eph-1", id, ha)
	imgOn := func(h *computeHost, i int) string {
		return filepath.Join(c.dir, "volumes", h.name, id+"-eph"+strconv.Itoa(i)+".img")
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	// Two ext4 mounts of 1 GiB (less the filesystem's own blocks).
	var df string
	eventually(t, time.Minute, "two ephemeral mounts", func() bool {
		df, _ = s.exec("sh", "-c", "df -k /mnt/ephemeral0 /mnt/ephemeral1 | tail -n +2")
		return len(strings.Split(strings.TrimSpace(df), "\n")) == 2 && strings.Contains(df, "/mnt/ephemeral1")
	})
	for _, line := range strings.Split(df, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("df: %q", df)
		}
		kb, _ := strconv.Atoi(f[1])
		if kb < 900_000 || kb > 1<<20 {
			t.Errorf("ephemeral disk %s is %d KiB, want about 1 GiB", f[5], kb)
		}
	}
	if out, _ := s.exec("sh", "-c", "grep ' /mnt/ephemeral' /proc/mounts | awk '{print $3}' | sort -u"); out != "ext4" {
		t.Errorf("ephemeral filesystems: %q, want ext4", out)
	}
	sum := writeData(t, s, "/mnt/ephemeral0/data", 20)
	out, err := s.exec("sh", "-c", "dd if=/dev/zero of=/mnt/ephemeral1/fill bs=1M count=1100 2>&1; sync")
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("writing past the ephemeral disk's size: %v %s, want ENOSPC", err, out)
	}
	if out, err := s.exec("rm", "-f", "/mnt/ephemeral1/fill"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if vols := val("volume", "list", "--all-projects", "-f", "value", "-c", "ID"); strings.Contains(vols, id) {
		t.Errorf("the volume API lists the server's ephemeral disks: %s", vols)
	}
	if !exists(imgOn(ha, 0)) || !exists(imgOn(ha, 1)) {
		t.Fatalf("the ephemeral disks are not on %s", ha.name)
	}

	// They follow a cold migration with their data; the confirm drops
	// the source's copies and the transfer tags.
	val("server", "migrate", "--wait", id)
	waitVerifyResize(t, cc, id, 5*time.Minute)
	val("server", "resize", "confirm", id)
	waitStatus(t, cc, id, "ACTIVE", 2*time.Minute)
	if h := serverHost(t, cc, id); h != hb.name {
		t.Fatalf("after the migration the server is on %q, want %s", h, hb.name)
	}
	m := s.moved(hb)
	eventually(t, time.Minute, "the ephemeral disks mounted on the target", func() bool {
		out, _ := m.exec("sh", "-c", "grep -c ' /mnt/ephemeral' /proc/mounts")
		return out == "2"
	})
	if got := sha256Of(t, m, "/mnt/ephemeral0/data"); got != sum {
		t.Fatalf("ephemeral data after the migration: sha256 %s, want %s", got, sum)
	}
	eventually(t, time.Minute, "the source's copies and the transfer tags deleted", func() bool {
		return !exists(imgOn(ha, 0)) && !exists(imgOn(ha, 1)) && exists(imgOn(hb, 0)) && exists(imgOn(hb, 1)) &&
			len(reg.tags(t, "capsule/volumes/"+id+"-eph0")) == 0
	})

	// A shelve offload drops them, as Nova loses ephemeral disks then;
	// the unshelve's host makes them anew, blank.
	// (shelved_offload_time is 0 by default, as Nova's: offloaded at once.)
	val("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 3*time.Minute)
	eventually(t, time.Minute, "the ephemeral disks deleted by the offload", func() bool {
		return !exists(imgOn(hb, 0)) && !exists(imgOn(hb, 1))
	})
	val("server", "unshelve", id)
	waitStatus(t, cc, id, "ACTIVE", 3*time.Minute)
	here := hb
	if serverHost(t, cc, id) == ha.name {
		here = ha
	}
	u := s.moved(here)
	eventually(t, time.Minute, "the ephemeral disks mounted after the unshelve", func() bool {
		out, _ := u.exec("sh", "-c", "grep -c ' /mnt/ephemeral' /proc/mounts")
		return out == "2"
	})
	if out, _ := u.exec("ls", "/mnt/ephemeral0"); strings.Contains(out, "data") {
		t.Errorf("an ephemeral disk kept its data through a shelve offload: %s", out)
	}

	// The delete takes them.
	val("server", "delete", "--wait", id)
	eventually(t, time.Minute, "the ephemeral disks deleted with their server", func() bool {
		return !exists(imgOn(here, 0)) && !exists(imgOn(here, 1))
	})
}
