package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// snapshotTagged reports whether the registry has the tag of snapshot
// (or backup) image id, in its own repository under capsule/snapshots.
func snapshotTagged(t *testing.T, registry, id string) bool {
	t.Helper()
	tags, err := (&capreg.Client{Address: registry}).Tags(context.Background(), capreg.PerImageRepo(capreg.SnapshotRepo, id))
	if err != nil {
		t.Fatalf("list snapshot tags: %v", err)
	}
	return slices.Contains(tags, id)
}

// TestSnapshotBootAndDelete: a file written inside a server is in the
// image createImage makes (committed, pushed to the registry, registered
// in the image API as the project's private snapshot); a new server
// booted from it (pulled from the registry) has the file; deleting the
// image removes its registry tag.
func TestSnapshotBootAndDelete(t *testing.T) {
	t.Parallel()
	registry := testenv.Registry(t)
	c := startCloud(t)
	ctx := context.Background()
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	pc, err := c.provider(ctx, "demo", c.demoPass, "demo")
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	base := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "snap-src", ImageRef: base, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)
	if out, err := c.docker("exec", "capsule-"+srv.ID, "sh", "-c", "echo snapshot-data > /root/data"); err != nil {
		t.Fatalf("write file: %v %s", err, out)
	}

	start := time.Now()
	imgID, err := servers.CreateImage(ctx, demo, srv.ID, servers.CreateImageOpts{Name: "snap-1"}).ExtractImageID()
	if err != nil {
		t.Fatalf("createImage: %v", err)
	}
	var img *images.Image
	for deadline := time.Now().Add(2 * time.Minute); ; {
		img, err = images.Get(ctx, ic, imgID).Extract()
		if err != nil {
			t.Fatalf("get image: %v", err)
		}
		if img.Status == images.ImageStatusActive || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("snapshot %s active after %s, size %d", imgID, time.Since(start).Round(time.Millisecond), img.SizeBytes)
	if img.Status != images.ImageStatusActive || img.Owner == "" || img.Visibility != images.ImageVisibilityPrivate ||
		img.Properties["image_type"] != "snapshot" || img.Properties["instance_uuid"] != srv.ID {
		t.Fatalf("snapshot image %+v", img)
	}
	if !snapshotTagged(t, registry, imgID) {
		t.Fatalf("registry lacks the snapshot tag %s", imgID)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 30*time.Second)

	clone, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "snap-clone", ImageRef: imgID, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, clone.ID, "ACTIVE", 90*time.Second)
	out, err := c.docker("exec", "capsule-"+clone.ID, "cat", "/root/data")
	if err != nil || strings.TrimSpace(out) != "snapshot-data" {
		t.Fatalf("file in the clone: %q %v", out, err)
	}
	for _, id := range []string{clone.ID, srv.ID} {
		if err := servers.Delete(ctx, demo, id).ExtractErr(); err != nil {
			t.Fatalf("delete server %s: %v", id, err)
		}
	}
	if err := images.Delete(ctx, ic, imgID).ExtractErr(); err != nil {
		t.Fatalf("delete image: %v", err)
	}
	if snapshotTagged(t, registry, imgID) {
		t.Errorf("registry still lists the snapshot tag %s after image delete", imgID)
	}
}
