package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

func small(id string) Request {
	return Request{InstanceID: id, Resources: store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}}
}

func TestSelectSpreadsAndClaims(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	addHost(t, st, "h1")
	addHost(t, st, "h2", capacity(8, 8192, 80))
	addHost(t, st, "h3")
	s := newTestScheduler(st, nil, "spread")

	got := map[string]int{}
	for i := range 6 {
		host, err := s.Select(ctx, small(fmt.Sprintf("i%d", i)))
		if err != nil {
			t.Fatalf("select %d: %v", i, err)
		}
		got[host]++
	}
	// h2 starts with 8 GB free against 4 GB: after k placements it still
	// has 8192-512k >= 4096 MB free for k <= 8, so all six land on it.
	if got["h2"] != 6 {
		t.Errorf("spread placements = %v, want all on the roomiest host h2", got)
	}
	used, err := st.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if u := used["h2"]; u != (store.Resources{VCPUs: 6, MemoryMB: 3072, DiskGB: 30}) {
		t.Errorf("claims on h2 = %+v", u)
	}
	// Now h2 has 2 vCPUs and 5120 MB left: still the most RAM. Two more
	// fill its vCPUs, after which spread moves on to h1 (name order).
	for i := 6; i < 9; i++ {
		if _, err := s.Select(ctx, small(fmt.Sprintf("i%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	used, _ = st.Usage(context.Background())
	if used["h2"].VCPUs != 8 || used["h1"].VCPUs != 1 || used["h3"].VCPUs != 0 {
		t.Errorf("usage after 9 = %+v", used)
	}
}

func TestSelectPackFillsOneHostFirst(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	addHost(t, st, "h1")
	addHost(t, st, "h2")
	s := newTestScheduler(st, nil, "pack")
	for i := range 5 {
		host, err := s.Select(ctx, small(fmt.Sprintf("i%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		want := "h1"
		if i == 4 { // h1's 4 vCPUs are taken
			want = "h2"
		}
		if host != want {
			t.Errorf("instance %d on %s, want %s", i, host, want)
		}
	}
}

func TestSelectHonoursFiltersAndForcedHost(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	stale := testNow.Add(-10 * time.Minute)
	addHost(t, st, "dead", capacity(64, 65536, 400), heartbeat(&stale))
	addHost(t, st, "off", capacity(64, 65536, 400), disabled())
	addHost(t, st, "down", capacity(64, 65536, 400), forcedDown())
	addHost(t, st, "other-az", zone("az2"))
	addHost(t, st, "not-compute", capacity(64, 65536, 400), binaryName("nova-conductor"))
	addHost(t, st, "a")
	addHost(t, st, "b")
	s := newTestScheduler(st, nil, "spread")

	req := small("i1")
	// The dead, disabled, forced-down and non-compute hosts are roomiest
	// but must never be chosen; a and b tie and a wins by name.
	host, err := s.Select(ctx, small("i0"))
	if err != nil || host != "a" {
		t.Fatalf("plain request: host %q err %v, want a", host, err)
	}
	host, err = s.Select(ctx, Request{InstanceID: "i1", Resources: req.Resources, AvailabilityZone: "az1"})
	if !IsNoValidHost(err) {
		t.Fatalf("zone without hosts: host %q err %v, want NoValidHost", host, err)
	}
	host, err = s.Select(ctx, Request{InstanceID: "i1", Resources: req.Resources, AvailabilityZone: "az2"})
	if err != nil || host != "other-az" {
		t.Fatalf("zone az2: host %q err %v, want other-az", host, err)
	}
	host, err = s.Select(ctx, Request{InstanceID: "i2", Resources: req.Resources, Excluded: []string{"other-az", "a"}})
	if err != nil || host != "b" {
		t.Fatalf("excluding other-az and a: host %q err %v, want b", host, err)
	}
	host, err = s.Select(ctx, Request{InstanceID: "i3", Resources: req.Resources, ForceHost: "a"})
	if err != nil || host != "a" {
		t.Fatalf("forced a: host %q err %v", host, err)
	}
	if _, err := s.Select(ctx, Request{InstanceID: "i4", Resources: req.Resources, ForceHost: "off"}); !IsNoValidHost(err) {
		t.Fatalf("forced onto a disabled host: err %v, want NoValidHost", err)
	}
}

func TestSelectNoValidHostExplains(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	stale := testNow.Add(-10 * time.Minute)
	addHost(t, st, "dead", heartbeat(&stale))
	addHost(t, st, "off", disabled())
	addHost(t, st, "tiny", capacity(1, 256, 1))
	s := newTestScheduler(st, nil, "spread")
	_, err := s.Select(ctx, small("i1"))
	var nv *NoValidHostError
	if !errors.As(err, &nv) {
		t.Fatalf("err = %v, want *NoValidHostError", err)
	}
	if err.Error() != "No valid host was found. There are not enough hosts available." {
		t.Errorf("message = %q", err.Error())
	}
	ex := nv.Explain()
	for _, want := range []string{"3 compute host(s)", "ComputeAlive removed 1 of 3", "Enabled removed 1 of 2", "Resources removed 1 of 1"} {
		if !strings.Contains(ex, want) {
			t.Errorf("explanation %q lacks %q", ex, want)
		}
	}
	used, _ := st.Usage(context.Background())
	if len(used) != 0 {
		t.Errorf("a failed selection left claims: %+v", used)
	}
}

func TestSelectNoHostsAtAll(t *testing.T) {
	s := newTestScheduler(openSQLite(t), nil, "")
	if _, err := s.Select(context.Background(), small("i1")); !IsNoValidHost(err) {
		t.Fatalf("err = %v, want NoValidHost", err)
	}
}

// TestSelectConcurrentNeverOvercommits runs 50 placements at once on 3
// hosts with room for 4+4+8 of them: every selection sees the same
// snapshot, so only the atomic claim keeps hosts from over-committing.
func TestSelectConcurrentNeverOvercommits(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addHost(t, st, "h1", capacity(2, 2048, 20), cpuRatio(2))              // 4 vCPU, 4 × 512 MB
		addHost(t, st, "h2", capacity(4, 2048+512, 100), reservedMemory(512)) // 4 × 512 MB
		addHost(t, st, "h3", capacity(8, 8192, 40))                           // 8 × 5 GB disk
		s := newTestScheduler(st, nil, "spread")

		const n = 50
		var wg sync.WaitGroup
		var mu sync.Mutex
		placed := map[string]int{}
		noHost := 0
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				host, err := s.Select(ctx, small(fmt.Sprintf("inst-%02d", i)))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					placed[host]++
				case IsNoValidHost(err):
					noHost++
				default:
					t.Errorf("select %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		want := map[string]int{"h1": 4, "h2": 4, "h3": 8}
		for h, w := range want {
			if placed[h] != w {
				t.Errorf("%s got %d instances, want %d (placed %v)", h, placed[h], w, placed)
			}
		}
		if noHost != n-16 {
			t.Errorf("%d NoValidHost, want %d", noHost, n-16)
		}
		used, err := st.Usage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var svcs []store.Service
		st.DB.Where(&store.Service{Binary: store.ComputeBinary}).Find(&svcs)
		for i := range svcs {
			c, u := store.Capacity(&svcs[i]), used[svcs[i].Host]
			if !store.Fits(c, u, store.Resources{}) {
				t.Errorf("%s over-committed: used %+v of %+v", svcs[i].Host, u, c)
			}
		}
		var claims int64
		st.DB.Model(&store.Claim{}).Count(&claims)
		if claims != 16 {
			t.Errorf("%d claims, want 16", claims)
		}
	})
}
