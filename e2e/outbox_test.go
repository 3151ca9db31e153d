package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// TestAPIKilledAfterCommit is the outbox's kill point on a real broker:
// the API process is SIGKILLed right after it committed a resize, a
// snapshot and a delete, before it published their messages (capsuled's
// CAPSULE_TEST_CRASH_AFTER_COMMIT kill point); after a restart every task
// ends, done: the conductor relays the committed message from the outbox
// and the host carries the work out. None is left in its task state.
func TestAPIKilledAfterCommit(t *testing.T) {
	t.Parallel()
	testenv.Registry(t) // the snapshot is pushed there
	killPoint := filepath.Join(t.TempDir(), "crash-after-commit")
	c := startCloud(t, func(t *testing.T, c *cloud) {
		c.procEnv = append(c.procEnv, "CAPSULE_TEST_CRASH_AFTER_COMMIT="+killPoint)
	})
	ctx := context.Background()
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "outbox-1", ImageRef: img, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)

	// crash arms the kill point, makes the call (which the dying API
	// cannot answer), checks the API died at the kill point and starts
	// the cloud again.
	crash := func(what string, call func() error) {
		t.Helper()
		if err := os.WriteFile(killPoint, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := call(); err == nil {
			t.Fatalf("%s was answered: the API did not die after its commit", what)
		}
		if _, err := os.Stat(killPoint); !os.IsNotExist(err) {
			t.Fatalf("%s: the API did not reach its kill point (%v)", what, err)
		}
		c.kill() // reaps the killed process
		c.start(t)
		c.waitReady(t)
		demo = c.computeClient(t, "demo", c.demoPass, "demo")
	}

	crash("resize", func() error {
		return servers.Resize(ctx, demo, srv.ID, servers.ResizeOpts{FlavorRef: "2"}).ExtractErr()
	})
	s := waitStatus(t, demo, srv.ID, "VERIFY_RESIZE", 60*time.Second)
	if id, _ := s.Flavor["id"].(string); id != "" && id != "2" {
		t.Errorf("resized server has flavor %v, want 2", s.Flavor)
	}
	if err := servers.ConfirmResize(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("confirm resize: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)

	crash("createImage", func() error {
		_, err := servers.CreateImage(ctx, demo, srv.ID, servers.CreateImageOpts{Name: "outbox-snap"}).ExtractImageID()
		return err
	})
	pc, err := c.provider(ctx, "demo", c.demoPass, "demo")
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	var snap *images.Image
	eventually(t, 2*time.Minute, "the snapshot committed before the crash is active", func() bool {
		pages, err := images.List(ic, images.ListOpts{Name: "outbox-snap"}).AllPages(ctx)
		if err != nil {
			t.Fatalf("list images: %v", err)
		}
		all, err := images.ExtractImages(pages)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 1 && all[0].Status == images.ImageStatusActive {
			snap = &all[0]
			return true
		}
		return false
	})
	waitStatus(t, demo, srv.ID, "ACTIVE", 60*time.Second)
	if err := images.Delete(ctx, ic, snap.ID).ExtractErr(); err != nil {
		t.Errorf("delete snapshot: %v", err)
	}

	crash("delete", func() error { return servers.Delete(ctx, demo, srv.ID).ExtractErr() })
	waitGone(t, demo, srv.ID, 60*time.Second)
	if cid, _, _ := c.containerOf(t, srv.ID); cid != "" {
		t.Errorf("container %s left after the delete", cid)
	}
}

// TestTaskSweptWhenItsAgentDies: the agent of a server's host dies for
// good before it takes the server's reboot, then its delete. The
// conductor's sweeper ends each task past conductor.task_timeout as the
// host's failure would: the reboot rolled back (ACTIVE, a failed event),
// the delete in ERROR with a fault; none stays in its task. When the agent
// comes back it runs what waited in its queue: the server is deleted.
func TestTaskSweptWhenItsAgentDies(t *testing.T) {
	t.Parallel()
	c := startCloud(t, twoHosts, func(t *testing.T, c *cloud) {
		c.extraConfig += "conductor:\n  task_timeout: 20s\n  periodic_interval: 2s\n"
	})
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	ha := c.hosts[0]
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	srv, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "swept", ImageRef: img, FlavorRef: "1",
		AvailabilityZone: "nova:" + ha.name}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cc, srv.ID, "ACTIVE", 90*time.Second)
	agent := c.proc(t, "agent-"+ha.name)
	agent.kill()

	start := time.Now()
	if err := servers.Reboot(ctx, cc, srv.ID, servers.RebootOpts{Type: servers.SoftReboot}).ExtractErr(); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	waitStatus(t, cc, srv.ID, "ACTIVE", 60*time.Second)
	t.Logf("reboot whose agent died ended after %s", time.Since(start).Round(time.Second))
	if ev := failedEvents(t, cc, srv.ID, "reboot"); len(ev) == 0 {
		t.Error("the swept reboot has no failed event")
	}

	start = time.Now()
	if err := servers.Delete(ctx, cc, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	s := waitStatus(t, cc, srv.ID, "ERROR", 60*time.Second)
	t.Logf("delete whose agent died ended after %s: %s", time.Since(start).Round(time.Second), s.Fault.Message)
	if s.Fault.Message == "" {
		t.Error("swept delete: ERROR without a fault")
	}

	agent.start(t)
	waitGone(t, cc, srv.ID, 90*time.Second)
}
