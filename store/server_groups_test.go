package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

func newGroup(id, project, policy string) *store.ServerGroup {
	return &store.ServerGroup{ID: id, Name: "g-" + id, ProjectID: project, UserID: "u1", Policy: policy}
}

// bootMember records an instance and its membership in one transaction,
// as the Compute API does.
func bootMember(st *store.Store, id, group string, limit int) error {
	return st.DB.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&store.Instance{ID: id, Name: id, ProjectID: "p1", VMState: "building"}).Error; err != nil {
			return err
		}
		return store.AddGroupMember(tx, group, id, limit)
	})
}

func TestServerGroupsCRUDAndQuota(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		for _, id := range []string{"g1", "g2"} {
			if err := st.CreateServerGroup(ctx, newGroup(id, "p1", store.PolicyAffinity), 2); err != nil {
				t.Fatalf("create %s: %v", id, err)
			}
		}
		if err := st.CreateServerGroup(ctx, newGroup("g3", "p1", store.PolicyAffinity), 2); !errors.Is(err, store.ErrServerGroupQuota) {
			t.Fatalf("3rd group of a project limited to 2: err %v, want ErrServerGroupQuota", err)
		}
		if err := st.CreateServerGroup(ctx, newGroup("g4", "p2", store.PolicyAntiAffinity), 2); err != nil {
			t.Fatalf("another project's group: %v", err)
		}
		list, err := st.ListServerGroups(ctx, "p1")
		if err != nil || len(list) != 2 || list[0].ID != "g1" || list[1].ID != "g2" {
			t.Fatalf("list p1 = %+v, %v", list, err)
		}
		if all, _ := st.ListServerGroups(ctx, ""); len(all) != 3 {
			t.Errorf("list all = %d groups, want 3", len(all))
		}
		g, err := st.GetServerGroup(ctx, "g4")
		if err != nil || g.Policy != store.PolicyAntiAffinity || g.ProjectID != "p2" {
			t.Fatalf("get g4 = %+v, %v", g, err)
		}
		if err := bootMember(st, "i1", "g1", -1); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteServerGroup(ctx, "g1"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetServerGroup(ctx, "g1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get deleted group: %v", err)
		}
		if err := st.DeleteServerGroup(ctx, "g1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("delete twice: %v", err)
		}
		if g, err := st.GroupOf(ctx, "i1"); err != nil || g != nil {
			t.Errorf("group of i1 after its group went: %+v, %v", g, err)
		}
	})
}

func TestServerGroupMembership(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		if err := st.CreateServerGroup(ctx, newGroup("g", "p1", store.PolicyAntiAffinity), -1); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"a", "b"} {
			if err := bootMember(st, id, "g", 2); err != nil {
				t.Fatalf("boot %s: %v", id, err)
			}
		}
		// Over the member quota: neither the membership nor the instance
		// row (same transaction) stays.
		if err := bootMember(st, "c", "g", 2); !errors.Is(err, store.ErrGroupMemberQuota) {
			t.Fatalf("3rd member of 2: %v", err)
		}
		var n int64
		st.DB.Model(&store.Instance{}).Where("id = ?", "c").Count(&n)
		if n != 0 {
			t.Errorf("instance c recorded although its join failed")
		}
		if err := bootMember(st, "d", "gone", -1); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("join a missing group: %v, want ErrNotFound", err)
		}
		// An instance is in one group at most.
		if err := st.CreateServerGroup(ctx, newGroup("g2", "p1", store.PolicyAffinity), -1); err != nil {
			t.Fatal(err)
		}
		if err := store.AddGroupMember(st.DB, "g2", "a", -1); err == nil {
			t.Errorf("a joined a second group")
		}
		m, err := st.GroupMembers(ctx, []string{"g", "g2"})
		if err != nil || !slices.Equal(m["g"], []string{"a", "b"}) || len(m["g2"]) != 0 {
			t.Fatalf("members = %v, %v", m, err)
		}
		if g, err := st.GroupOf(ctx, "b"); err != nil || g == nil || g.ID != "g" {
			t.Fatalf("group of b = %+v, %v", g, err)
		}

		// Member hosts count claims and recorded hosts, never the asking
		// instance itself.
		addComputeHost(t, st, "h1")
		addComputeHost(t, st, "h2")
		if err := st.ClaimOnHost(ctx, "h1", "a", store.Resources{VCPUs: 1, MemoryMB: 64, DiskGB: 1}, nil); err != nil {
			t.Fatal(err)
		}
		st.DB.Model(&store.Instance{}).Where("id = ?", "b").Update("host", "h2")
		hosts, err := store.MemberHosts(st.DB, "g", "b")
		if err != nil || fmt.Sprint(hosts) != "map[h1:1]" {
			t.Errorf("hosts of b's siblings = %v, %v; want map[h1:1]", hosts, err)
		}

		// Deleting a server takes it out of its group.
		if err := instance.MarkDeleted(ctx, st, "a", time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		m, _ = st.GroupMembers(ctx, []string{"g"})
		if !slices.Equal(m["g"], []string{"b"}) {
			t.Errorf("members after deleting a = %v, want [b]", m["g"])
		}
		if err := bootMember(st, "e", "g", 2); err != nil {
			t.Errorf("the freed member slot: %v", err)
		}
	})
}

func addComputeHost(t *testing.T, st *store.Store, host string) {
	t.Helper()
	now := time.Now().UTC()
	if err := st.DB.Create(&store.Service{UUID: "svc-" + host, Host: host, Binary: store.ComputeBinary, LastHeartbeat: &now,
		VCPUs: 8, MemoryMB: 8192, DiskGB: 80, CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}).Error; err != nil {
		t.Fatal(err)
	}
}

// TestGroupClaimGuardConcurrent claims one host for 10 members of an
// anti-affinity group at once, with the guard: exactly as many win as
// the group's max_server_per_host (1 by default) allows.
func TestGroupClaimGuardConcurrent(t *testing.T) {
	for _, perHost := range []int{0, 3} {
		t.Run(fmt.Sprintf("max_server_per_host=%d", perHost), func(t *testing.T) {
			storetest.ForEach(t, func(t *testing.T, st *store.Store) {
				ctx := context.Background()
				addComputeHost(t, st, "h1")
				g := newGroup("g", "p1", store.PolicyAntiAffinity)
				g.MaxServerPerHost = perHost
				if err := st.CreateServerGroup(ctx, g, -1); err != nil {
					t.Fatal(err)
				}
				const n = 10
				for i := range n {
					if err := bootMember(st, fmt.Sprintf("m%d", i), "g", -1); err != nil {
						t.Fatal(err)
					}
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				won, refused := 0, 0
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						id := fmt.Sprintf("m%d", i)
						err := st.ClaimOnHostIf(ctx, "h1", id, store.Resources{VCPUs: 1, MemoryMB: 64, DiskGB: 1}, nil,
							store.GroupClaimGuard(g, id))
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							won++
						case errors.Is(err, store.ErrGroupPolicy):
							refused++
						default:
							t.Errorf("claim %s: %v", id, err)
						}
					}()
				}
				wg.Wait()
				want := max(1, perHost)
				if won != want || refused != n-want {
					t.Errorf("%d claims won, %d refused; want %d and %d", won, refused, want, n-want)
				}
			})
		})
	}
}

// TestMigration10FromVersion9 takes a database back to schema 9 (no
// group tables, no scheduler_hints column) and migrates it again: the
// step must add them to a database created by an older binary.
func TestMigration10FromVersion9(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		m := st.DB.Migrator()
		for _, tbl := range []any{&store.ServerGroupMember{}, &store.ServerGroup{}} {
			if err := m.DropTable(tbl); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.DropColumn(&store.Instance{}, "SchedulerHints"); err != nil {
			t.Fatal(err)
		}
		if err := st.DB.Where("version >= ?", 10).Delete(&store.SchemaMigration{}).Error; err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("migrate 9 -> %d: %v", store.SchemaVersion(), err)
		}
		if !m.HasColumn(&store.Instance{}, "SchedulerHints") || !m.HasTable(&store.ServerGroup{}) ||
			!m.HasTable(&store.ServerGroupMember{}) {
			t.Fatalf("schema 10 not applied")
		}
		if err := st.CreateServerGroup(ctx, newGroup("g", "p1", store.PolicyAffinity), -1); err != nil {
			t.Fatal(err)
		}
		if err := bootMember(st, "i", "g", -1); err != nil {
			t.Fatal(err)
		}
	})
}

// TestServerGroupQuotasUnderConcurrency: 40 concurrent group creates on a
// quota of 10 make exactly 10 groups, and 40 concurrent joins of one group
// on a member quota of 10 make exactly 10 members.
func TestServerGroupQuotasUnderConcurrency(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		race := func(n int, f func(i int) error) (ok, over int) {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := f(i)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						ok++
					case errors.Is(err, store.ErrServerGroupQuota), errors.Is(err, store.ErrGroupMemberQuota):
						over++
					default:
						t.Errorf("unexpected: %v", err)
					}
				}()
			}
			wg.Wait()
			return ok, over
		}
		ok, over := race(40, func(i int) error {
			return st.CreateServerGroup(ctx, newGroup(fmt.Sprintf("g%d", i), "p1", store.PolicyAffinity), 10)
		})
		if ok != 10 || over != 30 {
			t.Errorf("40 group creates on a quota of 10: %d made, %d refused", ok, over)
		}
		if err := st.CreateServerGroup(ctx, newGroup("members", "p2", store.PolicyAffinity), -1); err != nil {
			t.Fatal(err)
		}
		ok, over = race(40, func(i int) error { return bootMember(st, fmt.Sprintf("m%d", i), "members", 10) })
		if ok != 10 || over != 30 {
			t.Errorf("40 joins on a member quota of 10: %d joined, %d refused", ok, over)
		}
	})
}
