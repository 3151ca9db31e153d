package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestRebuildCLI drives `openstack server rebuild` on a server with a
// fixed IP on a VLAN and a keypair: the server comes back on the new
// image (a file only that image has is there, a file written on the old
// disk is not), with its IP, port and key; its tags are set, filtered
// on and unset; a SHUTOFF server's rebuild leaves it SHUTOFF; the
// instance actions list the rebuilds.
func TestRebuildCLI(t *testing.T) {
	t.Parallel()
	c := startCloud(t, withBridge)
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	cli, run, jsonOf := osc.try, osc.run, osc.json
	inServer := func(ctr string, cmd ...string) (string, error) {
		return c.docker(append([]string{"exec", ctr}, cmd...)...)
	}

	vlan := 101 + rand.IntN(800)
	run("network", "create", "--provider-network-type", "vlan", "--provider-physical-network", "physnet1",
		"--provider-segment", fmt.Sprint(vlan), "rbnet")
	run("subnet", "create", "--network", "rbnet", "--subnet-range", "10.79.0.0/24", "rbsub")
	pubKey, err := newPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pubLine := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pubKey)), "\n") + " rebuild@test\n"
	pubFile := filepath.Join(t.TempDir(), "id.pub")
	if err := os.WriteFile(pubFile, []byte(pubLine), 0o644); err != nil {
		t.Fatal(err)
	}
	run("keypair", "create", "--public-key", pubFile, "rbkey")
	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--key-name", "rbkey",
		"--nic", "net-id=rbnet,v4-fixed-ip=10.79.0.20", "--wait", "rbvm")
	var srv map[string]any
	jsonOf(&srv, "server", "show", "rbvm")
	id := srv["id"].(string)
	ctr := "capsule-" + id
	var ports []map[string]any
	jsonOf(&ports, "port", "list", "--server", "rbvm")
	if len(ports) != 1 {
		t.Fatalf("ports of rbvm = %v", ports)
	}
	portID := ports[0]["ID"]

	// The new image: the server as it is now, plus /root/in-image.
	if out, err := inServer(ctr, "sh", "-c", "echo image > /root/in-image"); err != nil {
		t.Fatalf("write in-image: %v %s", err, out)
	}
	var img map[string]any
	jsonOf(&img, "server", "image", "create", "--name", "rbimg", "--wait", "rbvm")
	imgID := img["id"].(string)
	if out, err := inServer(ctr, "sh", "-c", "echo data > /root/old-disk"); err != nil {
		t.Fatalf("write old-disk: %v %s", err, out)
	}

	run("server", "rebuild", "--image", "rbimg", "--wait", "rbvm")
	jsonOf(&srv, "server", "show", "rbvm")
	if srv["status"] != "ACTIVE" || !strings.Contains(fmt.Sprint(srv["image"]), imgID) ||
		!strings.Contains(fmt.Sprint(srv["addresses"]), "10.79.0.20") {
		t.Fatalf("after rebuild: status %v image %v addresses %v", srv["status"], srv["image"], srv["addresses"])
	}
	if out, err := inServer(ctr, "cat", "/root/in-image"); err != nil || strings.TrimSpace(out) != "image" {
		t.Errorf("the rebuilt server lacks its new image's file: %q %v", out, err)
	}
	if out, err := inServer(ctr, "ls", "/root/old-disk"); err == nil {
		t.Errorf("a file of the old disk survived the rebuild: %s", out)
	}
	if out, err := inServer(ctr, "ip", "-4", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, "10.79.0.20/24") {
		t.Errorf("eth0 after rebuild: %q %v", out, err)
	}
	if out, err := inServer(ctr, "cat", "/root/.ssh/authorized_keys"); err != nil || out+"\n" != pubLine {
		t.Errorf("authorized_keys after rebuild = %q %v, want %q", out, err, pubLine)
	}
	jsonOf(&ports, "port", "list", "--server", "rbvm")
	if len(ports) != 1 || ports[0]["ID"] != portID {
		t.Errorf("ports after rebuild = %v, want the same port %v", ports, portID)
	}

	// Tags (2.26) with the CLI: set, filter the list, unset.
	run("--os-compute-api-version", "2.26", "server", "set", "--tag", "prod", "--tag", "web", "rbvm")
	if out := run("--os-compute-api-version", "2.26", "server", "list", "--tags", "prod,web", "-f", "value", "-c", "Name"); strings.TrimSpace(out) != "rbvm" {
		t.Errorf("server list --tags prod,web = %q, want rbvm", out)
	}
	run("--os-compute-api-version", "2.26", "server", "unset", "--tag", "web", "rbvm")
	if out := run("--os-compute-api-version", "2.26", "server", "list", "--tags", "web", "-f", "value", "-c", "Name"); strings.TrimSpace(out) != "" {
		t.Errorf("server list --tags web after unset = %q, want nothing", out)
	}
	jsonOf(&srv, "--os-compute-api-version", "2.26", "server", "show", "rbvm")
	if fmt.Sprint(srv["tags"]) != "[prod]" {
		t.Errorf("server show tags = %v, want [prod]", srv["tags"])
	}

	// A SHUTOFF server is rebuilt and stays SHUTOFF.
	run("server", "stop", "rbvm")
	waitCLIStatus(t, cli, "rbvm", "SHUTOFF", 2*time.Minute)
	run("server", "rebuild", "--image", "busybox", "rbvm")
	waitCLIStatus(t, cli, "rbvm", "SHUTOFF", 2*time.Minute)
	jsonOf(&srv, "server", "show", "rbvm")
	if strings.Contains(fmt.Sprint(srv["image"]), imgID) {
		t.Errorf("image after the second rebuild = %v, want busybox", srv["image"])
	}
	run("server", "start", "rbvm")
	waitCLIStatus(t, cli, "rbvm", "ACTIVE", 2*time.Minute)
	if out, err := inServer(ctr, "ls", "/root/in-image"); err == nil {
		t.Errorf("the busybox rebuild still has the snapshot's file: %s", out)
	}

	var events []map[string]any
	jsonOf(&events, "server", "event", "list", "rbvm")
	rebuilds := 0
	for _, e := range events {
		if e["Action"] == "rebuild" {
			rebuilds++
		}
	}
	if rebuilds != 2 {
		t.Errorf("server event list = %v, want 2 rebuilds", events)
	}
	run("server", "delete", "--wait", "rbvm")
	run("image", "delete", "rbimg")
	if out, err := c.docker("ps", "-a", "--filter", "name="+id, "--format", "{{.Names}}"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("containers left after delete: %q %v", out, err)
	}
}

// waitCLIStatus polls `openstack server show` until the server has status
// want.
func waitCLIStatus(t *testing.T, cli func(args ...string) (string, error), name, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		out, err := cli("server", "show", "-f", "value", "-c", "status", name)
		last = strings.TrimSpace(out)
		if err == nil && last == want {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("server %s status %q after %s, want %s", name, last, timeout, want)
}
