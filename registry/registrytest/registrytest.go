// Package registrytest holds helpers for tests that need images in a
// real registry (the test registry of deploy/test-env.sh).
package registrytest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/capsule-cloud/capsule/registry"
)

// PushTiny pushes a one-layer image (a config blob naming tag, so it is
// distinct per tag, an empty gzip layer and a schema-2 manifest) to repo
// as tag, as a docker push would, and returns the manifest's digest.
func PushTiny(t testing.TB, c *registry.Client, repo, tag string) string {
	t.Helper()
	ctx := context.Background()
	// An empty tar (two zero blocks), gzipped: the smallest valid layer.
	tarball := make([]byte, 1024)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tarball)
	_ = zw.Close()
	layer, err := c.UploadBlob(ctx, repo, bytes.NewReader(gz.Bytes()))
	if err != nil {
		t.Fatalf("upload layer: %v", err)
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%q]},"comment":%q}`,
		digest.FromBytes(tarball), tag))
	config, err := c.UploadBlob(ctx, repo, bytes.NewReader(cfg))
	if err != nil {
		t.Fatalf("upload config: %v", err)
	}
	config.MediaType = "application/vnd.docker.container.image.v1+json"
	layer.MediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	man, _ := json.Marshal(registry.Manifest{SchemaVersion: 2, MediaType: registry.MediaDockerManifest,
		Config: config, Layers: []registry.Descriptor{layer}})
	dg, err := c.PutManifest(ctx, repo, tag, registry.MediaDockerManifest, man)
	if err != nil {
		t.Fatalf("put manifest %s:%s: %v", repo, tag, err)
	}
	return dg
}

// DeleteAtCleanup deletes image ref (host/repo:tag) from its registry when
// the test ends: a test that pushes leaves nothing behind.
func DeleteAtCleanup(t testing.TB, ref string) {
	t.Helper()
	r, err := registry.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := (&registry.Client{Address: r.Host}).DeleteImage(context.Background(), ref, ""); err != nil {
			t.Logf("registry cleanup of %s: %v", ref, err)
		}
	})
}
