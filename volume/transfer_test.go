package volume

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/registry"
)

// A volume exported from one host's manager and imported by another's
// (through the real registry) has the same files, owners and size.
func TestExportImportThroughTheRegistry(t *testing.T) {
	needRoot(t)
	addr := testenv.Registry(t)
	reg := registry.New(config.Registry{Address: addr})
	src, dst := newManager(t), newManager(t)
	ctx := context.Background()
	if err := src.Create(ctx, Local, "mover", 2, Source{}); err != nil {
		t.Fatal(err)
	}
	mp, err := src.Mount(ctx, Local, "mover")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fill(filepath.Join(mp, "data"), 20<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(mp, "dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(mp, "dir"), 1234, 1234); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(mp, "data"))
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	ref := addr + "/capsule/volumes/mover-test:" + tag
	n, err := src.Export(ctx, Local, "mover", reg, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d, err := reg.Resolve(context.Background(), "capsule/volumes/mover-test", tag)
		if err == nil {
			_ = reg.DeleteManifest(context.Background(), "capsule/volumes/mover-test", d.Digest)
		}
	})
	if n < 20<<20 {
		t.Errorf("exported %d bytes, want at least the 20 MiB file", n)
	}
	// Export of a mounted volume leaves it mounted.
	if ok, _ := src.hostMounted("mover"); !ok {
		t.Error("export unmounted a volume mounted before")
	}
	if err := src.Unmount(ctx, "mover"); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Import(ctx, Local, "mover", 2, reg, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Import(ctx, Local, "mover", 2, reg, ref); err != nil {
		t.Errorf("a redelivered import: %v", err)
	}
	if gb, _ := dst.SizeGB(Local, "mover"); gb != 2 {
		t.Errorf("imported volume of %d GB, want 2", gb)
	}
	mp2, err := dst.Mount(ctx, Local, "mover")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(mp2, "data"))
	if string(got) != string(want) {
		t.Errorf("imported data differs (%d bytes, want %d)", len(got), len(want))
	}
	if fi, err := os.Stat(filepath.Join(mp2, "dir")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("dir: %v %v", fi, err)
	}
	if err := dst.Unmount(ctx, "mover"); err != nil {
		t.Fatal(err)
	}
	// Export mounted it for the copy only: nothing mounted now.
	if _, err := src.Export(ctx, Local, "mover", reg, ref); err != nil {
		t.Fatal(err)
	}
	if ok, _ := src.hostMounted("mover"); ok {
		t.Error("export left the volume mounted")
	}
	if _, err := dst.Import(ctx, Local, "other", 1, reg, addr+"/capsule/volumes/mover-test:missing"); !errdefs.IsNotFound(err) {
		t.Errorf("import of a missing tag: %v, want NotFound", err)
	}
	for _, m := range []*Manager{src, dst} {
		if err := m.Delete(ctx, Local, "mover"); err != nil {
			t.Error(err)
		}
	}
}
