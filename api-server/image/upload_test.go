package image_test

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// sinkRegistry is a registry that takes blob uploads and manifests and
// keeps nothing but their count: what an upload holds in memory is then
// the image API's alone.
func sinkRegistry(t testing.TB) (*registry.Client, *atomic.Int64) {
	var blobs atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/"):
			w.Header().Set("Location", r.URL.Path+uuid.NewString())
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPatch:
			w.Header().Set("Location", r.URL.Path)
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/"):
			blobs.Add(1)
			w.WriteHeader(http.StatusCreated)
		case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/"):
			w.WriteHeader(http.StatusCreated)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return &registry.Client{Address: srv.URL}, &blobs
}

// streamSave writes, as it is read, a docker-save tarball of n layers of
// size bytes each (each a tar of one file), its config and manifest.json:
// the test's own memory stays flat whatever the upload's size.
func streamSave(n, size int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		fill := make([]byte, size)
		_, _ = rand.Read(fill)
		var names, diffIDs []string
		add := func(name string, body func(io.Writer) error, n int64) error {
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n, Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			return body(tw)
		}
		err := func() error {
			inner := int64(size - 1024) // the layer's file: header block + padding + end blocks fit
			for i := range n {
				name := fmt.Sprintf("l%05d/layer.tar", i)
				err := add(name, func(w io.Writer) error {
					lw := tar.NewWriter(w)
					if err := lw.WriteHeader(&tar.Header{Name: "f" + strconv.Itoa(i), Mode: 0o644, Size: inner, Typeflag: tar.TypeReg}); err != nil {
						return err
					}
					if _, err := lw.Write(fill[:inner]); err != nil {
						return err
					}
					return lw.Close()
				}, layerSize(inner))
				if err != nil {
					return err
				}
				names = append(names, name)
				diffIDs = append(diffIDs, fmt.Sprintf("sha256:%064x", i))
			}
			cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
				"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
			if err := add("config.json", func(w io.Writer) error { _, err := w.Write(cfg); return err }, int64(len(cfg))); err != nil {
				return err
			}
			man, _ := json.Marshal([]map[string]any{{"Config": "config.json", "Layers": names}})
			if err := add("manifest.json", func(w io.Writer) error { _, err := w.Write(man); return err }, int64(len(man))); err != nil {
				return err
			}
			return tw.Close()
		}()
		pw.CloseWithError(err)
	}()
	return pr
}

// layerSize is the size of a tar holding one file of n bytes.
func layerSize(n int64) int64 { return 512 + (n+511)/512*512 + 1024 }

// peakHeap samples the heap in use while f runs and returns its peak
// over the heap before f (after a GC).
func peakHeap(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// TestUploadManySmallLayersBoundedMemory: a 64 MiB docker-save upload
// made of 512 small layers streams to the registry: the heap grows by a
// few MiB, not by the upload (the old code kept every member of 1 MiB or
// less in memory until manifest.json).
func TestUploadManySmallLayersBoundedMemory(t *testing.T) {
	reg, blobs := sinkRegistry(t)
	e := newEnv(t, &image.RegistryData{Registry: reg})
	r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "many", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
	id := r.body["id"].(string)
	const layers, size = 512, 128 << 10
	grew := peakHeap(func() {
		e.want(e.do("PUT", "/v2/images/"+id+"/file", e.alice, streamSave(layers, size), "Content-Type", "application/octet-stream"), http.StatusNoContent)
	})
	t.Logf("upload of %d MiB in %d layers: heap grew by %.1f MiB at most; %d blobs", layers*size>>20, layers, float64(grew)/(1<<20), blobs.Load())
	if grew > 24<<20 {
		t.Errorf("heap grew by %d MiB during a %d MiB upload: the upload is held in memory", grew>>20, layers*size>>20)
	}
	if blobs.Load() != layers+1 {
		t.Errorf("%d blobs uploaded, want %d layers and the config", blobs.Load(), layers+1)
	}
}

// TestUploadLimits: an upload beyond MaxImageBytes gets Glance's 413 (at
// once from its Content-Length, or when the streamed body goes past it),
// a body that is no docker-save tarball a 400, one that outlasts
// UploadTimeout a 408; every time the image stays queued for a retry.
func TestUploadLimits(t *testing.T) {
	reg, _ := sinkRegistry(t)
	e := newEnv(t, &image.RegistryData{Registry: reg}, func(o *image.Options) {
		o.MaxImageBytes = 1 << 20
		// Long enough for the last upload on a loaded CI machine (500 ms
		// was not), short for the stalled one.
		o.UploadTimeout = 3 * time.Second
	})
	newImage := func() string {
		r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "lim", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
		return r.body["id"].(string)
	}
	queued := func(id string) {
		t.Helper()
		if r := e.want(e.do("GET", "/v2/images/"+id, e.alice, nil), http.StatusOK); r.body["status"] != "queued" {
			t.Errorf("image %s after a refused upload: %v, want queued", id, r.body["status"])
		}
	}
	glance := func(r resp, status int) {
		t.Helper()
		if r.status != status || r.body["code"] != float64(status) || r.body["title"] == nil || r.body["message"] == nil {
			t.Errorf("status %d body %s, want Glance's %d", r.status, r.raw, status)
		}
	}

	id := newImage()
	glance(e.do("PUT", "/v2/images/"+id+"/file", e.alice, make([]byte, 2<<20), "Content-Type", "application/octet-stream"), http.StatusRequestEntityTooLarge)
	queued(id)
	glance(e.do("PUT", "/v2/images/"+id+"/file", e.alice, streamSave(16, 128<<10), "Content-Type", "application/octet-stream"), http.StatusRequestEntityTooLarge)
	queued(id)
	glance(e.do("PUT", "/v2/images/"+id+"/file", e.alice, strings.NewReader("not a tarball"), "Content-Type", "application/octet-stream"), http.StatusBadRequest)
	queued(id)
	stalled, pw := io.Pipe()
	defer pw.Close()
	glance(e.do("PUT", "/v2/images/"+id+"/file", e.alice, stalled, "Content-Type", "application/octet-stream"), http.StatusRequestTimeout)
	queued(id)
	// Within the limits it works.
	e.want(e.do("PUT", "/v2/images/"+id+"/file", e.alice, streamSave(4, 128<<10), "Content-Type", "application/octet-stream"), http.StatusNoContent)
}

// TestUploadHeapBenchmark measures the heap during an upload of
// CAPSULE_BENCH_UPLOAD_MIB MiB (default 256) of 128 KiB layers to the
// test registry (docs/benchmarks.md); it runs only when that variable is
// set.
func TestUploadHeapBenchmark(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("CAPSULE_BENCH_UPLOAD_MIB"))
	if mib <= 0 {
		t.Skip("CAPSULE_BENCH_UPLOAD_MIB not set")
	}
	addr := testenv.Registry(t)
	base := "capsuletest/bench-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	client := &registry.Client{Address: addr, HTTP: &http.Client{}}
	e := newEnv(t, &image.RegistryData{Registry: client, Repo: base})
	r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "bench", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
	id := r.body["id"].(string)
	const size = 128 << 10
	layers := mib << 20 / size
	start := time.Now()
	grew := peakHeap(func() {
		e.want(e.do("PUT", "/v2/images/"+id+"/file", e.alice, streamSave(layers, size), "Content-Type", "application/octet-stream"), http.StatusNoContent)
	})
	t.Logf("upload of %d MiB in %d layers of %d KiB: %s, heap peak %.1f MiB over the baseline",
		mib, layers, size>>10, time.Since(start).Round(time.Millisecond), float64(grew)/(1<<20))
	var row store.Image
	if err := e.st.DB.Where("id = ?", id).Take(&row).Error; err == nil && row.RegistryRef != "" {
		_ = client.DeleteImage(context.Background(), row.RegistryRef, "")
	}
}
