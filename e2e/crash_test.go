package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// TestAgentKilledDuringBoot: capsuled (agent included) is SIGKILLed while a
// boot is in flight; after a restart the server ends ACTIVE or ERROR with
// a fault, never stuck in BUILD, and deleting it leaves no container.
func TestAgentKilledDuringBoot(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	ctx := context.Background()
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "crashy", ImageRef: img, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	// Kill as soon as the build has left the API (scheduled or spawning).
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		s, err := servers.Get(ctx, demo, srv.ID).Extract()
		if err == nil && (s.TaskState == "spawning" || s.Status != "BUILD") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.kill()
	time.Sleep(time.Second)
	c.start(t)
	c.waitReady(t)
	demo = c.computeClient(t, "demo", c.demoPass, "demo")

	var final *servers.Server
	deadline = time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		s, err := servers.Get(ctx, demo, srv.ID).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if (s.Status == "ACTIVE" || s.Status == "ERROR") && s.TaskState == "" {
			final = s
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if final == nil {
		t.Fatal("server stuck after the agent restart")
	}
	if final.Status == "ERROR" && final.Fault.Message == "" {
		t.Error("ERROR without a fault message")
	}
	cid, running, _ := c.containerOf(t, srv.ID)
	if final.Status == "ACTIVE" && (cid == "" || !running) {
		t.Errorf("ACTIVE after restart but container %q running=%v", cid, running)
	}
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, demo, srv.ID, 60*time.Second)
	if cid, _, _ := c.containerOf(t, srv.ID); cid != "" {
		t.Errorf("container %s leaked", cid)
	}
}
