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
	"github.com/capsule-cloud/capsule/registry/registrytest"
)

// listing prints what a commit must carry of /root and /etc (names,
// types, modes, owners, file sizes, mtimes and contents), leaving out
// the files Docker bind-mounts and regenerates.
const listing = `cd / && find root etc -xdev ! -path etc/hostname ! -path etc/hosts ! -path etc/resolv.conf ! -path etc/mtab | sort |
while read -r p; do
  if [ -f "$p" ] && [ ! -L "$p" ]; then echo "$(stat -c '%n %F %a %u %g %s %Y' "$p") $(sha256sum "$p" | cut -c1-64)";
  else stat -c '%n %F %a %u %g' "$p"; fi
done`

// TestPrecopyDeltaBetweenDaemons: a running server pre-copied, then
// changed (a file appended to, one written, one deleted, a directory
// replaced, a base-image file deleted), stopped and exported onto its
// pre-copy: only the change travels, and the server booted on the other
// dockerd from the pre-copy pulled first, then the export, sees exactly
// the files the source had at its stop.
func TestPrecopyDeltaBetweenDaemons(t *testing.T) {
	img := testenv.Image(t)
	registry := testenv.Registry(t)
	a := hostDriver(t, "CAPSULE_TEST_DOCKER_HOST_A")
	b := hostDriver(t, "CAPSULE_TEST_DOCKER_HOST_B")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	spec := drivertest.Spec(img)
	drivertest.Boot(t, a, spec)
	sh := func(d *docker.Driver, id, script string) string {
		t.Helper()
		code, out, err := execIn(ctx, d.Client(), docker.ContainerName(id), "sh", "-c", script)
		if err != nil || code != 0 {
			t.Fatalf("%s: %d %q %v", script, code, out, err)
		}
		return out
	}
	sh(a, spec.ID, `head -c 20971520 /dev/urandom > /root/blob && echo one > /root/keep && echo bye > /root/del &&
mkdir -p /root/d/sub && echo x > /root/d/x && echo y > /root/d/sub/y && chmod 0750 /root/d && test -f /etc/group`)

	// Files changed just before a pre-copy are sent again by the export
	// (the racy window of coarse file times): not these.
	time.Sleep(500 * time.Millisecond)
	repo := "capsule/migrations-test-" + randomHex(t, 4)
	ref := registry + "/" + repo + ":" + spec.ID
	preRef := ref + "-pre"
	registrytest.DeleteAtCleanup(t, ref)
	registrytest.DeleteAtCleanup(t, preRef)
	preDigest, prePushed, err := a.PrecopyMigration(ctx, spec.ID, preRef, nil)
	if err != nil {
		t.Fatalf("pre-copy: %v", err)
	}
	drivertest.WantPower(t, a, spec.ID, drivers.PowerRunning)
	if _, err := a.Client().ImageInspect(ctx, preRef); err == nil {
		t.Errorf("local tag %s left on the source", preRef)
	}
	if prePushed < 20<<20 {
		t.Errorf("pre-copy pushed %d bytes, want the 20 MiB blob", prePushed)
	}

	// After the pre-copy: 1 MiB more, deletions, a directory replaced.
	sh(a, spec.ID, `echo two >> /root/keep && head -c 1048576 /dev/urandom > /root/new && rm /root/del &&
rm -rf /root/d && mkdir /root/d && echo z > /root/d/z && rm /etc/group && ln -s keep /root/link`)
	want := sh(a, spec.ID, listing)
	if !strings.Contains(want, "root/blob ") || strings.Contains(want, "etc/group") {
		t.Fatalf("listing on the source:\n%s", want)
	}
	if err := a.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	digest, pushed, err := a.ExportMigrationOnto(ctx, spec.ID, preRef, ref, nil)
	if err != nil {
		t.Fatalf("export onto the pre-copy: %v", err)
	}
	pre, full := layerSizes(t, registry, repo, preDigest), layerSizes(t, registry, repo, digest)
	t.Logf("pre-copy %d bytes pushed, layers %v; export %d bytes pushed, layers %v", prePushed, pre, pushed, full)
	if len(full) != len(pre)+1 {
		t.Fatalf("export layers %v, want the pre-copy's %v and one more", full, pre)
	}
	if last := full[len(full)-1]; pushed < last || pushed > last+64<<10 || last < 1<<20 || last > 1<<20+64<<10 {
		t.Errorf("export pushed %d bytes (its layer %d), want the 1 MiB change and little more", pushed, last)
	}

	if _, err := b.Pull(ctx, preRef, nil); err != nil {
		t.Fatalf("pre-pull on B: %v", err)
	}
	// The import's fetch: the last layer and the config, loaded over the
	// pre-pulled pre-copy.
	pulled, err := b.PullDelta(ctx, ref, preRef, nil)
	if err != nil {
		t.Fatalf("pull of the delta on B: %v", err)
	}
	if ii, err := b.Client().ImageInspect(ctx, ref); err != nil || len(ii.RepoDigests) != 0 {
		// A Docker pull records the registry digest; a load does not.
		t.Errorf("image %s after PullDelta: repo digests %v, %v; want it loaded, not pulled", ref, ii.RepoDigests, err)
	}
	t.Cleanup(func() {
		for _, r := range []string{ref, preRef} {
			_, _ = b.Client().ImageRemove(context.Background(), r, image.RemoveOptions{Force: true})
		}
	})
	if pulled != full[len(full)-1] {
		t.Errorf("pulled %d bytes after the pre-pull, want only the last layer's %d", pulled, full[len(full)-1])
	}
	moved := spec
	moved.Image = ref
	drivertest.Boot(t, b, moved)
	if got := sh(b, moved.ID, listing); got != want {
		t.Errorf("files on B differ from the source's at its stop:\n--- source\n%s\n--- B\n%s", want, got)
	}

	// And back: the server, now on B from the migration's image (its
	// original layers plus two), has the 20 MiB blob deleted, a
	// directory replaced again and a base file changed. The pre-copy is
	// one layer over the original layers (the migration layers and the
	// writable layer squashed: the deleted blob is not in it), and the
	// image on A is again the original layers plus two.
	if err := a.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	sh(b, moved.ID, `rm /root/blob && head -c 2097152 /dev/urandom > /root/blob2 && mkdir -p /root/e && echo e > /root/e/f &&
rm -rf /root/d && mkdir /root/d && echo w > /root/d/w && echo more >> /etc/passwd && rm /root/link`)
	time.Sleep(500 * time.Millisecond)
	ref2, preRef2 := ref+"-back", ref+"-back-pre"
	registrytest.DeleteAtCleanup(t, ref2)
	registrytest.DeleteAtCleanup(t, preRef2)
	preDigest2, _, err := b.PrecopyMigration(ctx, moved.ID, preRef2, nil)
	if err != nil {
		t.Fatalf("second pre-copy: %v", err)
	}
	pre2 := layerSizes(t, registry, repo, preDigest2)
	if len(pre2) != len(pre) {
		t.Errorf("second pre-copy's layers %v, want the original image's and one (as the first's %v)", pre2, pre)
	}
	if last := pre2[len(pre2)-1]; last > 8<<20 || last < 3<<20 {
		t.Errorf("second pre-copy's layer is %d bytes, want the 3 MiB the server holds over its image (not the deleted 20 MiB)", last)
	}
	sh(b, moved.ID, `echo three >> /root/keep && rm /root/e/f && ln -s keep /root/link2`)
	want2 := sh(b, moved.ID, listing)
	if strings.Contains(want2, "root/blob ") || !strings.Contains(want2, "root/blob2 ") {
		t.Fatalf("listing on B:\n%s", want2)
	}
	if err := b.Stop(ctx, moved.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	digest2, _, err := b.ExportMigrationOnto(ctx, moved.ID, preRef2, ref2, nil)
	if err != nil {
		t.Fatalf("second export: %v", err)
	}
	if full2 := layerSizes(t, registry, repo, digest2); len(full2) != len(full) {
		t.Errorf("second export's layers %v, want as many as the first's %v", full2, full)
	}
	if _, err := a.Pull(ctx, preRef2, nil); err != nil {
		t.Fatalf("pre-pull on A: %v", err)
	}
	if _, err := a.PullDelta(ctx, ref2, preRef2, nil); err != nil {
		t.Fatalf("pull of the second delta on A: %v", err)
	}
	t.Cleanup(func() {
		for _, r := range []string{ref2, preRef2} {
			_, _ = a.Client().ImageRemove(context.Background(), r, image.RemoveOptions{Force: true})
		}
	})
	// The image's metadata is the server's.
	iiB, errB := b.Client().ImageInspect(ctx, ref)
	iiA, errA := a.Client().ImageInspect(ctx, ref2)
	if errA != nil || errB != nil {
		t.Fatalf("inspect: %v %v", errA, errB)
	}
	if !slices.Equal(iiA.Config.Env, iiB.Config.Env) || !slices.Equal(iiA.Config.Cmd, iiB.Config.Cmd) ||
		!slices.Equal(iiA.Config.Entrypoint, iiB.Config.Entrypoint) || iiA.Config.User != iiB.Config.User ||
		iiA.Config.WorkingDir != iiB.Config.WorkingDir {
		t.Errorf("image config on A %+v, want B's %+v", iiA.Config, iiB.Config)
	}
	if err := b.Destroy(ctx, moved.ID); err != nil {
		t.Fatal(err)
	}
	back := spec
	back.Image = ref2
	drivertest.Boot(t, a, back)
	if got := sh(a, back.ID, listing); got != want2 {
		t.Errorf("files on A differ from B's at its stop:\n--- B\n%s\n--- A\n%s", want2, got)
	}
	if err := a.Destroy(ctx, back.ID); err != nil {
		t.Fatal(err)
	}
}
