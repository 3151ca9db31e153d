package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// TestShelveLocalVolume is issue 17's shelve proof for a server with a
// local volume attached (Nova keeps its volumes attached, in-use, while
// it is shelved): the server on host A with 20 MiB on its volume is
// shelved with the openstack CLI and offloaded at once; A keeps no
// container, no volume file and no claim, the volume's data is in the
// registry and the volume is still in-use, attached. An unshelve whose
// pull fails on B leaves it offloaded with a fault naming the cause and
// the data in the registry (nothing on B). The unshelve onto B (2.77
// availability_zone with the openstack CLI, A disabled) brings it up with
// the same IP, MAC and volume data at the same path, the volume now B's,
// in-use; no registry tag and nothing on A is left. Shelved again and
// deleted while offloaded, it gives the volume back (available on B).
func TestShelveLocalVolume(t *testing.T) {
	t.Parallel()
	registry := testenv.Registry(t)
	c := shelveCloud(t)
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "shvol-net", 319, "10.31.9.0/24", true)
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
	type volView struct {
		Status      string `json:"status"`
		Host        string `json:"os-vol-host-attr:host"`
		Attachments []struct {
			ServerID string `json:"server_id"`
			Device   string `json:"device"`
		} `json:"attachments"`
	}
	showVol := func(id string) volView {
		t.Helper()
		var v volView
		out := must("volume", "show", id, "-f", "json")
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("volume show %s: %v\n%s", id, err, out)
		}
		return v
	}
	inUseBy := func(what, vol, server string) volView {
		t.Helper()
		v := showVol(vol)
		if v.Status != "in-use" || len(v.Attachments) != 1 || v.Attachments[0].ServerID != server {
			t.Fatalf("%s: volume %s is %s attached to %+v, want in-use attached to %s", what, vol, v.Status, v.Attachments, server)
		}
		return v
	}
	// The volume's tags in the registry (the cloud's, which holds the
	// server's image and so its shelve image).
	volTags := func(vol string) []string {
		t.Helper()
		tags, err := (&capreg.Client{Address: registry}).Tags(context.Background(), "capsule/volumes/"+vol)
		if err != nil {
			t.Fatalf("list tags of volume %s: %v", vol, err)
		}
		return tags
	}
	imgOn := func(h *computeHost, vol string) string { return filepath.Join(c.dir, "volumes", h.name, vol+".img") }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	id := c.bootOn(t, cc, "shvol", ha, netID, "")
	a := activeServer(t, cc, nc, "shvol", id, ha)
	volID := must("volume", "create", "--size", "1", "shvol-data", "-f", "value", "-c", "id")
	t.Cleanup(func() { _, _ = cli("volume", "delete", "--force", volID) })
	eventually(t, 2*time.Minute, "volume available", func() bool { return showVol(volID).Status == "available" })
	must("server", "add", "volume", id, volID)
	eventually(t, 3*time.Minute, "volume in-use", func() bool { return showVol(volID).Status == "in-use" })
	mnt := "/mnt/" + volID
	sum := writeData(t, a, mnt+"/data", 20)
	device := inUseBy("attached", volID, id).Attachments[0].Device

	// Shelve (offload at once): A keeps nothing, the data is in the
	// registry, the volume stays attached.
	start := time.Now()
	must("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 4*time.Minute)
	t.Logf("shelve with a 20 MiB local volume (stop, commit, push image and volume, offload): %s", time.Since(start).Round(time.Millisecond))
	c.hostClean(t, cc, ha, a, false)
	if exists(imgOn(ha, volID)) {
		t.Errorf("the volume's file is still on %s after the offload", ha.name)
	}
	if v := inUseBy("offloaded", volID, id); v.Attachments[0].Device != device {
		t.Errorf("offloaded: attached as %s, want %s", v.Attachments[0].Device, device)
	}
	eventually(t, 30*time.Second, "the offloaded server's volume tagged shelved (only)", func() bool {
		tags := volTags(volID)
		t.Logf("tags of volume %s: %v", volID, tags)
		return slices.Equal(tags, []string{"shelved"})
	})
	// Attach and detach wait for the unshelve (a 409, the volume as it was).
	code, body := raw(t, cc, "DELETE", "servers/"+id+"/os-volume_attachments/"+volID, "")
	novaFault(t, "detach from an offloaded server", code, body, 409, "conflictingRequest")

	// A disabled: the unshelve goes to B. Its pull fails there first (a
	// directory where B would make the volume's image): the server stays
	// offloaded with a fault naming the volume, the data stays in the
	// registry and B keeps nothing.
	st, svc := rawV(t, cc, "2.53", "GET", "os-services?binary=nova-compute&host="+ha.name, "")
	svcs, _ := svc["services"].([]any)
	if st != 200 || len(svcs) != 1 {
		t.Fatalf("os-services of %s: %d %v", ha.name, st, svc)
	}
	svcID := fmt.Sprint(svcs[0].(map[string]any)["id"])
	if code, body := rawV(t, cc, "2.53", "PUT", "os-services/"+svcID, `{"status":"disabled","disabled_reason":"shelve test"}`); code != 200 {
		t.Fatalf("disable %s: %d %v", ha.name, code, body)
	}
	blocker := imgOn(hb, volID) + ".creating"
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if code, body := rawV(t, cc, "2.91", "POST", "servers/"+id+"/action", fmt.Sprintf(`{"unshelve":{"host":%q}}`, hb.name)); code != 202 {
		t.Fatalf("unshelve to %s: %d %v", hb.name, code, body)
	}
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 4*time.Minute)
	// (Nova shows a fault in the server's view only in ERROR.)
	if fault := c.instanceRow(t, id).FaultMessage; !strings.Contains(fault, "Unshelve") || !strings.Contains(fault, volID) {
		t.Errorf("fault of the failed unshelve = %q, want one naming the volume", fault)
	}
	if len(containersOn(t, hb, id)) != 0 || exists(imgOn(hb, volID)) {
		t.Errorf("the failed unshelve left its container or the volume's copy on %s", hb.name)
	}
	inUseBy("after the failed unshelve", volID, id)
	if tags := volTags(volID); !slices.Equal(tags, []string{"shelved"}) {
		t.Fatalf("registry tags after the failed unshelve: %v, want [shelved] (the data)", tags)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}

	// The unshelve with the CLI (2.77 availability_zone): on B with the
	// same address, MAC and volume data, mounted at the same path.
	start = time.Now()
	must("--os-compute-api-version", "2.77", "server", "unshelve", "--availability-zone", "nova", id)
	waitStatus(t, cc, id, "ACTIVE", 4*time.Minute)
	t.Logf("unshelve onto the other host (schedule, pull image and 20 MiB volume, start): %s", time.Since(start).Round(time.Millisecond))
	if h := serverHost(t, cc, id); h != hb.name {
		t.Fatalf("unshelved on %q, want %s", h, hb.name)
	}
	moved := a.moved(hb)
	addrs, mac := moved.eth0(t)
	if !slices.Contains(addrs, a.ip+"/24") || !strings.EqualFold(mac, a.mac) {
		t.Errorf("eth0 after unshelve: %v %s, want %s/24 %s", addrs, mac, a.ip, a.mac)
	}
	eventually(t, time.Minute, "volume mounted in the unshelved server", func() bool {
		out, _ := moved.exec("sh", "-c", "grep -c ' "+mnt+" ' /proc/mounts")
		return out == "1"
	})
	if got := sha256Of(t, moved, mnt+"/data"); got != sum {
		t.Fatalf("volume data after unshelve: sha256 %s, want %s", got, sum)
	}
	v := inUseBy("unshelved", volID, id)
	if !strings.HasPrefix(v.Host, hb.name+"@") || v.Attachments[0].Device != device {
		t.Errorf("unshelved volume: host %q device %s, want %s@... %s", v.Host, v.Attachments[0].Device, hb.name, device)
	}
	if !exists(imgOn(hb, volID)) || exists(imgOn(ha, volID)) {
		t.Errorf("volume files: on %s %v (want true), on %s %v (want false)", hb.name, exists(imgOn(hb, volID)), ha.name, exists(imgOn(ha, volID)))
	}
	eventually(t, time.Minute, "the volume's shelve tag deleted", func() bool {
		return len(volTags(volID)) == 0
	})
	if n := len(containersOn(t, ha, id)); n != 0 {
		t.Errorf("%d containers of the server left on %s", n, ha.name)
	}
	// Shelved again and deleted while offloaded: the volume is given back,
	// available on B (where it was shelved) with its data, no tag left.
	must("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 4*time.Minute)
	if exists(imgOn(hb, volID)) {
		t.Errorf("the volume's file is still on %s after the second offload", hb.name)
	}
	must("server", "delete", "--wait", id)
	eventually(t, 2*time.Minute, "the deleted server's volume available again", func() bool {
		v := showVol(volID)
		if v.Status == "error" {
			t.Fatalf("volume of the server deleted while offloaded went to error")
		}
		return v.Status == "available" && strings.HasPrefix(v.Host, hb.name+"@") && len(v.Attachments) == 0
	})
	if fi, err := os.Stat(imgOn(hb, volID)); err != nil || fi.Size() < 1<<30 {
		t.Errorf("the given-back volume's file on %s: %v %v", hb.name, fi, err)
	}
	eventually(t, time.Minute, "the volume's shelve tag deleted after the give-back", func() bool { return len(volTags(volID)) == 0 })
	c.hostClean(t, cc, hb, moved, false)
	if n := len(containersOn(t, ha, id)); n != 0 || exists(imgOn(ha, volID)) {
		t.Errorf("left on %s: %d containers, volume file %v", ha.name, n, exists(imgOn(ha, volID)))
	}
}
