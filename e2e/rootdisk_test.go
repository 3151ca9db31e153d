package e2e

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// xfsDataRoot runs deploy/lib.sh's cap_xfs_dataroot (what the all-in-one
// gives Capsule's dockerd) for dir with its image img of gb GiB, without
// systemd, and says whether dir is now XFS with project quotas.
func xfsDataRoot(t *testing.T, dir, img string, gb int) (string, bool) {
	t.Helper()
	lib, err := filepath.Abs("../deploy/lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cmd := exec.Command("bash", "-c", `. "$1" && cap_xfs_dataroot "$2" "$3" "$4"`, "bash", lib, dir, img, strconv.Itoa(gb))
	cmd.Env = append(os.Environ(), "CAPSULE_SUPERVISOR=process", "CAPSULE_RUN="+tmp, "CAPSULE_LIB="+tmp, "CAPSULE_LOG="+tmp)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// btrfsDataRoot runs deploy/lib.sh's cap_btrfs_dataroot (the all-in-one's
// data root on a kernel without XFS quotas) as xfsDataRoot does.
func btrfsDataRoot(t *testing.T, dir, img string, gb int) (string, bool) {
	t.Helper()
	lib, err := filepath.Abs("../deploy/lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cmd := exec.Command("bash", "-c", `. "$1" && cap_btrfs_dataroot "$2" "$3" "$4"`, "bash", lib, dir, img, strconv.Itoa(gb))
	cmd.Env = append(os.Environ(), "CAPSULE_SUPERVISOR=process", "CAPSULE_RUN="+tmp, "CAPSULE_LIB="+tmp, "CAPSULE_LOG="+tmp)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// mountOf is dir's filesystem type and options in /proc/mounts ("" when
// dir is no mount point).
func mountOf(t *testing.T, dir string) (fs, opts string) {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == dir {
			fs, opts = f[2], f[3]
		}
	}
	return fs, opts
}

// unmountXFS undoes xfsDataRoot: the mount (its loop device is released
// with it) and the image.
func unmountXFS(t *testing.T, dir, img string) {
	if fs, _ := mountOf(t, dir); fs != "" {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}
	if out, _ := exec.Command("losetup", "-j", img).Output(); len(out) > 0 {
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			_ = exec.Command("losetup", "-d", strings.SplitN(l, ":", 2)[0]).Run()
		}
	}
	_ = os.Remove(img)
}

// The all-in-one's XFS data root: made once, mounted with pquota, kept as
// it is on a re-run; on a kernel without XFS quotas it fails loudly and
// leaves nothing mounted or attached.
func TestXFSDataRootFromLib(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("mkfs.xfs not installed (xfsprogs, in deploy/lib.sh's packages)")
	}
	base, err := os.MkdirTemp("/tmp", "capsule-xfs-")
	if err != nil {
		t.Fatal(err)
	}
	dir, img := filepath.Join(base, "docker"), filepath.Join(base, "docker.xfs")
	t.Cleanup(func() { unmountXFS(t, dir, img); _ = os.RemoveAll(base) })

	out, ok := xfsDataRoot(t, dir, img, 1)
	fs, opts := mountOf(t, dir)
	if !ok {
		// A kernel without CONFIG_XFS_QUOTA: told, nothing left mounted.
		if !strings.Contains(out, "root disks are not enforced") {
			t.Errorf("cap_xfs_dataroot failed without saying root disks are not enforced:\n%s", out)
		}
		if fs != "" {
			t.Errorf("after a failed cap_xfs_dataroot %s is a %s mount (%s)", dir, fs, opts)
		}
		if l, _ := exec.Command("losetup", "-j", img).Output(); len(l) > 0 {
			t.Errorf("a loop device is left on %s: %s", img, l)
		}
		t.Skipf("this kernel cannot mount XFS with pquota (checked the failure path):\n%s", out)
	}
	if fs != "xfs" || !strings.Contains(opts, "prjquota") {
		t.Fatalf("%s is %q (%s), want xfs with prjquota; output:\n%s", dir, fs, opts, out)
	}
	// Idempotent: a re-run keeps the mount (and so what is on it).
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := xfsDataRoot(t, dir, img, 1); !ok {
		t.Fatalf("second cap_xfs_dataroot failed:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("a re-run lost the data root's content: %v", err)
	}
	// After a reboot (unmounted, image kept): mounted again, content back.
	if err := syscall.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	if out, ok := xfsDataRoot(t, dir, img, 1); !ok {
		t.Fatalf("re-mount by cap_xfs_dataroot failed:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("the re-mounted data root lost its content: %v", err)
	}
}

// plainXFS formats a sparse image next to dir and mounts it there without
// project quotas (what an operator's XFS data root without pquota is).
func plainXFS(t *testing.T, dir string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("mkfs.xfs not installed (xfsprogs, in deploy/lib.sh's packages)")
	}
	img := dir + ".xfs"
	for _, c := range [][]string{{"truncate", "-s", "2G", img}, {"mkfs.xfs", "-q", img}, {"mount", "-t", "xfs", "-o", "loop", img, dir}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
}

// A dockerd on XFS without project quotas refuses storage-opt size: the
// driver finds it out at its first create with a disk, boots the server
// without a cap and reports the host as not enforcing root disks.
func TestRootDiskNotEnforcedReported(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	d := startTestDockerdOn(t, func(dataRoot string) { plainXFS(t, dataRoot) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	img := testenv.Image(t)
	drv, err := docker.New(ctx, docker.Options{Host: d.host, StopTimeout: time.Second, SandboxImage: img,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	hi, err := drv.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hi.RootDisk != drivers.RootDiskUnprobed {
		t.Errorf("before any create on overlay2/xfs: RootDisk %q, want %q", hi.RootDisk, drivers.RootDiskUnprobed)
	}
	id := uuid.NewString()
	spec := drivers.Spec{ID: id, Name: "nocap", Image: img, VCPUs: 1, MemoryMB: 64, PidsLimit: 100, DiskGB: 1,
		Command: []string{"sleep", "600"}}
	if err := drv.Create(ctx, spec); err != nil {
		t.Fatalf("create with a disk on a data root without pquota: %v", err)
	}
	defer func() { _ = drv.Destroy(context.Background(), id) }()
	hi, err = drv.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hi.RootDisk, drivers.RootDiskNotEnforced+": ") || !strings.Contains(hi.RootDisk, "pquota") {
		t.Errorf("RootDisk %q, want not enforced with dockerd's reason (pquota)", hi.RootDisk)
	}
	if out, err := d.docker("inspect", "-f", "{{json .HostConfig.StorageOpt}}", docker.ContainerName(id)); err != nil || strings.Contains(out, "size") {
		t.Errorf("the server's StorageOpt %s (err %v), want none", out, err)
	}
	if out, err := d.docker("ps", "-a", "-q", "--filter", "name=rootdisk-probe"); err != nil || out != "" {
		t.Errorf("probe containers left: %q (err %v)", out, err)
	}
}

// TestRootDiskENOSPC: on a dockerd whose data root caps root disks, made
// by deploy/lib.sh as the all-in-one does (XFS with project quotas for
// overlay2 where the kernel has XFS quotas, else btrfs with quota groups
// for the btrfs storage driver), a server of a 1 GB disk flavor that
// writes past 1 GiB gets ENOSPC (EDQUOT on btrfs), while its neighbour on
// the same host still writes and the host's data root keeps its room.
func TestRootDiskENOSPC(t *testing.T) {
	t.Parallel()
	d := startCappedDockerd(t, 8)
	c := startCloud(t, onDockerd(d))
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	fl, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: "disk-1g", RAM: 128, VCPUs: 1, Disk: gophercloud.IntToPointer(1)}).Extract()
	if err != nil {
		t.Fatalf("create flavor: %v", err)
	}
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	var ids []string
	for _, n := range []string{"filler", "neighbour"} {
		s, err := servers.Create(ctx, demo, servers.CreateOpts{Name: n, ImageRef: img, FlavorRef: fl.ID}, nil).Extract()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	for _, id := range ids {
		waitStatus(t, demo, id, "ACTIVE", 40*time.Second)
	}
	if n := c.proc(t, "agent-"+c.host).logged(t, "root disk enforced"); n == 0 {
		t.Errorf("the agent did not log that root disks are enforced")
	}
	dd := func(id string, mb int) (string, error) {
		return c.docker("exec", "capsule-"+id, "dd", "if=/dev/zero", "of=/fill", "bs=1M", "count="+strconv.Itoa(mb))
	}
	out, err := dd(ids[0], 1200)
	if err == nil || !(strings.Contains(out, "No space left on device") || strings.Contains(out, "Disk quota exceeded")) {
		t.Errorf("dd of 1200 MiB in a 1 GB disk server: err %v, output %q, want ENOSPC (or EDQUOT)", err, out)
	}
	if out, err := dd(ids[1], 200); err != nil {
		t.Errorf("the neighbour cannot write 200 MiB: %v %s", err, out)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.dataRoot(t), &st); err != nil {
		t.Fatal(err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < 4<<30 {
		t.Errorf("the host's data root has %d MiB free after the filler, want ≥ 4 GiB of its 8", free>>20)
	}
}

// The all-in-one's capped data root (cap_capped_dataroot): XFS with
// pquota where the kernel has XFS quotas, else btrfs with quota groups and
// dockerd's flags then name the btrfs storage driver; kept as it is on a
// re-run, mounted again after a reboot, its choice remembered.
func TestCappedDataRootFromLib(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	for _, tool := range []string{"mkfs.xfs", "mkfs.btrfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (deploy/lib.sh's packages)", tool)
		}
	}
	lib, err := filepath.Abs("../deploy/lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("/tmp", "capsule-capped-")
	if err != nil {
		t.Fatal(err)
	}
	name := "capped"
	dir := filepath.Join(base, "docker-"+name)
	t.Cleanup(func() {
		unmountXFS(t, dir, dir+".xfs")
		unmountXFS(t, dir, dir+".btrfs")
		_ = os.RemoveAll(base)
	})
	run := func(fn string) (string, bool) {
		cmd := exec.Command("bash", "-c", `. "$1" && `+fn+` "$2"`, "bash", lib, name)
		cmd.Env = append(os.Environ(), "CAPSULE_SUPERVISOR=process", "CAPSULE_DATAROOT_GB=1",
			"CAPSULE_RUN="+base, "CAPSULE_LIB="+base, "CAPSULE_LOG="+base, "CAPSULE_ETC="+base)
		out, err := cmd.CombinedOutput()
		return string(out), err == nil
	}
	if got, _ := run("cap_dockerd_data"); strings.TrimSpace(got) != dir {
		t.Fatalf("cap_dockerd_data %q, want %q", got, dir)
	}
	out, ok := run("cap_capped_dataroot")
	if !ok {
		t.Fatalf("cap_capped_dataroot failed:\n%s", out)
	}
	fs, opts := mountOf(t, dir)
	args, _ := run("cap_dockerd_args")
	switch {
	case fs == "xfs" && strings.Contains(opts, "prjquota"):
		if strings.Contains(args, "--storage-driver") {
			t.Errorf("dockerd args on an XFS data root name a storage driver: %s", args)
		}
	case fs == "btrfs":
		if !strings.Contains(args, "--storage-driver btrfs") {
			t.Errorf("dockerd args on a btrfs data root: %s, want --storage-driver btrfs", args)
		}
		if q, err := exec.Command("btrfs", "qgroup", "show", dir).CombinedOutput(); err != nil {
			t.Errorf("quota groups not enabled on %s: %v %s", dir, err, q)
		}
		if _, err := os.Stat(dir + ".xfs"); err == nil {
			t.Errorf("the failed XFS attempt left its image %s.xfs", dir)
		}
	default:
		t.Fatalf("%s is %q (%s) after cap_capped_dataroot, want xfs with prjquota or btrfs:\n%s", dir, fs, opts, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := run("cap_capped_dataroot"); !ok {
		t.Fatalf("second cap_capped_dataroot failed:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("a re-run lost the data root's content: %v", err)
	}
	// After a reboot (unmounted, image kept): the same filesystem again.
	if err := syscall.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	if out, ok := run("cap_capped_dataroot"); !ok {
		t.Fatalf("re-mount by cap_capped_dataroot failed:\n%s", out)
	}
	if again, _ := mountOf(t, dir); again != fs {
		t.Errorf("after a re-mount %s is %q, was %q", dir, again, fs)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("the re-mounted data root lost its content: %v", err)
	}
}
