package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The openstack CLI forms of issue 18's image and network items, against
// a real cloud: image properties on create and set (and the list filter),
// any bytes stored and saved back unchanged, sharing with another project
// (add project, accept), deactivate/reactivate; a port's allowed address
// pairs set, shown and cleared.
func TestImageAndPortCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t, withBridge)
	demo := c.openstack(t, "demo", c.demoPass, "demo")
	admin := c.openstack(t, "admin", c.adminPass, "admin")

	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	in := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var img map[string]any
	demo.json(&img, "image", "create", "--container-format", "bare", "--disk-format", "qcow2", "--file", in,
		"--property", "os_distro=cirros", "--property", "hw_disk_bus=virtio", "--shared", "cli18img")
	id, _ := img["id"].(string)
	if id == "" {
		t.Fatalf("image create = %v", img)
	}
	demo.json(&img, "image", "show", id)
	if img["status"] != "active" || fmt.Sprint(img["size"]) != "100000" || img["disk_format"] != "qcow2" {
		t.Fatalf("image show = %v", img)
	}
	if props := fmt.Sprint(img["properties"]); !strings.Contains(props, "os_distro:cirros") || !strings.Contains(props, "hw_disk_bus:virtio") {
		t.Fatalf("image properties = %v", img["properties"])
	}
	demo.run("image", "set", "--property", "os_distro=ubuntu", id)
	var list []map[string]any
	demo.json(&list, "image", "list", "--property", "os_distro=ubuntu")
	if len(list) != 1 || list[0]["ID"] != id {
		t.Fatalf("image list --property os_distro=ubuntu = %v", list)
	}
	out := filepath.Join(t.TempDir(), "saved")
	demo.run("image", "save", "--file", out, id)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("image save: %d bytes back, err %v", len(got), err)
	}

	// Share with the admin project, which accepts it.
	var proj map[string]any
	admin.json(&proj, "project", "show", "admin")
	demo.run("image", "add", "project", id, proj["id"].(string))
	admin.run("image", "set", "--accept", id)
	var members []map[string]any
	demo.json(&members, "image", "member", "list", id)
	if len(members) != 1 || members[0]["Status"] != "accepted" {
		t.Fatalf("image member list = %v", members)
	}

	// Deactivated, its data is the admins' only.
	admin.run("image", "set", "--deactivate", id)
	if o, err := demo.try("image", "save", "--file", out+"2", id); err == nil {
		t.Fatalf("a member saved a deactivated image: %s", o)
	}
	admin.run("image", "set", "--activate", id)
	demo.run("image", "save", "--file", out+"3", id)

	// Allowed address pairs on a port.
	vlan := 101 + rand.IntN(800)
	admin.run("network", "create", "--provider-network-type", "vlan", "--provider-physical-network", "physnet1",
		"--provider-segment", fmt.Sprint(vlan), "cli18net")
	admin.run("subnet", "create", "--network", "cli18net", "--subnet-range", "10.79.0.0/24", "cli18sub")
	var port map[string]any
	admin.json(&port, "port", "create", "--network", "cli18net", "--allowed-address", "ip-address=10.79.0.50", "cli18port")
	if pairs := fmt.Sprint(port["allowed_address_pairs"]); !strings.Contains(pairs, "10.79.0.50") {
		t.Fatalf("port create --allowed-address = %v", port["allowed_address_pairs"])
	}
	admin.run("port", "set", "--allowed-address", "ip-address=10.79.0.0/28,mac-address=fa:16:3e:00:00:09", "cli18port")
	admin.json(&port, "port", "show", "cli18port")
	if pairs := fmt.Sprint(port["allowed_address_pairs"]); !strings.Contains(pairs, "10.79.0.0/28") || !strings.Contains(pairs, "fa:16:3e:00:00:09") || !strings.Contains(pairs, "10.79.0.50") {
		t.Fatalf("port set --allowed-address = %v", port["allowed_address_pairs"])
	}
	admin.run("port", "set", "--no-allowed-address", "cli18port")
	admin.json(&port, "port", "show", "cli18port")
	if pairs := fmt.Sprint(port["allowed_address_pairs"]); strings.Contains(pairs, "10.79") {
		t.Fatalf("port set --no-allowed-address = %v", port["allowed_address_pairs"])
	}
}
