package docker_test

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/registry/registrytest"
)

// forgedLabels are what a tenant bakes into an image to steer the agent:
// its server passed for a sandbox (hidden from power sync), for a
// dedicated one (CPU accounting), for another instance, and a label of
// Capsule's namespace the driver does not know.
var forgedLabels = map[string]string{
	docker.LabelRole:      docker.RoleSandbox,
	docker.LabelCPUPolicy: "dedicated",
	docker.LabelInstance:  "forged",
	"capsule.project":     "someone-else",
	"capsule.future":      "x",
}

// TestImageLabelsDoNotSteerTheDriver: a server booted from an image
// carrying capsule.* labels gets the driver's own labels (role workload,
// its CPU policy, its instance) and the image's other capsule.* blanked,
// so List reports it running rather than as a leftover sandbox; a
// snapshot of it carries no capsule.* label value in its image config.
func TestImageLabelsDoNotSteerTheDriver(t *testing.T) {
	base := testenv.Image(t)
	registry := testenv.Registry(t)
	d := newDriver(t)
	cli := d.Client()
	ctx := drivertest.Ctx(t)

	// The tenant's image: the base image committed with the labels.
	if err := pull(ctx, d, base); err != nil {
		t.Fatal(err)
	}
	src, err := cli.ContainerCreate(ctx, &container.Config{Image: base, Labels: forgedLabels}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.ContainerRemove(context.Background(), src.ID, container.RemoveOptions{Force: true}) })
	forged := "capsuletest/forged-labels:" + strings.ToLower(t.Name()[:4]) + src.ID[:8]
	if _, err := cli.ContainerCommit(ctx, src.ID, container.CommitOptions{Reference: forged}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), forged, image.RemoveOptions{Force: true}) })

	spec := drivertest.Spec(forged)
	drivertest.Boot(t, d, spec)
	c, err := cli.ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{docker.LabelRole: docker.RoleWorkload, docker.LabelCPUPolicy: "shared",
		docker.LabelInstance: spec.ID, "capsule.project": "", "capsule.future": "", "capsule.test": "drivertest"}
	for k, v := range want {
		if got, ok := c.Config.Labels[k]; !ok || got != v {
			t.Errorf("label %s = %q (set %v), want %q", k, got, ok, v)
		}
	}
	list, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range list {
		if s.ID == spec.ID {
			found = true
			if s.Power != drivers.PowerRunning {
				t.Errorf("List reports the server %v (%s), want running", s.Power, s.Description)
			}
		}
	}
	if !found {
		t.Errorf("List lacks the server %s", spec.ID)
	}

	// A snapshot of it: Capsule's labels are blank in the pushed config.
	repo := capreg.PerImageRepo(capreg.SnapshotRepo, "test-"+spec.ID[:8])
	ref := registry + "/" + repo + ":labels"
	registrytest.DeleteAtCleanup(t, ref)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, _, err := d.Snapshot(pctx, spec.ID, ref, nil); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	reg := &capreg.Client{Address: registry}
	man, err := reg.Manifest(ctx, repo, "labels")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := reg.GetBlob(ctx, repo, man.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Config struct{ Labels map[string]string } `json:"config"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	for k, v := range cfg.Config.Labels {
		if strings.HasPrefix(k, "capsule.") && v != "" {
			t.Errorf("snapshot image config carries %s=%q", k, v)
		}
	}
}

// pull makes sure dockerd has ref.
func pull(ctx context.Context, d *docker.Driver, ref string) error {
	if _, err := d.Client().ImageInspect(ctx, ref); err == nil {
		return nil
	}
	rc, err := d.Client().ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}
