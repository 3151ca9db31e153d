package registry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/registry/registrytest"
)

// TestRealRegistryResolveDeleteTags runs against the test registry:
// a pushed tag resolves to the digest of what was pushed, is listed,
// and is gone after DeleteImage (which a second call finds already done).
func TestRealRegistryResolveDeleteTags(t *testing.T) {
	addr := testenv.Registry(t)
	ctx := context.Background()
	c := &registry.Client{Address: addr}
	repo, tag := "capsule/migrations", "regtest-"+uuid.NewString()
	pushed := registrytest.PushTiny(t, c, repo, tag)
	t.Cleanup(func() { _ = c.DeleteManifest(context.Background(), repo, pushed) })

	d, err := c.Resolve(ctx, repo, tag)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if d.Digest != pushed || d.MediaType != registry.MediaDockerManifest {
		t.Errorf("resolved %+v, want digest %s of type %s", d, pushed, registry.MediaDockerManifest)
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
	if _, err := c.Resolve(ctx, repo, tag); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("resolve after delete: %v, want registry.ErrNotFound", err)
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
	if err := c.DeleteManifest(ctx, repo, pushed); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("DeleteManifest of a deleted manifest: %v, want registry.ErrNotFound", err)
	}

	// By the digest recorded at push time.
	tag2 := tag + "-b"
	pushed2 := registrytest.PushTiny(t, c, repo, tag2)
	if err := c.DeleteImage(ctx, addr+"/"+repo+":"+tag2, pushed2); err != nil {
		t.Fatalf("delete by digest: %v", err)
	}
	if _, err := c.Resolve(ctx, repo, tag2); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("resolve after delete by digest: %v, want registry.ErrNotFound", err)
	}
}

// TestRealRegistryBlobsAndManifests runs against the test registry what
// Glance upload and download do: a streamed blob upload comes back
// byte for byte, a manifest put is read back (decoded, raw, sized), a
// blob mounted from another repository is there without an upload.
func TestRealRegistryBlobsAndManifests(t *testing.T) {
	addr := testenv.Registry(t)
	ctx := context.Background()
	c := &registry.Client{Address: addr}
	repo := "capsuletest/blob-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]

	payload := bytes.Repeat([]byte("capsule"), 200_000) // larger than one read
	d, err := c.UploadBlob(ctx, repo, io.MultiReader(bytes.NewReader(payload[:1000]), bytes.NewReader(payload[1000:])))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if d.Digest != digest.FromBytes(payload).String() || d.Size != int64(len(payload)) {
		t.Fatalf("uploaded %+v, want %s of %d bytes", d, digest.FromBytes(payload), len(payload))
	}
	rc, err := c.GetBlob(ctx, repo, d.Digest)
	if err != nil {
		t.Fatalf("get blob: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("blob read back: %d bytes, %v", len(got), err)
	}
	if _, err := c.GetBlob(ctx, repo, digest.FromString("nothing").String()); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("get of a missing blob: %v, want ErrNotFound", err)
	}

	// The two-request upload of a blob whose digest is known; the
	// registry refuses data that does not match it.
	small := []byte("capsule monolithic upload")
	d2, err := c.UploadBlobOf(ctx, repo, bytes.NewReader(small), int64(len(small)), digest.FromBytes(small).String())
	if err != nil || d2.Digest != digest.FromBytes(small).String() || d2.Size != int64(len(small)) {
		t.Fatalf("monolithic upload: %+v, %v", d2, err)
	}
	if rc, err := c.GetBlob(ctx, repo, d2.Digest); err != nil {
		t.Fatalf("get monolithic blob: %v", err)
	} else if got, err := io.ReadAll(rc); rc.Close() != nil || err != nil || !bytes.Equal(got, small) {
		t.Fatalf("monolithic blob read back: %q, %v", got, err)
	}
	if _, err := c.UploadBlobOf(ctx, repo, bytes.NewReader(small), int64(len(small)), digest.FromString("other").String()); err == nil {
		t.Error("monolithic upload with a wrong digest accepted")
	}

	tag := "t-" + uuid.NewString()
	pushed := registrytest.PushTiny(t, c, repo, tag)
	t.Cleanup(func() { _ = c.DeleteManifest(context.Background(), repo, pushed) })
	m, err := c.Manifest(ctx, repo, tag)
	if err != nil || len(m.Layers) != 1 || m.Config.Digest == "" || m.Size() != m.Config.Size+m.Layers[0].Size {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	raw, mt, err := c.RawManifest(ctx, repo, pushed)
	if err != nil || digest.FromBytes(raw).String() != pushed || mt != registry.MediaDockerManifest {
		t.Fatalf("raw manifest by digest: %s %s, %v", digest.FromBytes(raw), mt, err)
	}
	if n, err := c.ImageSize(ctx, addr+"/"+repo+":"+tag); err != nil || n != m.Size() {
		t.Errorf("image size %d, %v; want %d", n, err, m.Size())
	}

	other := repo + "-mounted"
	for _, dg := range []string{m.Config.Digest, m.Layers[0].Digest} {
		if err := c.MountBlob(ctx, other, repo, dg); err != nil {
			t.Fatalf("mount %s: %v", dg, err)
		}
	}
	if dg, err := c.PutManifest(ctx, other, tag, mt, raw); err != nil || dg != pushed {
		t.Fatalf("put the same manifest in %s: %s, %v", other, dg, err)
	}
	t.Cleanup(func() { _ = c.DeleteManifest(context.Background(), other, pushed) })
	if n, err := c.ImageSize(ctx, addr+"/"+other+"@"+pushed); err != nil || n != m.Size() {
		t.Errorf("mounted image size %d, %v", n, err)
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
			for _, mt := range []string{registry.MediaDockerManifest, registry.MediaDockerList, registry.MediaOCIManifest, registry.MediaOCIIndex} {
				if !strings.Contains(r.Header.Get("Accept"), mt) {
					t.Errorf("%s %s: Accept %q lacks %s", r.Method, r.URL.Path, r.Header.Get("Accept"), mt)
				}
			}
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("a", 64))
			w.Header().Set("Content-Type", registry.MediaDockerManifest)
		case r.URL.Path == "/v2/capsule/migrations/manifests/no-header":
			w.Header().Set("Content-Type", registry.MediaOCIManifest)
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

	anon := &registry.Client{Address: host}
	if _, err := anon.Resolve(ctx, "capsule/migrations", "with-header"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("resolve without credentials: %v, want a 401 error", err)
	}

	c := &registry.Client{Address: host, Username: "capsule", Password: "s3cret"}
	d, err := c.Resolve(ctx, "capsule/migrations", "with-header")
	if err != nil || d.Digest != "sha256:"+strings.Repeat("a", 64) || d.MediaType != registry.MediaDockerManifest {
		t.Errorf("resolve with header: %+v, %v", d, err)
	}
	d, err = c.Resolve(ctx, "capsule/migrations", "no-header")
	if err != nil || d.Digest != digest.FromBytes(manifest).String() || d.MediaType != registry.MediaOCIManifest {
		t.Errorf("resolve without header: %+v, %v; want digest %s", d, err, digest.FromBytes(manifest))
	}
	if err := c.DeleteImage(ctx, host+"/capsule/migrations:with-header", ""); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := c.DeleteImage(ctx, host+"/capsule/migrations:gone", ""); err != nil {
		t.Errorf("delete of a missing tag: %v, want nil", err)
	}
	if err := c.DeleteManifest(ctx, "capsule/migrations", "sha256:"+strings.Repeat("b", 64)); !errors.Is(err, registry.ErrDeleteDisabled) {
		t.Errorf("delete on a registry refusing deletes: %v, want registry.ErrDeleteDisabled", err)
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

// TestClientBearer: a registry that wants a token gets one from its realm
// with the client's login, for the scope the challenge names; the token
// serves the next requests of that scope without a new challenge, and a
// streamed upload (whose body cannot be sent twice) goes with it.
func TestClientBearer(t *testing.T) {
	var mu sync.Mutex
	var tokenQueries []string
	var unauthorized int
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bob" || p != "secret" {
			http.Error(w, "bad login", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		tokenQueries = append(tokenQueries, r.URL.RawQuery)
		mu.Unlock()
		_, _ = w.Write([]byte(`{"token":"tok-1","expires_in":300}`))
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-1" {
			mu.Lock()
			unauthorized++
			mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="reg",scope="repository:capsule/migrations:pull"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v2/capsule/migrations/manifests/sha256:beef":
			w.Header().Set("Content-Type", registry.MediaDockerManifest)
			_, _ = w.Write([]byte(`{"schemaVersion":2,"config":{"digest":"sha256:c","size":2},"layers":[{"size":3},{"size":4}]}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v2/capsule/migrations/blobs/uploads/":
			w.Header().Set("Location", "/v2/capsule/migrations/blobs/uploads/u1")
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPatch:
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Location", "/v2/capsule/migrations/blobs/uploads/u1?state=x")
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPut && r.URL.Query().Get("digest") != "":
			w.WriteHeader(http.StatusCreated)
		default:
			http.NotFound(w, r)
		}
	})
	c := registry.Remote(strings.TrimPrefix(srv.URL, "http://"), "bob", "secret")
	c.HTTP = srv.Client()
	ctx := context.Background()
	m, err := c.Manifest(ctx, "capsule/migrations", "sha256:beef")
	if err != nil || len(m.Layers) != 2 || m.Size() != 9 {
		t.Fatalf("manifest: %+v, %v", m, err)
	}
	if _, err := c.Manifest(ctx, "capsule/migrations", "sha256:beef"); err != nil {
		t.Fatalf("second read: %v", err)
	}
	if d, err := c.UploadBlob(ctx, "capsule/migrations", io.LimitReader(strings.NewReader("stream"), 6)); err != nil ||
		d.Size != 6 || d.Digest != digest.FromString("stream").String() {
		t.Fatalf("streamed upload with a token: %+v, %v", d, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tokenQueries) == 0 || !strings.Contains(tokenQueries[0], "service=reg") ||
		!strings.Contains(tokenQueries[0], "scope=repository%3Acapsule%2Fmigrations%3Apull") {
		t.Errorf("token queries %q", tokenQueries)
	}
	// One challenge for the pulls, one for the push scope's first request.
	if unauthorized != 2 || len(tokenQueries) != 2 {
		t.Errorf("%d challenges, %d tokens fetched; want 2 and 2 (tokens reused per scope)", unauthorized, len(tokenQueries))
	}
}

// TestRemoteFallsBackToPlainHTTP: a registry that speaks only plain HTTP
// (an insecure loopback one) is reached by a Remote client after its
// HTTPS attempt, and a client with an explicit scheme is not probed.
func TestRemoteFallsBackToPlainHTTP(t *testing.T) {
	var seen int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen++
		_, _ = w.Write([]byte(`{"tags":["x"]}`))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	c := registry.Remote(host, "", "")
	ctx := context.Background()
	for range 2 {
		if tags, err := c.Tags(ctx, "a/b"); err != nil || !slices.Equal(tags, []string{"x"}) {
			t.Fatalf("tags over the plain-HTTP fallback: %v, %v", tags, err)
		}
	}
	if seen != 2 {
		t.Errorf("registry saw %d requests, want 2", seen)
	}
	tls := &registry.Client{Address: "https://" + host}
	if _, err := tls.Tags(ctx, "a/b"); err == nil {
		t.Error("an https:// address fell back to plain HTTP")
	}
}

func TestParseRef(t *testing.T) {
	dg := "sha256:" + strings.Repeat("0", 64)
	for in, want := range map[string]registry.Ref{
		"127.0.0.1:5050/capsule/migrations:abc": {Host: "127.0.0.1:5050", Repo: "capsule/migrations", Tag: "abc"},
		"reg.example/capsule/busybox":           {Host: "reg.example", Repo: "capsule/busybox", Tag: "latest"},
		"localhost/a/b@" + dg:                   {Host: "localhost", Repo: "a/b", Digest: dg},
		"reg.example:5000/a/b:v1@" + dg:         {Host: "reg.example:5000", Repo: "a/b", Tag: "v1", Digest: dg},
		"docker.io/library/busybox:1.36":        {Host: "docker.io", Repo: "library/busybox", Tag: "1.36"},
	} {
		got, err := registry.ParseRef(in)
		if err != nil || got != want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil && got.String() != in && got.String() != in+":latest" {
			t.Errorf("ParseRef(%q).String() = %q", in, got.String())
		}
	}
	for _, bad := range []string{"busybox", "capsule/busybox:latest", "127.0.0.1:5050/", "h:1/a@latest", "h:1/a@sha256:00", ""} {
		if _, err := registry.ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) accepted", bad)
		}
	}
	if _, err := registry.ParseRef("capsule/busybox"); err == nil || !strings.Contains(err.Error(), "does not name a registry host") {
		t.Errorf("ParseRef without a host: %v", err)
	}
	for in, want := range map[string]registry.Ref{
		"busybox":                        {Host: "docker.io", Repo: "library/busybox", Tag: "latest"},
		"capsule/busybox:1":              {Host: "docker.io", Repo: "capsule/busybox", Tag: "1"},
		"127.0.0.1:5050/capsule/b@" + dg: {Host: "127.0.0.1:5050", Repo: "capsule/b", Digest: dg},
	} {
		if got, err := registry.ParseNormalizedRef(in); err != nil || got != want {
			t.Errorf("ParseNormalizedRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if r := (registry.Ref{Tag: "v1", Digest: dg}); r.Reference() != dg {
		t.Errorf("Reference() = %q, want the digest", r.Reference())
	}
}
