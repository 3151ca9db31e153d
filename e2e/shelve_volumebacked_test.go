package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// disableHost disables host h's compute service (2.53), so the
// scheduler places nothing there.
func disableHost(t *testing.T, c *cloud, h *computeHost) {
	t.Helper()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	st, svc := rawV(t, cc, "2.53", "GET", "os-services?binary=nova-compute&host="+h.name, "")
	svcs, _ := svc["services"].([]any)
	if st != 200 || len(svcs) != 1 {
		t.Fatalf("os-services of %s: %d %v", h.name, st, svc)
	}
	svcID := fmt.Sprint(svcs[0].(map[string]any)["id"])
	if code, body := rawV(t, cc, "2.53", "PUT", "os-services/"+svcID, `{"status":"disabled","disabled_reason":"shelve test"}`); code != 200 {
		t.Fatalf("disable %s: %d %v", h.name, code, body)
	}
}

// enableHost enables host h's compute service again (2.53).
func enableHost(t *testing.T, c *cloud, h *computeHost) {
	t.Helper()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	st, svc := rawV(t, cc, "2.53", "GET", "os-services?binary=nova-compute&host="+h.name, "")
	svcs, _ := svc["services"].([]any)
	if st != 200 || len(svcs) != 1 {
		t.Fatalf("os-services of %s: %d %v", h.name, st, svc)
	}
	svcID := fmt.Sprint(svcs[0].(map[string]any)["id"])
	if code, body := rawV(t, cc, "2.53", "PUT", "os-services/"+svcID, `{"status":"enabled"}`); code != 200 {
		t.Fatalf("enable %s: %d %v", h.name, code, body)
	}
}

// volumeState is a volume as `openstack volume show -f json` shows it.
type volumeState struct {
	Status      string `json:"status"`
	Host        string `json:"os-vol-host-attr:host"`
	Attachments []struct {
		ServerID string `json:"server_id"`
		Device   string `json:"device"`
	} `json:"attachments"`
}

func showVolume(t *testing.T, osc *openstackCLI, id string) volumeState {
	t.Helper()
	var v volumeState
	out := osc.run("volume", "show", id, "-f", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("volume show %s: %v\n%s", id, err, out)
	}
	return v
}

// TestShelveVolumeBackedShared (issue 17): a server booted from a
// *shared* volume (volume.backend shared: the image lives on the export
// every host mounts) with data in its root is shelved with the openstack
// CLI (offloaded at once: its host keeps no container; the boot volume
// stays attached, in-use, its file where it was); while offloaded a
// second shared volume is attached with `openstack server add volume`
// (Nova >= 2.20: recorded only); the unshelve onto the other host (the
// first disabled) brings it up with the same address and MAC, the root
// data (the boot volume's) and the new volume mounted at its path.
func TestShelveVolumeBackedShared(t *testing.T) {
	t.Parallel()
	c := startCloud(t, twoHosts, withQuota(20), func(t *testing.T, c *cloud) {
		c.extraConfig += "conductor:\n  periodic_interval: 2s\n  shelved_offload_time: 0s\nvolume:\n  backend: shared\n"
	})
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	val := func(args ...string) string { return strings.TrimSpace(osc.run(args...)) }
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "shvb-net", 321, "10.32.1.0/24", true)
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	sharedImg := func(vol string) string { return filepath.Join(c.dir, "shared-volumes", vol+".img") }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	id := val("server", "create", "--flavor", "m1.small", "--image", img, "--boot-from-volume", "1",
		"--nic", "net-id="+netID, "--availability-zone", "nova:"+ha.name, "-f", "value", "-c", "id", "shvb")
	s := activeServer(t, cc, nc, "shvb", id, ha)
	root := val("server", "volume", "list", id, "-f", "value", "-c", "Volume ID")
	if root == "" || strings.Contains(root, "\n") || !exists(sharedImg(root)) {
		t.Fatalf("boot volume %q: want one, on the shared export", root)
	}
	sum := writeData(t, s, "/root/data", 20)

	start := time.Now()
	val("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 4*time.Minute)
	t.Logf("shelve of a volume-backed server (shared boot volume, 20 MB in its root): %s", time.Since(start).Round(time.Millisecond))
	c.hostClean(t, cc, ha, s, false)
	if v := showVolume(t, osc, root); v.Status != "in-use" || len(v.Attachments) != 1 || v.Attachments[0].ServerID != id || !exists(sharedImg(root)) {
		t.Fatalf("boot volume of the offloaded server: %+v (file there: %v)", v, exists(sharedImg(root)))
	}

	// Attached while offloaded (the CLI negotiates a microversion >= 2.20).
	data := val("volume", "create", "--size", "1", "shvb-data", "-f", "value", "-c", "id")
	eventually(t, 2*time.Minute, "data volume available", func() bool { return showVolume(t, osc, data).Status == "available" })
	if out, err := osc.try("--os-compute-api-version", "2.19", "server", "add", "volume", id, data); err == nil || !strings.Contains(out, "409") {
		t.Errorf("attach to an offloaded server at 2.19: %v %s, want a 409", err, out)
	}
	val("server", "add", "volume", "--device", "/srv/data", id, data)
	if v := showVolume(t, osc, data); v.Status != "in-use" || len(v.Attachments) != 1 || v.Attachments[0].ServerID != id {
		t.Fatalf("volume attached to the offloaded server: %+v", v)
	}

	disableHost(t, c, ha)
	start = time.Now()
	val("server", "unshelve", id)
	waitStatus(t, cc, id, "ACTIVE", 4*time.Minute)
	t.Logf("unshelve onto the other host (shared boot volume mounted there, a data volume attached while offloaded): %s",
		time.Since(start).Round(time.Millisecond))
	if h := serverHost(t, cc, id); h != hb.name {
		t.Fatalf("unshelved on %q, want %s", h, hb.name)
	}
	m := s.moved(hb)
	if got := sha256Of(t, m, "/root/data"); got != sum {
		t.Fatalf("root data after the unshelve: sha256 %s, want %s", got, sum)
	}
	addrs, mac := m.eth0(t)
	if !slices.Contains(addrs, s.ip+"/24") || !strings.EqualFold(mac, s.mac) {
		t.Errorf("eth0 after unshelve: %v %s, want %s/24 %s", addrs, mac, s.ip, s.mac)
	}
	eventually(t, time.Minute, "the volume attached while offloaded mounted at /srv/data", func() bool {
		out, _ := m.exec("sh", "-c", "grep -c ' /srv/data ' /proc/mounts")
		return out == "1"
	})
	if out, err := m.exec("sh", "-c", "echo hi > /srv/data/f && cat /srv/data/f"); err != nil || out != "hi" {
		t.Errorf("write to the volume attached while offloaded: %q %v", out, err)
	}
	if img := val("server", "show", id, "-f", "value", "-c", "image"); img != "" && !strings.Contains(img, "booted from volume") {
		t.Errorf("image of the unshelved volume-backed server: %q, want none", img)
	}
	if strings.Contains(val("image", "list", "-f", "value", "-c", "Name"), "shvb-shelved") {
		t.Error("shelve image still listed after the unshelve")
	}
	val("server", "remove", "volume", id, data)
	eventually(t, 2*time.Minute, "data volume detached", func() bool { return showVolume(t, osc, data).Status == "available" })
	val("volume", "delete", data)
	val("server", "delete", "--wait", id)
	eventually(t, 2*time.Minute, "the boot volume available after its server's delete", func() bool {
		return showVolume(t, osc, root).Status == "available"
	})
	val("volume", "delete", root)
	eventually(t, 2*time.Minute, "the volumes' files deleted", func() bool { return !exists(sharedImg(root)) && !exists(sharedImg(data)) })
	c.hostClean(t, cc, hb, m, false)
}

// TestShelveAttachLocalVolumeOffloaded (issue 17): local volumes and a
// SHELVED_OFFLOADED server (Nova >= 2.20, openstack CLI). A local volume
// made from the image on host A (so it holds files) is attached to the
// offloaded server: A pushes it to the registry next to the shelve image
// (capsule/volumes/<volume>:shelved) and deletes its file; detached
// again while offloaded, it is pulled back onto the host the server was
// shelved on (available there, tag gone); attached again and the server
// unshelved onto B (A disabled): the volume is pulled there and mounted
// at its path with its files, lives on B, and no tag or file on A is
// left. A volume-backed server with a *local* boot volume on A shelves
// too: the offload pushes the boot volume, the unshelve onto B pulls it
// (root data kept, same address).
func TestShelveAttachLocalVolumeOffloaded(t *testing.T) {
	t.Parallel()
	registry := testenv.Registry(t)
	c := shelveCloud(t)
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	val := func(args ...string) string { return strings.TrimSpace(osc.run(args...)) }
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "shat-net", 322, "10.32.2.0/24", true)
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

	id := c.bootOn(t, cc, "shat", ha, netID, "")
	s := activeServer(t, cc, nc, "shat", id, ha)
	bfv := val("server", "create", "--flavor", "m1.small", "--image", img, "--boot-from-volume", "1",
		"--nic", "net-id="+netID, "--availability-zone", "nova:"+ha.name, "-f", "value", "-c", "id", "shat-bfv")
	sb := activeServer(t, cc, nc, "shat-bfv", bfv, ha)
	root := val("server", "volume", "list", bfv, "-f", "value", "-c", "Volume ID")
	sum := writeData(t, sb, "/root/data", 10)
	val("server", "shelve", id, bfv)
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 4*time.Minute)
	waitStatus(t, cc, bfv, "SHELVED_OFFLOADED", 4*time.Minute)
	if exists(imgOn(ha, root)) || !slices.Equal(volTags(root), []string{"shelved"}) {
		t.Errorf("local boot volume of the offloaded server: file on %s %v, tags %v; want only the registry's shelved tag",
			ha.name, exists(imgOn(ha, root)), volTags(root))
	}

	vol := val("volume", "create", "--size", "1", "--image", img, "shat-data", "-f", "value", "-c", "id")
	eventually(t, 2*time.Minute, "data volume available", func() bool { return showVolume(t, osc, vol).Status == "available" })
	vhost := strings.SplitN(showVolume(t, osc, vol).Host, "@", 2)[0]
	h0 := ha
	if vhost == hb.name {
		h0 = hb
	}
	val("server", "add", "volume", "--device", "/srv/data", id, vol)
	eventually(t, 2*time.Minute, "the volume attached to the offloaded server (pushed, on no host)", func() bool {
		v := showVolume(t, osc, vol)
		return v.Status == "in-use" && len(v.Attachments) == 1 && v.Attachments[0].ServerID == id && !exists(imgOn(h0, vol))
	})
	if tags := volTags(vol); !slices.Equal(tags, []string{"shelved"}) {
		t.Fatalf("tags of the volume attached while offloaded: %v, want [shelved]", tags)
	}
	// Detached while offloaded: back on the host the server was shelved on.
	val("server", "remove", "volume", id, vol)
	eventually(t, 2*time.Minute, "the detached volume available on "+ha.name, func() bool {
		v := showVolume(t, osc, vol)
		return v.Status == "available" && strings.HasPrefix(v.Host, ha.name+"@") && exists(imgOn(ha, vol))
	})
	eventually(t, time.Minute, "the detached volume's tag deleted", func() bool { return len(volTags(vol)) == 0 })
	val("server", "add", "volume", "--device", "/srv/data", id, vol)
	eventually(t, 2*time.Minute, "the volume attached again (pushed)", func() bool {
		v := showVolume(t, osc, vol)
		return v.Status == "in-use" && !exists(imgOn(ha, vol)) && slices.Equal(volTags(vol), []string{"shelved"})
	})

	disableHost(t, c, ha)
	val("server", "unshelve", id, bfv)
	waitStatus(t, cc, id, "ACTIVE", 4*time.Minute)
	waitStatus(t, cc, bfv, "ACTIVE", 4*time.Minute)
	m := s.moved(hb)
	if h := serverHost(t, cc, id); h != hb.name {
		t.Fatalf("unshelved on %q, want %s", h, hb.name)
	}
	eventually(t, time.Minute, "the volume mounted at /srv/data", func() bool {
		out, _ := m.exec("sh", "-c", "grep -c ' /srv/data ' /proc/mounts")
		return out == "1"
	})
	if out, err := m.exec("sh", "-c", "test -x /srv/data/bin/busybox && echo filled"); err != nil || out != "filled" {
		t.Errorf("the volume's files (made from the image) after the unshelve: %q %v", out, err)
	}
	if addrs, _ := m.eth0(t); !slices.Contains(addrs, s.ip+"/24") {
		t.Errorf("eth0 after unshelve: %v, want %s/24", addrs, s.ip)
	}
	if v := showVolume(t, osc, vol); v.Status != "in-use" || !strings.HasPrefix(v.Host, hb.name+"@") || !exists(imgOn(hb, vol)) || exists(imgOn(ha, vol)) {
		t.Errorf("volume after the unshelve: %+v (file on %s %v, on %s %v)", v, hb.name, exists(imgOn(hb, vol)), ha.name, exists(imgOn(ha, vol)))
	}
	mb := sb.moved(hb)
	if got := sha256Of(t, mb, "/root/data"); got != sum {
		t.Errorf("root data of the volume-backed server after the unshelve: sha256 %s, want %s", got, sum)
	}
	if addrs, _ := mb.eth0(t); !slices.Contains(addrs, sb.ip+"/24") {
		t.Errorf("eth0 of the volume-backed server after unshelve: %v, want %s/24", addrs, sb.ip)
	}
	eventually(t, time.Minute, "the volumes' shelve tags deleted", func() bool { return len(volTags(vol)) == 0 && len(volTags(root)) == 0 })
	if exists(imgOn(ha, root)) || !exists(imgOn(hb, root)) {
		t.Errorf("boot volume files: on %s %v (want false), on %s %v (want true)", ha.name, exists(imgOn(ha, root)), hb.name, exists(imgOn(hb, root)))
	}
	val("server", "remove", "volume", id, vol)
	eventually(t, 2*time.Minute, "data volume detached", func() bool { return showVolume(t, osc, vol).Status == "available" })
	val("volume", "delete", vol)
	val("server", "delete", "--wait", id, bfv)
	eventually(t, 2*time.Minute, "the boot volume available", func() bool { return showVolume(t, osc, root).Status == "available" })
	val("volume", "delete", root)
	eventually(t, 2*time.Minute, "the volumes' files deleted", func() bool {
		return !exists(imgOn(hb, vol)) && !exists(imgOn(hb, root)) && !exists(imgOn(ha, vol)) && !exists(imgOn(ha, root))
	})
	c.hostClean(t, cc, hb, m, true)
	c.hostClean(t, cc, hb, mb, false)
}
