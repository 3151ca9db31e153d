package volume

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/errdefs"
)

// A volume in use on a host is mounted at <MountDir>/<id> from a loop
// device over its image. The loop device is set up with
// LO_FLAGS_AUTOCLEAR, so it goes away by itself with the last mount of
// its filesystem (the host's and every server's): nothing to track, and
// nothing leaks when the agent dies between two steps.

// Mount mounts volume id (backend b) on this host at MountPoint(id) and
// returns the mount point; a volume mounted already is left as it is.
func (m *Manager) Mount(ctx context.Context, b Backend, id string) (string, error) {
	img, err := m.ImagePath(b, id)
	if err != nil {
		return "", err
	}
	defer m.lock(id)()
	return m.mountLocked(img, id)
}

func (m *Manager) mountLocked(img, id string) (string, error) {
	mp := m.MountPoint(id)
	mounted, err := m.hostMounted(id)
	if err != nil || mounted {
		return mp, err
	}
	if _, err := os.Stat(img); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", errdefs.NotFoundf("volume %s has no data on this host (%s is missing)", id, img)
		}
		return "", err
	}
	if err := os.MkdirAll(mp, 0o700); err != nil {
		return "", fmt.Errorf("volume %s: %w", id, err)
	}
	if err := mountImage(img, mp); err != nil {
		return "", fmt.Errorf("mount volume %s: %w", id, err)
	}
	m.log.Info("volume mounted on the host", "volume", id, "mountpoint", mp)
	return mp, nil
}

// Unmount unmounts volume id from this host (its loop device goes with
// the last mount). Not mounted: nothing to do. Busy (a process of the
// host uses it, or it is still attached to a server whose mount holds
// it... which does not hold the host's mount): a Conflict.
func (m *Manager) Unmount(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	defer m.lock(id)()
	return m.unmountLocked(id)
}

func (m *Manager) unmountLocked(id string) error {
	mp := m.MountPoint(id)
	mounted, err := m.hostMounted(id)
	if err != nil {
		return err
	}
	if mounted {
		if err := unmount(mp); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return errdefs.Conflictf("volume %s is busy on the host (%s is in use)", id, mp)
			}
			return fmt.Errorf("unmount volume %s: %w", id, err)
		}
		m.log.Info("volume unmounted from the host", "volume", id)
	}
	if err := os.Remove(mp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("volume %s: remove mount point: %w", id, err)
	}
	return nil
}

// HostMounted lists the volumes mounted on this host (their ids).
func (m *Manager) HostMounted() ([]string, error) {
	mounts, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, mi := range mounts {
		if filepath.Dir(mi.mountPoint) == filepath.Clean(m.cfg.MountDir) {
			id := filepath.Base(mi.mountPoint)
			if checkID(id) == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// hostMounted reports whether volume id is mounted at its mount point.
func (m *Manager) hostMounted(id string) (bool, error) {
	_, ok, err := m.hostMount(id)
	return ok, err
}

// hostMount is the mountinfo line of volume id's host mount.
func (m *Manager) hostMount(id string) (mountInfo, bool, error) {
	mounts, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return mountInfo{}, false, err
	}
	mp := filepath.Clean(m.MountPoint(id))
	// The last mount on a path is the visible one.
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].mountPoint == mp {
			return mounts[i], true, nil
		}
	}
	return mountInfo{}, false, nil
}

// hostDevice is the block device (the loop device) of volume id's host
// mount.
func (m *Manager) hostDevice(id string) (string, error) {
	mi, ok, err := m.hostMount(id)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errdefs.FailedPreconditionf("volume %s is not mounted on this host", id)
	}
	return mi.source, nil
}

// mountInfo is one line of /proc/<pid>/mountinfo.
type mountInfo struct {
	majorMinor string // "7:3"
	root       string // the mounted directory of its filesystem
	mountPoint string // relative to the reading process's root
	fsType     string
	source     string
}

// readMountInfo parses a mountinfo file.
func readMountInfo(path string) ([]mountInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 2 {
			continue
		}
		out = append(out, mountInfo{
			majorMinor: a[2], root: unescapeMount(a[3]), mountPoint: unescapeMount(a[4]),
			fsType: b[0], source: unescapeMount(b[1]),
		})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountImage attaches img to a free loop device (auto-clearing) and
// mounts its ext4 filesystem at mp (nosuid, nodev: a tenant's volume
// must not carry set-uid binaries or device nodes into another server).
func mountImage(img, mp string) error {
	dev, err := attachLoop(img)
	if err != nil {
		return err
	}
	defer dev.Close() // the mount holds the device from now on
	if err := unix.Mount(dev.Name(), mp, "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount %s (%s) at %s: %w", dev.Name(), img, mp, err)
	}
	return nil
}

// unmount unmounts mp (not lazily: a busy mount stays and says so).
func unmount(mp string) error {
	if err := unix.Unmount(mp, unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}

// attachLoop binds img to a free loop device with LO_FLAGS_AUTOCLEAR
// (LOOP_CONFIGURE, one ioctl) and returns the device opened: closing it
// before anything else holds the device clears the loop again.
func attachLoop(img string) (*os.File, error) {
	backing, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	var last error
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		name := "/dev/loop" + strconv.Itoa(n)
		if _, err := os.Stat(name); errors.Is(err, fs.ErrNotExist) {
			// No udev (a container, a minimal host): make the node.
			if err := unix.Mknod(name, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("create %s: %w", name, err)
			}
		}
		dev, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		last = err
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		// Another process took that device between GET_FREE and us.
	}
	return nil, fmt.Errorf("set up a loop device for %s: %w", img, last)
}

// refreshLoopCapacity makes loop device dev see its backing file's new
// size (after the image grew).
func refreshLoopCapacity(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := unix.IoctlRetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", dev, err)
	}
	return nil
}
