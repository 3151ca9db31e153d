package rescue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Names the rescue writes at the destination's root, beside the server's
// files.
const (
	ManifestName = ".capsule-rescue.json"
	VolumesDir   = ".capsule-volumes"
)

// Options says what to rescue where.
type Options struct {
	DataRoot string // Docker's data root (DefaultDataRoot when empty)
	Server   string // UUID, name or container ID prefix (see Find)
	To       string // destination: must not exist, or be an empty directory
	Log      *slog.Logger
}

// Manifest records a rescue; it is written to To/.capsule-rescue.json.
type Manifest struct {
	Server        string       `json:"server"`
	Name          string       `json:"name,omitempty"`
	ContainerID   string       `json:"container_id"`
	ContainerName string       `json:"container_name"`
	State         string       `json:"state"` // as Docker last recorded it
	Image         string       `json:"image"`
	ImageID       string       `json:"image_id"`
	DataRoot      string       `json:"data_root"`
	StorageDriver string       `json:"storage_driver"`
	Layers        []Layer      `json:"layers"` // top first
	Root          Stats        `json:"root"`   // the merged filesystem
	Volumes       []VolumeCopy `json:"volumes,omitempty"`
	NotCopied     []string     `json:"not_copied,omitempty"` // mounts whose data is elsewhere
	BytesCopied   int64        `json:"bytes_copied"`         // root + volumes
	// Error is why the rescue stopped early (absent when it completed).
	Error      string        `json:"error,omitempty"`
	StartedAt  time.Time     `json:"started_at"`
	FinishedAt time.Time     `json:"finished_at"`
	Duration   time.Duration `json:"duration_ns"`
}

// VolumeCopy is one Docker volume copied under To/.capsule-volumes.
type VolumeCopy struct {
	Name        string `json:"name"`
	Destination string `json:"destination"` // where the container mounted it
	Source      string `json:"source"`
	CopiedTo    string `json:"copied_to"` // relative to To
	Stats
}

// Rescue copies server opts.Server's filesystem out of the data root into
// opts.To: the merged overlay (image layers, init layer, writable layer),
// Docker's per-container /etc/hosts, /etc/hostname and /etc/resolv.conf,
// and its local volumes under .capsule-volumes/<mount point>, then writes
// the manifest. dockerd need not (and should not) be running. On error
// the manifest (when returned) describes what was copied so far.
func Rescue(ctx context.Context, opts Options) (*Manifest, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.DataRoot == "" {
		opts.DataRoot = DefaultDataRoot
	}
	if opts.To == "" {
		return nil, errors.New("rescue: no destination directory")
	}
	if inside(opts.To, opts.DataRoot) {
		// The copy would read what it writes (and fill the disk Docker
		// needs to come back).
		return nil, fmt.Errorf("rescue: destination %s is inside the data root %s", opts.To, opts.DataRoot)
	}
	c, err := Find(opts.DataRoot, opts.Server)
	if err != nil {
		return nil, err
	}
	layers, err := Layers(opts.DataRoot, c)
	if err != nil {
		return nil, fmt.Errorf("rescue %s: %w", c, err)
	}
	if err := prepareDest(opts.To); err != nil {
		return nil, err
	}
	m := &Manifest{
		Server: c.InstanceID, Name: c.ServerName, ContainerID: c.ID, ContainerName: c.Name,
		State: c.State, Image: c.Image, ImageID: c.ImageID, DataRoot: opts.DataRoot,
		StorageDriver: c.Driver, Layers: layers, StartedAt: time.Now().UTC(),
	}
	if c.State == "running" || c.State == "paused" || c.State == "restarting" {
		log.Warn("Docker last recorded the container as running: if dockerd is up, files may change while they are copied",
			"container", c.ID[:12], "state", c.State)
	}
	root, err := openDir(opts.To)
	if err != nil {
		return nil, fmt.Errorf("open destination %s: %w", opts.To, err)
	}
	defer root.Close()

	err = copyAll(ctx, root, opts.DataRoot, c, m, log)
	m.FinishedAt = time.Now().UTC()
	m.Duration = m.FinishedAt.Sub(m.StartedAt)
	if err != nil {
		// Say in the copy itself that it is incomplete.
		m.Error = err.Error()
		if werr := writeManifest(root, m); werr != nil {
			log.Warn("could not write the manifest", "err", werr)
		}
		return m, fmt.Errorf("rescue %s: %w", c, err)
	}
	if err := writeManifest(root, m); err != nil {
		return m, err
	}
	log.Info("rescued", "server", c.InstanceID, "files", m.Root.Files, "bytes", m.BytesCopied,
		"volumes", len(m.Volumes), "skipped", m.Root.Skipped, "read_errors", m.ReadErrors(),
		"took", m.Duration.Round(time.Millisecond))
	return m, nil
}

// ReadErrors counts the entries that could not be read, volumes included.
func (m *Manifest) ReadErrors() int64 {
	n := m.Root.ReadErrors
	for _, v := range m.Volumes {
		n += v.ReadErrors
	}
	return n
}

// copyAll copies c's filesystem, Docker's files and volumes into root,
// accounting in m.
func copyAll(ctx context.Context, root *dir, dataRoot string, c Container, m *Manifest, log *slog.Logger) error {
	paths := make([]string, len(m.Layers))
	for i, l := range m.Layers {
		paths[i] = l.Path
	}
	log.Info("copying the server's filesystem", "server", c.InstanceID, "name", c.ServerName,
		"container", c.ID[:12], "layers", len(paths), "to", root.f.Name())
	st, err := mergeInto(ctx, root, paths, ManifestName, VolumesDir)
	m.Root = st
	m.BytesCopied = st.Bytes
	if err != nil {
		return fmt.Errorf("copy the filesystem: %w", err)
	}
	copyDockerFiles(root, c, &m.Root, log)
	m.BytesCopied = m.Root.Bytes

	for _, mt := range c.Mounts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if mt.Type != "volume" || (mt.Driver != "" && mt.Driver != "local") || !validVolumeName(mt.Name) {
			m.NotCopied = append(m.NotCopied, fmt.Sprintf("%s mount at %s (source %q): its data is not in the data root", mt.Type, mt.Destination, firstNonEmpty(mt.Name, mt.Source)))
			continue
		}
		vc, err := copyVolume(ctx, root, dataRoot, mt, log)
		m.BytesCopied += vc.Bytes
		m.Volumes = append(m.Volumes, vc)
		if err != nil {
			return err
		}
	}
	return nil
}

// prepareDest creates to (owner-only: the copy holds a tenant's files,
// setuid binaries included, which no other host user may reach) or
// accepts it empty.
func prepareDest(to string) error {
	ents, err := os.ReadDir(to)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return fmt.Errorf("create destination's parent: %w", err)
		}
		if err := os.Mkdir(to, 0o700); err != nil {
			return fmt.Errorf("create destination: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("destination %s: %w", to, err)
	case len(ents) > 0:
		return fmt.Errorf("destination %s is not empty", to)
	}
	if err := os.Chmod(to, 0o700); err != nil {
		return fmt.Errorf("restrict destination %s: %w", to, err)
	}
	return nil
}

var volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func validVolumeName(n string) bool { return volumeName.MatchString(n) }

func copyVolume(ctx context.Context, root *dir, dataRoot string, mt Mount, log *slog.Logger) (VolumeCopy, error) {
	rel := path.Join(VolumesDir, path.Join(splitPath(mt.Destination)...))
	src := filepath.Join(dataRoot, "volumes", mt.Name, "_data")
	vc := VolumeCopy{Name: mt.Name, Destination: mt.Destination, Source: src, CopiedTo: rel}
	if _, err := os.Stat(src); err != nil {
		vc.warn("volume %s: %v", mt.Name, err)
		log.Warn("volume data missing", "volume", mt.Name, "err", err)
		return vc, nil
	}
	d, err := openPath(root, rel, true)
	if err != nil {
		return vc, fmt.Errorf("volume %s: %w", mt.Name, err)
	}
	defer d.Close()
	log.Info("copying volume", "volume", mt.Name, "mounted_at", mt.Destination, "to", rel)
	st, err := mergeInto(ctx, d, []string{src})
	vc.Stats = st
	if err != nil {
		return vc, fmt.Errorf("copy volume %s: %w", mt.Name, err)
	}
	return vc, nil
}

// copyDockerFiles puts Docker's per-container /etc/hosts, /etc/hostname
// and /etc/resolv.conf (bind-mounted over the image's; a tenant's edits
// live there) in place of the layers' placeholders.
func copyDockerFiles(root *dir, c Container, st *Stats, log *slog.Logger) {
	for _, f := range []struct{ recorded, in string }{
		{c.HostsPath, "etc/hosts"}, {c.HostnamePath, "etc/hostname"}, {c.ResolvConf, "etc/resolv.conf"},
	} {
		if f.recorded == "" {
			continue
		}
		// The recorded path names the data root Docker ran with; the
		// file is in this container's directory whatever it is now.
		src := filepath.Join(c.containerRoot, filepath.Base(f.recorded))
		if err := replaceFile(root, src, f.in, st); err != nil && !errors.Is(err, os.ErrNotExist) {
			st.warn("/%s: %v", f.in, err)
			log.Warn("could not copy Docker's file", "path", "/"+f.in, "err", err)
		}
	}
}

// replaceFile writes src over the regular file (or nothing) at rel.
func replaceFile(root *dir, src, rel string, st *Stats) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	d, err := openPath(root, path.Dir(rel), false)
	if err != nil {
		return err
	}
	defer d.Close()
	name := path.Base(rel)
	var old unix.Stat_t
	mode := uint32(0o644)
	switch err := unix.Fstatat(d.fd, name, &old, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && old.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("not a regular file in the layers, left as is")
	case err == nil:
		mode = old.Mode & 0o7777
		if err := unix.Unlinkat(d.fd, name, 0); err != nil {
			return err
		}
		st.Files--
		st.Bytes -= old.Size
	case !errors.Is(err, unix.ENOENT):
		return err
	}
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	out := os.NewFile(uintptr(fd), name)
	n, err := io.Copy(out, in)
	st.Bytes += n
	st.Files++
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeManifest(root *dir, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	fd, err := unix.Openat(root.fd, ManifestName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	f := os.NewFile(uintptr(fd), ManifestName)
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// ReadManifest reads the manifest a rescue left in dir.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	return &m, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// otherDataRoots lists sibling Docker data roots of dataRoot (Capsule
// runs named dockerd instances as $CAPSULE_LIB/docker-NAME), to point an
// operator who looked in the wrong one at the others.
func otherDataRoots(dataRoot string) []string {
	parent := filepath.Dir(filepath.Clean(dataRoot))
	ents, _ := os.ReadDir(parent)
	var out []string
	for _, e := range ents {
		p := filepath.Join(parent, e.Name())
		if !e.IsDir() || p == filepath.Clean(dataRoot) || !strings.HasPrefix(e.Name(), "docker") {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "containers")); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// inside reports whether p is dir or below it (lexically, after making
// both absolute).
func inside(p, dir string) bool {
	ap, err1 := filepath.Abs(p)
	ad, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(ad, ap)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
