package docker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/internal/netnsfile"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// A migration's pre-copy (PrecopyMigration) writes the server's changes
// while it still runs, without pausing it, as one layer over its
// original image (squash.go; a commit when that cannot be done) and
// pushes that image: a warm-up that moves the bulk of its disk while it
// serves. The export after the stop
// (ExportMigrationOnto) then pushes one more layer over the pre-copy's
// image, holding only what changed in the container's writable layer
// since, deletions as whiteouts: the final image's filesystem is the one
// a commit of the stopped container gives, but the bytes that travel
// while the server is down are the delta's.
//
// What changed is told by the overlay2 upper directory (the container's
// writable layer, which is what a commit tars) walked twice: before the
// pre-copy's commit (every entry's inode, ctime, mtime, size, mode and
// owner) and after the stop. ctime cannot be set by a program and moves
// on every change of content, metadata, links or xattrs, so an entry
// whose stat is the same both times is the same in the pre-copy's layer.
// Entries whose ctime is within racyWindow of the first walk's start (or
// after) are sent again whatever their stat says (the kernel's clock for
// file times is coarse), and the file system is synced before that walk
// so that a write through a mapping dirtied before it faults again, and
// stamps the file, after it. What the pre-copy's layer held comes from
// that layer itself (its directory in the image store, read before the
// push), so whatever is gone since gets a whiteout.
//
// The state lives in the driver's memory: an agent restarted between the
// two passes has none, and its export commits and pushes the whole
// writable layer as a migration without a pre-copy does (correct, only
// slower). So does a storage driver other than overlay2 with native
// diffs (btrfs, or an overlay2 whose upper directory a commit does not
// tar as it is).

// racyWindow: entries changed this close to the first walk's start are
// always sent again (coarse file time granularity).
const racyWindow = 100 * time.Millisecond

// fileStat is what the first walk recorded of one upper-directory entry.
type fileStat struct {
	ino, size, mode, uid, gid, rdev uint64
	mtime, ctime                    int64
	opaque                          bool
}

func statOf(full string) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return fileStat{}, err
	}
	fsT := fileStat{ino: st.Ino, size: uint64(st.Size), mode: uint64(st.Mode), uid: uint64(st.Uid), gid: uint64(st.Gid),
		rdev: uint64(st.Rdev), mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		fsT.opaque = isOpaque(full)
	}
	return fsT, nil
}

func isOpaque(dir string) bool {
	buf := make([]byte, 8)
	for _, name := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		n, err := unix.Lgetxattr(dir, name, buf)
		if err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}

func isWhiteout(st fileStat) bool { return st.mode&unix.S_IFMT == unix.S_IFCHR && st.rdev == 0 }

// precopyState is one instance's pre-copy.
type precopyState struct {
	preRef  string
	digest  string // the pre-copy's manifest
	upper   string
	since   time.Time           // the first walk's start, less racyWindow
	entries map[string]fileStat // the upper directory before the commit
	layer   map[string]bool     // the pre-copy layer's paths (true: a whiteout)
	// The pre-copy's manifest (and its media type) and config, read back
	// after its push: the export, while the server is down, then makes
	// only the requests that upload.
	manifest, config []byte
	manifestType     string
}

// precopies holds the pre-copies of this driver's instances.
type precopies struct {
	mu sync.Mutex
	m  map[string]*precopyState
}

func (p *precopies) set(id string, s *precopyState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*precopyState{}
	}
	p.m[id] = s
}

func (p *precopies) get(id string) *precopyState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[id]
}

// ForgetPrecopy drops what the driver remembers of instance id's
// pre-copy (the migration ended, or its export carried it out).
func (d *Driver) ForgetPrecopy(id string) {
	d.pre.mu.Lock()
	defer d.pre.mu.Unlock()
	delete(d.pre.m, id)
}

// upperDir returns a container's (or image's) writable-layer directory
// when the delta can be read from it: overlay2 with native diffs, the
// directory readable here. "" otherwise, with the reason.
func (d *Driver) upperDir(ctx context.Context, graph map[string]string, driver string) (string, string) {
	if driver != "overlay2" {
		return "", "storage driver " + driver
	}
	info, err := d.cli.Info(ctx)
	if err != nil {
		return "", "docker info: " + err.Error()
	}
	for _, kv := range info.DriverStatus {
		if kv[0] == "Native Overlay Diff" && kv[1] != "true" {
			return "", "overlay2 without native diffs"
		}
	}
	dir := graph["UpperDir"]
	if dir == "" {
		return "", "no upper directory"
	}
	if _, err := os.Stat(dir); err != nil {
		return "", "upper directory not readable here: " + err.Error()
	}
	return dir, ""
}

// walkUpper stats every entry under root (not root itself), parents
// before children; entries that vanish meanwhile are skipped.
func walkUpper(root string, each func(rel, full string, st fileStat) error) error {
	return filepath.WalkDir(root, func(full string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if full == root {
			return nil
		}
		st, err := statOf(full)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, full)
		if err != nil {
			return err
		}
		return each(filepath.ToSlash(rel), full, st)
	})
}

// PrecopyMigration writes instance id's changes as it runs (not paused)
// as one layer over its original image and pushes that to preRef
// (squash.go), or, when it cannot, commits and pushes it like
// ExportMigration; either way it remembers
// what its writable layer held for ExportMigrationOnto. It returns the
// pushed digest and the compressed bytes this push uploaded.
func (d *Driver) PrecopyMigration(ctx context.Context, id, preRef string, progress func(bytes int64)) (string, int64, error) {
	d.ForgetPrecopy(id)
	c, err := d.inspect(ctx, "pre-copy", id)
	if err != nil {
		return "", 0, err
	}
	upper, why := d.upperDir(ctx, c.GraphDriver.Data, c.GraphDriver.Name)
	if upper != "" {
		sq, pushed, err := d.precopySquashed(ctx, c, id, upper, preRef, progress)
		if err == nil {
			d.pre.set(id, sq)
			d.log.Info("migration pre-copy pushed", "instance", id, "ref", preRef, "digest", sq.digest, "bytes_pushed", pushed,
				"entries", len(sq.entries), "delta_ready", true)
			return sq.digest, pushed, nil
		}
		if ctx.Err() != nil {
			return "", 0, fmt.Errorf("docker pre-copy %s: %w", id, err)
		}
		d.log.Warn("pre-copy: could not write it as one layer over the original image's; committing it", "instance", id, "err", err)
	}
	st := &precopyState{preRef: preRef}
	if upper != "" {
		start := time.Now()
		if err := syncDir(upper); err != nil {
			d.log.Warn("pre-copy: sync of the writable layer's file system failed", "instance", id, "err", err)
		}
		st.upper, st.since, st.entries = upper, start.Add(-racyWindow), map[string]fileStat{}
		err := walkUpper(upper, func(rel, _ string, s fileStat) error { st.entries[rel] = s; return nil })
		if err != nil {
			d.log.Warn("pre-copy: cannot walk the writable layer; the export will push it whole", "instance", id, "err", err)
			st.upper = ""
		}
	} else {
		d.log.Info("pre-copy without a delta: the export will push the whole writable layer", "instance", id, "reason", why)
	}
	afterCommit := func(ctx context.Context, imageID string) error {
		if st.upper == "" {
			return nil
		}
		ii, err := d.cli.ImageInspect(ctx, imageID)
		if err != nil {
			return fmt.Errorf("docker pre-copy %s: inspect its commit: %w", id, err)
		}
		dir := ii.GraphDriver.Data["UpperDir"]
		st.layer = map[string]bool{}
		if dir == "" {
			st.upper = ""
			return nil
		}
		if err := walkUpper(dir, func(rel, _ string, s fileStat) error { st.layer[rel] = isWhiteout(s); return nil }); err != nil {
			d.log.Warn("pre-copy: cannot read its layer; the export will push the whole writable layer", "instance", id, "err", err)
			st.upper = ""
		}
		return nil
	}
	res, err := d.commitPushWith(ctx, id, preRef, "capsule cold migration pre-copy of instance "+id, false, afterCommit, progress)
	if err != nil {
		return "", 0, err
	}
	st.digest = res.digest
	pushed := res.sent
	// The manifest is read back once: its layers' compressed sizes count
	// what was uploaded, and the export (while the server is down) needs
	// it and the config.
	var layers []capreg.Descriptor
	if st.upper != "" {
		var raw []byte
		if raw, st.manifestType, st.config, err = d.readImage(ctx, preRef, res.digest); err != nil {
			d.log.Warn("pre-copy: cannot read its manifest back; the export will", "instance", id, "err", err)
			st.config = nil
		} else {
			var m capreg.Manifest
			if json.Unmarshal(raw, &m) == nil {
				st.manifest, layers = raw, m.Layers
			}
		}
	} else {
		layers, _ = d.manifestLayers(ctx, preRef, res.digest)
	}
	if len(layers) > 0 && len(layers) == len(res.diffIDs) {
		pushed = 0
		for i, diffID := range res.diffIDs {
			if res.uploaded[shortID(diffID)] {
				pushed += layers[i].Size
			}
		}
	}
	if st.upper != "" {
		d.pre.set(id, st)
	}
	d.log.Info("migration pre-copy pushed", "instance", id, "ref", preRef, "digest", res.digest, "bytes_pushed", pushed,
		"entries", len(st.entries), "delta_ready", st.upper != "")
	return res.digest, pushed, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// ExportMigrationOnto exports stopped instance id to ref: one layer over
// its pre-copy preRef (what changed since) when the driver has that
// pre-copy, else the whole commit (ExportMigration). It returns the
// pushed manifest's digest and the compressed bytes uploaded.
func (d *Driver) ExportMigrationOnto(ctx context.Context, id, preRef, ref string, progress func(bytes int64)) (string, int64, error) {
	st := d.pre.get(id)
	if st == nil || st.preRef != preRef || preRef == "" {
		return d.ExportMigration(ctx, id, ref, progress)
	}
	c, err := d.inspect(ctx, "export", id)
	if err != nil {
		return "", 0, err
	}
	if c.State.Running || c.GraphDriver.Data["UpperDir"] != st.upper {
		// Running (a bug: the caller stops it first) or another
		// container: the pre-copy tells nothing of it.
		d.log.Warn("export: the pre-copy does not apply; pushing the whole writable layer", "instance", id,
			"running", c.State.Running)
		d.ForgetPrecopy(id)
		return d.ExportMigration(ctx, id, ref, progress)
	}
	digest, pushed, n, err := d.pushDelta(ctx, st, ref, progress)
	if err != nil {
		return "", 0, fmt.Errorf("docker export %s: delta over its pre-copy: %w", id, err)
	}
	d.ForgetPrecopy(id)
	d.log.Info("migration delta pushed", "instance", id, "ref", ref, "over", preRef, "digest", digest,
		"bytes_pushed", pushed, "entries", n)
	return digest, pushed, nil
}

// pushDelta writes the layer of what changed since st to a temporary
// file, uploads it and the image's config, and puts ref's manifest: the
// pre-copy's layers plus that one. It returns the manifest digest, the
// bytes uploaded and the number of tar entries.
func (d *Driver) pushDelta(ctx context.Context, st *precopyState, ref string, progress func(int64)) (string, int64, int, error) {
	r, err := capreg.ParseNormalizedRef(ref)
	if err != nil {
		return "", 0, 0, err
	}
	var user, pass string
	if a := d.opts.RegistryAuth; a != nil {
		user, pass = a.Username, a.Password
	}
	reg := capreg.Remote(r.Host, user, pass)
	tmp, err := os.CreateTemp("", "capsule-delta-*.tar.gz")
	if err != nil {
		return "", 0, 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// The fastest level: this layer is made while the server is down.
	// Its compressed digest is taken as it is written, so the layer and
	// the config (which names its uncompressed digest) upload side by
	// side, each in two requests.
	hz := sha256.New()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(tmp, hz), gzip.BestSpeed)
	if err != nil {
		return "", 0, 0, err
	}
	h := sha256.New()
	n, err := writeDelta(io.MultiWriter(zw, h), st)
	if err != nil {
		return "", 0, 0, err
	}
	if err := zw.Close(); err != nil {
		return "", 0, 0, err
	}
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return "", 0, 0, err
	}
	raw, mt, cfgRaw := st.manifest, st.manifestType, st.config
	if raw == nil || cfgRaw == nil {
		if raw, mt, cfgRaw, err = d.readImage(ctx, ref, st.digest); err != nil {
			return "", 0, 0, err
		}
	}
	var man map[string]json.RawMessage
	var parsed capreg.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return "", 0, 0, fmt.Errorf("pre-copy manifest: %w", err)
	}
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return "", 0, 0, fmt.Errorf("pre-copy manifest: %w", err)
	}
	cfg, err := appendLayerToConfig(cfgRaw, diffID, time.Now().UTC())
	if err != nil {
		return "", 0, 0, err
	}
	var layer capreg.Descriptor
	var layerErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		layer, layerErr = reg.UploadBlobOf(ctx, r.Repo, io.NewSectionReader(tmp, 0, size), size,
			"sha256:"+hex.EncodeToString(hz.Sum(nil)))
	})
	cfgDesc, err := reg.UploadBlobOf(ctx, r.Repo, bytes.NewReader(cfg), int64(len(cfg)), "sha256:"+hex.EncodeToString(sha256Sum(cfg)))
	wg.Wait()
	if layerErr != nil {
		return "", 0, 0, fmt.Errorf("upload layer: %w", layerErr)
	}
	if err != nil {
		return "", 0, 0, fmt.Errorf("upload config: %w", err)
	}
	if progress != nil {
		progress(layer.Size)
	}
	cfgDesc.MediaType = parsed.Config.MediaType
	layerType := "application/vnd.docker.image.rootfs.diff.tar.gzip"
	if mt == capreg.MediaOCIManifest {
		layerType = "application/vnd.oci.image.layer.v1.tar+gzip"
	}
	layer.MediaType = layerType
	layers := append(parsed.Layers, layer)
	if man["config"], err = json.Marshal(cfgDesc); err != nil {
		return "", 0, 0, err
	}
	if man["layers"], err = json.Marshal(layers); err != nil {
		return "", 0, 0, err
	}
	body, err := json.Marshal(man)
	if err != nil {
		return "", 0, 0, err
	}
	digest, err := reg.PutManifest(ctx, r.Repo, r.Tag, mt, body)
	if err != nil {
		return "", 0, 0, fmt.Errorf("put manifest: %w", err)
	}
	return digest, layer.Size + cfgDesc.Size, n, nil
}

// readImage reads manifest digest of ref's repository and its config
// from the registry.
func (d *Driver) readImage(ctx context.Context, ref, digest string) ([]byte, string, []byte, error) {
	r, err := capreg.ParseNormalizedRef(ref)
	if err != nil {
		return nil, "", nil, err
	}
	var user, pass string
	if a := d.opts.RegistryAuth; a != nil {
		user, pass = a.Username, a.Password
	}
	reg := capreg.Remote(r.Host, user, pass)
	raw, mt, err := reg.RawManifest(ctx, r.Repo, digest)
	if err != nil {
		return nil, "", nil, fmt.Errorf("pre-copy manifest: %w", err)
	}
	var parsed capreg.Manifest
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return nil, "", nil, fmt.Errorf("pre-copy manifest: %w", err)
	}
	body, err := reg.GetBlob(ctx, r.Repo, parsed.Config.Digest)
	if err != nil {
		return nil, "", nil, fmt.Errorf("pre-copy config: %w", err)
	}
	defer body.Close()
	cfg, err := io.ReadAll(io.LimitReader(body, 16<<20))
	if err != nil {
		return nil, "", nil, fmt.Errorf("pre-copy config: %w", err)
	}
	return raw, mt, cfg, nil
}

// appendLayerToConfig adds layer diffID (and its history line) to an
// image config.
func appendLayerToConfig(raw []byte, diffID string, now time.Time) ([]byte, error) {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("pre-copy config: %w", err)
	}
	var rootfs struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	if err := json.Unmarshal(cfg["rootfs"], &rootfs); err != nil {
		return nil, fmt.Errorf("pre-copy config rootfs: %w", err)
	}
	rootfs.DiffIDs = append(rootfs.DiffIDs, diffID)
	var history []map[string]any
	if h, ok := cfg["history"]; ok {
		if err := json.Unmarshal(h, &history); err != nil {
			return nil, fmt.Errorf("pre-copy config history: %w", err)
		}
	}
	stamp := now.Format(time.RFC3339Nano)
	history = append(history, map[string]any{"created": stamp, "comment": "capsule cold migration: changes since the pre-copy"})
	var err error
	if cfg["rootfs"], err = json.Marshal(rootfs); err != nil {
		return nil, err
	}
	if cfg["history"], err = json.Marshal(history); err != nil {
		return nil, err
	}
	if cfg["created"], err = json.Marshal(stamp); err != nil {
		return nil, err
	}
	return json.Marshal(cfg)
}

// deltaEntry is one entry of the upper directory at the export.
type deltaEntry struct {
	rel, full string
	st        fileStat
}

// writeDelta writes to w, as a layer tar (whiteouts as .wh. files, an
// opaque directory's marker as .wh..wh..opq, as a commit tars an overlay2
// upper directory), what changed in st.upper since the pre-copy, and
// returns the number of entries written.
func writeDelta(w io.Writer, st *precopyState) (int, error) {
	var cur []deltaEntry
	now := map[string]fileStat{}
	if err := walkUpper(st.upper, func(rel, full string, s fileStat) error {
		cur = append(cur, deltaEntry{rel: rel, full: full, st: s})
		now[rel] = s
		return nil
	}); err != nil {
		return 0, fmt.Errorf("walk writable layer: %w", err)
	}
	since := st.since.UnixNano()
	include := map[string]bool{}
	opaqueNew := map[string]bool{} // directories newly opaque: marker, and all they hold
	var forced []string            // such directories (their subtree goes whole)
	under := func(rel string) bool {
		for _, f := range forced {
			if strings.HasPrefix(rel, f+"/") {
				return true
			}
		}
		return false
	}
	for _, e := range cur {
		prev, ok := st.entries[e.rel]
		changed := !ok || prev != e.st || e.st.ctime >= since || under(e.rel)
		if !changed {
			continue
		}
		include[e.rel] = true
		if e.st.mode&unix.S_IFMT == unix.S_IFDIR && e.st.opaque && (!ok || prev.ino != e.st.ino || !prev.opaque) {
			opaqueNew[e.rel] = true
			forced = append(forced, e.rel)
		}
	}
	// What the pre-copy's layer held and is gone now: a whiteout at the
	// topmost such path (under a path that is still here).
	var gone []string
	for rel, wh := range st.layer {
		if wh {
			continue
		}
		if _, ok := now[rel]; ok {
			continue
		}
		if parent := path.Dir(rel); parent != "." {
			if ps, ok := now[parent]; !ok || ps.mode&unix.S_IFMT != unix.S_IFDIR {
				continue // its gone ancestor's whiteout, or what replaced that, covers it
			}
		}
		gone = append(gone, rel)
	}
	sort.Strings(gone)
	// Every included entry's directories go too, with their metadata as
	// it is (unchanged ones as in the pre-copy): the unpacker would
	// otherwise create them 0755 over the lower layers' own.
	needed := map[string]bool{}
	mark := func(rel string) {
		for p := path.Dir(rel); p != "."; p = path.Dir(p) {
			if needed[p] {
				return
			}
			needed[p] = true
		}
	}
	for rel := range include {
		mark(rel)
	}
	for _, rel := range gone {
		mark(rel)
	}

	tw := tar.NewWriter(w)
	links := map[uint64]string{}
	n := 0
	for _, e := range cur {
		if !include[e.rel] && !needed[e.rel] {
			continue
		}
		wrote, err := writeEntry(tw, e, links)
		if err != nil {
			return n, err
		}
		if wrote {
			n++
		}
		if opaqueNew[e.rel] {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.rel + "/.wh..wh..opq", Mode: 0o600,
				Format: tar.FormatPAX}); err != nil {
				return n, err
			}
			n++
		}
	}
	for _, rel := range gone {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: whiteoutName(rel), Mode: 0o600,
			Format: tar.FormatPAX}); err != nil {
			return n, err
		}
		n++
	}
	return n, tw.Close()
}

func whiteoutName(rel string) string {
	dir, base := path.Split(rel)
	return dir + ".wh." + base
}

// writeEntry writes one upper-directory entry as a commit would: an
// overlay whiteout as a .wh. file, a second name of an inode as a hard
// link, sockets not at all. The pre-copy reads a running server's
// writable layer, which it can change meanwhile, even swap a directory
// for a symbolic link to anywhere: the entry is reached through its
// parent directory opened beneath the layer's root without following
// any link (openat2), and a regular file is read only when what was
// opened is the inode the walk saw. An entry gone or replaced since is
// skipped (false): the export, which compares with that walk, sends it.
func writeEntry(tw *tar.Writer, e deltaEntry, links map[uint64]string) (bool, error) {
	if isWhiteout(e.st) {
		return true, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: whiteoutName(e.rel), Mode: 0o600,
			Format: tar.FormatPAX})
	}
	p := e.full
	switch pfd, base, err := parentBeneath(e); {
	case err == nil:
		defer unix.Close(pfd)
		p = fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)
	case errors.Is(err, unix.ENOSYS):
		// A kernel without openat2 (before 5.6): the path as it is.
	case changedSince(err):
		return false, nil
	default:
		return false, fmt.Errorf("open the directory of %s: %w", e.rel, err)
	}
	fi, err := os.Lstat(p)
	if changedSince(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return false, nil
	}
	var sys unix.Stat_t
	if err := unix.Lstat(p, &sys); err != nil {
		if changedSince(err) {
			return false, nil
		}
		return false, err
	}
	link := ""
	if fi.Mode()&os.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			if changedSince(err) {
				return false, nil
			}
			return false, err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return false, err
	}
	hdr.Name = e.rel
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Format = tar.FormatPAX
	hdr.ModTime = hdr.ModTime.Truncate(time.Second)
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.Uid, hdr.Gid = int(e.st.uid), int(e.st.gid)
	hdr.Uname, hdr.Gname = "", ""
	if caps := getxattr(p, "security.capability"); caps != nil {
		hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(caps)}
	}
	if fi.Mode().IsRegular() && sys.Nlink > 1 {
		if first, ok := links[sys.Ino]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return true, tw.WriteHeader(hdr)
		}
	}
	var f *os.File
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		// Not a FIFO swapped in (O_NONBLOCK), not a link (O_NOFOLLOW),
		// and the inode stat saw.
		f, err = os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if changedSince(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		defer f.Close()
		var fst unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
			return false, err
		}
		if fst.Ino != sys.Ino || fst.Ino != e.st.ino || fst.Mode&unix.S_IFMT != unix.S_IFREG {
			return false, nil
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return false, err
	}
	if fi.Mode().IsRegular() && sys.Nlink > 1 {
		links[sys.Ino] = e.rel
	}
	if f == nil {
		return true, nil
	}
	n, err := io.CopyN(tw, f, hdr.Size)
	if errors.Is(err, io.EOF) {
		// Truncated since its stat (a running server's file): its
		// change is the export's; the entry is padded to its header.
		_, err = io.CopyN(tw, zeroReader{}, hdr.Size-n)
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", e.rel, err)
	}
	return true, nil
}

// parentBeneath opens (O_PATH) the directory holding entry e, resolved
// beneath the root e was walked from without following any link, and
// returns it and e's last name.
func parentBeneath(e deltaEntry) (int, string, error) {
	root := strings.TrimSuffix(e.full, "/"+e.rel)
	if root == e.full {
		return -1, "", fmt.Errorf("%s is not under its root: %w", e.full, unix.EINVAL)
	}
	dir, base := path.Split(e.rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", err
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return -1, "", err
	}
	return fd, base, nil
}

// changedSince: an error of reaching an entry that is gone or was
// replaced (by a link, a non-directory) since the walk.
func changedSince(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) ||
		errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENXIO)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func getxattr(p, name string) []byte {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil || n <= 0 {
		return nil
	}
	return buf[:n]
}

// PrepareSandbox creates and starts the sandbox of spec (a networked
// server about to be imported here) ahead of its import: the migration's
// pre-pull does it while the server still runs on its source, so the
// import, while the server is down, finds the namespace ready and only
// plugs its NICs and creates and starts the workload (Create keeps an
// existing sandbox). The sandbox has no NIC until then (network mode
// none). A cleanup's Destroy removes it, workload or not.
func (d *Driver) PrepareSandbox(ctx context.Context, spec drivers.Spec) error {
	if !spec.Networked {
		return nil
	}
	if d.netnsMode() {
		// One container (netns.go): the namespace alone.
		if err := netnsfile.Make(d.netnsPathOf(spec.ID)); err != nil {
			return fmt.Errorf("docker prepare network namespace %s: %w", spec.ID, err)
		}
		return nil
	}
	if err := d.ensureImage(ctx, d.opts.SandboxImage); err != nil {
		return fmt.Errorf("docker prepare sandbox %s: %w", spec.ID, err)
	}
	if _, err := d.createSandbox(ctx, spec); err != nil {
		return err
	}
	_, err := d.ensureSandbox(ctx, "prepare", spec.ID)
	return err
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
