package docker_test

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/registry/registrytest"
)

// TestImageVolumesAreRootDiskDirectories: a server of an image declaring
// VOLUME /data gets no Docker volume: /data is a directory of its root
// disk (the writable layer, capped with it), a snapshot carries what was
// written there and declares no volume, and the destroy leaves neither a
// volume nor the image copy the server ran.
func TestImageVolumesAreRootDiskDirectories(t *testing.T) {
	base := testenv.Image(t)
	registry := testenv.Registry(t)
	d := newDriver(t)
	cli := d.Client()
	ctx := drivertest.Ctx(t)

	if err := pull(ctx, d, base); err != nil {
		t.Fatal(err)
	}
	src, err := cli.ContainerCreate(ctx, &container.Config{Image: base, Cmd: []string{"true"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), src.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	})
	withVol := "capsuletest/with-volume:" + src.ID[:12]
	// Two servers of the image: the copy is shared, and the last one's
	// destroy removes it.
	if _, err := cli.ContainerCommit(ctx, src.ID, container.CommitOptions{Reference: withVol,
		Changes: []string{"VOLUME /data", `CMD ["sleep", "600"]`}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), withVol, image.RemoveOptions{Force: true}) })

	spec := drivertest.Spec(withVol)
	other := drivertest.Spec(withVol)
	drivertest.Boot(t, d, spec)
	drivertest.Create(t, d, other)
	c, err := cli.ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Mounts {
		if m.Type == mount.TypeVolume || m.Destination == "/data" {
			t.Errorf("the server has a mount at %s (%s %s), want /data in its root disk", m.Destination, m.Type, m.Name)
		}
	}
	if len(c.Config.Volumes) != 0 {
		t.Errorf("the server's config declares volumes %v", c.Config.Volumes)
	}
	if got := c.Config.Labels[docker.LabelSourceImage]; got != withVol {
		t.Errorf("label %s = %q, want %q", docker.LabelSourceImage, got, withVol)
	}
	copyID := c.Image
	srcImg, err := cli.ImageInspect(ctx, withVol)
	if err != nil {
		t.Fatal(err)
	}
	if copyID == srcImg.ID {
		t.Fatalf("the server runs the image with the volume itself")
	}
	if code, out, err := execIn(ctx, cli, c.ID, "sh", "-c", "echo kept > /data/file && cat /data/file"); err != nil || code != 0 || strings.TrimSpace(out) != "kept" {
		t.Fatalf("write into /data: %d %q %v", code, out, err)
	}
	if diff, err := cli.ContainerDiff(ctx, c.ID); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(jsonOf(diff), "/data/file") {
		t.Errorf("/data/file is not in the writable layer (diff %s)", jsonOf(diff))
	}

	// A snapshot carries /data/file and declares no volume.
	repo := capreg.PerImageRepo(capreg.SnapshotRepo, "test-"+spec.ID[:8])
	ref := registry + "/" + repo + ":volumes"
	registrytest.DeleteAtCleanup(t, ref)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, _, err := d.Snapshot(pctx, spec.ID, ref, nil); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	reg := &capreg.Client{Address: registry}
	man, err := reg.Manifest(ctx, repo, "volumes")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := reg.GetBlob(ctx, repo, man.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Config struct {
			Volumes map[string]any
			Labels  map[string]string
		} `json:"config"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Volumes) != 0 {
		t.Errorf("the snapshot declares volumes %v", cfg.Config.Volumes)
	}
	if v := cfg.Config.Labels[docker.LabelSourceImage]; v != "" {
		t.Errorf("the snapshot carries %s=%q", docker.LabelSourceImage, v)
	}
	snap := drivertest.Spec(ref)
	drivertest.Boot(t, d, snap)
	sc, err := cli.ContainerInspect(ctx, docker.ContainerName(snap.ID))
	if err != nil {
		t.Fatal(err)
	}
	if code, out, err := execIn(ctx, cli, sc.ID, "cat", "/data/file"); err != nil || code != 0 || strings.TrimSpace(out) != "kept" {
		t.Errorf("/data/file in a server of the snapshot: %d %q %v", code, out, err)
	}
	if sc.Config.Labels[docker.LabelSourceImage] != "" {
		t.Errorf("a server of the snapshot runs a copy of it: %s", sc.Config.Labels[docker.LabelSourceImage])
	}

	// The copy stays while a server runs it, and goes with the last one.
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ImageInspect(ctx, copyID); err != nil {
		t.Errorf("the copy went while another server uses it: %v", err)
	}
	if err := d.Destroy(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ImageInspect(ctx, copyID); err == nil {
		t.Errorf("the image copy %s is left after its last server", copyID)
	}
	if _, err := cli.ImageInspect(ctx, withVol); err != nil {
		t.Errorf("the server's own image went with it: %v", err)
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
