package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/capsule-cloud/capsule/store"
)

// Media types of the Docker v2 schema 2 manifests Capsule writes.
const (
	mediaManifest    = "application/vnd.docker.distribution.manifest.v2+json"
	mediaConfig      = "application/vnd.docker.container.image.v1+json"
	mediaLayerGzip   = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mediaOCIManifest = "application/vnd.oci.image.manifest.v1+json"
)

// smallFile is the size under which docker-save members are kept in
// memory until manifest.json says what they are; larger ones are layers
// and stream straight to the registry.
const smallFile = 1 << 20

// RegistryData keeps image data in a Docker registry (Data). Images of
// container_format "docker" are `docker save` tarballs: their layers and
// config become blobs and a schema-2 manifest tagged with the image id, so
// compute hosts pull them like any image. Other formats are stored as one
// opaque blob (they cannot boot, but upload/download round-trips work).
type RegistryData struct {
	Address  string // registry host:port
	Repo     string // repository images go to, default "capsule/images"
	Username string // basic auth, optional
	Password string
	Client   *http.Client // default http.DefaultClient
}

// snapshotRepo is where compute hosts push server snapshots
// (compute.SnapshotRepo).
const snapshotRepo = "capsule/snapshots"

func (d *RegistryData) repo() string {
	if d.Repo == "" {
		return "capsule/images"
	}
	return d.Repo
}

func (d *RegistryData) client() *http.Client {
	if d.Client == nil {
		return http.DefaultClient
	}
	return d.Client
}

// do sends a request to the registry; path is relative to the registry
// root unless it is absolute (upload locations).
func (d *RegistryData) do(ctx context.Context, method, target string, body io.Reader, hdr map[string]string) (*http.Response, error) {
	u := target
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		u = "http://" + d.Address + target
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("registry request %s %s: %w", method, target, err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if d.Username != "" {
		req.SetBasicAuth(d.Username, d.Password)
	}
	res, err := d.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("registry %s %s: %w", method, target, err)
	}
	return res, nil
}

func registryError(res *http.Response, what string) error {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	res.Body.Close()
	return fmt.Errorf("registry: %s: %s: %s", what, res.Status, strings.TrimSpace(string(b)))
}

// blob is an uploaded blob.
type blob struct {
	digest string
	size   int64
}

// uploadBlob streams r to repo as one blob and returns its digest.
func (d *RegistryData) uploadBlob(ctx context.Context, repo string, r io.Reader) (blob, error) {
	res, err := d.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil {
		return blob{}, err
	}
	if res.StatusCode != http.StatusAccepted {
		return blob{}, registryError(res, "start blob upload")
	}
	res.Body.Close()
	loc, err := d.location(res)
	if err != nil {
		return blob{}, err
	}
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(r, h)}
	// A streamed PATCH needs no length or digest up front.
	res, err = d.do(ctx, http.MethodPatch, loc, cr, map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		return blob{}, err
	}
	if res.StatusCode != http.StatusAccepted && res.StatusCode != http.StatusNoContent {
		return blob{}, registryError(res, "upload blob data")
	}
	res.Body.Close()
	if loc, err = d.location(res); err != nil {
		return blob{}, err
	}
	b := blob{digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: cr.n}
	u, err := url.Parse(loc)
	if err != nil {
		return blob{}, fmt.Errorf("registry: bad upload location %q: %w", loc, err)
	}
	q := u.Query()
	q.Set("digest", b.digest)
	u.RawQuery = q.Encode()
	res, err = d.do(ctx, http.MethodPut, u.String(), nil, nil)
	if err != nil {
		return blob{}, err
	}
	if res.StatusCode != http.StatusCreated {
		return blob{}, registryError(res, "finish blob upload")
	}
	res.Body.Close()
	return b, nil
}

// location resolves an upload Location header against the registry.
func (d *RegistryData) location(res *http.Response) (string, error) {
	loc := res.Header.Get("Location")
	if loc == "" {
		return "", errors.New("registry: upload response without Location")
	}
	base, _ := url.Parse("http://" + d.Address + "/")
	u, err := base.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("registry: bad Location %q: %w", loc, err)
	}
	return u.String(), nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// uploadLayer uploads a layer gzip-compressed (unless it already is).
func (d *RegistryData) uploadLayer(ctx context.Context, repo string, r io.Reader) (blob, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		return d.uploadBlob(ctx, repo, br)
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
	b, err := d.uploadBlob(ctx, repo, pr)
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
	repo := d.repo()
	if img.ContainerFormat != "docker" {
		b, err := d.uploadBlob(ctx, repo, r)
		if err != nil {
			return "", err
		}
		return d.Address + "/" + repo + "@" + b.digest, nil
	}
	small := map[string][]byte{}
	layers := map[string]blob{}
	tr := tar.NewReader(r)
	for {
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
		name := path.Clean(hdr.Name)
		if hdr.Size <= smallFile {
			b, err := io.ReadAll(tr)
			if err != nil {
				return "", fmt.Errorf("read %s from tarball: %w", name, err)
			}
			small[name] = b
			continue
		}
		b, err := d.uploadLayer(ctx, repo, tr)
		if err != nil {
			return "", fmt.Errorf("upload layer %s: %w", name, err)
		}
		layers[name] = b
	}
	var sm []saveManifest
	if err := json.Unmarshal(small["manifest.json"], &sm); err != nil || len(sm) == 0 {
		return "", errors.New("not a docker-save tarball: manifest.json missing or invalid")
	}
	m := sm[0]
	cfg, ok := small[path.Clean(m.Config)]
	if !ok {
		return "", fmt.Errorf("docker-save tarball lacks its config %s", m.Config)
	}
	cfgBlob, err := d.uploadBlob(ctx, repo, bytes.NewReader(cfg))
	if err != nil {
		return "", fmt.Errorf("upload image config: %w", err)
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Size      int64  `json:"size"`
		Digest    string `json:"digest"`
	}
	man := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: mediaManifest,
		Config: desc{MediaType: mediaConfig, Size: cfgBlob.size, Digest: cfgBlob.digest}, Layers: []desc{}}
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
		man.Layers = append(man.Layers, desc{MediaType: mediaLayerGzip, Size: b.size, Digest: b.digest})
	}
	body, _ := json.Marshal(man)
	res, err := d.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+img.ID, bytes.NewReader(body),
		map[string]string{"Content-Type": mediaManifest})
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusCreated {
		return "", registryError(res, "put manifest")
	}
	res.Body.Close()
	return d.Address + "/" + repo + ":" + img.ID, nil
}

// parseRef splits host/repo:tag or host/repo@digest.
func parseRef(ref string) (host, repo, reference string, err error) {
	host, rest, ok := strings.Cut(ref, "/")
	if !ok {
		return "", "", "", fmt.Errorf("image reference %q has no registry host", ref)
	}
	if r, dg, ok := strings.Cut(rest, "@"); ok {
		return host, r, dg, nil
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		return host, rest[:i], rest[i+1:], nil
	}
	return host, rest, "latest", nil
}

// Get streams an image's data back: a `docker save`-format tarball for
// docker images (layers stay compressed; docker load accepts that), the
// stored blob otherwise.
func (d *RegistryData) Get(ctx context.Context, img store.Image) (io.ReadCloser, error) {
	host, repo, reference, err := parseRef(img.RegistryRef)
	if err != nil {
		return nil, err
	}
	rd := *d
	rd.Address = host
	if img.ContainerFormat != "docker" && strings.HasPrefix(reference, "sha256:") {
		res, err := rd.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+reference, nil, nil)
		if err != nil {
			return nil, err
		}
		if res.StatusCode != http.StatusOK {
			return nil, registryError(res, "get blob")
		}
		return res.Body, nil
	}
	res, err := rd.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+reference, nil,
		map[string]string{"Accept": mediaManifest + ", " + mediaOCIManifest})
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, registryError(res, "get manifest")
	}
	var man struct {
		Config struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	err = json.NewDecoder(io.LimitReader(res.Body, smallFile)).Decode(&man)
	res.Body.Close()
	if err != nil || man.Config.Digest == "" {
		return nil, fmt.Errorf("registry: bad manifest for %s: %v", img.RegistryRef, err)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(rd.writeSave(ctx, repo, img.RegistryRef, man.Config.Digest, man.Config.Size, man.Layers, pw))
	}()
	return pr, nil
}

// writeSave writes the docker-save tarball of a manifest's blobs to w.
func (d *RegistryData) writeSave(ctx context.Context, repo, ref, cfgDigest string, cfgSize int64, layers []struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}, w io.Writer) error {
	tw := tar.NewWriter(w)
	copyBlob := func(name, digest string, size int64) error {
		res, err := d.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+digest, nil, nil)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return registryError(res, "get blob "+digest)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = io.CopyN(tw, res.Body, size)
		return err
	}
	cfgName := strings.TrimPrefix(cfgDigest, "sha256:") + ".json"
	if err := copyBlob(cfgName, cfgDigest, cfgSize); err != nil {
		return fmt.Errorf("export config: %w", err)
	}
	sm := saveManifest{Config: cfgName, RepoTags: []string{ref}}
	for _, l := range layers {
		name := strings.TrimPrefix(l.Digest, "sha256:") + "/layer.tar"
		if err := copyBlob(name, l.Digest, l.Size); err != nil {
			return fmt.Errorf("export layer: %w", err)
		}
		sm.Layers = append(sm.Layers, name)
	}
	if strings.Contains(ref, "@") { // RepoTags must be tags
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

// Size returns the compressed size of the image at ref (config plus
// layers), for registering pre-pushed images with a real size.
func (d *RegistryData) Size(ctx context.Context, ref string) (int64, error) {
	host, repo, reference, err := parseRef(ref)
	if err != nil {
		return 0, err
	}
	rd := *d
	rd.Address = host
	res, err := rd.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+reference, nil,
		map[string]string{"Accept": mediaManifest + ", " + mediaOCIManifest})
	if err != nil {
		return 0, err
	}
	if res.StatusCode != http.StatusOK {
		return 0, registryError(res, "get manifest")
	}
	defer res.Body.Close()
	var man struct {
		Config struct{ Size int64 }   `json:"config"`
		Layers []struct{ Size int64 } `json:"layers"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, smallFile)).Decode(&man); err != nil {
		return 0, fmt.Errorf("registry: bad manifest for %s: %w", ref, err)
	}
	total := man.Config.Size
	for _, l := range man.Layers {
		total += l.Size
	}
	return total, nil
}

// Delete removes the registry tag of an image Capsule stored (a reference
// in this RegistryData's repository); references elsewhere (pre-pushed
// base images) are left alone.
func (d *RegistryData) Delete(ctx context.Context, img store.Image) error {
	host, repo, reference, err := parseRef(img.RegistryRef)
	// Snapshots (createImage) are pushed by compute hosts to
	// snapshotRepo: Capsule's too, so their tags go with the image.
	if err != nil || host != d.Address || (repo != d.repo() && repo != snapshotRepo) {
		return nil
	}
	if !strings.HasPrefix(reference, "sha256:") {
		res, err := d.do(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+reference, nil,
			map[string]string{"Accept": mediaManifest + ", " + mediaOCIManifest})
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode == http.StatusNotFound {
			return nil
		}
		if reference = res.Header.Get("Docker-Content-Digest"); res.StatusCode != http.StatusOK || reference == "" {
			return fmt.Errorf("registry: resolve %s: %s", img.RegistryRef, res.Status)
		}
	} else if img.ContainerFormat != "docker" {
		// Opaque blobs are removed by the registry's garbage collection
		// once nothing references them; blob deletes are often disabled.
		return nil
	}
	res, err := d.do(ctx, http.MethodDelete, "/v2/"+repo+"/manifests/"+reference, nil, nil)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusAccepted && res.StatusCode != http.StatusNotFound {
		return registryError(res, "delete manifest")
	}
	res.Body.Close()
	return nil
}
