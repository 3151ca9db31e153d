package image_test

import (
	"archive/tar"
	"bytes"
	"context"
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
	wantRef := reg + "/" + repo + ":" + id
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
	if _, err := docker.call(ctx, "POST", "/images/create?fromImage="+url.QueryEscape(reg+"/"+repo)+"&tag="+id, nil); err != nil {
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
	if _, err := client.Resolve(ctx, repo, id); !errors.Is(err, registry.ErrNotFound) {
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
