package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

const e2eCloudConfig = `#cloud-config
hostname: ud-host
users:
  - name: alice
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eUserDataKeyE2eUserDataKeyE2eUserData alice@e2e
write_files:
  - path: /etc/e2e/hello.txt
    content: hello from cloud-config
    permissions: '0640'
runcmd:
  - echo "ran on $(hostname)" >> /root/runcmd.out
bootcmd:
  - echo boot >> /root/bootcmd.out
packages: [nginx]
`

// TestUserDataAndConfigDrive boots servers with the openstack CLI's
// --user-data and --config-drive: Capsule's base image applies a
// #cloud-config (a file written, a user with its key, a command run once,
// bootcmd at every boot, the hostname, what it cannot do logged to the
// console) and runs a #! script once; the config drive holds the server's
// metadata tree where cloud-init's ConfigDrive datasource reads it; the
// metadata service serves the same user data.
func TestUserDataAndConfigDrive(t *testing.T) {
	t.Parallel()
	c := startCloud(t, withBridge)
	h := c.hosts[0]
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	vlan := 101 + rand.IntN(800)
	osc.run("network", "create", "--provider-network-type", "vlan", "--provider-physical-network", "physnet1",
		"--provider-segment", fmt.Sprint(vlan), "udnet")
	osc.run("subnet", "create", "--network", "udnet", "--subnet-range", "10.83.0.0/24", "udnet-sub")
	dir := t.TempDir()
	cfgFile, scriptFile := filepath.Join(dir, "cloud.yaml"), filepath.Join(dir, "script.sh")
	if err := os.WriteFile(cfgFile, []byte(e2eCloudConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(scriptFile, []byte("#!/bin/sh\necho script-ran >> /root/script.out\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	osc.run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--nic", "net-id=udnet",
		"--user-data", cfgFile, "--config-drive", "True", "--wait", "udvm")
	osc.run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--nic", "net-id=udnet",
		"--user-data", scriptFile, "--wait", "udscript")
	var show map[string]any
	osc.json(&show, "server", "show", "udvm")
	id, _ := show["id"].(string)
	if show["config_drive"] != "True" {
		t.Errorf("config_drive = %v, want True", show["config_drive"])
	}
	var show2 map[string]any
	osc.json(&show2, "server", "show", "udscript")
	id2, _ := show2["id"].(string)
	vm := &netServer{name: "udvm", id: id, host: h}
	script := &netServer{name: "udscript", id: id2, host: h}

	read := func(s *netServer, path string) string {
		out, _ := s.exec("cat", path)
		return out
	}
	eventually(t, 30*time.Second, "the first-boot user data has run", func() bool {
		return read(vm, "/root/runcmd.out") != "" && read(script, "/root/script.out") != ""
	})
	if got := read(vm, "/etc/e2e/hello.txt"); got != "hello from cloud-config" {
		t.Errorf("write_files: /etc/e2e/hello.txt = %q", got)
	}
	if out, _ := vm.exec("stat", "-c", "%a", "/etc/e2e/hello.txt"); out != "640" {
		t.Errorf("write_files: mode %q, want 640", out)
	}
	if got := read(vm, "/etc/passwd"); !strings.Contains(got, "\nalice:x:") {
		t.Errorf("users: alice not in /etc/passwd:\n%s", got)
	}
	if got := read(vm, "/home/alice/.ssh/authorized_keys"); !strings.Contains(got, "alice@e2e") {
		t.Errorf("users: alice's authorized_keys = %q", got)
	}
	if got := read(vm, "/root/runcmd.out"); got != "ran on ud-host" {
		t.Errorf("runcmd: %q, want it run once on host ud-host", got)
	}
	if got := read(vm, "/root/bootcmd.out"); got != "boot" {
		t.Errorf("bootcmd: %q", got)
	}
	if got := read(script, "/root/script.out"); got != "script-ran" {
		t.Errorf("#! script: %q", got)
	}
	console := osc.run("console", "log", "show", "udvm")
	if !strings.Contains(console, "capsule-init: cloud-config: packages is not supported; ignored") {
		t.Errorf("console log lacks the unsupported key:\n%s", console)
	}
	// The config drive: Nova's openstack/ tree, read-only files.
	md := read(vm, "/var/lib/cloud/seed/config_drive/openstack/latest/meta_data.json")
	if !strings.Contains(md, `"uuid":"`+id+`"`) || !strings.Contains(md, `"name":"udvm"`) {
		t.Errorf("config drive meta_data.json = %q", md)
	}
	if got := read(vm, "/var/lib/cloud/seed/config_drive/openstack/latest/user_data"); got != strings.TrimRight(e2eCloudConfig, "\n") {
		t.Errorf("config drive user_data = %q", got)
	}
	if out, _ := vm.exec("stat", "-c", "%a", "/var/lib/cloud/seed/config_drive/openstack/latest/meta_data.json"); out != "444" {
		t.Errorf("config drive file mode %q, want 444", out)
	}
	// The metadata service serves the same user data.
	if out, err := vm.exec("timeout", "5", "wget", "-qO-", "http://169.254.169.254/openstack/latest/user_data"); err != nil ||
		out != strings.TrimRight(e2eCloudConfig, "\n") {
		t.Errorf("metadata user_data = %q (%v)", out, err)
	}

	// A reboot: bootcmd again, the rest not.
	osc.run("server", "reboot", "--hard", "--wait", "udvm")
	eventually(t, 30*time.Second, "bootcmd ran at the second boot", func() bool {
		return read(vm, "/root/bootcmd.out") == "boot\nboot"
	})
	if got := read(vm, "/root/runcmd.out"); got != "ran on ud-host" {
		t.Errorf("runcmd after a reboot: %q, want one run", got)
	}

	// adminPass: busybox has no /etc/shadow, so the API says it cannot
	// (Nova's 501); with one, root's line gets the password's hash.
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	err := servers.ChangeAdminPassword(context.Background(), cc, script.id, "n3w-Secret").ExtractErr()
	if !gophercloud.ResponseCodeIs(err, http.StatusNotImplemented) || !strings.Contains(err.Error(), "/etc/shadow") {
		t.Errorf("changePassword without /etc/shadow: %v, want 501 naming /etc/shadow", err)
	}
	if out, err := script.exec("sh", "-c", "echo 'root:*:19000:0:99999:7:::' > /etc/shadow && chmod 640 /etc/shadow"); err != nil {
		t.Fatalf("make /etc/shadow: %v %s", err, out)
	}
	if err := servers.ChangeAdminPassword(context.Background(), cc, script.id, "n3w-Secret").ExtractErr(); err != nil {
		t.Fatalf("changePassword: %v", err)
	}
	line := strings.Split(read(script, "/etc/shadow"), ":")
	if len(line) < 3 || !strings.HasPrefix(line[1], "$6$") {
		t.Fatalf("/etc/shadow after changePassword: %q", line)
	}
	salt := strings.Split(line[1], "$")[2]
	want, err := exec.Command("openssl", "passwd", "-6", "-salt", salt, "n3w-Secret").Output()
	if err != nil {
		t.Fatalf("openssl passwd: %v", err)
	}
	if line[1] != strings.TrimSpace(string(want)) {
		t.Errorf("root's hash %s is not the password's (%s)", line[1], want)
	}
	if out, _ := script.exec("stat", "-c", "%a", "/etc/shadow"); out != "640" {
		t.Errorf("/etc/shadow mode %q after changePassword, want 640 kept", out)
	}
}
