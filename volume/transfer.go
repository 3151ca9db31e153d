package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/registry"
)

// A local volume moves to another host the way a server does (commit,
// push to the private registry, pull): its files are packed as one tar
// layer of an OCI image pushed under the reference the control plane
// gives (capsule/volumes/<volume>:<request>), and the target unpacks that
// layer into a new image of the volume's size. The control plane removes
// the tag once the target has the data.

// OCI media types of a volume's transfer image.
const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// Export pushes the files of volume id (backend b) to ref in the
// registry reg (its host is ref's) and returns the layer's size. The
// volume must not be attached to a server: it is mounted on the host for
// the copy only (or used as it is mounted already).
func (m *Manager) Export(ctx context.Context, b Backend, id string, reg *registry.Client, ref string) (int64, error) {
	r, err := registry.ParseRef(ref)
	if err != nil || r.Tag == "" {
		return 0, errdefs.InvalidArgumentf("volume %s: bad transfer reference %q", id, ref)
	}
	img, err := m.ImagePath(b, id)
	if err != nil {
		return 0, err
	}
	defer m.lock(id)()
	wasMounted, err := m.hostMounted(id)
	if err != nil {
		return 0, err
	}
	mp, err := m.mountLocked(img, id)
	if err != nil {
		return 0, err
	}
	if !wasMounted {
		defer func() {
			if err := m.unmountLocked(id); err != nil {
				m.log.Error("could not unmount a volume after its export", "volume", id, "err", err)
			}
		}()
	}
	cl := reg.At(r.Host)
	cmd := exec.CommandContext(ctx, "tar", "-c", "--numeric-owner", "--sparse", "-C", mp, "-f", "-", ".")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("export volume %s: tar: %w", id, err)
	}
	layer, upErr := cl.UploadBlob(ctx, r.Repo, out)
	if upErr != nil {
		_, _ = io.Copy(io.Discard, out)
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("export volume %s: tar: %w: %s", id, err, stderr.String())
	}
	if upErr != nil {
		return 0, fmt.Errorf("export volume %s: push its data: %w", id, upErr)
	}
	layer.MediaType = mediaLayer
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layer.Digest}},
		"config": map[string]any{"Labels": map[string]string{"capsule.volume": id}},
	})
	cd, err := cl.UploadBlob(ctx, r.Repo, bytesReader(cfg))
	if err != nil {
		return 0, fmt.Errorf("export volume %s: push its config: %w", id, err)
	}
	cd.MediaType = mediaConfig
	man, _ := json.Marshal(registry.Manifest{SchemaVersion: 2, MediaType: mediaManifest, Config: cd, Layers: []registry.Descriptor{layer}})
	if _, err := cl.PutManifest(ctx, r.Repo, r.Tag, mediaManifest, man); err != nil {
		return 0, fmt.Errorf("export volume %s: push its manifest: %w", id, err)
	}
	m.log.Info("volume exported", "volume", id, "ref", ref, "bytes", layer.Size)
	return layer.Size, nil
}

// Import makes volume id (backend b) of sizeGB GiB on this host from the
// data Export pushed to ref and returns the bytes pulled. A volume that
// exists here already is left as it is (a redelivered import).
func (m *Manager) Import(ctx context.Context, b Backend, id string, sizeGB int, reg *registry.Client, ref string) (int64, error) {
	r, err := registry.ParseRef(ref)
	if err != nil || r.Tag == "" {
		return 0, errdefs.InvalidArgumentf("volume %s: bad transfer reference %q", id, ref)
	}
	if ok, err := m.Exists(b, id); err != nil || ok {
		return 0, err
	}
	cl := reg.At(r.Host)
	man, err := cl.Manifest(ctx, r.Repo, r.Tag)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return 0, errdefs.NotFoundf("volume %s: its data is not in the registry (%s)", id, ref)
		}
		return 0, fmt.Errorf("import volume %s: %w", id, err)
	}
	if len(man.Layers) != 1 {
		return 0, fmt.Errorf("import volume %s: %s has %d layers, want 1", id, ref, len(man.Layers))
	}
	body, err := cl.GetBlob(ctx, r.Repo, man.Layers[0].Digest)
	if err != nil {
		return 0, fmt.Errorf("import volume %s: %w", id, err)
	}
	defer body.Close()
	cr := &counter{r: body}
	if err := m.Create(ctx, b, id, sizeGB, Source{Tar: cr}); err != nil {
		return 0, fmt.Errorf("import volume %s: %w", id, err)
	}
	m.log.Info("volume imported", "volume", id, "ref", ref, "bytes", cr.n)
	return cr.n, nil
}

// UsedBytes is what the image of volume id (or snapshot) takes on disk.
func (m *Manager) UsedBytes(b Backend, id string, snapshot bool) (int64, error) {
	p, err := m.ImagePath(b, id)
	if snapshot {
		p, err = m.snapshotPath(b, id)
	}
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return diskUsage(fi), nil
}

type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// limitedBuffer keeps the first 4 KiB written (a command's stderr).
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
