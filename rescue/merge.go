package rescue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Overlay markers (see the kernel's Documentation/filesystems/overlayfs):
// a whiteout is a character device 0/0; an opaque directory carries this
// xattr ("user." when the overlay was mounted with userxattr, as rootless
// Docker does).
var opaqueXattrs = []string{"trusted.overlay.opaque", "user.overlay.opaque"}

// maxWarnings bounds the warnings a copy keeps, so a tree of a million
// sockets cannot blow up the manifest; the count stays exact.
const maxWarnings = 50

// Stats counts what a copy wrote.
type Stats struct {
	Files     int64 `json:"files"`
	Dirs      int64 `json:"dirs"`
	Symlinks  int64 `json:"symlinks"`
	Hardlinks int64 `json:"hardlinks"`
	Others    int64 `json:"others,omitempty"` // device nodes, FIFOs
	Bytes     int64 `json:"bytes"`
	// Skipped counts entries not reproduced (sockets, device nodes or
	// ownership an unprivileged copy cannot create, ...): Warnings says
	// which (the first maxWarnings).
	Skipped int64 `json:"skipped,omitempty"`
	// ReadErrors counts source entries (of Skipped) that could not be
	// read: a damaged layer costs those files, not the whole rescue; a
	// file that failed midway is kept, partial.
	ReadErrors int64    `json:"read_errors,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// readErr records a source that could not be read.
func (s *Stats) readErr(format string, args ...any) {
	s.ReadErrors++
	s.warn(format, args...)
}

func (s *Stats) warn(format string, args ...any) {
	s.Skipped++
	if len(s.Warnings) < maxWarnings {
		s.Warnings = append(s.Warnings, fmt.Sprintf(format, args...))
	}
}

// dir is an open directory; every lookup below it goes through its fd with
// *at calls that never follow a symlink, so neither a tenant's symlink in a
// layer nor a race with a running container can make the copy read or
// write outside the trees it was given.
type dir struct {
	f  *os.File
	fd int
}

func openDirAt(parent int, name string) (*dir, error) {
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &dir{f: os.NewFile(uintptr(fd), name), fd: fd}, nil
}

func openDir(p string) (*dir, error) { return openDirAt(unix.AT_FDCWD, p) }

func (d *dir) Close() error { return d.f.Close() }

// src is one layer's view of a directory being merged.
type src struct {
	*dir
	layer int
}

// merger copies the merged view of overlay layers into a destination tree.
type merger struct {
	root  *dir // the destination's root, for hardlinks
	links map[linkKey]string
	// reserved names the copy must not write at the root (the manifest's
	// own files); a tenant file there is reported, not copied.
	reserved map[string]bool
	uid      int // euid: ownership is only kept when root
	buf      []byte
	stats    Stats
}

type linkKey struct {
	layer    int
	dev, ino uint64
}

// Merge writes into dst (an existing, empty directory) the filesystem
// that an overlay mount of layers shows, layers[0] being the top one (the
// container's writable layer) and the last the bottom image layer:
// whiteouts delete, opaque directories hide what is below them. Modes,
// ownership (when run as root), symlinks (never followed), hardlinks
// within a layer and mtimes are kept. Reserved root names are skipped.
func Merge(ctx context.Context, dst string, layers []string, reserved ...string) (Stats, error) {
	root, err := openDir(dst)
	if err != nil {
		return Stats{}, fmt.Errorf("open destination %s: %w", dst, err)
	}
	defer root.Close()
	return mergeInto(ctx, root, layers, reserved...)
}

// mergeInto is Merge into an open directory.
func mergeInto(ctx context.Context, root *dir, layers []string, reserved ...string) (Stats, error) {
	m := &merger{root: root, links: map[linkKey]string{}, reserved: map[string]bool{}, uid: os.Geteuid(), buf: make([]byte, 1<<20)}
	for _, r := range reserved {
		m.reserved[r] = true
	}
	var srcs []src
	defer func() {
		for _, s := range srcs {
			s.Close()
		}
	}()
	for i, l := range layers {
		d, err := openDir(l)
		if err != nil {
			return Stats{}, fmt.Errorf("open layer %s: %w", l, err)
		}
		srcs = append(srcs, src{dir: d, layer: i})
		if opaque(d.fd) {
			break
		}
	}
	if err := m.mergeDir(ctx, srcs, root, ""); err != nil {
		return m.stats, err
	}
	return m.stats, nil
}

func opaque(fd int) bool {
	buf := make([]byte, 8)
	for _, x := range opaqueXattrs {
		if n, err := unix.Fgetxattr(fd, x, buf); err == nil && string(buf[:n]) == "y" {
			return true
		}
	}
	return false
}

func whiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// mergeDir copies directory rel, as seen through srcs (top first, already
// cut below an opaque one), into dst.
func (m *merger) mergeDir(ctx context.Context, srcs []src, dst *dir, rel string) error {
	// The topmost layer holding each name decides what it is.
	top := map[string]int{}
	var names []string
	for i, s := range srcs {
		ns, err := s.f.Readdirnames(-1)
		if err != nil {
			m.stats.readErr("/%s in layer %d: list directory (%d entries read): %v", rel, s.layer, len(ns), err)
		}
		for _, n := range ns {
			if _, ok := top[n]; !ok {
				top[n] = i
				names = append(names, n)
			}
		}
	}
	sort.Strings(names) // deterministic: hardlinks point at the first path
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := path.Join(rel, name)
		if rel == "" && m.reserved[name] {
			m.stats.warn("/%s: name reserved for the rescue's own files, not copied", p)
			continue
		}
		i := top[name]
		var st unix.Stat_t
		if err := unix.Fstatat(srcs[i].fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			m.stats.readErr("/%s in layer %d: stat: %v", p, srcs[i].layer, err)
			continue
		}
		if whiteout(&st) {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := m.copyDir(ctx, srcs[i:], name, p, &st, dst); err != nil {
				return err
			}
			continue
		}
		if err := m.copyEntry(srcs[i], name, p, &st, dst); err != nil {
			return err
		}
	}
	return nil
}

// copyDir creates directory name in dst and merges into it the layers,
// from the topmost holding it down to the first where it is not a
// directory (a whiteout or a file hides the rest) or is opaque.
func (m *merger) copyDir(ctx context.Context, srcs []src, name, p string, st *unix.Stat_t, dst *dir) error {
	var subs []src
	defer func() {
		for _, s := range subs {
			s.Close()
		}
	}()
	for _, s := range srcs {
		var lst unix.Stat_t
		err := unix.Fstatat(s.fd, name, &lst, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			m.stats.readErr("/%s in layer %d: stat: %v", p, s.layer, err)
			break
		}
		if lst.Mode&unix.S_IFMT != unix.S_IFDIR {
			break
		}
		d, err := openDirAt(s.fd, name)
		if err != nil {
			m.stats.readErr("/%s in layer %d: open directory: %v", p, s.layer, err)
			break
		}
		subs = append(subs, src{dir: d, layer: s.layer})
		if opaque(d.fd) {
			break
		}
	}
	// Owner-only while filling it: a 0555 directory must still take its
	// children, and nobody else should see a half-copied tree.
	if err := unix.Mkdirat(dst.fd, name, 0o700); err != nil {
		return fmt.Errorf("create /%s: %w", p, err)
	}
	d, err := openDirAt(dst.fd, name)
	if err != nil {
		return fmt.Errorf("open created /%s: %w", p, err)
	}
	defer d.Close()
	m.stats.Dirs++
	if err := m.mergeDir(ctx, subs, d, p); err != nil {
		return err
	}
	// Metadata last: children's creation would bump the mtime.
	return m.setMeta(dst, name, p, st, true)
}

// copyEntry copies one non-directory entry.
func (m *merger) copyEntry(s src, name, p string, st *unix.Stat_t, dst *dir) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		key := linkKey{layer: s.layer, dev: st.Dev, ino: st.Ino}
		if st.Nlink > 1 {
			if first, ok := m.links[key]; ok {
				if err := unix.Linkat(m.root.fd, first, dst.fd, name, 0); err == nil {
					m.stats.Hardlinks++
					return nil
				}
				// Fall back to a copy (e.g. link count limits).
			}
		}
		if err := m.copyFile(s, name, p, st, dst); err != nil {
			return err
		}
		if st.Nlink > 1 {
			m.links[key] = p
		}
		return nil
	case unix.S_IFLNK:
		target, err := readlinkat(s.fd, name)
		if err != nil {
			m.stats.readErr("/%s in layer %d: read symlink: %v", p, s.layer, err)
			return nil
		}
		// Written as is: it is only ever followed by whoever later uses the
		// copy, never by the copy itself.
		if err := unix.Symlinkat(target, dst.fd, name); err != nil {
			return fmt.Errorf("create symlink /%s: %w", p, err)
		}
		m.stats.Symlinks++
		return m.setMeta(dst, name, p, st, false)
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		if err := unix.Mknodat(dst.fd, name, st.Mode&(unix.S_IFMT|0o7777), int(st.Rdev)); err != nil {
			m.stats.warn("/%s: cannot recreate special file: %v", p, err)
			return nil
		}
		m.stats.Others++
		return m.setMeta(dst, name, p, st, true)
	default: // sockets: only meaningful to a live process
		m.stats.warn("/%s: socket not copied", p)
		return nil
	}
}

func (m *merger) copyFile(s src, name, p string, st *unix.Stat_t, dst *dir) error {
	// O_NOFOLLOW|O_NONBLOCK: a running container swapping the file for a
	// symlink or a FIFO after the stat gets an error, not a host file or a
	// hang.
	in, err := unix.Openat(s.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		m.stats.readErr("/%s in layer %d: open: %v", p, s.layer, err)
		return nil
	}
	inf := os.NewFile(uintptr(in), name)
	defer inf.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(in, &fst); err != nil || fst.Mode&unix.S_IFMT != unix.S_IFREG {
		m.stats.readErr("/%s in layer %d: no longer a regular file", p, s.layer)
		return nil
	}
	out, err := unix.Openat(dst.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create /%s: %w", p, err)
	}
	outf := os.NewFile(uintptr(out), name)
	n, rerr, werr := copyData(outf, inf, m.buf)
	m.stats.Bytes += n
	if cerr := outf.Close(); werr == nil {
		werr = cerr
	}
	// A write error (destination full...) stops the rescue; a read error
	// costs this file's tail only.
	if werr != nil {
		return fmt.Errorf("write /%s: %w", p, werr)
	}
	if rerr != nil {
		m.stats.readErr("/%s in layer %d: read error after %d of %d bytes, partial copy kept: %v", p, s.layer, n, st.Size, rerr)
	}
	m.stats.Files++
	return m.setMeta(dst, name, p, st, true)
}

// copyData copies in to out, telling read errors from write errors.
func copyData(out io.Writer, in io.Reader, buf []byte) (n int64, rerr, werr error) {
	for {
		nr, err := in.Read(buf)
		if nr > 0 {
			nw, err := out.Write(buf[:nr])
			n += int64(nw)
			if err != nil {
				return n, nil, err
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// setMeta applies st's ownership, mode (not for symlinks: Linux has no
// lchmod) and times to name in d, without following a symlink.
func (m *merger) setMeta(d *dir, name, p string, st *unix.Stat_t, chmod bool) error {
	if m.uid == 0 {
		if err := unix.Fchownat(d.fd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			m.stats.warn("/%s: keep owner %d:%d: %v", p, st.Uid, st.Gid, err)
		}
	}
	// After the chown, which clears setuid/setgid bits.
	if chmod {
		if err := unix.Fchmodat(d.fd, name, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod /%s: %w", p, err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(d.fd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		m.stats.warn("/%s: keep mtime: %v", p, err)
	}
	return nil
}

func readlinkat(fd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// openPath opens directory rel (slash-separated) below root one component
// at a time without following symlinks, creating missing components
// (0755) when create is set.
func openPath(root *dir, rel string, create bool) (*dir, error) {
	cur, err := openDirAt(root.fd, ".")
	if err != nil {
		return nil, err
	}
	for _, c := range splitPath(rel) {
		next, err := openDirAt(cur.fd, c)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(cur.fd, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = openDirAt(cur.fd, c)
			}
		}
		cur.Close()
		if err != nil {
			return nil, fmt.Errorf("open %s below %s: %w", rel, root.f.Name(), err)
		}
		cur = next
	}
	return cur, nil
}

// splitPath returns the components of a slash path, dropping empty, "."
// and ".." ones: the result never climbs above where it starts.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(path.Clean("/"+p), "/") {
		if c != "" && c != "." && c != ".." {
			out = append(out, c)
		}
	}
	return out
}
