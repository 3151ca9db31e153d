package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/errdefs"
)

// Live attach: a volume is mounted into a running server's mount
// namespace without restarting it. Go cannot setns(CLONE_NEWNS) (the
// runtime is multithreaded), and the server's image need not hold any
// tool, so:
//
//  1. the agent clones the volume's host mount into a detached mount
//     (open_tree OPEN_TREE_CLONE), an fd no namespace shows yet;
//  2. it runs `nsenter -t PID -m --root=/ -- HELPER capsule-volume-helper
//     attach ...` with that fd as fd 3: nsenter opens the host's root
//     before entering the server's mount namespace and chroots back to
//     it, so the helper (this very binary) is exec'ed from the host's
//     filesystem yet lives in the server's mount namespace;
//  3. the helper resolves the target inside the server's root
//     (/proc/PID/root, with RESOLVE_IN_ROOT so a tenant's symlink cannot
//     lead out of it), makes the missing directories and move_mount()s
//     fd 3 there: the server sees the volume at once.
//
// Detach runs the same helper with "detach": it umounts the target (not
// lazily), so a volume a process of the server still uses is refused
// with EBUSY and stays attached. The host mount is the agent's; the
// server's mount shares its filesystem (and so its loop device) and
// nothing else.

// HelperCommand is the hidden first argument that makes a binary calling
// RunHelper serve as the mount helper.
const HelperCommand = "capsule-volume-helper"

// Exit codes of the helper.
const (
	helperOK          = 0
	helperFailed      = 1
	helperBusy        = 3
	helperNotAttached = 4
)

// CheckTarget validates a mount target inside a server: absolute, clean,
// not the root and not under the kernel's or runtime's own trees.
func CheckTarget(target string) error {
	if target == "" || !path.IsAbs(target) || path.Clean(target) != target || strings.ContainsRune(target, 0) {
		return errdefs.InvalidArgumentf("invalid mount point %q: it must be an absolute, clean path", target)
	}
	if target == "/" {
		return errdefs.InvalidArgumentf("invalid mount point %q", target)
	}
	for _, p := range []string{"/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/usr"} {
		if target == p || strings.HasPrefix(target, p+"/") {
			return errdefs.InvalidArgumentf("invalid mount point %q: not under %s", target, p)
		}
	}
	return nil
}

// Attach mounts volume id (backend b) into the mount namespace of the
// running process pid (a server's init) at target, mounting it on the
// host first. Attached there already: nothing to do.
func (m *Manager) Attach(ctx context.Context, b Backend, id string, pid int, target string) error {
	if err := CheckTarget(target); err != nil {
		return err
	}
	img, err := m.ImagePath(b, id)
	if err != nil {
		return err
	}
	defer m.lock(id)()
	mp, err := m.mountLocked(img, id)
	if err != nil {
		return err
	}
	dev, err := deviceOf(mp)
	if err != nil {
		return err
	}
	if ok, err := attachedIn(pid, target, dev); err != nil {
		return fmt.Errorf("attach volume %s: %w", id, err)
	} else if ok {
		return nil
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, mp, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("attach volume %s: open_tree %s: %w", id, mp, err)
	}
	treeFile := os.NewFile(uintptr(tree), "volume-"+id)
	defer treeFile.Close() // an unattached clone goes with its last fd
	code, msg, err := m.runHelper(ctx, pid, treeFile, "attach", target, dev)
	if err != nil {
		return fmt.Errorf("attach volume %s to process %d at %s: %w", id, pid, target, err)
	}
	if code != helperOK {
		return fmt.Errorf("attach volume %s to process %d at %s: %s", id, pid, target, msg)
	}
	m.log.Info("volume attached into a server", "volume", id, "pid", pid, "target", target)
	return nil
}

// Detach unmounts volume id from the mount namespace of process pid at
// target. A volume in use there (an open file, a process's working
// directory) is refused with a Conflict naming the path, and stays
// attached; one not attached there is detached already. The host mount
// stays (Unmount removes it).
func (m *Manager) Detach(ctx context.Context, id string, pid int, target string) error {
	if err := CheckTarget(target); err != nil {
		return err
	}
	if err := checkID(id); err != nil {
		return err
	}
	defer m.lock(id)()
	mp := m.MountPoint(id)
	mounted, err := m.hostMounted(id)
	if err != nil {
		return err
	}
	if !mounted {
		// Without the host mount its device is unknown; whatever the
		// server still has at target is found by its path alone.
		return m.detachAny(ctx, id, pid, target)
	}
	dev, err := deviceOf(mp)
	if err != nil {
		return err
	}
	// The helper decides (not mountinfo): it resolves target as the
	// attach did, through the server's own symlinks.
	return m.detachDev(ctx, id, pid, target, dev)
}

// detachAny detaches whatever ext4 filesystem of a loop device is at
// target in pid's namespace (the host mount of its volume is gone).
func (m *Manager) detachAny(ctx context.Context, id string, pid int, target string) error {
	mounts, err := readMountInfo("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		return processGone(pid, err)
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].mountPoint == target && strings.HasPrefix(mounts[i].source, "/dev/loop") {
			return m.detachDev(ctx, id, pid, target, mounts[i].majorMinor)
		}
	}
	return nil
}

func (m *Manager) detachDev(ctx context.Context, id string, pid int, target, dev string) error {
	code, msg, err := m.runHelper(ctx, pid, nil, "detach", target, dev)
	if err != nil {
		return fmt.Errorf("detach volume %s from process %d at %s: %w", id, pid, target, err)
	}
	switch code {
	case helperOK, helperNotAttached:
		m.log.Info("volume detached from a server", "volume", id, "pid", pid, "target", target)
		return nil
	case helperBusy:
		return errdefs.Conflictf("volume %s is busy: %s is in use in the server (close the files open there and leave the directory, then detach again)", id, target)
	}
	return fmt.Errorf("detach volume %s from process %d at %s: %s", id, pid, target, msg)
}

// AttachedIn reports whether volume id is mounted at target in the mount
// namespace of process pid.
func (m *Manager) AttachedIn(id string, pid int, target string) (bool, error) {
	mp := m.MountPoint(id)
	mounted, err := m.hostMounted(id)
	if err != nil || !mounted {
		return false, err
	}
	dev, err := deviceOf(mp)
	if err != nil {
		return false, err
	}
	return attachedIn(pid, target, dev)
}

// Mounts lists the volume-like mounts in pid's namespace: target → the
// device ("7:3") of each ext4 filesystem of a loop device mounted there.
func Mounts(pid int) (map[string]string, error) {
	mounts, err := readMountInfo("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		return nil, processGone(pid, err)
	}
	out := map[string]string{}
	for _, mi := range mounts {
		if mi.fsType == "ext4" && strings.HasPrefix(mi.source, "/dev/loop") {
			out[mi.mountPoint] = mi.majorMinor
		}
	}
	return out, nil
}

// attachedIn reports whether device dev ("7:3") is mounted at target in
// the mount namespace of process pid.
func attachedIn(pid int, target, dev string) (bool, error) {
	mounts, err := readMountInfo("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		return false, processGone(pid, err)
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].mountPoint == target {
			return mounts[i].majorMinor == dev, nil
		}
	}
	return false, nil
}

func processGone(pid int, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return errdefs.FailedPreconditionf("process %d is gone (the server is not running)", pid)
	}
	return err
}

// deviceOf is the device ("major:minor") of the filesystem at p.
func deviceOf(p string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), nil
}

// runHelper runs the helper in pid's mount namespace, tree as its fd 3,
// and returns its exit code and what it printed.
func (m *Manager) runHelper(ctx context.Context, pid int, tree *os.File, op, target, dev string) (int, string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(pid), "--mount", "--root=/", "--wd=/", "--",
		m.cfg.Helper, HelperCommand, op, strconv.Itoa(pid), target, dev)
	if tree != nil {
		cmd.ExtraFiles = []*os.File{tree}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	err := cmd.Run()
	msg := strings.TrimSpace(out.String())
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode(), msg, nil
	}
	if err != nil {
		return 0, msg, fmt.Errorf("nsenter: %w: %s", err, msg)
	}
	return helperOK, msg, nil
}

// RunHelper serves the helper subcommand when args (os.Args) ask for it
// and then exits; otherwise it returns at once. Call it first in main
// (and in TestMain of tests that attach volumes).
func RunHelper(args []string) {
	if len(args) < 2 || args[1] != HelperCommand {
		return
	}
	code, err := helper(args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// helper runs in the server's mount namespace, its root the host's.
func helper(args []string) (int, error) {
	if len(args) != 4 {
		return helperFailed, fmt.Errorf("usage: %s attach|detach PID TARGET DEV", HelperCommand)
	}
	op, pid, target, dev := args[0], args[1], args[2], args[3]
	if err := CheckTarget(target); err != nil {
		return helperFailed, err
	}
	root, err := unix.Open("/proc/"+pid+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return helperFailed, fmt.Errorf("open the server's root: %w", err)
	}
	defer unix.Close(root)
	rel := strings.TrimPrefix(target, "/")
	switch op {
	case "attach":
		dir, err := mkdirInRoot(root, rel)
		if err != nil {
			return helperFailed, fmt.Errorf("make %s in the server: %w", target, err)
		}
		defer unix.Close(dir)
		if isMountOf(dir, "", dev) {
			return helperOK, nil
		}
		if err := unix.MoveMount(3, "", dir, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return helperFailed, fmt.Errorf("mount at %s in the server: %w", target, err)
		}
		return helperOK, nil
	case "detach":
		parent, err := openInRoot(root, path.Dir(rel))
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return helperNotAttached, nil
			}
			return helperFailed, fmt.Errorf("open %s in the server: %w", path.Dir(target), err)
		}
		defer unix.Close(parent)
		base := path.Base(rel)
		if !isMountOf(parent, base, dev) {
			return helperNotAttached, nil
		}
		// Relative to the parent as working directory: nothing of ours
		// holds the volume's mount while it is unmounted.
		if err := unix.Fchdir(parent); err != nil {
			return helperFailed, err
		}
		if err := unix.Unmount(base, unix.UMOUNT_NOFOLLOW); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return helperBusy, fmt.Errorf("%s is busy", target)
			}
			return helperFailed, fmt.Errorf("unmount %s in the server: %w", target, err)
		}
		return helperOK, nil
	}
	return helperFailed, fmt.Errorf("unknown helper operation %q", op)
}

// resolveInRoot: every lookup stays inside the server's root, whatever
// its symlinks say, and never follows /proc magic links.
const resolveInRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// openInRoot opens directory rel (relative, "." for the root itself)
// inside root as O_PATH.
func openInRoot(root int, rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(root, rel, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveInRoot,
	})
}

// mkdirInRoot opens directory rel inside root, making the missing
// directories on its way (0755, as mkdir -p).
func mkdirInRoot(root int, rel string) (int, error) {
	fd, err := openInRoot(root, rel)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		prefix := filepath.Join(parts[:i+1]...)
		fd, err := openInRoot(root, prefix)
		if err == nil {
			if i == len(parts)-1 {
				return fd, nil
			}
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, err
		}
		parent, err := openInRoot(root, filepath.Join(parts[:i]...))
		if err != nil {
			return -1, err
		}
		err = unix.Mkdirat(parent, parts[i], 0o755)
		unix.Close(parent)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, err
		}
		if i == len(parts)-1 {
			return openInRoot(root, prefix)
		}
	}
	return -1, unix.ENOENT
}

// isMountOf reports whether name in directory dirfd ("" for dirfd
// itself) is the root of a mount of device dev ("major:minor").
func isMountOf(dirfd int, name, dev string) bool {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 || stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false
	}
	return fmt.Sprintf("%d:%d", stx.Dev_major, stx.Dev_minor) == dev
}

// Device is the device ("major:minor") of volume id's host mount.
func (m *Manager) Device(id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	mounted, err := m.hostMounted(id)
	if err != nil {
		return "", err
	}
	if !mounted {
		return "", errdefs.FailedPreconditionf("volume %s is not mounted on this host", id)
	}
	return deviceOf(m.MountPoint(id))
}
