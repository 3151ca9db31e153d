package docker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/registry/registrytest"
)

// TestSnapshotCommitPushAndBoot: a file written inside a running server
// is in the image Snapshot pushes; a new server created from that image
// (pulled from the registry, the local tag being gone) has it, and the
// source keeps running.
func TestSnapshotCommitPushAndBoot(t *testing.T) {
	image := testenv.Image(t)
	registry := testenv.Registry(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	if code, out, err := execIn(ctx, d.Client(), docker.ContainerName(spec.ID), "sh", "-c", "echo snapshot-data > /root/data"); err != nil || code != 0 {
		t.Fatalf("write file: %d %q %v", code, out, err)
	}
	tag := "test-" + spec.ID[:8]
	ref := registry + "/capsule/snapshots:" + tag
	registrytest.DeleteAtCleanup(t, ref)

	var pushed int64
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	digest, size, err := d.Snapshot(pctx, spec.ID, ref, func(n int64) { pushed = n })
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if !strings.HasPrefix(digest, "sha256:") || size <= 0 {
		t.Errorf("digest %q size %d", digest, size)
	}
	t.Logf("snapshot %s: digest %s, image size %d, bytes pushed %d", ref, digest, size, pushed)
	drivertest.WantPower(t, d, spec.ID, drivers.PowerRunning)
	if _, err := d.Client().ImageInspect(ctx, ref); err == nil {
		t.Errorf("local tag %s left behind", ref)
	}
	tags, err := (&capreg.Client{Address: registry}).Tags(ctx, capreg.SnapshotRepo)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tags, tag) {
		t.Errorf("registry tags %v lack %s", tags, tag)
	}

	clone := drivertest.Spec(ref)
	drivertest.Boot(t, d, clone)
	t.Cleanup(func() { _, _ = d.Client().ImageRemove(context.Background(), ref, imageRemoveOpts) })
	code, out, err := execIn(ctx, d.Client(), docker.ContainerName(clone.ID), "cat", "/root/data")
	if err != nil || code != 0 || strings.TrimSpace(out) != "snapshot-data" {
		t.Fatalf("file in the clone: %d %q %v", code, out, err)
	}
}

var imageRemoveOpts = image.RemoveOptions{Force: true}
