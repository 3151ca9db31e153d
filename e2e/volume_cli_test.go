package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestVolumeCLI drives the Block Storage API and Nova's volume attachments
// with the openstack CLI, as a user at a shell: create, list, show, set
// (extend), snapshot create/list/delete, server add/remove volume, delete;
// the gigabytes quota refuses a volume beyond it.
func TestVolumeCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	demo := c.openstack(t, "demo", c.demoPass, "demo")
	adm := c.openstack(t, "admin", c.adminPass, "admin")
	waitVolume := func(name, status string, size float64) map[string]any {
		t.Helper()
		var v map[string]any
		for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			demo.json(&v, "volume", "show", name)
			if v["status"] == status && (size == 0 || v["size"] == size) {
				return v
			}
			if s, _ := v["status"].(string); strings.HasPrefix(s, "error") {
				t.Fatalf("volume %s: %v", name, v)
			}
		}
		t.Fatalf("volume %s never %s: %v", name, status, v)
		return nil
	}
	var v map[string]any
	demo.json(&v, "volume", "create", "--size", "1", "--description", "cli", "cli-vol")
	if v["size"] != float64(1) || v["name"] != "cli-vol" {
		t.Fatalf("volume create: %v", v)
	}
	waitVolume("cli-vol", "available", 1)
	var list []map[string]any
	demo.json(&list, "volume", "list")
	if len(list) != 1 || list[0]["Name"] != "cli-vol" {
		t.Fatalf("volume list: %v", list)
	}
	demo.run("volume", "set", "--size", "2", "cli-vol")
	waitVolume("cli-vol", "available", 2)

	demo.run("volume", "snapshot", "create", "--volume", "cli-vol", "cli-snap")
	var snaps []map[string]any
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		demo.json(&snaps, "volume", "snapshot", "list")
		if len(snaps) == 1 && snaps[0]["Status"] == "available" {
			break
		}
	}
	if len(snaps) != 1 || snaps[0]["Name"] != "cli-snap" || snaps[0]["Status"] != "available" {
		t.Fatalf("snapshot list: %v", snaps)
	}
	demo.run("volume", "snapshot", "delete", "cli-snap")

	demo.run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--wait", "cli-vol-vm")
	demo.run("server", "add", "volume", "cli-vol-vm", "cli-vol")
	waitVolume("cli-vol", "in-use", 0)
	demo.run("server", "remove", "volume", "cli-vol-vm", "cli-vol")
	waitVolume("cli-vol", "available", 0)

	// The project's gigabytes quota refuses a volume beyond it.
	adm.run("quota", "set", "--gigabytes", "3", "demo")
	if out, err := demo.try("volume", "create", "--size", "5", "too-big"); err == nil || !strings.Contains(out, "gigabytes") {
		t.Fatalf("a volume beyond the gigabytes quota: %v\n%s", err, out)
	}
	demo.run("volume", "delete", "cli-vol")
	waitGone := func(what string) {
		t.Helper()
		for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			demo.json(&list, "volume", "list")
			if len(list) == 0 {
				return
			}
		}
		t.Fatalf("volume still listed after %s: %v", what, list)
	}
	waitGone("its delete")
	adm.run("quota", "set", "--gigabytes", "20", "demo")

	// Boot from a new volume made from the image (--boot-from-volume: not
	// deleted with the server): the server's root filesystem is the
	// volume's, so a file written in it outlives the server and is there
	// in a second server booted from the same volume (--volume).
	var srv map[string]any
	demo.json(&srv, "server", "create", "--image", "busybox", "--boot-from-volume", "1", "--flavor", "m1.tiny", "--wait", "bfv-1")
	if img := fmt.Sprint(srv["image"]); strings.Contains(img, "busybox") {
		t.Fatalf("a volume-backed server shows an image: %v", srv)
	}
	demo.json(&list, "volume", "list")
	if len(list) != 1 || list[0]["Status"] != "in-use" {
		t.Fatalf("boot volume: %v", list)
	}
	bootVol := list[0]["ID"].(string)
	cid, running, _ := c.containerOf(t, srv["id"].(string))
	if !running {
		t.Fatalf("server bfv-1 does not run")
	}
	if out, err := c.docker("exec", cid, "sh", "-c", "echo written-in-bfv-1 > /root/bfv.txt && sync"); err != nil {
		t.Fatalf("write in the volume-backed server: %v %s", err, out)
	}
	demo.run("server", "delete", "--wait", "bfv-1")
	waitVolume(bootVol, "available", 1)
	demo.json(&srv, "server", "create", "--volume", bootVol, "--flavor", "m1.tiny", "--wait", "bfv-2")
	cid, _, _ = c.containerOf(t, srv["id"].(string))
	if out, err := c.docker("exec", cid, "cat", "/root/bfv.txt"); err != nil || strings.TrimSpace(out) != "written-in-bfv-1" {
		t.Fatalf("the file written by bfv-1 in bfv-2: %v %q", err, out)
	}
	if out, err := demo.try("volume", "delete", bootVol); err == nil {
		t.Fatalf("an in-use boot volume was deleted: %s", out)
	}
	demo.run("server", "delete", "--wait", "bfv-2")
	waitVolume(bootVol, "available", 1)
	demo.run("volume", "delete", bootVol)
	waitGone("the boot volume's delete")
}
