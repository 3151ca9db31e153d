package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// TestShelveAttachVolumeShelved: a server shelved but not offloaded
// (shelved_offload_time -1: its stopped container stays on its host A)
// takes a volume with the openstack CLI at compute 2.20 (2.19 is Nova's
// 409); the volume (made from the image, on whichever host) is moved to
// A and survives A's agent restarting; the unshelve starts the server on
// A with the volume mounted at its path and its files. Shelved again,
// the volume is detached (available, mounted nowhere) and attached
// again while shelved; the admin's offload pushes it with the server and
// the unshelve onto B (A disabled) brings it up there with the data
// written on A. Detach and delete leave no file, tag or mount.
func TestShelveAttachVolumeShelved(t *testing.T) {
	t.Parallel()
	registry := testenv.Registry(t)
	c := startCloud(t, twoHosts, withQuota(20), func(t *testing.T, c *cloud) {
		c.extraConfig += "conductor:\n  periodic_interval: 2s\n  shelved_offload_time: -1s\n"
	})
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	val := func(args ...string) string { return strings.TrimSpace(osc.run(args...)) }
	v220 := func(args ...string) string {
		return val(append([]string{"--os-compute-api-version", "2.20"}, args...)...)
	}
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "shsv-net", 323, "10.32.3.0/24", true)
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	imgOn := func(h *computeHost, vol string) string { return filepath.Join(c.dir, "volumes", h.name, vol+".img") }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	volTags := func(vol string) []string {
		t.Helper()
		tags, err := (&capreg.Client{Address: registry}).Tags(context.Background(), "capsule/volumes/"+vol)
		if err != nil {
			t.Fatalf("list tags of volume %s: %v", vol, err)
		}
		return tags
	}
	// hostMounted: the agents mount a volume at <mount dir>/<id> in this
	// process's mount namespace.
	hostMounted := func(vol string) bool {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(b), "/"+vol+" ")
	}
	mountedIn := func(s *netServer) bool {
		out, _ := s.exec("sh", "-c", "grep -c ' /srv/data ' /proc/mounts")
		return out == "1"
	}

	id := c.bootOn(t, cc, "shsv", ha, netID, "")
	s := activeServer(t, cc, nc, "shsv", id, ha)
	vol := val("volume", "create", "--size", "1", "--image", img, "shsv-data", "-f", "value", "-c", "id")
	eventually(t, 2*time.Minute, "data volume available", func() bool { return showVolume(t, osc, vol).Status == "available" })
	val("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED", 4*time.Minute)
	if n := len(containersOn(t, ha, id)); n == 0 {
		t.Fatalf("the shelved server has no container left on %s", ha.name)
	}

	if out, err := osc.try("--os-compute-api-version", "2.19", "server", "add", "volume", "--device", "/srv/data", id, vol); err == nil {
		t.Fatalf("attach to a SHELVED server at 2.19 succeeded: %s", out)
	}
	v220("server", "add", "volume", "--device", "/srv/data", id, vol)
	eventually(t, 2*time.Minute, "the volume attached to the shelved server, on "+ha.name, func() bool {
		v := showVolume(t, osc, vol)
		return v.Status == "in-use" && len(v.Attachments) == 1 && v.Attachments[0].ServerID == id &&
			strings.HasPrefix(v.Host, ha.name+"@") && exists(imgOn(ha, vol)) && !exists(imgOn(hb, vol))
	})
	if st := waitStatus(t, cc, id, "SHELVED", time.Minute); st.Status != "SHELVED" {
		t.Fatalf("server after the attach: %s", st.Status)
	}

	// A's agent restarts: nothing changes, the unshelve there mounts it.
	agentA := c.proc(t, "agent-"+ha.name)
	agentA.stop()
	agentA.start(t)
	c.waitReady(t)
	val("server", "unshelve", id)
	waitStatus(t, cc, id, "ACTIVE", 4*time.Minute)
	if h := serverHost(t, cc, id); h != ha.name {
		t.Fatalf("unshelved on %q, want %s", h, ha.name)
	}
	eventually(t, time.Minute, "the volume mounted at /srv/data after the unshelve", func() bool { return mountedIn(s) })
	if out, err := s.exec("sh", "-c", "test -x /srv/data/bin/busybox && echo filled"); err != nil || out != "filled" {
		t.Errorf("the volume's files (made from the image) after the unshelve: %q %v", out, err)
	}
	sum := writeData(t, s, "/srv/data/written", 4)

	// Shelved again: detached and attached again while shelved.
	val("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED", 4*time.Minute)
	v220("server", "remove", "volume", id, vol)
	eventually(t, 2*time.Minute, "the volume detached from the shelved server", func() bool {
		v := showVolume(t, osc, vol)
		return v.Status == "available" && len(v.Attachments) == 0 && !hostMounted(vol)
	})
	v220("server", "add", "volume", "--device", "/srv/data", id, vol)
	eventually(t, 2*time.Minute, "the volume attached again", func() bool { return showVolume(t, osc, vol).Status == "in-use" })

	// Offloaded by the admin: the volume goes to the registry with it.
	if code, body := rawV(t, cc, "2.20", "POST", "servers/"+id+"/action", `{"shelveOffload":null}`); code != 202 {
		t.Fatalf("shelveOffload: %d %v", code, body)
	}
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 4*time.Minute)
	if exists(imgOn(ha, vol)) || !slices.Equal(volTags(vol), []string{"shelved"}) || hostMounted(vol) {
		t.Errorf("volume of the offloaded server: file on %s %v, tags %v, mounted %v; want only the registry's shelved tag",
			ha.name, exists(imgOn(ha, vol)), volTags(vol), hostMounted(vol))
	}
	disableHost(t, c, ha)
	val("server", "unshelve", id)
	waitStatus(t, cc, id, "ACTIVE", 4*time.Minute)
	if h := serverHost(t, cc, id); h != hb.name {
		t.Fatalf("unshelved on %q, want %s", h, hb.name)
	}
	m := s.moved(hb)
	eventually(t, time.Minute, "the volume mounted at /srv/data on "+hb.name, func() bool { return mountedIn(m) })
	if got := sha256Of(t, m, "/srv/data/written"); got != sum {
		t.Errorf("data written on %s after the unshelve onto %s: sha256 %s, want %s", ha.name, hb.name, got, sum)
	}
	eventually(t, time.Minute, "the volume's shelve tag deleted", func() bool { return len(volTags(vol)) == 0 })

	val("server", "remove", "volume", id, vol)
	eventually(t, 2*time.Minute, "data volume detached", func() bool { return showVolume(t, osc, vol).Status == "available" })
	if out, _ := m.exec("sh", "-c", "grep -c ' /srv/data ' /proc/mounts"); out != "0" {
		t.Errorf("/srv/data still mounted in the server after the detach: %q", out)
	}
	val("volume", "delete", vol)
	val("server", "delete", "--wait", id)
	eventually(t, 2*time.Minute, "the volume's files and mounts gone", func() bool {
		return !exists(imgOn(ha, vol)) && !exists(imgOn(hb, vol)) && !hostMounted(vol) && len(volTags(vol)) == 0
	})
	c.hostClean(t, cc, hb, m, false)
}
