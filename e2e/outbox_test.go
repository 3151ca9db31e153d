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
