package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
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
