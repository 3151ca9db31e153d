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

// addDedicatedHost registers a host with vcpus shared and pcpus dedicated
// CPUs (ratio 1), 8 GB and 100 GB.
func addDedicatedHost(t *testing.T, st *store.Store, host string, vcpus, pcpus int) {
	t.Helper()
	addClaimsHost(t, st, host, vcpus, 8192, 100)
	if err := st.DB.Model(&store.Service{}).Where("host = ?", host).Update("pcpus", pcpus).Error; err != nil {
		t.Fatal(err)
	}
}

// addPolicyInstance stores an instance whose extra specs ask for policy.
func addPolicyInstance(t *testing.T, st *store.Store, id, policy string) {
	t.Helper()
	inst := store.Instance{ID: id, Name: id, ProjectID: "p1", UserID: "u1", VCPUs: 1, MemoryMB: 64, RootGB: 1,
		ExtraSpecs: fmt.Sprintf(`{"hw:cpu_policy":%q}`, policy)}
	if err := st.DB.Create(&inst).Error; err != nil {
		t.Fatal(err)
	}
}

func TestIsDedicated(t *testing.T) {
	for specs, want := range map[string]bool{
		`{"hw:cpu_policy":"dedicated"}`: true, `{"hw:cpu_policy": "dedicated", "quota:cpu_shares": "10"}`: true,
		`{"hw:cpu_policy":"shared"}`: false, `{}`: false, ``: false, `not json`: false,
	} {
		if got := store.IsDedicated(specs); got != want {
			t.Errorf("IsDedicated(%s) = %v, want %v", specs, got, want)
		}
	}
}

// TestFitsCPUClasses: PCPUs are never overcommitted, and a CPU class a
// request does not ask for is not checked.
func TestFitsCPUClasses(t *testing.T) {
	capa := store.Capacity(&store.Service{VCPUs: 2, PCPUs: 2, MemoryMB: 4096, DiskGB: 40, CPUAllocationRatio: 4})
	if capa.VCPUs != 8 || capa.PCPUs != 2 {
		t.Fatalf("capacity %+v, want 8 shared vCPUs (ratio 4) and 2 PCPUs (no ratio)", capa)
	}
	ded := store.Resources{VCPUs: 1, MemoryMB: 64, DiskGB: 1}.AsDedicated()
	if ded.VCPUs != 0 || ded.PCPUs != 1 {
		t.Fatalf("AsDedicated = %+v", ded)
	}
	if !store.Fits(capa, store.Resources{PCPUs: 1}, ded) || store.Fits(capa, store.Resources{PCPUs: 2}, ded) {
		t.Error("dedicated demand not bounded by the PCPUs")
	}
	if !store.Fits(capa, store.Resources{VCPUs: 9}, ded) {
		t.Error("dedicated demand refused because shared vCPUs are overcommitted")
	}
	if !store.Fits(capa, store.Resources{PCPUs: 3}, store.Resources{VCPUs: 1}) {
		t.Error("shared demand refused because the dedicated CPUs are overcommitted")
	}
}

// TestDedicatedClaims: an instance whose extra specs ask for
// hw:cpu_policy=dedicated claims PCPUs (sized from its flavor's vCPUs by
// callers that know nothing of the policy), which do not count against
// the shared vCPUs; a host without PCPUs refuses it.
func TestDedicatedClaims(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addDedicatedHost(t, st, "h1", 1, 2)
		addDedicatedHost(t, st, "h0", 4, 0)
		addPolicyInstance(t, st, "d1", "dedicated")
		addPolicyInstance(t, st, "d2", "dedicated")
		addPolicyInstance(t, st, "s1", "shared")
		flavor := store.Resources{VCPUs: 1, MemoryMB: 64, DiskGB: 1}
		if err := st.ClaimOnHost(ctx, "h0", "d1", flavor, nil); !errors.Is(err, store.ErrInsufficient) {
			t.Fatalf("dedicated claim on a host without PCPUs: %v, want ErrInsufficient", err)
		}
		if err := st.ClaimOnHost(ctx, "h1", "d1", flavor, nil); err != nil {
			t.Fatalf("dedicated claim: %v", err)
		}
		if err := st.ClaimOnHost(ctx, "h1", "s1", flavor, nil); err != nil {
			t.Fatalf("shared claim beside a dedicated one: %v", err)
		}
		usage, err := st.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := usage["h1"], (store.Resources{VCPUs: 1, PCPUs: 1, MemoryMB: 128, DiskGB: 2}); got != want {
			t.Errorf("usage = %+v, want %+v", got, want)
		}
		var c store.Claim
		if err := st.DB.Where("instance_id = ?", "d1").First(&c).Error; err != nil || !c.Dedicated || c.VCPUs != 1 {
			t.Errorf("claim of d1 = %+v, %v; want 1 dedicated vCPU", c, err)
		}

		// A live resize keeps the class: d1 grows to 2 PCPUs, then d2
		// finds none left.
		if err := st.ResizeClaim(ctx, "d1", "h1", store.Resources{VCPUs: 2, MemoryMB: 64, DiskGB: 1}); err != nil {
			t.Fatalf("resize dedicated claim to 2: %v", err)
		}
		if err := st.ClaimOnHost(ctx, "h1", "d2", flavor, nil); !errors.Is(err, store.ErrInsufficient) {
			t.Fatalf("dedicated claim with every PCPU taken: %v, want ErrInsufficient", err)
		}
		if err := st.ResizeClaim(ctx, "d1", "h1", store.Resources{VCPUs: 3, MemoryMB: 64, DiskGB: 1}); !errors.Is(err, store.ErrInsufficient) {
			t.Fatalf("resize dedicated claim beyond the PCPUs: %v, want ErrInsufficient", err)
		}
		usage, _ = st.Usage(ctx)
		if got := usage["h1"]; got.PCPUs != 2 || got.VCPUs != 1 {
			t.Errorf("usage after resize = %+v, want 2 PCPUs and 1 shared vCPU", got)
		}
	})
}

// TestDedicatedClaimsConcurrent: 10 concurrent dedicated claims on a host
// with 2 PCPUs (and plenty of shared vCPUs): exactly 2 succeed.
func TestDedicatedClaimsConcurrent(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addDedicatedHost(t, st, "h1", 16, 2)
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				want := store.Resources{VCPUs: 1, MemoryMB: 64, DiskGB: 1}.AsDedicated()
				err := st.ClaimOnHost(ctx, "h1", fmt.Sprintf("d%d", i), want, nil)
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
		if ok != 2 {
			t.Errorf("%d dedicated claims succeeded, want exactly 2 (PCPU bound)", ok)
		}
		usage, _ := st.Usage(ctx)
		if u := usage["h1"]; u.PCPUs != 2 || u.VCPUs != 0 {
			t.Errorf("usage = %+v, want 2 PCPUs and no shared vCPU", u)
		}
	})
}

// TestMigration7AddsCPUColumns: a database migrated before migration 7
// gets services.pcpus and claims.dedicated, and its rows read as shared.
func TestMigration7AddsCPUColumns(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addClaimsHost(t, st, "h1", 2, 1024, 10)
		if err := st.ClaimOnHost(ctx, "h1", "i1", store.Resources{VCPUs: 1, MemoryMB: 64, DiskGB: 1}, nil); err != nil {
			t.Fatal(err)
		}
		m := st.DB.Migrator()
		if err := m.DropColumn(&store.Service{}, "PCPUs"); err != nil {
			t.Fatal(err)
		}
		if err := m.DropColumn(&store.Claim{}, "Dedicated"); err != nil {
			t.Fatal(err)
		}
		if err := st.DB.Exec("DELETE FROM schema_migrations WHERE version >= 7").Error; err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		if !m.HasColumn(&store.Service{}, "PCPUs") || !m.HasColumn(&store.Claim{}, "Dedicated") {
			t.Fatal("migration 7 did not add the columns")
		}
		var svc store.Service
		if err := st.DB.Where("host = ?", "h1").First(&svc).Error; err != nil || svc.PCPUs != 0 {
			t.Errorf("old host row: %+v, %v; want 0 PCPUs", svc, err)
		}
		usage, err := st.Usage(ctx)
		if err != nil || usage["h1"].VCPUs != 1 || usage["h1"].PCPUs != 0 {
			t.Errorf("old claim usage: %+v, %v; want 1 shared vCPU", usage["h1"], err)
		}
	})
}
