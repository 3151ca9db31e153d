package docker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// TestRebuildWipesTheDiskAndUsesTheNewImage: after a rebuild the server
// runs the new image (a file only that image has is there) and nothing
// written on the old disk survives; a rebuild to an image that cannot be
// pulled leaves the server running, untouched.
func TestRebuildWipesTheDiskAndUsesTheNewImage(t *testing.T) {
	base := testenv.Image(t)
	d := newDriver(t)
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	spec := drivertest.Spec(base)
	drivertest.Boot(t, d, spec)
	ctr := docker.ContainerName(spec.ID)
	run := func(cmd string) (int, string) {
		t.Helper()
		code, out, err := execIn(ctx, cli, ctr, "sh", "-c", cmd)
		if err != nil {
			t.Fatalf("exec %q: %v", cmd, err)
		}
		return code, out
	}

	// Image B = the base image plus /image-b-marker, committed from the
	// running server before it writes its own data.
	if code, out := run("echo b > /image-b-marker"); code != 0 {
		t.Fatalf("write marker: %d %s", code, out)
	}
	imageB := "capsule-rebuild-test:" + uuid.NewString()[:8]
	if _, err := cli.ContainerCommit(ctx, ctr, container.CommitOptions{Reference: imageB, Pause: true}); err != nil {
		t.Fatalf("commit image B: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = cli.ImageRemove(cctx, imageB, image.RemoveOptions{Force: true})
	})
	if code, out := run("echo data > /root/old-disk"); code != 0 {
		t.Fatalf("write old disk: %d %s", code, out)
	}

	// A new image that cannot be had: refused before anything is touched.
	missing := spec
	missing.Image = testenv.Registry(t) + "/capsule/no-such-image:" + uuid.NewString()[:8]
	if err := d.Rebuild(ctx, missing, 5*time.Second); err == nil {
		t.Fatal("rebuild to a missing image succeeded")
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerRunning)
	if code, _ := run("test -f /root/old-disk"); code != 0 {
		t.Fatal("a failed rebuild lost the server's disk")
	}

	spec.Image = imageB
	if err := d.Rebuild(ctx, spec, 5*time.Second); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerShutdown)
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatalf("start: %v", err)
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerRunning)
	if code, out := run("cat /image-b-marker"); code != 0 || strings.TrimSpace(out) != "b" {
		t.Errorf("the rebuilt server does not run image B: %d %q", code, out)
	}
	if code, _ := run("test -e /root/old-disk"); code == 0 {
		t.Error("a file of the old disk survived the rebuild")
	}
}
