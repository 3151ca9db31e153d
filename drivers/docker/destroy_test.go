package docker_test

import (
	"context"
	"testing"

	"github.com/docker/docker/api/types/container"
	dimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/volume"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// TestDestroyRemovesEveryContainerOfTheInstance: Destroy lists an
// instance's containers once and removes those it finds: the workload, a
// rescue container and its volume, a root disk resize's kept container;
// a rescue volume left without its container goes too, and another
// instance's containers stay.
func TestDestroyRemovesEveryContainerOfTheInstance(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	spec, other := drivertest.Spec(image), drivertest.Spec(image)
	drivertest.Create(t, d, spec)
	drivertest.Create(t, d, other)
	t.Cleanup(func() { _ = d.Destroy(context.Background(), other.ID) })
	labels := map[string]string{docker.LabelInstance: spec.ID, docker.LabelManaged: "true"}
	extra := func(name string) string {
		t.Helper()
		resp, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Labels: labels},
			&container.HostConfig{NetworkMode: "none"}, nil, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true}) })
		return resp.ID
	}
	rescue := extra(docker.RescueName(spec.ID))
	kept := extra(docker.ContainerName(spec.ID) + ".pre-resize")
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: docker.RescueName(spec.ID)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.VolumeRemove(context.Background(), docker.RescueName(spec.ID), true) })

	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	for what, id := range map[string]string{"workload": docker.ContainerName(spec.ID), "rescue": rescue, "kept": kept} {
		if _, err := cli.ContainerInspect(ctx, id); err == nil {
			t.Errorf("the %s container is left after Destroy", what)
		}
	}
	if _, err := cli.VolumeInspect(ctx, docker.RescueName(spec.ID)); err == nil {
		t.Error("the rescue volume is left after Destroy")
	}
	if _, err := d.Status(ctx, other.ID); err != nil {
		t.Errorf("another instance's container: %v", err)
	}

	// A rescue volume an unrescue cut short left without its container.
	again := drivertest.Spec(image)
	drivertest.Create(t, d, again)
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: docker.RescueName(again.ID)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.VolumeRemove(context.Background(), docker.RescueName(again.ID), true) })
	if err := d.Destroy(ctx, again.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := cli.VolumeInspect(ctx, docker.RescueName(again.ID)); err == nil {
		t.Error("a rescue volume without its container is left after Destroy")
	}
}

// TestStrayResizeImagesDropped: the delete of a server never resized here
// lists no images, so a resize commit some cut-short resize left for it
// outlives the delete; the reconcile's DropStrayResizeImages removes it,
// and keeps the commits of instances that still have a container.
func TestStrayResizeImagesDropped(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	gone, live := drivertest.Spec(image), drivertest.Spec(image)
	drivertest.Create(t, d, gone)
	drivertest.Create(t, d, live)
	t.Cleanup(func() { _ = d.Destroy(context.Background(), live.ID) })
	commit := func(id string) string {
		t.Helper()
		ref := "capsule-rootdisk/" + id + ":stray"
		if err := cli.ImageTag(ctx, image, ref); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), ref, dimage.RemoveOptions{}) })
		return ref
	}
	goneRef, liveRef := commit(gone.ID), commit(live.ID)
	if err := d.Destroy(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ImageInspect(ctx, goneRef); err != nil {
		t.Fatalf("the delete of a server never resized here looked for its resize commits (%v): the test's premise", err)
	}
	n, err := d.DropStrayResizeImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ImageInspect(ctx, goneRef); err == nil {
		t.Errorf("the resize commit of a deleted server is left after DropStrayResizeImages (dropped %d)", n)
	}
	if _, err := cli.ImageInspect(ctx, liveRef); err != nil {
		t.Errorf("the resize commit of a server that still has its container was removed: %v", err)
	}
	if n < 1 {
		t.Errorf("DropStrayResizeImages said %d dropped", n)
	}
}
