package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// frozen reports whether the cgroup freezer holds pid.
func frozen(t *testing.T, pid int) bool {
	t.Helper()
	f, err := cgroup.FrozenOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestBackupRotationAndSuspendCLI drives `openstack server backup create`
// and `server suspend/resume` (python-openstackclient 6.0, through
// openstacksdk): with --rotate 1 the second backup leaves only itself,
// in the image API and in the registry; a suspended server is SUSPENDED
// with its processes frozen and comes back ACTIVE with the same init.
//
// The two backups get distinct names: OSC looks the new backup up by
// name right after the request, and two images of one name (the older
// backup still exists then) make that lookup fail.
func TestBackupRotationAndSuspendCLI(t *testing.T) {
	t.Parallel()
	registry := testenv.Registry(t)
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack CLI (python3-openstackclient) is required: %v", err)
	}
	c := startCloud(t)
	ctx := context.Background()
	run := c.openstack(t, "demo", c.demoPass, "demo").run
	show := func() map[string]any {
		t.Helper()
		var s map[string]any
		if err := json.Unmarshal([]byte(run("server", "show", "bk-vm", "-f", "json")), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitShow := func(status string) map[string]any {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			s := show()
			if s["status"] == status && s["OS-EXT-STS:task_state"] == nil {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("server did not reach %s: %v / %v", status, s["status"], s["OS-EXT-STS:task_state"])
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	pc, err := c.provider(ctx, "demo", c.demoPass, "demo")
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}

	run("server", "create", "--image", "busybox", "--flavor", "m1.tiny", "--wait", "bk-vm")
	id, _ := show()["id"].(string)
	// Tempest's test_create_backup listing.
	backups := func() []string {
		t.Helper()
		q := url.Values{"image_type": {"backup"}, "backup_type": {"daily"}, "instance_uuid": {id}, "status": {"active"},
			"sort_key": {"created_at"}, "sort_dir": {"asc"}}
		var body struct {
			Images []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"images"`
		}
		if _, err := ic.Get(ctx, ic.ServiceURL("images")+"?"+q.Encode(), &body, nil); err != nil {
			t.Fatalf("list backups: %v", err)
		}
		var names []string
		for _, img := range body.Images {
			names = append(names, img.Name+"="+img.ID)
		}
		return names
	}

	run("server", "backup", "create", "--name", "b1", "--type", "daily", "--rotate", "1", "--wait", "bk-vm")
	first := backups()
	if len(first) != 1 || !strings.HasPrefix(first[0], "b1=") {
		t.Fatalf("backups after the first = %v", first)
	}
	b1 := strings.TrimPrefix(first[0], "b1=")
	if !snapshotTagged(t, registry, b1) {
		t.Fatalf("registry lacks the first backup's tag %s", b1)
	}
	waitShow("ACTIVE")

	run("server", "backup", "create", "--name", "b2", "--type", "daily", "--rotate", "1", "--wait", "bk-vm")
	second := backups()
	if len(second) != 1 || !strings.HasPrefix(second[0], "b2=") {
		t.Fatalf("backups after the second = %v, want only b2", second)
	}
	b2 := strings.TrimPrefix(second[0], "b2=")
	// The tag goes right after the row (same conductor message).
	deadline := time.Now().Add(15 * time.Second)
	for snapshotTagged(t, registry, b1) && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}
	if has1, has2 := snapshotTagged(t, registry, b1), snapshotTagged(t, registry, b2); has1 || !has2 {
		t.Errorf("registry tags: first backup's present %v, second's present %v", has1, has2)
	}
	waitShow("ACTIVE")

	// Suspend: frozen, memory kept; resume: the same init runs on.
	ctr := "capsule-" + id
	pidOf := func() int {
		t.Helper()
		out, err := c.docker("inspect", "-f", "{{.State.Pid}}", ctr)
		if err != nil {
			t.Fatalf("docker inspect: %v %s", err, out)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil || pid <= 0 {
			t.Fatalf("pid of %s: %q", ctr, out)
		}
		return pid
	}
	pid := pidOf()
	run("server", "suspend", "bk-vm")
	s := waitShow("SUSPENDED")
	if s["OS-EXT-STS:vm_state"] != "suspended" || s["OS-EXT-STS:power_state"] != "Suspended" && s["OS-EXT-STS:power_state"] != float64(7) {
		t.Errorf("suspended server: vm_state %v power_state %v", s["OS-EXT-STS:vm_state"], s["OS-EXT-STS:power_state"])
	}
	if !frozen(t, pid) {
		t.Errorf("the suspended server's processes are not frozen")
	}
	run("server", "resume", "bk-vm")
	waitShow("ACTIVE")
	if frozen(t, pid) {
		t.Errorf("the resumed server's processes are still frozen")
	}
	if got := pidOf(); got != pid {
		t.Errorf("init pid after resume %d, want %d (the same process)", got, pid)
	}
	run("server", "delete", "--wait", "bk-vm")
	run("image", "delete", b2)
}
