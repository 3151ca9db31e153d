package scheduler

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

// staleScheduler is a scheduler whose view of the hosts never expires on
// its own, so a test can change the database behind it.
func staleScheduler(st *store.Store) *Scheduler {
	s := newTestScheduler(st, nil, "spread")
	s.hosts.maxAge = time.Hour
	return s
}

// TestCachedViewHostDisabledSinceIsNeverChosen: the view still says the
// host is enabled and emptiest, the claim reads the row under its lock and
// refuses it.
func TestCachedViewHostDisabledSinceIsNeverChosen(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addHost(t, st, "h1", capacity(8, 8192, 80), zone("az1"))
		addHost(t, st, "h2", capacity(4, 4096, 40), zone("az1"))
		s := staleScheduler(st)
		first := small("first")
		first.AvailabilityZone = "az1"
		if host, err := s.Select(ctx, first); err != nil || host != "h1" {
			t.Fatalf("first: host %q err %v, want h1", host, err)
		}
		for _, change := range []map[string]any{{"disabled": true}, {"disabled": false, "forced_down": true},
			{"forced_down": false, "zone": "az9"}} {
			if err := st.DB.Model(&store.Service{}).Where("host = ?", "h1").Updates(change).Error; err != nil {
				t.Fatal(err)
			}
			id := fmt.Sprintf("after-%v", change)
			req := small(id)
			req.AvailabilityZone = "az1"
			if host, err := s.Select(ctx, req); err != nil || host != "h2" {
				t.Errorf("after %v: host %q err %v, want h2", change, host, err)
			}
		}
	})
}

// TestCachedViewFindsRoomFreedSince: every host was full when the view was
// loaded; a claim released since (a delete) is found, not answered with
// "no valid host".
func TestCachedViewFindsRoomFreedSince(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addHost(t, st, "h1", capacity(1, 512, 5))
		s := staleScheduler(st)
		if host, err := s.Select(ctx, small("a")); err != nil || host != "h1" {
			t.Fatalf("a: host %q err %v", host, err)
		}
		if _, err := s.Select(ctx, small("b")); !IsNoValidHost(err) {
			t.Fatalf("b on a full host: err %v, want NoValidHost", err)
		}
		if err := st.DB.Where("instance_id = ?", "a").Delete(&store.Claim{}).Error; err != nil {
			t.Fatal(err)
		}
		if host, err := s.Select(ctx, small("c")); err != nil || host != "h1" {
			t.Fatalf("c after a's claim was released: host %q err %v, want h1", host, err)
		}
	})
}

// TestCachedViewOtherSchedulersNeverOvercommit: two schedulers, each with
// its own view that the other's claims make stale, place at once; every
// host ends within its capacity and exactly the room there is gets used.
func TestCachedViewOtherSchedulersNeverOvercommit(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		for i := range 5 {
			addHost(t, st, fmt.Sprintf("h%d", i), capacity(2, 1024, 10)) // 2 small servers each
		}
		schedulers := []*Scheduler{staleScheduler(st), staleScheduler(st)}
		for _, s := range schedulers {
			if _, err := s.hosts.view(ctx, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		placed, noHost := 0, 0
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := schedulers[i%2].Select(ctx, small(fmt.Sprintf("inst-%02d", i)))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					placed++
				case IsNoValidHost(err):
					noHost++
				default:
					t.Errorf("select %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if placed != 10 || noHost != 20 {
			t.Errorf("placed %d, no valid host %d; want 10 and 20", placed, noHost)
		}
		used, err := st.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var svcs []store.Service
		st.DB.Where(&store.Service{Binary: store.ComputeBinary}).Find(&svcs)
		for i := range svcs {
			if c, u := store.Capacity(&svcs[i]), used[svcs[i].Host]; !store.Fits(c, u, store.Resources{}) {
				t.Errorf("%s over-committed: used %+v of %+v", svcs[i].Host, u, c)
			}
		}
	})
}
