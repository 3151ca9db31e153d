package registry

import (
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
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// pushTiny pushes a one-layer image (a config blob, an empty gzip layer
// and a schema-2 manifest) to addr as repo:tag through the v2 API, as a
// docker push would, and returns the manifest's digest.
func pushTiny(t *testing.T, addr, repo, tag string) string {
	t.Helper()
	ctx := context.Background()
	upload := func(blob []byte) string {
		dg := digestOf(blob)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v2/"+repo+"/blobs/uploads/", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload: %s", res.Status)
		}
		loc, err := url.Parse(res.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if !loc.IsAbs() {
			loc, _ = url.Parse("http://" + addr + loc.String())
		}
		q := loc.Query()
		q.Set("digest", dg)
		loc.RawQuery = q.Encode()
		req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), bytes.NewReader(blob))
		req.Header.Set("Content-Type", "application/octet-stream")
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("finish upload: %s", res.Status)
		}
		return dg
	}
	// An empty tar (two zero blocks), gzipped: the smallest valid layer.
	tarball := make([]byte, 1024)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tarball)
	_ = zw.Close()
	layer := gz.Bytes()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%q]},"comment":%q}`,
		digestOf(tarball), tag))
	cfgDigest, layerDigest := upload(cfg), upload(layer)
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaDockerManifest,
		"config": map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(cfg), "digest": cfgDigest},
		"layers": []map[string]any{{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer), "digest": layerDigest}}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+addr+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(man))
	req.Header.Set("Content-Type", MediaDockerManifest)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %s: %s", res.Status, b)
	}
	return digestOf(man)
}

// TestRealRegistryResolveDeleteTags runs against the test registry:
// a pushed tag resolves to the digest of what was pushed, is listed,
// and is gone after DeleteImage (which a second call finds already done).
func TestRealRegistryResolveDeleteTags(t *testing.T) {
	addr := testenv.Registry(t)
	ctx := context.Background()
	c := &Client{Address: addr}
	repo, tag := "capsule/migrations", "regtest-"+uuid.NewString()
	pushed := pushTiny(t, addr, repo, tag)
	t.Cleanup(func() { _ = c.DeleteManifest(context.Background(), repo, pushed) })

	d, err := c.Resolve(ctx, repo, tag)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if d.Digest != pushed || d.MediaType != MediaDockerManifest {
		t.Errorf("resolved %+v, want digest %s of type %s", d, pushed, MediaDockerManifest)
	}
	tags, err := c.Tags(ctx, repo)
	if err != nil {
		t.Fatalf("tags: %v", err)
	}
	if !slices.Contains(tags, tag) {
		t.Errorf("tags of %s = %v, want %s among them", repo, tags, tag)
	}

	// By tag (digest unknown: resolved first).
	ref := addr + "/" + repo + ":" + tag
	if err := c.DeleteImage(ctx, ref, ""); err != nil {
		t.Fatalf("delete %s: %v", ref, err)
	}
	if _, err := c.Resolve(ctx, repo, tag); !errors.Is(err, ErrNotFound) {
		t.Errorf("resolve after delete: %v, want ErrNotFound", err)
	}
	tags, err = c.Tags(ctx, repo)
	if err != nil {
		t.Fatalf("tags: %v", err)
	}
	if slices.Contains(tags, tag) {
		t.Errorf("tag %s still listed after delete: %v", tag, tags)
	}
	// Idempotent, by tag and by digest.
	if err := c.DeleteImage(ctx, ref, ""); err != nil {
		t.Errorf("second delete by tag: %v", err)
	}
	if err := c.DeleteImage(ctx, ref, pushed); err != nil {
		t.Errorf("second delete by digest: %v", err)
	}
	if err := c.DeleteManifest(ctx, repo, pushed); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteManifest of a deleted manifest: %v, want ErrNotFound", err)
	}

	// By the digest recorded at push time.
	tag2 := tag + "-b"
	pushed2 := pushTiny(t, addr, repo, tag2)
	if err := c.DeleteImage(ctx, addr+"/"+repo+":"+tag2, pushed2); err != nil {
		t.Fatalf("delete by digest: %v", err)
	}
	if _, err := c.Resolve(ctx, repo, tag2); !errors.Is(err, ErrNotFound) {
		t.Errorf("resolve after delete by digest: %v, want ErrNotFound", err)
	}
}

// TestClientSendsAuthAndAccept checks on the wire what a registry with
// basic auth sees: credentials on every request, every manifest media
// type in Accept, the digest from Docker-Content-Digest, and a GET
// fallback (digest = SHA-256 of the body) when the header is missing.
func TestClientSendsAuthAndAccept(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		u, p, ok := r.BasicAuth()
		if !ok || u != "capsule" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		switch {
		case r.URL.Path == "/v2/capsule/migrations/manifests/with-header":
			for _, mt := range []string{MediaDockerManifest, MediaDockerList, MediaOCIManifest, MediaOCIIndex} {
				if !strings.Contains(r.Header.Get("Accept"), mt) {
					t.Errorf("%s %s: Accept %q lacks %s", r.Method, r.URL.Path, r.Header.Get("Accept"), mt)
				}
			}
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("a", 64))
			w.Header().Set("Content-Type", MediaDockerManifest)
		case r.URL.Path == "/v2/capsule/migrations/manifests/no-header":
			w.Header().Set("Content-Type", MediaOCIManifest)
			if r.Method == http.MethodGet {
				_, _ = w.Write(manifest)
			}
		case r.Method == http.MethodDelete && r.URL.Path == "/v2/capsule/migrations/manifests/sha256:"+strings.Repeat("a", 64):
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusMethodNotAllowed)
		case r.URL.Path == "/v2/capsule/migrations/tags/list" && r.URL.Query().Get("last") == "":
			w.Header().Set("Link", `</v2/capsule/migrations/tags/list?last=b&n=1000>; rel="next"`)
			_, _ = w.Write([]byte(`{"name":"capsule/migrations","tags":["a","b"]}`))
		case r.URL.Path == "/v2/capsule/migrations/tags/list":
			_, _ = w.Write([]byte(`{"name":"capsule/migrations","tags":["c"]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	host := strings.TrimPrefix(srv.URL, "http://")

	anon := &Client{Address: host}
	if _, err := anon.Resolve(ctx, "capsule/migrations", "with-header"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("resolve without credentials: %v, want a 401 error", err)
	}

	c := &Client{Address: host, Username: "capsule", Password: "s3cret"}
	d, err := c.Resolve(ctx, "capsule/migrations", "with-header")
	if err != nil || d.Digest != "sha256:"+strings.Repeat("a", 64) || d.MediaType != MediaDockerManifest {
		t.Errorf("resolve with header: %+v, %v", d, err)
	}
	d, err = c.Resolve(ctx, "capsule/migrations", "no-header")
	if err != nil || d.Digest != digestOf(manifest) || d.MediaType != MediaOCIManifest {
		t.Errorf("resolve without header: %+v, %v; want digest %s", d, err, digestOf(manifest))
	}
	if err := c.DeleteImage(ctx, host+"/capsule/migrations:with-header", ""); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := c.DeleteImage(ctx, host+"/capsule/migrations:gone", ""); err != nil {
		t.Errorf("delete of a missing tag: %v, want nil", err)
	}
	if err := c.DeleteManifest(ctx, "capsule/migrations", "sha256:"+strings.Repeat("b", 64)); !errors.Is(err, ErrDeleteDisabled) {
		t.Errorf("delete on a registry refusing deletes: %v, want ErrDeleteDisabled", err)
	}
	if err := c.DeleteImage(ctx, "other.example:5000/capsule/migrations:x", ""); err == nil {
		t.Error("delete of another registry's image accepted")
	}
	tags, err := c.Tags(ctx, "capsule/migrations")
	if err != nil || !slices.Equal(tags, []string{"a", "b", "c"}) {
		t.Errorf("tags = %v, %v; want [a b c] over two pages", tags, err)
	}
	if tags, err := c.Tags(ctx, "capsule/none"); err != nil || len(tags) != 0 {
		t.Errorf("tags of a missing repository = %v, %v", tags, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(seen, "HEAD /v2/capsule/migrations/manifests/with-header") ||
		!slices.Contains(seen, "GET /v2/capsule/migrations/manifests/no-header") {
		t.Errorf("requests seen: %v", seen)
	}
}

func TestParseRef(t *testing.T) {
	for in, want := range map[string]Ref{
		"127.0.0.1:5050/capsule/migrations:abc": {Host: "127.0.0.1:5050", Repo: "capsule/migrations", Tag: "abc"},
		"reg.example/capsule/busybox":           {Host: "reg.example", Repo: "capsule/busybox", Tag: "latest"},
		"localhost/a/b@sha256:00":               {Host: "localhost", Repo: "a/b", Digest: "sha256:00"},
	} {
		got, err := ParseRef(in)
		if err != nil || got != want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"busybox", "capsule/busybox:latest", "127.0.0.1:5050/", "h:1/a@latest"} {
		if _, err := ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) accepted", bad)
		}
	}
}
