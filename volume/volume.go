// Package volume keeps persistent volumes' data on a compute host: each
// volume is a sparse image file holding an ext4 filesystem of the
// volume's size (its size limit: a writer past it gets ENOSPC), mounted
// on the host through a loop device and, while attached, mounted live
// into a running server's mount namespace (inject.go). Volumes live in
// one of two backends, both the same layout of <dir>/<id>.img and
// <dir>/snapshots/<id>.img: "local", a directory of this host (a volume
// moves to another host through the private registry, transfer.go), and
// "shared", a directory every host sees (an NFS mount): a volume there is
// simply mounted on whichever host needs it.
//
// Every operation is idempotent (a redelivered request finds its work
// done or finishes it) and leaves nothing behind on failure: images are
// made under a temporary name and renamed when complete, loop devices
// clear themselves when their last mount goes (LO_FLAGS_AUTOCLEAR).
package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/capsule-cloud/capsule/errdefs"
)

// Backend is where a volume's image lives.
type Backend string

// The backends.
const (
	Local  Backend = "local"
	Shared Backend = "shared"
)

// Defaults of Config.
const (
	DefaultLocalDir = "/var/lib/capsule/volumes"
	DefaultMountDir = "/run/capsule/volumes"
)

// GiB is the unit of volume sizes (Cinder's "GB" are GiB).
const GiB = int64(1) << 30

// Config says where a host keeps volumes.
type Config struct {
	// LocalDir holds the images of local volumes (DefaultLocalDir).
	LocalDir string
	// SharedDir is the shared backend's directory, a mount every host
	// sees at the same path; "" means this host has no shared backend.
	SharedDir string
	// MountDir holds the host mount point of each volume in use
	// (DefaultMountDir): <MountDir>/<id>.
	MountDir string
	// Helper is the binary serving the helper subcommand (RunHelper)
	// that mounts into a container's namespace; "" is this executable.
	Helper string
}

// Manager keeps the volumes of one host. Its methods are safe for
// concurrent use; operations on one volume are serialized.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// New returns a Manager for cfg (zero fields get their defaults).
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.LocalDir == "" {
		cfg.LocalDir = DefaultLocalDir
	}
	if cfg.MountDir == "" {
		cfg.MountDir = DefaultMountDir
	}
	if cfg.Helper == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("volume: find this executable for the mount helper: %w", err)
		}
		cfg.Helper = exe
	}
	return &Manager{cfg: cfg, log: log.With("component", "volume"), locks: map[string]*sync.Mutex{}}, nil
}

// Config is the manager's configuration with its defaults.
func (m *Manager) Config() Config { return m.cfg }

// lock serializes the operations on one volume (or snapshot) id.
func (m *Manager) lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// validID: ids become file names; UUIDs and the like only.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func checkID(id string) error {
	if !validID.MatchString(id) || strings.Contains(id, "..") {
		return errdefs.InvalidArgumentf("invalid volume id %q", id)
	}
	return nil
}

// dir is backend b's directory.
func (m *Manager) dir(b Backend) (string, error) {
	switch b {
	case Local, "":
		return m.cfg.LocalDir, nil
	case Shared:
		if m.cfg.SharedDir == "" {
			return "", errdefs.FailedPreconditionf("this host has no shared volume backend (volumes.shared_dir is not set)")
		}
		return m.cfg.SharedDir, nil
	}
	return "", errdefs.InvalidArgumentf("unknown volume backend %q", b)
}

// ImagePath is the image file of volume id on backend b.
func (m *Manager) ImagePath(b Backend, id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	d, err := m.dir(b)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, id+".img"), nil
}

// List names the volumes whose image is on backend b and whose id starts
// with prefix.
func (m *Manager) List(b Backend, prefix string) ([]string, error) {
	d, err := m.dir(b)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var out []string
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".img")
		if ok && !e.IsDir() && strings.HasPrefix(id, prefix) && checkID(id) == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// snapshotPath is the image file of snapshot id on backend b.
func (m *Manager) snapshotPath(b Backend, id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	d, err := m.dir(b)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "snapshots", id+".img"), nil
}

// MountPoint is where volume id is mounted on this host while in use.
func (m *Manager) MountPoint(id string) string { return filepath.Join(m.cfg.MountDir, id) }

// Source pre-fills a new volume; the zero value makes it blank.
type Source struct {
	// Snapshot, when set, is the snapshot (on the volume's backend)
	// whose data the volume starts with.
	Snapshot string
	// Tar, when set, is unpacked into the new filesystem (an image's
	// root filesystem, as docker export writes it).
	Tar io.Reader
}

// Create makes volume id of sizeGB GiB on backend b: a sparse image
// holding a fresh ext4 filesystem (or a copy of src.Snapshot grown to
// sizeGB), filled from src.Tar. A volume that exists already is left as
// it is (a redelivered create); a create cut short leaves only its
// temporary file, which the next create replaces.
func (m *Manager) Create(ctx context.Context, b Backend, id string, sizeGB int, src Source) error {
	if sizeGB <= 0 {
		return errdefs.InvalidArgumentf("volume %s: size %d GB is not positive", id, sizeGB)
	}
	img, err := m.ImagePath(b, id)
	if err != nil {
		return err
	}
	defer m.lock(id)()
	if _, err := os.Stat(img); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(img), 0o700); err != nil {
		return fmt.Errorf("volume %s: %w", id, err)
	}
	tmp := img + ".creating"
	_ = os.Remove(tmp)
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	size := int64(sizeGB) * GiB
	if src.Snapshot != "" {
		snap, err := m.snapshotPath(b, src.Snapshot)
		if err != nil {
			return err
		}
		if _, err := os.Stat(snap); err != nil {
			return errdefs.NotFoundf("volume %s: snapshot %s not found on the %s backend", id, src.Snapshot, backendName(b))
		}
		if err := copySparse(ctx, snap, tmp); err != nil {
			return fmt.Errorf("volume %s from snapshot %s: %w", id, src.Snapshot, err)
		}
		if err := growImage(ctx, tmp, size); err != nil {
			return fmt.Errorf("volume %s from snapshot %s: %w", id, src.Snapshot, err)
		}
	} else if err := makeImage(ctx, tmp, size); err != nil {
		return fmt.Errorf("volume %s: %w", id, err)
	}
	if src.Tar != nil {
		if err := m.fill(ctx, tmp, id, src.Tar); err != nil {
			return fmt.Errorf("volume %s: fill: %w", id, err)
		}
	}
	if err := os.Rename(tmp, img); err != nil {
		return fmt.Errorf("volume %s: %w", id, err)
	}
	ok = true
	m.log.Info("volume created", "volume", id, "backend", backendName(b), "size_gb", sizeGB, "snapshot", src.Snapshot, "filled", src.Tar != nil)
	return nil
}

// fill unpacks tr into the filesystem of image img (not in use).
func (m *Manager) fill(ctx context.Context, img, id string, tr io.Reader) error {
	if err := os.MkdirAll(m.cfg.MountDir, 0o700); err != nil {
		return err
	}
	mp, err := os.MkdirTemp(m.cfg.MountDir, ".fill-"+id+"-")
	if err != nil {
		return err
	}
	defer os.Remove(mp)
	if err := mountImage(img, mp); err != nil {
		return err
	}
	defer func() {
		if err := unmount(mp); err != nil {
			m.log.Error("could not unmount a volume being filled", "volume", id, "mountpoint", mp, "err", err)
		}
	}()
	// GNU tar refuses members escaping the directory (.., absolute
	// names) and, as root, keeps owners and modes.
	cmd := exec.CommandContext(ctx, "tar", "-x", "-p", "--numeric-owner", "-C", mp, "-f", "-")
	cmd.Stdin = tr
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tar -x: %w: %s", err, tailOf(out))
	}
	return nil
}

// Exists reports whether volume id has its image on backend b.
func (m *Manager) Exists(b Backend, id string) (bool, error) {
	img, err := m.ImagePath(b, id)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(img)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes volume id's image. A volume still mounted on this host
// is refused (Conflict); a missing one is deleted already.
func (m *Manager) Delete(ctx context.Context, b Backend, id string) error {
	img, err := m.ImagePath(b, id)
	if err != nil {
		return err
	}
	defer m.lock(id)()
	if mounted, err := m.hostMounted(id); err != nil {
		return err
	} else if mounted {
		return errdefs.Conflictf("volume %s is in use on this host (mounted at %s)", id, m.MountPoint(id))
	}
	for _, p := range []string{img, img + ".creating"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete volume %s: %w", id, err)
		}
	}
	m.log.Info("volume deleted", "volume", id, "backend", backendName(b))
	return nil
}

// Extend grows volume id to sizeGB GiB: its image, then its filesystem,
// online when it is mounted (the server keeps using it). A size not
// above the current one changes nothing (a redelivered extend).
func (m *Manager) Extend(ctx context.Context, b Backend, id string, sizeGB int) error {
	img, err := m.ImagePath(b, id)
	if err != nil {
		return err
	}
	defer m.lock(id)()
	fi, err := os.Stat(img)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errdefs.NotFoundf("volume %s not found on the %s backend of this host", id, backendName(b))
		}
		return err
	}
	size := int64(sizeGB) * GiB
	if fi.Size() > size {
		return errdefs.InvalidArgumentf("volume %s: cannot shrink from %d to %d GB", id, fi.Size()/GiB, sizeGB)
	}
	mounted, err := m.hostMounted(id)
	if err != nil {
		return err
	}
	if !mounted {
		// Offline: the image file alone (e2fsck, then resize2fs).
		if err := growImage(ctx, img, size); err != nil {
			return fmt.Errorf("extend volume %s: %w", id, err)
		}
		m.log.Info("volume extended", "volume", id, "size_gb", sizeGB, "online", false)
		return nil
	}
	if err := os.Truncate(img, max(size, fi.Size())); err != nil {
		return fmt.Errorf("extend volume %s: %w", id, err)
	}
	dev, err := m.hostDevice(id)
	if err != nil {
		return err
	}
	if err := refreshLoopCapacity(dev); err != nil {
		return fmt.Errorf("extend volume %s: %w", id, err)
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", dev).CombinedOutput(); err != nil {
		// The filesystem kept its size: so does the image.
		if terr := os.Truncate(img, fi.Size()); terr == nil {
			_ = refreshLoopCapacity(dev)
		}
		if bytes.Contains(out, []byte("Permission denied")) {
			// ext4's online resize needs CAP_SYS_RESOURCE.
			return errdefs.FailedPreconditionf("volume %s cannot be extended while in use on this host (the agent lacks CAP_SYS_RESOURCE for an online resize): detach it first", id)
		}
		return fmt.Errorf("extend volume %s: resize2fs %s: %w: %s", id, dev, err, tailOf(out))
	}
	m.log.Info("volume extended", "volume", id, "size_gb", sizeGB, "online", true)
	return nil
}

// SizeGB is the size of volume id's image in GiB (rounded down).
func (m *Manager) SizeGB(b Backend, id string) (int, error) {
	img, err := m.ImagePath(b, id)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(img)
	if err != nil {
		return 0, err
	}
	return int(fi.Size() / GiB), nil
}

// Snapshot makes snapshot snapID of volume id: a point-in-time copy of
// its image (reflinked where the filesystem can). A mounted volume is
// frozen (fsfreeze) for the copy, so the copy is consistent while the
// server keeps running. An existing snapshot is left as it is.
func (m *Manager) Snapshot(ctx context.Context, b Backend, id, snapID string) error {
	img, err := m.ImagePath(b, id)
	if err != nil {
		return err
	}
	snap, err := m.snapshotPath(b, snapID)
	if err != nil {
		return err
	}
	defer m.lock(id)()
	if _, err := os.Stat(snap); err == nil {
		return nil
	}
	if _, err := os.Stat(img); err != nil {
		return errdefs.NotFoundf("volume %s not found on the %s backend of this host", id, backendName(b))
	}
	if err := os.MkdirAll(filepath.Dir(snap), 0o700); err != nil {
		return err
	}
	tmp := snap + ".creating"
	mounted, err := m.hostMounted(id)
	if err != nil {
		return err
	}
	if mounted {
		mp := m.MountPoint(id)
		if out, err := exec.CommandContext(ctx, "fsfreeze", "--freeze", mp).CombinedOutput(); err != nil {
			return fmt.Errorf("snapshot %s of volume %s: fsfreeze %s: %w: %s", snapID, id, mp, err, tailOf(out))
		}
		defer func() {
			// Never leave a server's volume frozen, whatever ctx says.
			if out, err := exec.CommandContext(context.WithoutCancel(ctx), "fsfreeze", "--unfreeze", mp).CombinedOutput(); err != nil {
				m.log.Error("could not thaw a volume after its snapshot", "volume", id, "err", err, "output", tailOf(out))
			}
		}()
	}
	if err := copySparse(ctx, img, tmp); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("snapshot %s of volume %s: %w", snapID, id, err)
	}
	if err := os.Rename(tmp, snap); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	m.log.Info("volume snapshot created", "volume", id, "snapshot", snapID)
	return nil
}

// DeleteSnapshot removes snapshot snapID; a missing one is deleted.
func (m *Manager) DeleteSnapshot(ctx context.Context, b Backend, snapID string) error {
	snap, err := m.snapshotPath(b, snapID)
	if err != nil {
		return err
	}
	for _, p := range []string{snap, snap + ".creating"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete snapshot %s: %w", snapID, err)
		}
	}
	return nil
}

// makeImage creates a sparse image of size bytes at path holding an empty
// ext4 filesystem: lazy inode table and journal init (creation takes a
// moment whatever the size), no blocks reserved for root (the tenant
// gets the whole size), root directory owned by root.
func makeImage(ctx context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, tailOf(out))
	}
	return nil
}

// growImage grows the image at path (not mounted) to size bytes and its
// filesystem with it; an image already that large is left as it is.
func growImage(ctx context.Context, path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() < size {
		if err := os.Truncate(path, size); err != nil {
			return err
		}
	}
	// Also when the image is as large already: an extend cut short
	// between the truncate and the resize finishes here.
	// resize2fs wants a freshly checked filesystem when offline.
	if out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-p", path).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		// 1: errors corrected; anything above is a real failure.
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			return fmt.Errorf("e2fsck: %w: %s", err, tailOf(out))
		}
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", path).CombinedOutput(); err != nil {
		return fmt.Errorf("resize2fs: %w: %s", err, tailOf(out))
	}
	return nil
}

// copySparse copies file src to dst, sharing blocks where the filesystem
// can (reflink) and keeping holes.
func copySparse(ctx context.Context, src, dst string) error {
	_ = os.Remove(dst)
	out, err := exec.CommandContext(ctx, "cp", "--reflink=auto", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("cp %s: %w: %s", src, err, tailOf(out))
	}
	return nil
}

// tailOf is the end of a command's output for an error message.
func tailOf(out []byte) string {
	s := strings.TrimSpace(string(out))
	if len(s) > 400 {
		s = "..." + s[len(s)-400:]
	}
	return s
}

func backendName(b Backend) string {
	if b == "" {
		return string(Local)
	}
	return string(b)
}

// diskUsage is the bytes file fi takes on disk (its allocated blocks).
func diskUsage(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
