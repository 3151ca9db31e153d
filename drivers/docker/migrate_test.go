package docker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/registry/registrytest"
)

// hostDriver returns a driver on the test dockerd named by env (the two
// "hosts" of a migration), skipped or failed like testenv's components.
func hostDriver(t *testing.T, env string) *docker.Driver {
	t.Helper()
	host := testenv.Env(t, env, "a test host's dockerd")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := docker.New(ctx, docker.Options{
		Host:         host,
		StopTimeout:  5 * time.Second,
		SandboxImage: testenv.Image(t),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("docker.New(%s): %v", host, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// layerSizes reads the manifest dgst of repo from the test registry and
// returns its layers' compressed sizes.
func layerSizes(t *testing.T, registry, repo, dgst string) []int64 {
	t.Helper()
	m, err := (&capreg.Client{Address: registry}).Manifest(context.Background(), repo, dgst)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, l := range m.Layers {
		out = append(out, l.Size)
	}
	return out
}

// TestVolumesListsTenantMountsOnly: a named volume and a bind of a host
// directory are reported; Docker's own /etc files, a bind over a /proc
// file (what LXCFS adds) and a tmpfs are not; a plain server has none.
func TestVolumesListsTenantMountsOnly(t *testing.T) {
	img := testenv.Image(t)
	d := newDriver(t)
	ctx := drivertest.Ctx(t)

	plain := drivertest.Spec(img)
	drivertest.Boot(t, d, plain)
	if vols, err := d.Volumes(ctx, plain.ID); err != nil || len(vols) != 0 {
		t.Fatalf("volumes of a plain server: %v, %v", vols, err)
	}
	if _, err := d.Volumes(ctx, uuid.NewString()); !errors.Is(err, drivers.ErrNotFound) {
		t.Errorf("volumes of a missing instance: %v", err)
	}

	// A container as the driver names and labels them, with mounts the
	// driver does not make (yet): what an operator or an older build
	// could have left.
	id := uuid.NewString()
	volName := "capsule-migtest-" + id[:8]
	dir := t.TempDir()
	uptime := filepath.Join(dir, "uptime")
	if err := os.WriteFile(uptime, []byte("1.0 1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := d.Client()
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: volName}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.VolumeRemove(context.Background(), volName, true) })
	_, err := cli.ContainerCreate(ctx, &container.Config{
		Image:  img,
		Labels: map[string]string{docker.LabelInstance: id, docker.LabelManaged: "true"},
	}, &container.HostConfig{
		NetworkMode: "none",
		Mounts: []mount.Mount{
			{Type: mount.TypeVolume, Source: volName, Target: "/var/lib/data"},
			{Type: mount.TypeBind, Source: dir, Target: "/srv/share"},
			{Type: mount.TypeBind, Source: uptime, Target: "/proc/uptime", ReadOnly: true},
			{Type: mount.TypeTmpfs, Target: "/run/scratch"},
		},
	}, nil, nil, docker.ContainerName(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), docker.ContainerName(id), container.RemoveOptions{Force: true})
	})
	vols, err := d.Volumes(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{dir, volName}
	slices.Sort(want)
	if !slices.Equal(vols, want) {
		t.Errorf("volumes %v, want %v", vols, want)
	}
}

// TestMigrateBetweenDaemons is a cold migration's driver part across two
// dockerds: a server with 20 MB of fresh random data is stopped and
// exported on host A (only its own layer is uploaded: the registry has
// the base image), pulled on host B with progress, and a server created
// from it there has the data, bit for bit.
func TestMigrateBetweenDaemons(t *testing.T) {
	img := testenv.Image(t)
	registry := testenv.Registry(t)
	a := hostDriver(t, "CAPSULE_TEST_DOCKER_HOST_A")
	b := hostDriver(t, "CAPSULE_TEST_DOCKER_HOST_B")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	spec := drivertest.Spec(img)
	drivertest.Boot(t, a, spec)
	const blobBytes = 20 << 20
	code, out, err := execIn(ctx, a.Client(), docker.ContainerName(spec.ID), "sh", "-c",
		"head -c 20971520 /dev/urandom > /root/blob && sha256sum /root/blob")
	if err != nil || code != 0 {
		t.Fatalf("write blob: %d %q %v", code, out, err)
	}
	sum, _, _ := strings.Cut(strings.TrimSpace(out), " ")
	if len(sum) != 64 {
		t.Fatalf("sha256sum said %q", out)
	}
	if err := a.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if vols, err := a.Volumes(ctx, spec.ID); err != nil || len(vols) != 0 {
		t.Fatalf("volumes %v, %v", vols, err)
	}

	repo := "capsule/migrations-test-" + randomHex(t, 4)
	tag := spec.ID
	ref := registry + "/" + repo + ":" + tag
	registrytest.DeleteAtCleanup(t, ref)

	var mu sync.Mutex
	var pushProgress int64
	digest, pushed, err := a.ExportMigration(ctx, spec.ID, ref, func(n int64) {
		mu.Lock()
		pushProgress = max(pushProgress, n)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	drivertest.WantPower(t, a, spec.ID, drivers.PowerShutdown)
	if _, err := a.Client().ImageInspect(ctx, ref); err == nil {
		t.Errorf("local tag %s left on the source", ref)
	}
	layers := layerSizes(t, registry, repo, digest)
	var total int64
	for _, n := range layers {
		total += n
	}
	t.Logf("export: digest %s, %d bytes pushed (progress %d uncompressed), manifest layers %v (%d bytes)",
		digest, pushed, pushProgress, layers, total)
	if len(layers) < 2 || pushed != layers[len(layers)-1] {
		t.Errorf("pushed %d bytes, want exactly the new top layer's %v", pushed, layers)
	}
	// Random data does not compress: the layer is the blob plus tar and
	// gzip framing, and the base layers are not counted.
	if pushed < blobBytes || pushed > blobBytes+blobBytes/20 || total-pushed <= 0 {
		t.Errorf("pushed %d bytes for a %d-byte change in a %d-byte image", pushed, blobBytes, total)
	}
	if pushProgress < blobBytes {
		t.Errorf("push progress reached %d", pushProgress)
	}

	var pullProgress []int64
	pulled, err := b.Pull(ctx, ref, func(n int64) { pullProgress = append(pullProgress, n) })
	if err != nil {
		t.Fatalf("pull on B: %v", err)
	}
	t.Cleanup(func() { _, _ = b.Client().ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true}) })
	t.Logf("pull: %d bytes, %d progress reports", pulled, len(pullProgress))
	if len(pullProgress) == 0 || pullProgress[len(pullProgress)-1] != pulled || !slices.IsSorted(pullProgress) {
		t.Errorf("pull progress %v, returned %d", pullProgress, pulled)
	}
	// B has the base image already: only the server's own layer moves.
	if pulled != pushed {
		t.Errorf("pulled %d bytes, pushed %d", pulled, pushed)
	}
	if again, err := b.Pull(ctx, ref, nil); err != nil || again != 0 {
		t.Errorf("second pull: %d bytes, %v; want 0", again, err)
	}

	moved := spec
	moved.Image = ref
	drivertest.Boot(t, b, moved)
	code, out, err = execIn(ctx, b.Client(), docker.ContainerName(moved.ID), "sha256sum", "/root/blob")
	if err != nil || code != 0 || !strings.HasPrefix(out, sum+" ") {
		t.Fatalf("blob on B: %d %q %v; want sum %s", code, out, err, sum)
	}

	// The image stays while the server uses it, and goes after.
	if err := b.RemoveImage(ctx, ref); err != nil {
		t.Fatalf("remove image in use: %v", err)
	}
	if _, err := b.Client().ImageInspect(ctx, ref); err != nil {
		t.Errorf("image in use removed: %v", err)
	}
	if err := b.Destroy(ctx, moved.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveImage(ctx, ref); err != nil {
		t.Fatalf("remove image: %v", err)
	}
	if _, err := b.Client().ImageInspect(ctx, ref); err == nil {
		t.Error("image still here after RemoveImage")
	}
	if err := b.RemoveImage(ctx, ref); err != nil {
		t.Errorf("remove a missing image: %v", err)
	}
}
