package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

func addClaimsHost(t *testing.T, st *store.Store, host string, vcpus, memMB, diskGB int) {
	t.Helper()
	now := time.Now().UTC()
	svc := store.Service{UUID: "svc-" + host, Host: host, Binary: store.ComputeBinary, Zone: "nova",
		LastHeartbeat: &now, VCPUs: vcpus, MemoryMB: memMB, DiskGB: diskGB,
		CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}
	if err := st.DB.Create(&svc).Error; err != nil {
		t.Fatalf("add host %s: %v", host, err)
	}
}

func TestCapacityAppliesRatiosAndReservation(t *testing.T) {
	got := store.Capacity(&store.Service{VCPUs: 4, MemoryMB: 8192, DiskGB: 100, CPUAllocationRatio: 4,
		RAMAllocationRatio: 1.5, DiskAllocationRatio: 0, ReservedMemoryMB: 512})
	want := store.Resources{VCPUs: 16, MemoryMB: int(7680 * 1.5), DiskGB: 100}
	if got != want {
		t.Errorf("Capacity = %+v, want %+v", got, want)
	}
}

func TestFits(t *testing.T) {
	capa := store.Resources{VCPUs: 4, MemoryMB: 1024, DiskGB: 10}
	if !store.Fits(capa, store.Resources{VCPUs: 2, MemoryMB: 512, DiskGB: 5}, store.Resources{VCPUs: 2, MemoryMB: 512, DiskGB: 5}) {
		t.Error("exactly full should fit")
	}
	for _, want := range []store.Resources{{VCPUs: 5}, {MemoryMB: 1025}, {DiskGB: 11}} {
		if store.Fits(capa, store.Resources{}, want) {
			t.Errorf("%+v should not fit %+v", want, capa)
		}
	}
}

func TestClaimOnHost(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addClaimsHost(t, st, "h1", 2, 1024, 10)
		want := store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}
		if err := st.ClaimOnHost(ctx, "h1", "i1", want, nil); err != nil {
			t.Fatalf("first claim: %v", err)
		}
		// A repeated claim for the same instance is a no-op.
		if err := st.ClaimOnHost(ctx, "h1", "i1", want, nil); err != nil {
			t.Fatalf("repeated claim: %v", err)
		}
		if err := st.ClaimOnHost(ctx, "h1", "i2", want, nil); err != nil {
			t.Fatalf("second claim: %v", err)
		}
		if err := st.ClaimOnHost(ctx, "h1", "i3", want, nil); !errors.Is(err, store.ErrInsufficient) {
			t.Fatalf("claim on a full host: err = %v, want ErrInsufficient", err)
		}
		if err := st.ClaimOnHost(ctx, "nope", "i3", want, nil); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("claim on unknown host: err = %v, want ErrNotFound", err)
		}
		usage, err := st.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := usage["h1"]; got != (store.Resources{VCPUs: 2, MemoryMB: 1024, DiskGB: 10}) {
			t.Errorf("usage = %+v", got)
		}
		if err := instance.ReleaseClaims(st.WithContext(ctx), "i1", "h1"); err != nil {
			t.Fatal(err)
		}
		if err := st.ClaimOnHost(ctx, "h1", "i3", want, nil); err != nil {
			t.Fatalf("claim after release: %v", err)
		}
		if err := instance.ReleaseClaims(st.WithContext(ctx), "i2", ""); err != nil {
			t.Fatal(err)
		}
		usage, _ = st.Usage(ctx)
		if got := usage["h1"]; got != want {
			t.Errorf("usage after releases = %+v, want %+v", got, want)
		}
	})
}

// TestClaimOnHostConcurrent hammers one host: the claims that succeed
// must never exceed its capacity.
func TestClaimOnHostConcurrent(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addClaimsHost(t, st, "h1", 8, 4096, 100)
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := st.ClaimOnHost(ctx, "h1", fmt.Sprintf("i%d", i), store.Resources{VCPUs: 1, MemoryMB: 256, DiskGB: 1}, nil)
				if err != nil && !errors.Is(err, store.ErrInsufficient) {
					t.Errorf("claim %d: %v", i, err)
					return
				}
				if err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if ok != 8 {
			t.Errorf("%d claims succeeded, want exactly 8 (vCPU bound)", ok)
		}
		usage, _ := st.Usage(ctx)
		if u := usage["h1"]; u.VCPUs > 8 || u.MemoryMB > 4096 {
			t.Errorf("over-committed: %+v", u)
		}
	})
}
