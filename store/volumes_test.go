package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

func TestVolumeStateMachine(t *testing.T) {
	for _, c := range []struct {
		from, to store.VolumeStatus
		ok       bool
	}{
		{store.VolumeCreating, store.VolumeAvailable, true},
		{store.VolumeAvailable, store.VolumeAttaching, true},
		{store.VolumeAttaching, store.VolumeInUse, true},
		{store.VolumeInUse, store.VolumeDeleting, false}, // Cinder refuses deleting an in-use volume
		{store.VolumeInUse, store.VolumeDetaching, true},
		{store.VolumeDetaching, store.VolumeInUse, true}, // a busy mount refuses the detach
		{store.VolumeCreating, store.VolumeAttaching, false},
		{store.VolumeDeleting, store.VolumeAvailable, false},
	} {
		if got := c.from.CanBecome(c.to); got != c.ok {
			t.Errorf("%s -> %s allowed = %v, want %v", c.from, c.to, got, c.ok)
		}
	}
}

func TestVolumeStatusGuardedAndQuota(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		defaults := map[string]int{store.QuotaVolumes: 2, store.QuotaGigabytes: 10, store.QuotaSnapshots: 1}
		mk := func(id string, gb int) error {
			v := &store.Volume{ID: id, ProjectID: "p1", SizeGB: gb, Status: store.VolumeCreating, CreatedAt: time.Now()}
			return st.CreateVolume(ctx, v, store.VolumeQuotaGuard("p1", map[string]int{store.QuotaVolumes: 1, store.QuotaGigabytes: gb}, defaults))
		}
		if err := mk("v1", 6); err != nil {
			t.Fatal(err)
		}
		if err := mk("v2", 5); !errdefs.IsQuotaExceeded(err) {
			t.Fatalf("11G of 10G: %v, want quota exceeded", err)
		}
		if err := mk("v2", 4); err != nil {
			t.Fatal(err)
		}
		if err := mk("v3", 0); !errdefs.IsQuotaExceeded(err) {
			t.Fatalf("third volume of 2: %v, want quota exceeded", err)
		}
		if err := st.SetVolumeQuotaLimits(ctx, "p1", map[string]int{store.QuotaVolumes: -1, store.QuotaGigabytes: -1}); err != nil {
			t.Fatal(err)
		}
		if err := mk("v3", 100); err != nil {
			t.Fatalf("unlimited: %v", err)
		}
		db := st.WithContext(ctx)
		ok, err := store.ChangeVolumeStatus(db, "v1", []store.VolumeStatus{store.VolumeCreating}, store.VolumeAvailable, nil)
		if err != nil || !ok {
			t.Fatalf("creating -> available: %v %v", ok, err)
		}
		// A second (redelivered) report changes nothing.
		ok, err = store.ChangeVolumeStatus(db, "v1", []store.VolumeStatus{store.VolumeCreating}, store.VolumeError, nil)
		if err != nil || ok {
			t.Fatalf("stale creating -> error applied: %v %v", ok, err)
		}
		if _, err := store.ChangeVolumeStatus(db, "v1", []store.VolumeStatus{store.VolumeInUse}, store.VolumeDeleting, nil); err == nil {
			t.Fatal("in-use -> deleting accepted")
		}
		v, err := store.GetVolume(db, "v1")
		if err != nil || v.Status != store.VolumeAvailable {
			t.Fatalf("v1 = %+v %v", v, err)
		}
		if _, err := store.GetVolume(db, "nope"); !errdefs.IsNotFound(err) {
			t.Fatalf("missing volume: %v", err)
		}
	})
}
