package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/volume"
)

// Ephemeral disks of a server this host no longer has (a delete cut
// short by an agent crash, a failed build whose cleanup never ran) are
// deleted by the reconcile, mounted or not; those of a server placed
// here, of an orphan container (an operator's) and of a server migrating
// through this host are kept, and so is every data volume.
func TestReconcileDeletesStrayEphemeralDisks(t *testing.T) {
	_, err := exec.LookPath("mkfs.ext4")
	testenv.Require(t, os.Geteuid() == 0 && err == nil, "needs root and mkfs.ext4")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	vols, err := volume.New(volume.Config{LocalDir: filepath.Join(dir, "local"), MountDir: filepath.Join(dir, "mnt")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ids, _ := vols.HostMounted()
		for _, v := range ids {
			_ = vols.Unmount(context.Background(), v)
		}
	})
	drv := newFakeDriver()
	drv.put(t, "i-here", drivers.PowerRunning)
	drv.put(t, "i-orphan", drivers.PowerRunning)
	disks := map[string]bool{ // volume -> kept
		protocol.EphemeralID("i-here", 0):      true,
		protocol.EphemeralID("i-orphan", 0):    true,
		protocol.EphemeralID("i-migrating", 0): true,
		protocol.EphemeralID("i-gone", 0):      false,
		protocol.EphemeralID("i-gone", 1):      false,
		protocol.EphemeralID("i-failed", 0):    false,
		"vol-data-1":                           true, // a data volume (the conductor's business)
	}
	for vol := range disks {
		if err := vols.Create(ctx, volume.Local, vol, 1, volume.Source{}); err != nil {
			t.Fatal(err)
		}
	}
	// The deleted server's disk is still mounted on the host (its delete
	// died between the container's removal and the disk's).
	if _, err := vols.Mount(ctx, volume.Local, protocol.EphemeralID("i-gone", 1)); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	off := false
	cfg.ResumeGuestsStateOnHostBoot = &off
	e := newEnv(t, drv, cfg, WithVolumes(vols, nil))
	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-here", Volumes: []protocol.VolumeMount{{
		Volume:    protocol.VolumeSpec{ID: protocol.EphemeralID("i-here", 0), SizeGB: 1, Backend: protocol.BackendLocal, Host: testHost},
		MountPath: protocol.EphemeralMountPath(0)}}}, VMState: lifecycle.Active})
	e.cond.setMigrating("i-migrating")
	e.serveConductor()
	e.start()
	if err := e.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	// Run's own start-up reconcile may be deleting a disk while this one
	// ran (this one then skips the disk it finds busy): wait for the
	// deletes in flight, and check what is kept after them.
	var left []string
	waitFor(t, 20*time.Second, "the stray ephemeral disks deleted", func() bool {
		if left, err = vols.List(volume.Local, ""); err != nil {
			t.Fatal(err)
		}
		for vol, kept := range disks {
			if !kept && slices.Contains(left, vol) {
				return false
			}
		}
		return true
	})
	for vol, kept := range disks {
		if got := slices.Contains(left, vol); got != kept {
			t.Errorf("%s: on the host after reconcile %v, want %v", vol, got, kept)
		}
	}
	mounted, _ := vols.HostMounted()
	if slices.Contains(mounted, protocol.EphemeralID("i-gone", 1)) {
		t.Errorf("the deleted server's ephemeral disk is still mounted: %v", mounted)
	}
}

// The boot volume of a server migrating into this host stays mounted
// through a reconcile between the import's create (which mounts it) and
// its start (which binds it): the server is still placed on the source,
// but its migration runs through this host.
func TestReconcileKeepsMountsOfServersMigratingHere(t *testing.T) {
	_, err := exec.LookPath("mkfs.ext4")
	testenv.Require(t, os.Geteuid() == 0 && err == nil, "needs root and mkfs.ext4")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	vols, err := volume.New(volume.Config{LocalDir: filepath.Join(dir, "local"), MountDir: filepath.Join(dir, "mnt")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ids, _ := vols.HostMounted()
		for _, v := range ids {
			_ = vols.Unmount(context.Background(), v)
		}
	})
	for _, vol := range []string{"vol-boot-importing", "vol-stale"} {
		if err := vols.Create(ctx, volume.Local, vol, 1, volume.Source{}); err != nil {
			t.Fatal(err)
		}
		if _, err := vols.Mount(ctx, volume.Local, vol); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig()
	off := false
	cfg.ResumeGuestsStateOnHostBoot = &off
	e := newEnv(t, newFakeDriver(), cfg, WithVolumes(vols, nil))
	e.cond.setMigrating("i-importing")
	// The import's create recorded the server's volumes (and mounted
	// the boot volume) before the reconciles began.
	e.agent.volc.set("i-importing", []protocol.VolumeMount{{
		Volume:    protocol.VolumeSpec{ID: "vol-boot-importing", SizeGB: 1, Backend: protocol.BackendLocal, Host: testHost},
		MountPath: protocol.RootMountPath}})
	e.serveConductor()
	e.start()
	if err := e.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	var mounted []string
	waitFor(t, 20*time.Second, "the stale host mount removed", func() bool {
		mounted, _ = vols.HostMounted()
		return !slices.Contains(mounted, "vol-stale")
	})
	if !slices.Contains(mounted, "vol-boot-importing") {
		t.Errorf("the importing server's boot volume was unmounted by the reconcile: mounted %v", mounted)
	}
}

// Volume work picked up after its deadline (a message redelivered once
// the agent is back, after the conductor's sweep gave the volume back)
// is refused and reported as failed (unavailable), doing nothing: an
// attach mounts nothing and records nothing, an import makes no copy.
func TestVolumeWorkPastItsDeadlineIsRefused(t *testing.T) {
	_, err := exec.LookPath("mkfs.ext4")
	testenv.Require(t, os.Geteuid() == 0 && err == nil, "needs root and mkfs.ext4")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	vols, err := volume.New(volume.Config{LocalDir: filepath.Join(dir, "local"), MountDir: filepath.Join(dir, "mnt")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ids, _ := vols.HostMounted()
		for _, v := range ids {
			_ = vols.Unmount(context.Background(), v)
		}
	})
	e := newEnv(t, newFakeDriver(), testConfig(), WithVolumes(vols, nil))
	vol := protocol.VolumeSpec{ID: "vol-late", ProjectID: "p1", SizeGB: 1, Backend: protocol.BackendLocal, Host: testHost}
	if err := vols.Create(ctx, volume.Local, vol.ID, 1, volume.Source{}); err != nil {
		t.Fatal(err)
	}
	past := e.agent.now().Add(-time.Second)
	r := e.volumeCall(protocol.KindVolumeAttach, protocol.VolumeAttach{RequestID: "a-late", InstanceID: "i-late",
		Mount: protocol.VolumeMount{AttachmentID: "att-late", Volume: vol, MountPath: "/mnt/vol-late"}, Deadline: past})
	if r.OK || r.ErrorKind != string(errdefs.ErrUnavailable) || r.AttachmentID != "att-late" {
		t.Fatalf("late attach: %+v, want refused (unavailable)", r)
	}
	if mounted, _ := vols.HostMounted(); slices.Contains(mounted, vol.ID) {
		t.Errorf("a refused attach mounted the volume on the host")
	}
	if _, ok := e.agent.volc.get("i-late"); ok {
		t.Errorf("a refused attach recorded the volume for its server")
	}
	imp := protocol.VolumeSpec{ID: "vol-late-import", ProjectID: "p1", SizeGB: 1, Backend: protocol.BackendLocal, Host: testHost}
	r = e.volumeCall(protocol.KindVolumeImport, protocol.VolumeTransfer{RequestID: "i-late", Volume: imp,
		Ref: "127.0.0.1:5050/capsule/volumes/vol-late-import:r", Deadline: past})
	if r.OK || r.ErrorKind != string(errdefs.ErrUnavailable) {
		t.Fatalf("late import: %+v, want refused (unavailable)", r)
	}
	if ok, _ := vols.Exists(volume.Local, imp.ID); ok {
		t.Errorf("a refused import made a copy")
	}
}
