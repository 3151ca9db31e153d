package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/registry"

	"github.com/capsule-cloud/capsule/drivers"
	capreg "github.com/capsule-cloud/capsule/registry"
)

var _ drivers.Migrator = (*Driver)(nil)

// driverFiles are the files Docker bind-mounts into every container from
// its own per-container directory: they are regenerated on the target, so
// a commit not carrying them loses nothing.
var driverFiles = map[string]bool{"/etc/resolv.conf": true, "/etc/hostname": true, "/etc/hosts": true}

// ownMount reports whether a mount at dest is one the driver or Docker
// adds itself rather than tenant data: the /etc files above and anything
// over /proc or /sys (LXCFS views of /proc files, for instance).
func ownMount(dest string) bool {
	dest = path.Clean("/" + dest)
	if driverFiles[dest] {
		return true
	}
	for _, pseudo := range []string{"/proc", "/sys"} {
		if dest == pseudo || strings.HasPrefix(dest, pseudo+"/") {
			return true
		}
	}
	return false
}

// Volumes implements drivers.Migrator: the named (or anonymous) volumes
// and the bind-mounted host paths of the workload container, whose data a
// commit would not carry (but a boot volume's binds, LabelRootVolume).
// tmpfs mounts hold nothing that survives a stop.
func (d *Driver) Volumes(ctx context.Context, id string) ([]string, error) {
	c, err := d.inspect(ctx, "volumes", id)
	if err != nil {
		return nil, err
	}
	rootVol := ""
	if c.Config != nil {
		rootVol = c.Config.Labels[LabelRootVolume]
	}
	var out []string
	for _, m := range c.Mounts {
		if ownMount(m.Destination) {
			continue
		}
		if m.Type == mount.TypeBind && underRootVolume(rootVol, m.Source) {
			continue // the boot volume: it moves as a volume
		}
		switch m.Type {
		case mount.TypeVolume:
			out = append(out, m.Name)
		case mount.TypeBind:
			out = append(out, m.Source)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// encodedAuth is the X-Registry-Auth header of pushes and pulls.
func (d *Driver) encodedAuth() (string, error) {
	a := d.opts.RegistryAuth
	if a == nil {
		// The daemon requires the header even for an anonymous push;
		// "{}" base64-encoded is the empty login.
		return "e30=", nil
	}
	enc, err := registry.EncodeAuthConfig(registry.AuthConfig{
		Username: a.Username, Password: a.Password, ServerAddress: a.ServerAddress,
	})
	if err != nil {
		return "", fmt.Errorf("encode registry auth: %w", err)
	}
	return enc, nil
}

// Pull implements drivers.Migrator: it pulls ref with the driver's
// registry login, telling progress the compressed bytes downloaded so far
// (summed over layers), and returns that total: 0 when every layer was
// already here.
func (d *Driver) Pull(ctx context.Context, ref string, progress func(bytes int64)) (int64, error) {
	enc, err := d.encodedAuth()
	if err != nil {
		return 0, err
	}
	d.log.Info("pulling migration image", "image", ref)
	// The manifest's exact layer sizes are read while Docker pulls (a
	// read after it would add a registry round trip to a migration's
	// import, while the server is down).
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type sizes struct {
		layers []capreg.Descriptor
		err    error
	}
	manifest := make(chan sizes, 1)
	go func() {
		var s sizes
		r, err := capreg.ParseNormalizedRef(ref)
		if err == nil {
			s.layers, s.err = d.manifestLayers(mctx, ref, r.Reference())
		} else {
			s.err = err
		}
		manifest <- s
	}()
	rc, err := d.cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: enc})
	if err != nil {
		return 0, fmt.Errorf("docker pull %s: %w", ref, err)
	}
	defer rc.Close()
	n, fetched, err := readPull(rc, progress)
	if err != nil {
		return n, fmt.Errorf("docker pull %s (%d bytes downloaded): %w", ref, n, err)
	}
	if len(fetched) > 0 {
		// Docker may send no progress line at all for a small layer:
		// the manifest has the exact sizes of the layers fetched.
		if s := <-manifest; s.err != nil {
			d.log.Warn("could not read the pulled manifest's layer sizes; reporting the progress seen", "image", ref, "err", s.err)
		} else if exact := fetchedBytes(s.layers, fetched); exact != n {
			n = exact
			if progress != nil {
				progress(n)
			}
		}
	}
	d.log.Info("migration image pulled", "image", ref, "bytes", n, "layers_fetched", len(fetched))
	return n, nil
}

// fetchedBytes sums the compressed sizes of the layers in fetched (short
// digests, as pull progress names layers).
func fetchedBytes(layers []capreg.Descriptor, fetched map[string]bool) int64 {
	var n int64
	for _, l := range layers {
		if fetched[shortID(l.Digest)] {
			n += l.Size
		}
	}
	return n
}

// jsonMessage is one line of Docker's push and pull progress streams.
type jsonMessage struct {
	ID             string `json:"id"`
	Status         string `json:"status"`
	ProgressDetail struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	Aux *struct {
		Digest string `json:"Digest"`
	} `json:"aux"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// err returns the failure the message reports, if any: failures arrive in
// the stream, not as an HTTP status.
func (m jsonMessage) err() error {
	if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
		return errors.New(m.ErrorDetail.Message)
	}
	if m.Error != "" {
		return errors.New(m.Error)
	}
	return nil
}

// readPull drains a pull's progress stream and returns the bytes
// downloaded and the layers fetched (not already here). A layer's last
// "Downloading" message may come before its end (Docker throttles them),
// so a finished layer counts its full size when a message told it.
func readPull(r io.Reader, progress func(int64)) (int64, map[string]bool, error) {
	type layer struct{ cur, total int64 }
	layers := map[string]*layer{}
	fetched := map[string]bool{}
	sum := func() int64 {
		var n int64
		for _, l := range layers {
			n += l.cur
		}
		return n
	}
	dec := json.NewDecoder(r)
	for {
		var msg jsonMessage
		if err := dec.Decode(&msg); err == io.EOF {
			return sum(), fetched, nil
		} else if err != nil {
			return sum(), fetched, fmt.Errorf("read pull progress: %w", err)
		}
		if err := msg.err(); err != nil {
			return sum(), fetched, err
		}
		if msg.ID == "" {
			continue
		}
		l := layers[msg.ID]
		before := int64(0)
		if l != nil {
			before = l.cur
		}
		switch msg.Status {
		case "Downloading":
			if l == nil {
				l = &layer{}
				layers[msg.ID] = l
			}
			l.cur = max(l.cur, msg.ProgressDetail.Current)
			if msg.ProgressDetail.Total > 0 {
				l.total = msg.ProgressDetail.Total
			}
		case "Verifying Checksum", "Download complete", "Extracting", "Pull complete":
			fetched[msg.ID] = true
			if l != nil && l.total > l.cur {
				l.cur = l.total
			}
		}
		if l != nil && l.cur != before && progress != nil {
			progress(sum())
		}
	}
}

// RemoveImage implements drivers.Migrator: it untags ref here. A missing
// image, or one a container still uses, is left alone without an error.
func (d *Driver) RemoveImage(ctx context.Context, ref string) error {
	_, err := d.cli.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
	switch {
	case err == nil:
		d.log.Info("migration image removed", "image", ref)
		return nil
	case cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err):
		d.log.Info("migration image still in use; kept", "image", ref, "reason", err)
		return nil
	}
	return fmt.Errorf("docker remove image %s: %w", ref, err)
}

// ExportMigration commits instance id (stopped by the caller, so nothing
// is paused) to ref and pushes it, like Snapshot, and returns the pushed
// manifest's digest and the compressed bytes of the layers this push
// uploaded: the registry already holds the base image's layers, so this
// is the server's own changes, what the migration really moved. The agent
// prefers it to Snapshot for a migration's export.
func (d *Driver) ExportMigration(ctx context.Context, id, ref string, progress func(bytes int64)) (string, int64, error) {
	res, err := d.commitPush(ctx, id, ref, "capsule cold migration of instance "+id, progress)
	if err != nil {
		return "", 0, err
	}
	layers, err := d.manifestLayers(ctx, ref, res.digest)
	if err == nil && len(layers) != len(res.diffIDs) {
		err = fmt.Errorf("manifest has %d layers, the image %d", len(layers), len(res.diffIDs))
	}
	if err != nil {
		// The push succeeded; only the figure is uncertain. The
		// uncompressed bytes sent bound it from above.
		d.log.Warn("could not read the pushed manifest's layer sizes; reporting the uncompressed bytes pushed",
			"instance", id, "ref", ref, "err", err)
		return res.digest, res.sent, nil
	}
	var pushed int64
	for i, diffID := range res.diffIDs {
		if res.uploaded[shortID(diffID)] {
			pushed += layers[i].Size
		}
	}
	d.log.Info("migration image pushed", "instance", id, "ref", ref, "digest", res.digest,
		"image_size", res.size, "bytes_pushed", pushed, "layers", len(res.diffIDs), "layers_uploaded", len(res.uploaded))
	return res.digest, pushed, nil
}

// shortID is how push progress names a layer: its diff ID's first 12 hex
// digits (stringid.TruncateID).
func shortID(diffID string) string {
	if _, hex, ok := strings.Cut(diffID, ":"); ok {
		diffID = hex
	}
	if len(diffID) > 12 {
		diffID = diffID[:12]
	}
	return diffID
}

// manifestLayers reads the manifest which (a tag or digest) of ref's
// repository from the registry, with the driver's login, and returns its
// layers (compressed, as stored), in order, which is the order of the
// image's diff IDs.
func (d *Driver) manifestLayers(ctx context.Context, ref, which string) ([]capreg.Descriptor, error) {
	r, err := capreg.ParseNormalizedRef(ref)
	if err != nil {
		return nil, err
	}
	var user, pass string
	if a := d.opts.RegistryAuth; a != nil {
		user, pass = a.Username, a.Password
	}
	m, err := capreg.Remote(r.Host, user, pass).Manifest(ctx, r.Repo, which)
	if err != nil {
		return nil, err
	}
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("manifest %s of %s lists no layers (an index?)", which, ref)
	}
	return m.Layers, nil
}
