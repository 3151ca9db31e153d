package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/docker/docker/client"

	capreg "github.com/capsule-cloud/capsule/registry"
)

// maxDeltaLoad bounds the last layer PullDelta loads itself (held in
// memory); a bigger one is pulled by Docker, which streams it.
const maxDeltaLoad = 64 << 20

// PullDelta pulls ref, a migration's final image, onto its pre-copy
// preRef, which this host pre-pulled: ref is preRef's layers plus one
// (ExportMigrationOnto), so only the manifest, then that layer and the
// config side by side, are fetched, and loaded with an image load that
// names the layers Docker has without carrying them (it skips a layer it
// holds). A migration's import does this while the server is down: three
// registry requests, two of them at once, instead of a Docker pull's
// five or six in a row. Anything else (another shape, a layer not here,
// a big last layer, any failure) is a normal Pull. It returns the
// compressed bytes fetched.
func (d *Driver) PullDelta(ctx context.Context, ref, preRef string, progress func(bytes int64)) (int64, error) {
	n, err := d.loadDelta(ctx, ref, preRef)
	if err != nil {
		d.log.Info("migration image not loaded over its pre-copy; pulling it", "image", ref, "reason", err)
		return d.Pull(ctx, ref, progress)
	}
	if progress != nil {
		progress(n)
	}
	d.log.Info("migration image loaded over its pre-copy", "image", ref, "bytes", n)
	return n, nil
}

func (d *Driver) loadDelta(ctx context.Context, ref, preRef string) (int64, error) {
	if preRef == "" {
		return 0, errors.New("no pre-copy")
	}
	pre, err := d.cli.ImageInspect(ctx, preRef)
	if err != nil {
		return 0, fmt.Errorf("pre-copy %s: %w", preRef, err)
	}
	r, err := capreg.ParseNormalizedRef(ref)
	if err != nil {
		return 0, err
	}
	var user, pass string
	if a := d.opts.RegistryAuth; a != nil {
		user, pass = a.Username, a.Password
	}
	reg := capreg.Remote(r.Host, user, pass)
	raw, _, err := reg.RawManifest(ctx, r.Repo, r.Reference())
	if err != nil {
		return 0, err
	}
	var man capreg.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	if len(man.Layers) != len(pre.RootFS.Layers)+1 {
		return 0, fmt.Errorf("%d layers over a pre-copy of %d", len(man.Layers), len(pre.RootFS.Layers))
	}
	last := man.Layers[len(man.Layers)-1]
	if last.Size > maxDeltaLoad {
		return 0, fmt.Errorf("last layer of %d bytes", last.Size)
	}
	var cfg []byte
	var cfgErr error
	var wg sync.WaitGroup
	wg.Go(func() { cfg, cfgErr = readBlob(ctx, reg, r.Repo, man.Config.Digest, 16<<20) })
	layer, err := readBlob(ctx, reg, r.Repo, last.Digest, maxDeltaLoad)
	wg.Wait()
	if err != nil {
		return 0, err
	}
	if cfgErr != nil {
		return 0, cfgErr
	}
	var c struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		return 0, fmt.Errorf("config: %w", err)
	}
	n := len(c.RootFS.DiffIDs)
	if n != len(man.Layers) || !slices.Equal(c.RootFS.DiffIDs[:n-1], pre.RootFS.Layers) {
		return 0, errors.New("its lower layers are not the pre-copy's")
	}
	tb, err := deltaTarball(ref, cfg, layer, n)
	if err != nil {
		return 0, err
	}
	res, err := d.cli.ImageLoad(ctx, bytes.NewReader(tb), client.ImageLoadWithQuiet(true))
	if err != nil {
		return 0, fmt.Errorf("load: %w", err)
	}
	defer res.Body.Close()
	if res.JSON {
		err = drainPull(res.Body)
	} else {
		_, err = io.Copy(io.Discard, res.Body)
	}
	if err != nil {
		return 0, fmt.Errorf("load: %w", err)
	}
	// What Docker tagged is the image of that config (it checked each
	// layer's diff ID as it unpacked it).
	sum := sha256.Sum256(cfg)
	if ii, err := d.cli.ImageInspect(ctx, ref); err != nil || ii.ID != "sha256:"+hex.EncodeToString(sum[:]) {
		return 0, fmt.Errorf("%s is not the loaded image after the load (%v)", ref, err)
	}
	return last.Size, nil
}

// readBlob reads blob dgst of repo (at most max bytes) and checks its
// digest.
func readBlob(ctx context.Context, reg *capreg.Client, repo, dgst string, max int64) ([]byte, error) {
	body, err := reg.GetBlob(ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, max+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) > max || "sha256:"+hex.EncodeToString(sum[:]) != dgst {
		return nil, fmt.Errorf("blob %s: %d bytes of another digest", dgst, len(b))
	}
	return b, nil
}

// deltaTarball is an image archive (docker save's layout) of config cfg
// tagged tag, carrying only its last layer (compressed, as the registry
// holds it) of n: the others are named but absent, as Docker has them.
func deltaTarball(tag string, cfg, layer []byte, n int) ([]byte, error) {
	names := layerNames(n)
	mb, err := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{tag}, "Layers": names}})
	if err != nil {
		return nil, err
	}
	return imageArchive(tarFile{"config.json", cfg}, tarFile{names[n-1], layer}, tarFile{"manifest.json", mb})
}
