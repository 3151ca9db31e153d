package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/store"
)

// addGroup stores a server group of policy.
func addGroup(t *testing.T, st *store.Store, id, policy string) *store.ServerGroup {
	t.Helper()
	g := &store.ServerGroup{ID: id, Name: id, ProjectID: "p1", UserID: "u1", Policy: policy}
	if err := st.CreateServerGroup(context.Background(), g, -1); err != nil {
		t.Fatal(err)
	}
	return g
}

// addMember stores a building instance in group (when not "") with hints.
func addMember(t *testing.T, st *store.Store, id, group string, hints store.SchedulerHints) {
	t.Helper()
	h, _ := json.Marshal(hints)
	inst := store.Instance{ID: id, Name: id, ProjectID: "p1", UserID: "u1", VCPUs: 1, MemoryMB: 512, RootGB: 5,
		VMState: "building", TaskState: "scheduling", SchedulerHints: string(h)}
	if err := st.DB.Create(&inst).Error; err != nil {
		t.Fatal(err)
	}
	if group != "" {
		if err := store.AddGroupMember(st.DB, group, id, -1); err != nil {
			t.Fatal(err)
		}
	}
}

// place records instance id on host, as the scheduler's place does.
func place(t *testing.T, st *store.Store, id, host string) {
	t.Helper()
	if err := st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("host", host).Error; err != nil {
		t.Fatal(err)
	}
}

func TestGroupFilters(t *testing.T) {
	h := func(name string) HostState { return HostState{Host: name} }
	members := map[string]int{"h1": 2}
	members2 := map[string]int{"h1": 2, "h2": 1}
	cases := []struct {
		name string
		f    Filter
		p    Placement
		pass []string
	}{
		{"affinity with members", ServerGroup{}, Placement{Group: &store.ServerGroup{Policy: store.PolicyAffinity}, MemberHosts: members}, []string{"h1"}},
		{"affinity first member", ServerGroup{}, Placement{Group: &store.ServerGroup{Policy: store.PolicyAffinity}}, []string{"h1", "h2", "h3"}},
		{"anti-affinity", ServerGroup{}, Placement{Group: &store.ServerGroup{Policy: store.PolicyAntiAffinity}, MemberHosts: members}, []string{"h2", "h3"}},
		{"anti-affinity, 2 per host", ServerGroup{}, Placement{Group: &store.ServerGroup{Policy: store.PolicyAntiAffinity, MaxServerPerHost: 2}, MemberHosts: members2}, []string{"h2", "h3"}},
		{"anti-affinity, 3 per host", ServerGroup{}, Placement{Group: &store.ServerGroup{Policy: store.PolicyAntiAffinity, MaxServerPerHost: 3}, MemberHosts: members2}, []string{"h1", "h2", "h3"}},
		{"soft policies do not filter", ServerGroup{}, Placement{Group: &store.ServerGroup{Policy: store.PolicySoftAntiAffinity}, MemberHosts: members}, []string{"h1", "h2", "h3"}},
		{"no group", ServerGroup{}, Placement{}, []string{"h1", "h2", "h3"}},
		{"same_host", SameHost{}, Placement{SameHost: []string{"h2"}, HasSameHost: true}, []string{"h2"}},
		{"same_host on no host", SameHost{}, Placement{HasSameHost: true}, nil},
		{"no same_host", SameHost{}, Placement{}, []string{"h1", "h2", "h3"}},
		{"different_host", DifferentHost{}, Placement{DifferentHost: []string{"h1", "h3"}}, []string{"h2"}},
	}
	for _, c := range cases {
		var got []string
		for _, name := range []string{"h1", "h2", "h3"} {
			if c.f.Pass(h(name), Request{Placement: c.p}) {
				got = append(got, name)
			}
		}
		if !slices.Equal(got, c.pass) {
			t.Errorf("%s: %s passes %v, want %v", c.name, c.f.Name(), got, c.pass)
		}
	}
}

func TestGroupWeigherSoftPolicies(t *testing.T) {
	hosts := func() []HostState {
		// Spread alone would order h3 (most RAM) first.
		return []HostState{
			{Host: "h1", Capacity: store.Resources{MemoryMB: 4096}},
			{Host: "h2", Capacity: store.Resources{MemoryMB: 4096}},
			{Host: "h3", Capacity: store.Resources{MemoryMB: 8192}},
		}
	}
	members := map[string]int{"h1": 2, "h3": 1}
	order := func(policy string) []string {
		hs := hosts()
		req := Request{Placement: Placement{Group: &store.ServerGroup{Policy: policy}, MemberHosts: members}}
		weigh(weigherFor(Spread{}, req), hs)
		var out []string
		for _, h := range hs {
			out = append(out, h.Host)
		}
		return out
	}
	if got := order(store.PolicySoftAffinity); !slices.Equal(got, []string{"h1", "h3", "h2"}) {
		t.Errorf("soft-affinity order %v, want h1 (2 members), h3 (1), h2", got)
	}
	if got := order(store.PolicySoftAntiAffinity); !slices.Equal(got, []string{"h2", "h3", "h1"}) {
		t.Errorf("soft-anti-affinity order %v, want h2 (none), h3 (1), h1 (2)", got)
	}
	if got := order(store.PolicyAntiAffinity); !slices.Equal(got, []string{"h3", "h1", "h2"}) {
		t.Errorf("hard policy order %v, want spread's h3, h1, h2", got)
	}
}

func TestSelectServerGroupPolicies(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		for _, h := range []string{"h1", "h2", "h3"} {
			addHost(t, st, h)
		}
		s := newTestScheduler(st, nil, "spread")
		addGroup(t, st, "anti", store.PolicyAntiAffinity)
		addGroup(t, st, "aff", store.PolicyAffinity)
		addGroup(t, st, "soft", store.PolicySoftAffinity)

		seen := map[string]bool{}
		for i := range 3 {
			id := fmt.Sprintf("anti-%d", i)
			addMember(t, st, id, "anti", store.SchedulerHints{Group: "anti"})
			host, err := s.Select(ctx, small(id))
			if err != nil || seen[host] {
				t.Fatalf("anti-affinity member %d: host %q err %v, hosts taken %v", i, host, err, seen)
			}
			seen[host] = true
		}
		addMember(t, st, "anti-3", "anti", store.SchedulerHints{Group: "anti"})
		if _, err := s.Select(ctx, small("anti-3")); !IsNoValidHost(err) {
			t.Fatalf("4th anti-affinity member on 3 hosts: err %v, want NoValidHost", err)
		}

		// Spread would move on to the emptier hosts; affinity keeps the
		// group together, the soft variant too while there is room.
		for _, g := range []string{"aff", "soft"} {
			first := ""
			for i := range 3 {
				id := fmt.Sprintf("%s-%d", g, i)
				addMember(t, st, id, g, store.SchedulerHints{Group: g})
				host, err := s.Select(ctx, small(id))
				if err != nil {
					t.Fatalf("%s member %d: %v", g, i, err)
				}
				if first == "" {
					first = host
				}
				if host != first {
					t.Errorf("%s member %d on %s, want %s with the others", g, i, host, first)
				}
			}
		}
	})
}

func TestSelectSameAndDifferentHost(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2", "h3"} {
		addHost(t, st, h)
	}
	s := newTestScheduler(st, nil, "spread")
	addMember(t, st, "a", "", store.SchedulerHints{})
	addMember(t, st, "b", "", store.SchedulerHints{})
	place(t, st, "a", "h2")
	place(t, st, "b", "h3")

	addMember(t, st, "same", "", store.SchedulerHints{SameHost: []string{"a"}})
	if host, err := s.Select(ctx, small("same")); err != nil || host != "h2" {
		t.Errorf("same_host a: host %q err %v, want h2", host, err)
	}
	addMember(t, st, "diff", "", store.SchedulerHints{DifferentHost: []string{"a", "b"}})
	if host, err := s.Select(ctx, small("diff")); err != nil || host != "h1" {
		t.Errorf("different_host a,b: host %q err %v, want h1", host, err)
	}
	addMember(t, st, "nowhere", "", store.SchedulerHints{SameHost: []string{"00000000-0000-0000-0000-000000000000"}})
	if _, err := s.Select(ctx, small("nowhere")); !IsNoValidHost(err) {
		t.Errorf("same_host of a server on no host: err %v, want NoValidHost", err)
	}
}

// TestSelectGroupGuardUnderClaimLock takes the ServerGroup filter out, so
// only the check made under the claim's lock stands between a second
// anti-affinity member and its sibling's host.
func TestSelectGroupGuardUnderClaimLock(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	addHost(t, st, "h1")
	addHost(t, st, "h2", capacity(2, 2048, 20)) // spread prefers h1
	s := newTestScheduler(st, nil, "spread")
	s.filters = slices.DeleteFunc(s.filters, func(f Filter) bool { return f.Name() == "ServerGroup" })
	addGroup(t, st, "g", store.PolicyAntiAffinity)
	addMember(t, st, "m1", "g", store.SchedulerHints{Group: "g"})
	addMember(t, st, "m2", "g", store.SchedulerHints{Group: "g"})
	h1, err := s.Select(ctx, small("m1"))
	if err != nil || h1 != "h1" {
		t.Fatalf("m1: host %q err %v, want h1", h1, err)
	}
	h2, err := s.Select(ctx, small("m2"))
	if err != nil || h2 != "h2" {
		t.Fatalf("m2: host %q err %v, want h2: the guard must refuse h1", h2, err)
	}
}

// TestSelectConcurrentGroupMembers boots the members of an anti-affinity
// and of an affinity group all at once: every selection sees the same
// snapshot (no member anywhere), so only the group lock taken in the
// claim keeps anti-affinity members apart and affinity ones together.
func TestSelectConcurrentGroupMembers(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		for _, h := range []string{"h1", "h2", "h3"} {
			addHost(t, st, h, capacity(16, 16384, 400))
		}
		s := newTestScheduler(st, nil, "spread")
		addGroup(t, st, "anti", store.PolicyAntiAffinity)
		addGroup(t, st, "aff", store.PolicyAffinity)
		const n = 8
		var ids []string
		for i := range n {
			for _, g := range []string{"anti", "aff"} {
				id := fmt.Sprintf("%s-%d", g, i)
				addMember(t, st, id, g, store.SchedulerHints{Group: g})
				ids = append(ids, id)
			}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		hosts := map[string][]string{} // group -> hosts of its placed members
		failed := map[string]int{}
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				host, err := s.Select(ctx, small(id))
				g := id[:len(id)-2]
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					hosts[g] = append(hosts[g], host)
				case IsNoValidHost(err):
					failed[g]++
				default:
					t.Errorf("select %s: %v", id, err)
				}
			}()
		}
		wg.Wait()
		anti := slices.Clone(hosts["anti"])
		slices.Sort(anti)
		if !slices.Equal(anti, []string{"h1", "h2", "h3"}) || failed["anti"] != n-3 {
			t.Errorf("anti-affinity members on %v (%d without a host), want one on each of h1,h2,h3 and %d refused",
				hosts["anti"], failed["anti"], n-3)
		}
		aff := slices.Compact(slices.Sorted(slices.Values(hosts["aff"])))
		if len(hosts["aff"]) != n || len(aff) != 1 {
			t.Errorf("affinity members on %v (%d refused), want all %d on one host", hosts["aff"], failed["aff"], n)
		}
	})
}

// TestSelectMigrationHonoursGroup moves a member of an anti-affinity
// group off its host: the target must not be a sibling's host.
func TestSelectMigrationHonoursGroup(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2", "h3"} {
		addHost(t, st, h, capacity(4, 8192, 40))
	}
	addHost(t, st, "h0", capacity(4, 4096, 40)) // less room: never spread's first pick
	s := newTestScheduler(st, nil, "spread")
	addGroup(t, st, "g", store.PolicyAntiAffinity)
	for i, h := range []string{"h1", "h2", "h3"} {
		id := fmt.Sprintf("m%d", i+1)
		addMember(t, st, id, "g", store.SchedulerHints{Group: "g"})
		if got, err := s.Select(ctx, Request{InstanceID: id, Resources: small(id).Resources, ForceHost: h}); err != nil || got != h {
			t.Fatalf("boot %s on %s: %q %v", id, h, got, err)
		}
		place(t, st, id, h)
	}
	mid := uint(7)
	target, err := s.Select(ctx, Request{InstanceID: "m1", Resources: small("m1").Resources, Excluded: []string{"h1"},
		MigrationID: &mid})
	if err != nil || target != "h0" {
		t.Fatalf("migrate m1 off h1: target %q err %v, want h0 (h2, h3 hold its siblings)", target, err)
	}
	if err := instance.ReleaseClaims(st.WithContext(ctx), "m1", "h0"); err != nil {
		t.Fatal(err)
	}
	st.DB.Where("host = ?", "h0").Delete(&store.Service{})
	if _, err := s.Select(ctx, Request{InstanceID: "m1", Resources: small("m1").Resources, Excluded: []string{"h1"},
		MigrationID: &mid}); !IsNoValidHost(err) {
		t.Fatalf("migrate m1 with only siblings' hosts left: err %v, want NoValidHost", err)
	}
}

// same_host / different_host name only servers of the instance's own
// project: another project's server counts as unknown (same_host finds no
// host, different_host excludes none), unless an admin gave the hints.
func TestSelectHintsSeeOnlyTheProjectsServers(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2"} {
		addHost(t, st, h)
	}
	s := newTestScheduler(st, nil, "spread")
	addMember(t, st, "victim", "", store.SchedulerHints{})
	if err := st.DB.Model(&store.Instance{}).Where("id = ?", "victim").Update("project_id", "p2").Error; err != nil {
		t.Fatal(err)
	}
	place(t, st, "victim", "h2")

	addMember(t, st, "probe-same", "", store.SchedulerHints{SameHost: []string{"victim"}})
	if host, err := s.Select(ctx, small("probe-same")); !IsNoValidHost(err) {
		t.Errorf("same_host of another project's server: host %q err %v, want NoValidHost", host, err)
	}
	addMember(t, st, "probe-diff", "", store.SchedulerHints{DifferentHost: []string{"victim"}})
	req := small("probe-diff")
	if err := s.resolve(ctx, &req); err != nil || len(req.Placement.DifferentHost) != 0 {
		p := req.Placement
		t.Errorf("different_host of another project's server: excluded %v (err %v), want none", p.DifferentHost, err)
	}
	addMember(t, st, "admin-same", "", store.SchedulerHints{SameHost: []string{"victim"}, AnyProject: true})
	if host, err := s.Select(ctx, small("admin-same")); err != nil || host != "h2" {
		t.Errorf("an admin's same_host of another project's server: host %q err %v, want h2", host, err)
	}
}
