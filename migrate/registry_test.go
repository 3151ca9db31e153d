package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// copyBase tags the registry's base image as MigrationRepo:tag without
// moving any data (blobs mounted across repositories), as an export's
// push leaves it.
func copyBase(t *testing.T, reg *registry.Client, tag string) {
	t.Helper()
	ctx := context.Background()
	const base = "capsule/busybox"
	man, mediaType, err := reg.RawManifest(ctx, base, "latest")
	if err != nil {
		t.Fatalf("base manifest: %v", err)
	}
	var m registry.Manifest
	if err := json.Unmarshal(man, &m); err != nil {
		t.Fatal(err)
	}
	for _, blob := range append([]registry.Descriptor{m.Config}, m.Layers...) {
		if err := reg.MountBlob(ctx, registry.MigrationRepo, base, blob.Digest); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.PutManifest(ctx, registry.MigrationRepo, tag, mediaType, man); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteTagInRealRegistry: a settled migration's image is deleted
// from the real registry through the client the conductor uses, the
// migration is then done; the digest need not be known.
func TestDeleteTagInRealRegistry(t *testing.T) {
	addr := testenv.Registry(t)
	ctx := context.Background()
	st := storetest.SQLite(t)
	reg := &registry.Client{Address: addr}
	e := New(Options{Store: st, Registry: reg, RegistryAddress: addr, Log: nil})
	id := uuid.NewString()
	copyBase(t, reg, id)
	m := store.Migration{UUID: id, InstanceID: "i1", Step: string(StepDeleteTag), Status: lifecycle.MigrationConfirmed,
		SnapshotRef: e.Ref(&store.Migration{UUID: id})}
	if err := st.DB.Create(&m).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Resolve(ctx, registry.MigrationRepo, id); err != nil {
		t.Fatalf("pushed tag not there: %v", err)
	}
	e.Periodic(ctx)
	if _, err := reg.Resolve(ctx, registry.MigrationRepo, id); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("tag after the migration's tag step: %v, want ErrNotFound", err)
	}
	var got store.Migration
	st.DB.First(&got, m.ID)
	if got.Step != string(StepDone) {
		t.Errorf("step %s, want done", got.Step)
	}
	// The base image is untouched.
	if _, err := reg.Resolve(ctx, "capsule/busybox", "latest"); err != nil {
		t.Errorf("base image: %v", err)
	}
}
