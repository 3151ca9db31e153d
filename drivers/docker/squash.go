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
	"path"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	capreg "github.com/capsule-cloud/capsule/registry"
)

// A squashed pre-copy keeps a migrated server's image from growing with
// every migration. A migration's image is the server's original image's
// layers plus two of its own: the pre-copy's and the export's delta
// (ExportMigrationOnto). The next migration's pre-copy does not commit
// over that (which would stack a third and fourth layer, and carry data
// deleted since in the lower ones for ever): it writes one layer, itself,
// of what the container's writable layer and the image's migration layers
// hold together over the original image's layers (overlay's rules: the
// upper entry wins, a whiteout or a non-directory hides what is under it
// in the layers below, an opaque directory hides the lower layers'
// contents of it), and streams it (gzip, fastest level) straight to the
// registry while the server runs. The image pushed is the original
// layers plus that one, its config the container's as a commit makes it,
// so every migration's image is the original's layers plus at most two.
//
// A layer is a migration's when its history entry's comment starts with
// migrationComment (the pre-copy's, the delta's, a commit's of an export
// without pre-copy). The registry descriptors (compressed digests and
// sizes) of the original layers are what a Docker push of an image of
// only those layers (loaded from a config alone: dockerd has the layers)
// puts in its manifest: dockerd knows, or mounts, or at worst uploads
// them. That image and its manifest are removed as soon as it is read.

// migrationComment starts the history comment of every layer a migration
// adds.
const migrationComment = "capsule cold migration"

// squashLevel is the pre-copy layer's gzip level: the fastest (Docker's
// push uses the default, several times slower on data that does not
// compress).
const squashLevel = gzip.BestSpeed

// imageInspectMeta is what the squashed pre-copy reads of an image's
// inspect.
type imageInspectMeta struct {
	ID            string `json:"Id"`
	Architecture  string
	Os            string
	Variant       string
	DockerVersion string
	RootFS        struct {
		Type   string
		Layers []string
	}
	GraphDriver struct {
		Name string
		Data map[string]string
	}
}

// squashSource is what a squashed pre-copy is made of.
type squashSource struct {
	img     imageInspectMeta
	base    []string         // the original image's diff IDs
	dirs    []string         // the migration layers' directories, top first
	history []map[string]any // the original layers' history, config form
}

// squashSourceOf reads the container image's layers: which are the
// original image's and where the migration layers above them are.
func (d *Driver) squashSourceOf(ctx context.Context, imageID string) (squashSource, error) {
	var raw bytes.Buffer
	if _, err := d.cli.ImageInspect(ctx, imageID, client.ImageInspectWithRawResponse(&raw)); err != nil {
		return squashSource{}, fmt.Errorf("inspect image %s: %w", imageID, err)
	}
	var src squashSource
	if err := json.Unmarshal(raw.Bytes(), &src.img); err != nil {
		return squashSource{}, fmt.Errorf("decode image inspect: %w", err)
	}
	layers := src.img.RootFS.Layers
	if src.img.RootFS.Type != "layers" || len(layers) == 0 {
		return squashSource{}, fmt.Errorf("image %s has no layers", imageID)
	}
	hist, err := d.cli.ImageHistory(ctx, imageID)
	if err != nil {
		return squashSource{}, fmt.Errorf("history of image %s: %w", imageID, err)
	}
	// Newest first: the migration layers are the leading entries.
	k := 0
	for k < len(hist) && k < len(layers) && strings.HasPrefix(hist[k].Comment, migrationComment) {
		k++
	}
	src.base = layers[:len(layers)-k]
	if k > 0 {
		if src.img.GraphDriver.Name != "overlay2" {
			return squashSource{}, fmt.Errorf("image layers on storage driver %s", src.img.GraphDriver.Name)
		}
		// Top first: the image's own layer, then its lower ones.
		dirs := []string{src.img.GraphDriver.Data["UpperDir"]}
		if lower := src.img.GraphDriver.Data["LowerDir"]; lower != "" {
			dirs = append(dirs, strings.Split(lower, ":")...)
		}
		if len(dirs) != len(layers) || dirs[0] == "" {
			return squashSource{}, fmt.Errorf("image %s: %d layer directories for %d layers", imageID, len(dirs), len(layers))
		}
		src.dirs = dirs[:k]
	}
	src.history = baseHistory(hist[k:], len(src.base))
	return src, nil
}

// baseHistory is the config history of the original layers from their
// docker history (newest first), which tells no entry's empty_layer: an
// entry with a size is a layer, and so, when that count falls short of
// the layers, is one that is not a builder's "#(nop)" instruction. If
// that still does not fit, one entry per layer says what it is.
func baseHistory(items []image.HistoryResponseItem, layers int) []map[string]any {
	n := len(items)
	nonEmpty := make([]bool, n)
	count := 0
	for i := range items {
		if items[i].Size > 0 {
			nonEmpty[i] = true
			count++
		}
	}
	for i := n - 1; i >= 0 && count < layers; i-- { // oldest first
		if !nonEmpty[i] && !strings.Contains(items[i].CreatedBy, "#(nop)") {
			nonEmpty[i] = true
			count++
		}
	}
	var out []map[string]any
	if count != layers {
		for i := 0; i < layers; i++ {
			out = append(out, map[string]any{"created_by": fmt.Sprintf("capsule: layer %d of the server's original image", i+1)})
		}
		return out
	}
	for i := n - 1; i >= 0; i-- {
		h := items[i]
		e := map[string]any{"created": time.Unix(h.Created, 0).UTC().Format(time.RFC3339Nano)}
		if h.CreatedBy != "" {
			e["created_by"] = h.CreatedBy
		}
		if h.Comment != "" {
			e["comment"] = h.Comment
		}
		if !nonEmpty[i] {
			e["empty_layer"] = true
		}
		out = append(out, e)
	}
	return out
}

// squashEntry is one path of the squashed layer.
type squashEntry struct {
	e     deltaEntry
	layer int // index in the directories (0: the top)
	// closed is the layer whose entry of this path hides the layers
	// below it (a non-directory, a whiteout, an opaque directory);
	// len(dirs) while none does.
	closed int
	opaque bool // a directory to mark opaque
}

func isDirStat(st fileStat) bool { return st.mode&unix.S_IFMT == unix.S_IFDIR }

// writeSquash writes to w, as one layer tar, what the layer directories
// dirs (top first, overlay2's form: whiteouts as 0/0 character devices,
// opaque directories by xattr) hold together, as a commit would tar their
// union: whiteouts as .wh. files, an opaque directory's marker as
// .wh..wh..opq. onTop is told every path written from dirs[0] (true: a
// whiteout). It returns the number of entries written.
func writeSquash(w io.Writer, dirs []string, onTop func(rel string, whiteout bool)) (int, error) {
	decided := map[string]*squashEntry{}
	var order []string
	open := len(dirs)
	for j, dir := range dirs {
		err := walkUpper(dir, func(rel, full string, st fileStat) error {
			// Hidden by what a layer above holds at one of its parents?
			for p := path.Dir(rel); p != "."; p = path.Dir(p) {
				if a := decided[p]; a != nil && a.closed < j {
					if isDirStat(st) {
						return fs.SkipDir
					}
					return nil
				}
			}
			if prev := decided[rel]; prev != nil {
				// A layer above has this path: it wins. A directory
				// there whose lower layers end here is opaque.
				if prev.closed == open && isDirStat(prev.e.st) {
					if !isDirStat(st) || st.opaque {
						prev.closed, prev.opaque = j, true
					}
				}
				return nil
			}
			s := &squashEntry{e: deltaEntry{rel: rel, full: full, st: st}, layer: j, closed: open}
			switch {
			case !isDirStat(st):
				s.closed = j
			case st.opaque:
				s.closed, s.opaque = j, true
			}
			decided[rel] = s
			order = append(order, rel)
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("walk layer %s: %w", dir, err)
		}
	}
	tw := tar.NewWriter(w)
	links := map[uint64]string{}
	n := 0
	for _, rel := range order {
		s := decided[rel]
		wrote, err := writeEntry(tw, s.e, links)
		if err != nil {
			return n, err
		}
		if !wrote {
			continue
		}
		n++
		if s.layer == 0 && onTop != nil {
			onTop(rel, isWhiteout(s.e.st))
		}
		if s.opaque && isDirStat(s.e.st) {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel + "/.wh..wh..opq", Mode: 0o600,
				Format: tar.FormatPAX}); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, tw.Close()
}

// precopySquashed is the pre-copy of running container c (instance id,
// writable layer upper) as one layer over its original image's, pushed
// to preRef by the driver itself (above). It returns the pre-copy's
// state, with its manifest and config, and the bytes uploaded.
func (d *Driver) precopySquashed(ctx context.Context, c container.InspectResponse, id, upper, preRef string,
	progress func(int64)) (*precopyState, int64, error) {
	src, err := d.squashSourceOf(ctx, c.Image)
	if err != nil {
		return nil, 0, err
	}
	r, err := capreg.ParseNormalizedRef(preRef)
	if err != nil {
		return nil, 0, err
	}
	var user, pass string
	if a := d.opts.RegistryAuth; a != nil {
		user, pass = a.Username, a.Password
	}
	reg := capreg.Remote(r.Host, user, pass)

	// The original layers' descriptors, beside the layer's upload.
	type baseResult struct {
		manifest map[string]json.RawMessage
		layers   []capreg.Descriptor
		mt       string
		digest   string
		sent     int64
		err      error
	}
	baseCh := make(chan baseResult, 1)
	var base baseResult
	var digest string
	got := false
	defer func() {
		// The original layers' manifest goes, whatever happened (its
		// tag names the pre-copy now, or nothing useful).
		if !got {
			base = <-baseCh
		}
		if base.digest != "" && base.digest != digest {
			if err := reg.DeleteManifest(context.WithoutCancel(ctx), r.Repo, base.digest); err != nil && !errors.Is(err, capreg.ErrNotFound) {
				d.log.Warn("pre-copy: could not delete the original layers' manifest", "instance", id, "digest", base.digest, "err", err)
			}
		}
	}()
	bctx, cancelBase := context.WithCancel(ctx)
	defer cancelBase()
	go func() {
		var b baseResult
		b.manifest, b.layers, b.mt, b.digest, b.sent, b.err = d.pushBase(bctx, reg, src, preRef)
		baseCh <- b
	}()

	st := &precopyState{preRef: preRef, upper: upper, entries: map[string]fileStat{}, layer: map[string]bool{}}
	start := time.Now()
	if err := syncDir(upper); err != nil {
		d.log.Warn("pre-copy: sync of the writable layer's file system failed", "instance", id, "err", err)
	}
	st.since = start.Add(-racyWindow)
	if err := walkUpper(upper, func(rel, _ string, s fileStat) error { st.entries[rel] = s; return nil }); err != nil {
		return nil, 0, fmt.Errorf("walk the writable layer: %w", err)
	}

	pr, pw := io.Pipe()
	h := sha256.New()
	var entries int
	var wg sync.WaitGroup
	wg.Go(func() {
		zw, err := gzip.NewWriterLevel(pw, squashLevel)
		if err == nil {
			entries, err = writeSquash(io.MultiWriter(zw, h), append([]string{upper}, src.dirs...), func(rel string, wh bool) {
				st.layer[rel] = wh
			})
			if cerr := zw.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	})
	layer, err := reg.UploadBlob(ctx, r.Repo, &progressReader{r: pr, progress: progress})
	pr.CloseWithError(errors.New("upload ended"))
	wg.Wait()
	if err != nil {
		return nil, 0, fmt.Errorf("upload the pre-copy layer: %w", err)
	}
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))
	base, got = <-baseCh, true
	if base.err != nil {
		return nil, 0, fmt.Errorf("the original layers' descriptors: %w", base.err)
	}
	cfg, err := squashConfig(c, src, diffID, "capsule cold migration pre-copy of instance "+id, time.Now().UTC())
	if err != nil {
		return nil, 0, err
	}
	cfgDesc, err := reg.UploadBlobOf(ctx, r.Repo, bytes.NewReader(cfg), int64(len(cfg)), "sha256:"+hex.EncodeToString(sha256Sum(cfg)))
	if err != nil {
		return nil, 0, fmt.Errorf("upload the pre-copy config: %w", err)
	}
	mt := base.mt
	man := base.manifest
	if man == nil {
		mt = capreg.MediaDockerManifest
		man = map[string]json.RawMessage{"schemaVersion": json.RawMessage("2"), "mediaType": json.RawMessage(`"` + mt + `"`)}
	}
	cfgDesc.MediaType = "application/vnd.docker.container.image.v1+json"
	layer.MediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	if mt == capreg.MediaOCIManifest {
		cfgDesc.MediaType = "application/vnd.oci.image.config.v1+json"
		layer.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
	}
	if man["config"], err = json.Marshal(cfgDesc); err != nil {
		return nil, 0, err
	}
	if man["layers"], err = json.Marshal(append(base.layers, layer)); err != nil {
		return nil, 0, err
	}
	body, err := json.Marshal(man)
	if err != nil {
		return nil, 0, err
	}
	if digest, err = reg.PutManifest(ctx, r.Repo, r.Tag, mt, body); err != nil {
		return nil, 0, fmt.Errorf("put the pre-copy manifest: %w", err)
	}
	st.digest, st.manifest, st.manifestType, st.config = digest, body, mt, cfg
	if progress != nil {
		progress(layer.Size)
	}
	d.log.Info("migration pre-copy squashed", "instance", id, "migration_layers", len(src.dirs), "entries", entries,
		"layer_bytes", layer.Size)
	return st, layer.Size + cfgDesc.Size + base.sent, nil
}

// pushBase pushes, through dockerd, an image of only src's original
// layers to preRef (loaded from a config alone: dockerd has the layers;
// its history names preRef, so no other image has its manifest) and
// returns that manifest, its layers, its media type and digest, and the
// bytes dockerd uploaded (nothing when the registry has every layer).
// The local image goes at once; the caller deletes the manifest.
func (d *Driver) pushBase(ctx context.Context, reg *capreg.Client, src squashSource, preRef string) (map[string]json.RawMessage, []capreg.Descriptor, string, string, int64, error) {
	if len(src.base) == 0 {
		return nil, nil, "", "", 0, nil
	}
	cfg := map[string]any{
		"architecture": src.img.Architecture,
		"os":           src.img.Os,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": src.base},
		"history": []map[string]any{{"created": time.Now().UTC().Format(time.RFC3339Nano),
			"created_by": "capsule: the original layers of pre-copy " + preRef, "empty_layer": true}},
	}
	if src.img.Variant != "" {
		cfg["variant"] = src.img.Variant
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, "", "", 0, err
	}
	sum := sha256.Sum256(raw)
	imgID := "sha256:" + hex.EncodeToString(sum[:])
	tb, err := configOnlyTarball(raw, len(src.base))
	if err != nil {
		return nil, nil, "", "", 0, err
	}
	res, err := d.cli.ImageLoad(ctx, bytes.NewReader(tb), client.ImageLoadWithQuiet(true))
	if err != nil {
		return nil, nil, "", "", 0, fmt.Errorf("load: %w", err)
	}
	if res.JSON {
		err = drainPull(res.Body)
	} else {
		_, err = io.Copy(io.Discard, res.Body)
	}
	res.Body.Close()
	defer func() {
		for _, ref := range []string{preRef, imgID} {
			if _, err := d.cli.ImageRemove(context.WithoutCancel(ctx), ref, image.RemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				d.log.Warn("pre-copy: could not remove the original layers' image", "image", ref, "err", err)
			}
		}
	}()
	if err != nil {
		return nil, nil, "", "", 0, fmt.Errorf("load: %w", err)
	}
	if err := d.cli.ImageTag(ctx, imgID, preRef); err != nil {
		return nil, nil, "", "", 0, fmt.Errorf("tag: %w", err)
	}
	enc, err := d.encodedAuth()
	if err != nil {
		return nil, nil, "", "", 0, err
	}
	rc, err := d.cli.ImagePush(ctx, preRef, image.PushOptions{RegistryAuth: enc})
	if err != nil {
		return nil, nil, "", "", 0, fmt.Errorf("push: %w", err)
	}
	pl, err := drainPush(rc, nil)
	rc.Close()
	if err != nil {
		return nil, nil, "", "", 0, fmt.Errorf("push: %w", err)
	}
	r, err := capreg.ParseNormalizedRef(preRef)
	if err != nil {
		return nil, nil, "", pl.digest, pl.sent, err
	}
	mraw, mt, err := reg.RawManifest(ctx, r.Repo, pl.digest)
	if err != nil {
		return nil, nil, "", pl.digest, pl.sent, fmt.Errorf("manifest %s: %w", pl.digest, err)
	}
	var man map[string]json.RawMessage
	var parsed capreg.Manifest
	if err := json.Unmarshal(mraw, &man); err != nil {
		return nil, nil, "", pl.digest, pl.sent, fmt.Errorf("manifest: %w", err)
	}
	if err := json.Unmarshal(mraw, &parsed); err != nil {
		return nil, nil, "", pl.digest, pl.sent, fmt.Errorf("manifest: %w", err)
	}
	if len(parsed.Layers) != len(src.base) {
		return nil, nil, "", pl.digest, pl.sent, fmt.Errorf("manifest of %d layers for %d", len(parsed.Layers), len(src.base))
	}
	return man, parsed.Layers, mt, pl.digest, pl.sent, nil
}

// squashConfig is the config of the squashed pre-copy of container c:
// the container's configuration as a commit takes it (Capsule's labels
// blanked), the original layers plus diffID, their history plus the
// pre-copy's line.
func squashConfig(c container.InspectResponse, src squashSource, diffID, comment string, now time.Time) ([]byte, error) {
	var conf container.Config
	if c.Config != nil {
		conf = *c.Config
	}
	labels := map[string]string{}
	for k, v := range conf.Labels {
		labels[k] = v
	}
	for k := range blankCapsuleLabels(conf.Labels) {
		labels[k] = ""
	}
	conf.Labels = labels
	stamp := now.Format(time.RFC3339Nano)
	history := append(append([]map[string]any{}, src.history...), map[string]any{"created": stamp, "comment": comment})
	cfg := map[string]any{
		"architecture":     src.img.Architecture,
		"os":               src.img.Os,
		"created":          stamp,
		"container":        c.ID,
		"container_config": conf,
		"config":           conf,
		"rootfs":           map[string]any{"type": "layers", "diff_ids": append(append([]string{}, src.base...), diffID)},
		"history":          history,
	}
	if src.img.Variant != "" {
		cfg["variant"] = src.img.Variant
	}
	if src.img.DockerVersion != "" {
		cfg["docker_version"] = src.img.DockerVersion
	}
	return json.Marshal(cfg)
}

// progressReader tells progress the bytes read so far.
type progressReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if n > 0 && p.progress != nil {
		p.progress(p.n)
	}
	return n, err
}
