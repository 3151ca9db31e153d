package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/registry/registrytest"
	"github.com/capsule-cloud/capsule/store"
	"github.com/google/uuid"
)

// dockerAPI talks to dockerd over its unix socket with plain HTTP (the
// registry round trip must be checked by a real `docker pull`/`load`).
type dockerAPI struct{ c *http.Client }

func newDockerAPI(t *testing.T) *dockerAPI {
	host := testenv.DockerHost(t)
	sock := strings.TrimPrefix(host, "unix://")
	return &dockerAPI{c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

func (d *dockerAPI) call(ctx context.Context, method, path string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker/v1.41"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-tar")
	}
	res, err := d.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 300 {
		return b, fmt.Errorf("docker %s %s: %s: %s", method, path, res.Status, b)
	}
	// Streamed JSON messages report failures in an "error" field.
	for _, line := range bytes.Split(b, []byte("\n")) {
		var m struct{ Error string }
		if json.Unmarshal(line, &m) == nil && m.Error != "" {
			return b, errors.New("docker " + path + ": " + m.Error)
		}
	}
	return b, nil
}

func (d *dockerAPI) imageID(ctx context.Context, ref string) (string, error) {
	b, err := d.call(ctx, "GET", "/images/"+ref+"/json", nil)
	if err != nil {
		return "", err
	}
	var v struct{ ID string }
	err = json.Unmarshal(b, &v)
	return v.ID, err
}

// tarNames lists a tarball's member names.
func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("bad tarball: %v", err)
		}
		names = append(names, h.Name)
	}
}

// TestRegistryDataRoundTrip uploads a real `docker save` of the base image
// through the image API into the registry, pulls it back with dockerd,
// and loads a download with dockerd.
func TestRegistryDataRoundTrip(t *testing.T) {
	reg := testenv.Registry(t)
	base := testenv.Image(t)
	docker := newDockerAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	repo := "capsuletest/img-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	client := &registry.Client{Address: reg}
	data := &image.RegistryData{Registry: client, Repo: repo}

	if n, err := client.ImageSize(ctx, base); err != nil || n <= 0 {
		t.Fatalf("size of %s: %d %v", base, n, err)
	}
	// dockerd must have the base image to save it.
	if _, err := docker.call(ctx, "POST", "/images/create?fromImage="+url.QueryEscape(base), nil); err != nil {
		t.Fatalf("pull base image: %v", err)
	}
	baseID, err := docker.imageID(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := docker.call(ctx, "GET", "/images/get?names="+url.QueryEscape(base), nil)
	if err != nil {
		t.Fatalf("docker save: %v", err)
	}

	e := newEnv(t, data)
	r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "up", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
	id := r.body["id"].(string)
	e.want(e.do("PUT", "/v2/images/"+id+"/file", e.alice, saved, "Content-Type", "application/octet-stream"), http.StatusNoContent)
	var row store.Image
	if err := e.st.DB.Where("id = ?", id).Take(&row).Error; err != nil {
		t.Fatal(err)
	}
	wantRef := reg + "/" + repo + "/" + id + ":" + id
	if row.RegistryRef != wantRef || row.Status != "active" || row.Size == nil || *row.Size != int64(len(saved)) {
		t.Fatalf("uploaded row %+v, want ref %s", row, wantRef)
	}
	t.Cleanup(func() {
		_, _ = docker.call(context.Background(), "DELETE", "/images/"+url.PathEscape(wantRef)+"?noprune=1", nil)
		if err := client.DeleteImage(context.Background(), wantRef, ""); err != nil {
			t.Logf("registry cleanup of %s: %v", wantRef, err)
		}
	})

	// dockerd pulls the pushed image; same config, so the same image id.
	if _, err := docker.call(ctx, "POST", "/images/create?fromImage="+url.QueryEscape(reg+"/"+repo+"/"+id)+"&tag="+id, nil); err != nil {
		t.Fatalf("docker pull of the uploaded image: %v", err)
	}
	if got, err := docker.imageID(ctx, wantRef); err != nil || got != baseID {
		t.Fatalf("pulled image id %q (%v), want %q", got, err, baseID)
	}

	// Download: a docker-save tarball dockerd can load.
	d := e.want(e.do("GET", "/v2/images/"+id+"/file", e.alice, nil), http.StatusOK)
	names := tarNames(t, d.raw)
	if !strings.Contains(strings.Join(names, " "), "manifest.json") {
		t.Fatalf("download members %v", names)
	}
	if _, err := docker.call(ctx, "POST", "/images/load?quiet=1", bytes.NewReader(d.raw)); err != nil {
		t.Fatalf("docker load of the download: %v", err)
	}

	// Registered (pre-pushed) images download too.
	img, err := image.Register(ctx, e.st, "base", base, 0, e.adminPID, true)
	if err != nil {
		t.Fatal(err)
	}
	d = e.want(e.do("GET", "/v2/images/"+img.ID+"/file", e.alice, nil), http.StatusOK)
	if len(tarNames(t, d.raw)) < 3 {
		t.Fatal("base image download too small")
	}

	// Deleting the image drops its tag; the base image's is kept.
	e.want(e.do("DELETE", "/v2/images/"+id, e.alice, nil), http.StatusNoContent)
	if _, err := client.Resolve(ctx, repo+"/"+id, id); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("tag survived the image delete: %v", err)
	}
	e.want(e.do("DELETE", "/v2/images/"+img.ID, e.admin, nil), http.StatusNoContent)
	if n, err := client.ImageSize(ctx, base); err != nil || n <= 0 {
		t.Fatalf("base image damaged by a delete: %v", err)
	}

	// Non-docker data is one opaque blob.
	r = e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "raw", "container_format": "bare", "disk_format": "raw"}), http.StatusCreated)
	rawID := r.body["id"].(string)
	payload := bytes.Repeat([]byte("capsule"), 1000)
	e.want(e.do("PUT", "/v2/images/"+rawID+"/file", e.alice, payload, "Content-Type", "application/octet-stream"), http.StatusNoContent)
	d = e.want(e.do("GET", "/v2/images/"+rawID+"/file", e.alice, nil), http.StatusOK)
	if !bytes.Equal(d.raw, payload) {
		t.Fatalf("raw round trip: %d bytes", len(d.raw))
	}

	// Garbage as a docker image: 400, and the image stays queued.
	r = e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "bad", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
	badID := r.body["id"].(string)
	e.wantError(e.do("PUT", "/v2/images/"+badID+"/file", e.alice, []byte("not a tarball"), "Content-Type", "application/octet-stream"), http.StatusBadRequest)
	if r := e.want(e.do("GET", "/v2/images/"+badID, e.alice, nil), http.StatusOK); r.body["status"] != "queued" {
		t.Fatalf("failed upload left status %v", r.body["status"])
	}
}

// dockerSave builds a minimal `docker save` tarball: one uncompressed
// tar layer per entry of layers (each a tar holding one file of that
// content), a config naming their diff ids and a manifest.json.
func dockerSave(t testing.TB, layers ...[]byte) []byte {
	t.Helper()
	return dockerSaveConfig(t, map[string]any{}, layers...)
}

// dockerSaveConfig is dockerSave with config as the image config's
// "config" (Cmd, Volumes, ...).
func dockerSaveConfig(t testing.TB, config map[string]any, layers ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	var names, diffIDs []string
	for i, content := range layers {
		var lb bytes.Buffer
		lw := tar.NewWriter(&lb)
		_ = lw.WriteHeader(&tar.Header{Name: fmt.Sprintf("file%d", i), Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
		_, _ = lw.Write(content)
		_ = lw.Close()
		sum := sha256.Sum256(lb.Bytes())
		name := fmt.Sprintf("layer%d/layer.tar", i)
		add(name, lb.Bytes())
		names = append(names, name)
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(sum[:]))
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "config": config,
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	add("config.json", cfg)
	man, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{}, "Layers": names}})
	add("manifest.json", man)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestImageDeleteKeepsIdenticalImages: two projects upload the same
// content (so the same manifest digest); deleting one image leaves the
// other's tag and data intact, and deleting the last one removes its
// manifest from the registry (nothing leaks). Each image has its own
// repository, so the delete by digest cannot reach the other's tag.
func TestImageDeleteKeepsIdenticalImages(t *testing.T) {
	reg := testenv.Registry(t)
	ctx := context.Background()
	base := "capsuletest/img-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	client := &registry.Client{Address: reg}
	e := newEnv(t, &image.RegistryData{Registry: client, Repo: base})
	saved := dockerSave(t, []byte("same content in two projects"))

	upload := func(token string) (string, registry.Ref) {
		r := e.want(e.do("POST", "/v2/images", token, map[string]any{"name": "twin", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
		id := r.body["id"].(string)
		e.want(e.do("PUT", "/v2/images/"+id+"/file", token, saved, "Content-Type", "application/octet-stream"), http.StatusNoContent)
		var row store.Image
		if err := e.st.DB.Where("id = ?", id).Take(&row).Error; err != nil {
			t.Fatal(err)
		}
		ref, err := registry.ParseRef(row.RegistryRef)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.DeleteImage(context.Background(), row.RegistryRef, "") })
		return id, ref
	}
	aliceID, aliceRef := upload(e.alice)
	bobID, bobRef := upload(e.bob)
	da, err := client.Resolve(ctx, aliceRef.Repo, aliceRef.Tag)
	if err != nil {
		t.Fatal(err)
	}
	db, err := client.Resolve(ctx, bobRef.Repo, bobRef.Tag)
	if err != nil || db.Digest != da.Digest {
		t.Fatalf("the two uploads differ (%v %v): the test needs identical manifests", da, db)
	}

	e.want(e.do("DELETE", "/v2/images/"+aliceID, e.alice, nil), http.StatusNoContent)
	if _, err := client.Resolve(ctx, bobRef.Repo, bobRef.Tag); err != nil {
		t.Fatalf("bob's image lost its tag when alice deleted hers: %v", err)
	}
	if d := e.want(e.do("GET", "/v2/images/"+bobID+"/file", e.bob, nil), http.StatusOK); len(tarNames(t, d.raw)) < 3 {
		t.Fatalf("bob's download after alice's delete: %d bytes", len(d.raw))
	}
	if _, err := client.Resolve(ctx, aliceRef.Repo, aliceRef.Tag); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("alice's tag after her delete: %v, want ErrNotFound", err)
	}
	e.want(e.do("DELETE", "/v2/images/"+bobID, e.bob, nil), http.StatusNoContent)
	if _, err := client.Resolve(ctx, bobRef.Repo, db.Digest); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the last image's manifest after its delete: %v, want ErrNotFound", err)
	}
}

// TestImageDeleteSharedRepository: images stored before each had its own
// repository share one; deleting one whose manifest another row's tag
// also points to keeps the manifest (and the other's tag), and the last
// delete removes it. A second row holding the very same reference keeps
// it too.
func TestImageDeleteSharedRepository(t *testing.T) {
	reg := testenv.Registry(t)
	ctx := context.Background()
	repo := "capsuletest/img-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	client := &registry.Client{Address: reg}
	e := newEnv(t, &image.RegistryData{Registry: client, Repo: repo})
	dg := registrytest.PushTiny(t, client, repo, "a")
	man, _, err := client.RawManifest(ctx, repo, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.PutManifest(ctx, repo, "b", registry.MediaDockerManifest, man); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.DeleteManifest(context.Background(), repo, dg) })
	refA, refB := reg+"/"+repo+":a", reg+"/"+repo+":b"
	a := e.register("legacy-a", e.demoPID, "private", func(img *store.Image) { img.RegistryRef = refA })
	b := e.register("legacy-b", e.otherPID, "private", func(img *store.Image) { img.RegistryRef = refB })
	b2 := e.register("legacy-b2", e.otherPID, "private", func(img *store.Image) { img.RegistryRef = refB })

	e.want(e.do("DELETE", "/v2/images/"+a, e.alice, nil), http.StatusNoContent)
	if _, err := client.Resolve(ctx, repo, "b"); err != nil {
		t.Fatalf("b's tag after a's delete: %v", err)
	}
	e.want(e.do("DELETE", "/v2/images/"+b, e.bob, nil), http.StatusNoContent)
	if _, err := client.Resolve(ctx, repo, "b"); err != nil {
		t.Fatalf("b2's tag (the same as b's) after b's delete: %v", err)
	}
	e.want(e.do("DELETE", "/v2/images/"+b2, e.bob, nil), http.StatusNoContent)
	if _, err := client.Resolve(ctx, repo, dg); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("manifest after the last delete: %v, want ErrNotFound", err)
	}
}

// TestUploadStripsVolumes: an uploaded image declaring VOLUMEs is stored
// without them (its VOLUME paths are plain directories of the server's
// root disk, capped with it and carried by its snapshots and migrations),
// with its layers and the rest of its config as uploaded.
func TestUploadStripsVolumes(t *testing.T) {
	reg := testenv.Registry(t)
	ctx := context.Background()
	base := "capsuletest/img-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	client := &registry.Client{Address: reg}
	e := newEnv(t, &image.RegistryData{Registry: client, Repo: base})
	saved := dockerSaveConfig(t, map[string]any{"Cmd": []string{"sh"}, "WorkingDir": "/data",
		"Volumes": map[string]any{"/data": map[string]any{}, "/var/lib/db": map[string]any{}}}, []byte("layer one"), []byte("layer two"))

	r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "vol", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
	id := r.body["id"].(string)
	e.want(e.do("PUT", "/v2/images/"+id+"/file", e.alice, saved, "Content-Type", "application/octet-stream"), http.StatusNoContent)
	var row store.Image
	if err := e.st.DB.Where("id = ?", id).Take(&row).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.DeleteImage(context.Background(), row.RegistryRef, "") })
	ref, err := registry.ParseRef(row.RegistryRef)
	if err != nil {
		t.Fatal(err)
	}
	man, err := client.Manifest(ctx, ref.Repo, ref.Tag)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := client.GetBlob(ctx, ref.Repo, man.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Config map[string]any
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("stored config: %v\n%s", err, raw)
	}
	if v, ok := cfg.Config["Volumes"]; ok {
		t.Errorf("stored config still declares volumes: %v", v)
	}
	// The paths stay known: the driver makes the directories.
	if l, _ := cfg.Config["Labels"].(map[string]any); l[registry.LabelVolumeDirs] != `["/data","/var/lib/db"]` {
		t.Errorf("stored config labels %v, want the volume paths in %s", cfg.Config["Labels"], registry.LabelVolumeDirs)
	}
	if cfg.Config["WorkingDir"] != "/data" || fmt.Sprint(cfg.Config["Cmd"]) != "[sh]" {
		t.Errorf("stored config lost more than its volumes: %s", raw)
	}
	if len(man.Layers) != 2 || len(cfg.RootFS.DiffIDs) != 2 {
		t.Errorf("stored image has %d layers, %d diff ids; want the 2 uploaded", len(man.Layers), len(cfg.RootFS.DiffIDs))
	}
	// The download is the stored image: no volumes either.
	d := e.want(e.do("GET", "/v2/images/"+id+"/file", e.alice, nil), http.StatusOK)
	if bytes.Contains(d.raw, []byte(`"Volumes"`)) {
		t.Errorf("the download still declares volumes")
	}
}
