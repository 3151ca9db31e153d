package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/shadowpw"
)

// TestAdminPassCreateRebuildRescue: `server create --password`, `server
// rebuild --password` and `server rescue --password` set root's password
// in the server (its rescue system) where the image has an /etc/shadow —
// the shadow hash verifies against the password given; a server whose
// image has none (busybox) is built all the same.
func TestAdminPassCreateRebuildRescue(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	run, jsonOf := osc.run, osc.json
	idOf := func(name string) string {
		var srv map[string]any
		jsonOf(&srv, "server", "show", name)
		return srv["id"].(string)
	}
	rootHash := func(ctr string) string {
		t.Helper()
		out, err := c.docker("exec", ctr, "cat", "/etc/shadow")
		if err != nil {
			t.Fatalf("read /etc/shadow of %s: %v %s", ctr, err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Split(line, ":"); len(f) > 2 && f[0] == "root" {
				return f[1]
			}
		}
		t.Fatalf("no root in /etc/shadow of %s: %q", ctr, out)
		return ""
	}

	// busybox has no /etc/shadow: the password cannot be set, the server
	// is built anyway. Its snapshot with one is the image of the rest.
	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--password", "n0-Shadow", "--wait", "apw-src")
	src := "capsule-" + idOf("apw-src")
	if out, err := c.docker("exec", src, "ls", "/etc/shadow"); err == nil {
		t.Fatalf("busybox server has an /etc/shadow: %s", out)
	}
	if out, err := c.docker("exec", src, "sh", "-c", "echo 'root:*:19000:0:99999:7:::' > /etc/shadow && chmod 640 /etc/shadow"); err != nil {
		t.Fatalf("make /etc/shadow: %v %s", err, out)
	}
	run("server", "image", "create", "--name", "apw-img", "--wait", "apw-src")

	run("server", "create", "--image", "apw-img", "--flavor", "m1.tiny", "--password", "Cr3ate-pw", "--wait", "apw-vm")
	ctr := "capsule-" + idOf("apw-vm")
	if h := rootHash(ctr); !shadowpw.Verify("Cr3ate-pw", h) {
		t.Errorf("after create root's hash %q is not the create's adminPass's", h)
	}
	if out, _ := c.docker("exec", ctr, "stat", "-c", "%a", "/etc/shadow"); strings.TrimSpace(out) != "640" {
		t.Errorf("/etc/shadow mode %q, want the image's 640", out)
	}

	run("server", "rebuild", "--image", "apw-img", "--password", "R3build-pw", "--wait", "apw-vm")
	if h := rootHash(ctr); !shadowpw.Verify("R3build-pw", h) {
		t.Errorf("after rebuild root's hash %q is not the rebuild's adminPass's", h)
	}

	run("server", "rescue", "--image", "apw-img", "--password", "R3scue-pw", "apw-vm")
	waitCLIStatus(t, osc.try, "apw-vm", "RESCUE", 2*time.Minute)
	if h := rootHash(ctr + "-rescue"); !shadowpw.Verify("R3scue-pw", h) {
		t.Errorf("in the rescue system root's hash %q is not the rescue's adminPass's", h)
	}
	run("server", "unrescue", "apw-vm")
	waitCLIStatus(t, osc.try, "apw-vm", "ACTIVE", 2*time.Minute)
	if h := rootHash(ctr); !shadowpw.Verify("R3build-pw", h) {
		t.Errorf("after unrescue root's hash %q is not the server's own (the rebuild's)", h)
	}
	run("server", "delete", "--wait", "apw-vm", "apw-src")
	run("image", "delete", "apw-img")
}
