package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/capsule-cloud/capsule/errdefs"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// A server has one root disk (registry.WithoutVolumes): the image API
// strips VOLUME declarations from the images it stores, but an image can
// still declare some (pushed to the registry directly, stored before
// that, a snapshot of a server created before that). Docker would mount
// an anonymous volume at each such path, outside the root disk's cap
// and outside every commit. Docker has no create option that turns an
// image's VOLUME off, so the driver creates such a server from a local
// copy of the image without them: the image's config with its VOLUMEs
// dropped, loaded over the layers dockerd already has (a docker load
// of a tarball holding only the config and manifest.json: dockerd reuses
// layers it has and reads no layer file then). The copy is untagged and
// content-addressed (the same source image gives the same copy), the
// workload carries LabelSourceImage naming the image the server was asked
// for, and the copy goes with the last workload using it.

// LabelSourceImage is on a workload created from a volume-free copy of
// its image: the image reference the server was created from ("" when it
// was created from that image itself).
const LabelSourceImage = "capsule.source_image"

// ErrImageVolumes refuses a server whose image declares VOLUMEs on a host
// that enforces root disks and could not make a volume-free copy of it.
var ErrImageVolumes = errdefs.FailedPrecondition("the image declares VOLUMEs, which would escape the server's root disk")

// imageInspectRaw is what volumeFreeImage reads of docker image inspect.
type imageInspectRaw struct {
	ID           string `json:"Id"`
	Architecture string
	Os           string
	Variant      string
	Author       string
	Created      string
	Config       map[string]json.RawMessage
	RootFS       struct {
		Type   string
		Layers []string
	}
}

// volumeFreeConfig builds from an image's inspect the image config JSON
// of its volume-free copy and says which VOLUMEs it drops (none: the
// image needs no copy).
func volumeFreeConfig(raw []byte) ([]byte, []string, error) {
	var ii imageInspectRaw
	if err := json.Unmarshal(raw, &ii); err != nil {
		return nil, nil, fmt.Errorf("decode image inspect: %w", err)
	}
	if ii.RootFS.Type != "layers" {
		return nil, nil, fmt.Errorf("image %s has a root filesystem of type %q, not layers", ii.ID, ii.RootFS.Type)
	}
	cfg := map[string]any{
		"architecture": ii.Architecture,
		"os":           ii.Os,
		"config":       ii.Config,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": append([]string{}, ii.RootFS.Layers...)},
		// Why this image exists (docker history shows it).
		"history": []map[string]any{{"created_by": "capsule: " + ii.ID + " without its VOLUMEs", "empty_layer": true}},
	}
	for k, v := range map[string]string{"variant": ii.Variant, "author": ii.Author, "created": ii.Created} {
		if v != "" {
			cfg[k] = v
		}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("encode image config: %w", err)
	}
	out, dropped, err := capreg.WithoutVolumes(b)
	if err != nil {
		return nil, nil, err
	}
	return out, dropped, nil
}

// configOnlyTarball is a docker-save tarball of an image whose layers
// the loading dockerd already has: its config and manifest.json, no
// layer file (dockerd reads one only for a layer it lacks).
func configOnlyTarball(cfg []byte, layers int) ([]byte, error) {
	man := []map[string]any{{"Config": "config.json", "RepoTags": nil, "Layers": layerNames(layers)}}
	mb, err := json.Marshal(man)
	if err != nil {
		return nil, err
	}
	return imageArchive(tarFile{"config.json", cfg}, tarFile{"manifest.json", mb})
}

// tarFile is one regular file of an image archive.
type tarFile struct {
	name string
	data []byte
}

// imageArchive is a tar of files, in order (docker load's input).
func imageArchive(files ...tarFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// layerNames are the (absent) layer members of configOnlyTarball.
func layerNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i) + "/layer.tar"
	}
	return out
}

// volumeFreeImage returns the image to create a server of image ref from
// and the directories of the server's VOLUME paths (registry.VolumeDirs):
// ref itself when it declares no VOLUME, else the ID of its volume-free
// copy (made here unless dockerd has it already). ref is present; raw is
// the body of its docker image inspect.
func (d *Driver) volumeFreeImage(ctx context.Context, ref string, raw []byte) (string, []string, error) {
	cfg, dropped, err := volumeFreeConfig(raw)
	if err != nil {
		return "", nil, fmt.Errorf("image %s: %w", ref, err)
	}
	var labelled struct {
		Config struct{ Labels map[string]string } `json:"config"`
	}
	if err := json.Unmarshal(cfg, &labelled); err != nil {
		return "", nil, fmt.Errorf("image %s: %w", ref, err)
	}
	dirs := capreg.VolumeDirs(labelled.Config.Labels)
	if len(dropped) == 0 {
		return ref, dirs, nil
	}
	id, err := d.loadVolumeFreeCopy(ctx, ref, raw, cfg)
	if err != nil {
		return "", nil, err
	}
	d.log.Info("image declares VOLUMEs: the server runs a copy without them (their paths are directories of its root disk)",
		"image", ref, "volumes", dropped, "copy", id)
	return id, dirs, nil
}

// loadVolumeFreeCopy loads the image of config cfg, the volume-free copy
// of ref (inspected as raw), unless dockerd has it, and returns its ID.
func (d *Driver) loadVolumeFreeCopy(ctx context.Context, ref string, raw, cfg []byte) (string, error) {
	sum := sha256.Sum256(cfg)
	id := "sha256:" + hex.EncodeToString(sum[:])
	if _, err := d.cli.ImageInspect(ctx, id); err == nil {
		return id, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect the volume-free copy of %s: %w", ref, err)
	}
	var ii imageInspectRaw
	_ = json.Unmarshal(raw, &ii) // decoded by volumeFreeConfig already
	tb, err := configOnlyTarball(cfg, len(ii.RootFS.Layers))
	if err != nil {
		return "", fmt.Errorf("volume-free copy of %s: %w", ref, err)
	}
	res, err := d.cli.ImageLoad(ctx, bytes.NewReader(tb), client.ImageLoadWithQuiet(true))
	if err != nil {
		return "", fmt.Errorf("load the volume-free copy of %s: %w", ref, err)
	}
	defer res.Body.Close()
	if res.JSON {
		err = drainPull(res.Body)
	} else {
		_, err = io.Copy(io.Discard, res.Body)
	}
	if err != nil {
		return "", fmt.Errorf("load the volume-free copy of %s: %w", ref, err)
	}
	// What dockerd stored is what the server will run: the same config,
	// so the same ID (a daemon that stored anything else is not trusted).
	if _, err := d.cli.ImageInspect(ctx, id); err != nil {
		return "", fmt.Errorf("the volume-free copy of %s is not %s after its load: %w", ref, id, err)
	}
	return id, nil
}

// makeVolumeDirs creates in the (created, not started) container cid
// each of dirs it lacks, with its missing parents: root's, mode 0755, as
// Docker makes a volume's mount point. An existing path is left as the
// image has it (its owner and mode are the image's).
func (d *Driver) makeVolumeDirs(ctx context.Context, cid string, dirs []string) error {
	var missing []string
	for _, dir := range dirs {
		if _, err := d.cli.ContainerStatPath(ctx, cid, dir); err == nil {
			continue
		} else if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("stat %s: %w", dir, err)
		}
		// The missing components, from the top: a parent the image has
		// keeps its owner and mode.
		parts := strings.Split(strings.TrimPrefix(dir, "/"), "/")
		for i := range parts {
			p := "/" + strings.Join(parts[:i+1], "/")
			if i < len(parts)-1 {
				if _, err := d.cli.ContainerStatPath(ctx, cid, p); err == nil {
					continue
				} else if !cerrdefs.IsNotFound(err) {
					return fmt.Errorf("stat %s: %w", p, err)
				}
			}
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	missing = slices.Compact(missing)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, p := range missing {
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/") + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: now}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	// CopyUIDGID false: owned by the container's root, as a mount point.
	if err := d.cli.CopyToContainer(ctx, cid, "/", &buf, container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("make the VOLUME directories %v: %w", missing, err)
	}
	return nil
}

// removeVolumeFreeCopy removes the volume-free copy id unless a container
// still uses it (it is untagged: nothing else would remove it, and it
// holds its layers).
func (d *Driver) removeVolumeFreeCopy(ctx context.Context, instance, id string) {
	_, err := d.cli.ImageRemove(ctx, id, image.RemoveOptions{})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
	case cerrdefs.IsConflict(err):
		// Another server of the same image runs it; the last one removes it.
	default:
		d.log.Warn("could not remove the volume-free image copy of a removed workload", "instance", instance, "image", id, "err", err)
	}
}
