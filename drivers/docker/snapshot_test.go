package docker_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// deleteTag removes ref's manifest from the registry (test cleanup).
func deleteTag(t *testing.T, registry, repo, tag string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+registry+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Logf("resolve %s: %v", tag, err)
		return
	}
	res.Body.Close()
	dg := res.Header.Get("Docker-Content-Digest")
	if dg == "" {
		return
	}
	req, _ = http.NewRequest(http.MethodDelete, "http://"+registry+"/v2/"+repo+"/manifests/"+dg, nil)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
	}
}

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
	t.Cleanup(func() { deleteTag(t, registry, "capsule/snapshots", tag) })

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
	res, err := http.Get("http://" + registry + "/v2/capsule/snapshots/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	tags, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(tags), `"`+tag+`"`) {
		t.Errorf("registry tags %s lack %s", tags, tag)
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
