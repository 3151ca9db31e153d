package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

func TestResizeClaim(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addClaimsHost(t, st, "h1", 4, 4096, 100)
		small := store.Resources{VCPUs: 1, MemoryMB: 1024, DiskGB: 10}
		if err := st.ClaimOnHost(ctx, "h1", "i1", small, nil); err != nil {
			t.Fatal(err)
		}
		if err := st.ClaimOnHost(ctx, "h1", "i2", store.Resources{VCPUs: 2, MemoryMB: 1024, DiskGB: 10}, nil); err != nil {
			t.Fatal(err)
		}
		// i1 grows to 2 vCPUs: only the difference (1) must be free.
		big := store.Resources{VCPUs: 2, MemoryMB: 2048, DiskGB: 20}
		if err := st.ResizeClaim(ctx, "i1", "h1", big); err != nil {
			t.Fatalf("resize within room: %v", err)
		}
		usage, _ := st.Usage(ctx)
		if got := usage["h1"]; got != (store.Resources{VCPUs: 4, MemoryMB: 3072, DiskGB: 30}) {
			t.Errorf("usage after resize = %+v", got)
		}
		// 3 vCPUs no longer fit next to i2's 2: nothing changes.
		if err := st.ResizeClaim(ctx, "i1", "h1", store.Resources{VCPUs: 3, MemoryMB: 1024, DiskGB: 10}); !errors.Is(err, store.ErrInsufficient) {
			t.Fatalf("resize beyond room: %v, want ErrInsufficient", err)
		}
		usage, _ = st.Usage(ctx)
		if got := usage["h1"]; got != (store.Resources{VCPUs: 4, MemoryMB: 3072, DiskGB: 30}) {
			t.Errorf("usage after refused resize = %+v", got)
		}
		// Revert: back to the old size.
		if err := st.ResizeClaim(ctx, "i1", "h1", small); err != nil {
			t.Fatalf("revert claim: %v", err)
		}
		usage, _ = st.Usage(ctx)
		if got := usage["h1"]; got != (store.Resources{VCPUs: 3, MemoryMB: 2048, DiskGB: 20}) {
			t.Errorf("usage after revert = %+v", got)
		}
		if err := st.ResizeClaim(ctx, "i1", "nope", small); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("resize claim on unknown host: %v, want ErrNotFound", err)
		}
	})
}

// TestResizeClaimConcurrent races resizes of instances already on a host
// with new claims on it: the host is never over-committed.
func TestResizeClaimConcurrent(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addClaimsHost(t, st, "h1", 16, 1<<20, 1000)
		one := store.Resources{VCPUs: 1, MemoryMB: 64, DiskGB: 1}
		for i := range 8 {
			if err := st.ClaimOnHost(ctx, "h1", fmt.Sprintf("r%d", i), one, nil); err != nil {
				t.Fatal(err)
			}
		}
		// 8 vCPUs free: 8 resizes of +1 and 8 new claims of 1 compete.
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(2)
			go func() {
				defer wg.Done()
				err := st.ResizeClaim(ctx, fmt.Sprintf("r%d", i), "h1", store.Resources{VCPUs: 2, MemoryMB: 64, DiskGB: 1})
				if err != nil && !errors.Is(err, store.ErrInsufficient) {
					t.Errorf("resize %d: %v", i, err)
				}
			}()
			go func() {
				defer wg.Done()
				err := st.ClaimOnHost(ctx, "h1", fmt.Sprintf("n%d", i), one, nil)
				if err != nil && !errors.Is(err, store.ErrInsufficient) {
					t.Errorf("claim %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		usage, _ := st.Usage(ctx)
		if u := usage["h1"]; u.VCPUs != 16 {
			t.Errorf("usage %+v: want exactly 16 vCPUs claimed (every free vCPU taken once, none twice)", u)
		}
	})
}
