package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// Media types of the Docker v2 schema 2 images Capsule writes.
const (
	mediaConfig    = "application/vnd.docker.container.image.v1+json"
	mediaLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Bounds of a docker-save upload's memory. Members that are layers (a
// tar or gzip stream, by their first bytes) and members over smallFile
// stream straight to the registry; the others (manifest.json, the
// config, legacy json and VERSION files) are kept until manifest.json
// says what they are, at most smallFile each and metadataBudget in all.
// maxMembers bounds the member count (and with it the index kept of
// uploaded layers): an image has at most ~127 layers, a docker save three
// members per layer and a handful more.
const (
	smallFile      = 1 << 20
	metadataBudget = 16 << 20
	maxMembers     = 4096
)

// errBadTarball: the upload is not a docker-save tarball Capsule takes.
var errBadTarball = errors.New("not a docker-save tarball")

// looksLikeLayer reports whether a member starting with head is a layer:
// gzip data, or a tar stream (a header with the ustar magic and a right
// checksum, or the two zero blocks of an empty tar). JSON never is.
func looksLikeLayer(head []byte) bool {
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		return true
	}
	if len(head) < 512 {
		return false
	}
	h := head[:512]
	if bytes.Equal(h, make([]byte, 512)) {
		return true
	}
	if !bytes.HasPrefix(h[257:], []byte("ustar")) {
		return false
	}
	var sum int64
	for i, b := range h {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int64(b)
	}
	want, err := strconv.ParseInt(strings.TrimRight(strings.TrimSpace(string(h[148:156])), "\x00 "), 8, 64)
	return err == nil && want == sum
}

// RegistryData keeps image data in a Docker registry (Data). Images of
// container_format "docker" are `docker save` tarballs: their layers and
// config become blobs and a schema-2 manifest tagged with the image id, so
// compute hosts pull them like any image. Each image has a repository of
// its own under Repo (registry.PerImageRepo), so deleting its manifest
// cannot untag another image with the same content. Other formats are stored as one
// opaque blob (they cannot boot, but upload/download round-trips work).
type RegistryData struct {
	Registry *registry.Client
	Repo     string // repository images go under, default registry.ImageRepo
}

// NewRegistryData returns the Data of the configured private registry.
// Its HTTP client has no timeout: an upload or a download streams for as
// long as the image takes, bounded by the request's context.
func NewRegistryData(cfg config.Registry) *RegistryData {
	c := registry.New(cfg)
	c.HTTP = &http.Client{}
	return &RegistryData{Registry: c}
}

func (d *RegistryData) repo() string {
	if d.Repo == "" {
		return registry.ImageRepo
	}
	return d.Repo
}

// uploadLayer uploads a layer gzip-compressed (unless it already is).
func (d *RegistryData) uploadLayer(ctx context.Context, repo string, r io.Reader) (registry.Descriptor, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		return d.Registry.UploadBlob(ctx, repo, br)
	}
	pr, pw := io.Pipe()
	go func() {
		zw := gzip.NewWriter(pw)
		_, err := io.Copy(zw, br)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	b, err := d.Registry.UploadBlob(ctx, repo, pr)
	pr.CloseWithError(errors.New("upload ended")) // unblock the compressor on failure
	return b, err
}

// saveManifest is one entry of a `docker save` manifest.json.
type saveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Put stores an image's data and returns the reference it can be pulled
// (or fetched) by.
func (d *RegistryData) Put(ctx context.Context, img store.Image, r io.Reader) (string, error) {
	repo := registry.PerImageRepo(d.repo(), img.ID)
	if img.ContainerFormat != "docker" {
		b, err := d.Registry.UploadBlob(ctx, repo, r)
		if err != nil {
			return "", err
		}
		return registry.Ref{Host: d.Registry.Host(), Repo: repo, Digest: b.Digest}.String(), nil
	}
	small := map[string][]byte{}
	var kept int64
	layers := map[string]registry.Descriptor{}
	tr := tar.NewReader(r)
	br := bufio.NewReaderSize(tr, 64<<10)
	for members := 0; ; {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read docker-save tarball: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if members++; members > maxMembers {
			return "", fmt.Errorf("%w: more than %d files", errBadTarball, maxMembers)
		}
		name := path.Clean(hdr.Name)
		br.Reset(tr)
		head, err := br.Peek(512)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("read %s from tarball: %w", name, err)
		}
		if hdr.Size <= smallFile && !looksLikeLayer(head) {
			if kept += hdr.Size; kept > metadataBudget {
				return "", fmt.Errorf("%w: over %d bytes of files that are not layers", errBadTarball, metadataBudget)
			}
			b, err := io.ReadAll(br)
			if err != nil {
				return "", fmt.Errorf("read %s from tarball: %w", name, err)
			}
			small[name] = b
			continue
		}
		b, err := d.uploadLayer(ctx, repo, br)
		if err != nil {
			return "", fmt.Errorf("upload layer %s: %w", name, err)
		}
		layers[name] = b
	}
	var sm []saveManifest
	if err := json.Unmarshal(small["manifest.json"], &sm); err != nil || len(sm) == 0 {
		return "", fmt.Errorf("%w: manifest.json missing or invalid", errBadTarball)
	}
	m := sm[0]
	cfg, ok := small[path.Clean(m.Config)]
	if !ok {
		return "", fmt.Errorf("docker-save tarball lacks its config %s", m.Config)
	}
	// A server has one root disk: the image's VOLUME paths become plain
	// directories of it, capped with it and carried by its commits
	// (registry.WithoutVolumes).
	cfg, _, err := registry.WithoutVolumes(cfg)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errBadTarball, err)
	}
	cfgBlob, err := d.Registry.UploadBlob(ctx, repo, bytes.NewReader(cfg))
	if err != nil {
		return "", fmt.Errorf("upload image config: %w", err)
	}
	cfgBlob.MediaType = mediaConfig
	man := registry.Manifest{SchemaVersion: 2, MediaType: registry.MediaDockerManifest, Config: cfgBlob, Layers: []registry.Descriptor{}}
	for _, l := range m.Layers {
		name := path.Clean(l)
		b, ok := layers[name]
		if !ok {
			data, ok := small[name]
			if !ok {
				return "", fmt.Errorf("docker-save tarball lacks layer %s", l)
			}
			if b, err = d.uploadLayer(ctx, repo, bytes.NewReader(data)); err != nil {
				return "", fmt.Errorf("upload layer %s: %w", name, err)
			}
		}
		b.MediaType = mediaLayerGzip
		man.Layers = append(man.Layers, b)
	}
	body, _ := json.Marshal(man)
	if _, err := d.Registry.PutManifest(ctx, repo, img.ID, registry.MediaDockerManifest, body); err != nil {
		return "", err
	}
	return registry.Ref{Host: d.Registry.Host(), Repo: repo, Tag: img.ID}.String(), nil
}

// Get streams an image's data back: a `docker save`-format tarball for
// docker images (layers stay compressed; docker load accepts that), the
// stored blob otherwise. The reference may name another registry than
// d's (a pre-pushed base image): it is read from there with d's login.
func (d *RegistryData) Get(ctx context.Context, img store.Image) (io.ReadCloser, error) {
	ref, err := registry.ParseRef(img.RegistryRef)
	if err != nil {
		return nil, err
	}
	reg := d.Registry.At(ref.Host)
	if img.ContainerFormat != "docker" && ref.Digest != "" {
		return reg.GetBlob(ctx, ref.Repo, ref.Digest)
	}
	man, err := reg.Manifest(ctx, ref.Repo, ref.Reference())
	if err != nil {
		return nil, err
	}
	if man.Config.Digest == "" {
		return nil, fmt.Errorf("registry: bad manifest for %s: no config", img.RegistryRef)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeSave(ctx, reg, ref, img.RegistryRef, man, pw))
	}()
	return pr, nil
}

// writeSave writes the docker-save tarball of a manifest's blobs to w;
// name is the reference the tarball tags the image with.
func writeSave(ctx context.Context, reg *registry.Client, ref registry.Ref, name string, man registry.Manifest, w io.Writer) error {
	tw := tar.NewWriter(w)
	copyBlob := func(member string, blob registry.Descriptor) error {
		rc, err := reg.GetBlob(ctx, ref.Repo, blob.Digest)
		if err != nil {
			return err
		}
		defer rc.Close()
		if err := tw.WriteHeader(&tar.Header{Name: member, Mode: 0o644, Size: blob.Size, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = io.CopyN(tw, rc, blob.Size)
		return err
	}
	cfgName := strings.TrimPrefix(man.Config.Digest, "sha256:") + ".json"
	if err := copyBlob(cfgName, man.Config); err != nil {
		return fmt.Errorf("export config: %w", err)
	}
	sm := saveManifest{Config: cfgName, RepoTags: []string{name}}
	for _, l := range man.Layers {
		member := strings.TrimPrefix(l.Digest, "sha256:") + "/layer.tar"
		if err := copyBlob(member, l); err != nil {
			return fmt.Errorf("export layer: %w", err)
		}
		sm.Layers = append(sm.Layers, member)
	}
	if ref.Digest != "" { // RepoTags must be tags
		sm.RepoTags = nil
	}
	mb, _ := json.Marshal([]saveManifest{sm})
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(mb)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(mb); err != nil {
		return err
	}
	return tw.Close()
}

// Delete removes the registry tag of an image Capsule stored (a reference
// in this RegistryData's repositories or the snapshots' ones) unless
// another image still uses its manifest (others: the references the
// remaining images hold in its repository; registry.ReleaseImage);
// references elsewhere (pre-pushed base images) are left alone.
func (d *RegistryData) Delete(ctx context.Context, img store.Image, others []string) error {
	ref, err := registry.ParseRef(img.RegistryRef)
	// Snapshots (createImage) are pushed by compute hosts under
	// registry.SnapshotRepo: Capsule's too, so their tags go with the image.
	if err != nil || ref.Host != d.Registry.Host() || !(within(ref.Repo, d.repo()) || within(ref.Repo, registry.SnapshotRepo)) {
		return nil
	}
	if ref.Tag == "" && img.ContainerFormat != "docker" {
		// Opaque blobs are removed by the registry's garbage collection
		// once nothing references them; blob deletes are often disabled.
		return nil
	}
	return d.Registry.ReleaseImage(ctx, img.RegistryRef, others)
}

// within reports whether repo is base or one image's repository under it
// (the shared base held every image before each got its own).
func within(repo, base string) bool {
	return repo == base || strings.HasPrefix(repo, base+"/")
}
