package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

// hostCache is the scheduler's view of its compute hosts, so a placement
// does not read every service row and sum every claim (at 5,000 hosts
// that load is what limited placements to a few per second). The view is
// reloaded from the database when older than maxAge (by the one request
// that notices, the others go on with the old view) and kept current in
// between with this scheduler's own claims, counted as soon as a host is
// picked so that concurrent placements spread out instead of queueing on
// one host's lock.
//
// The view only orders the candidates; it decides nothing final:
//   - the claim is atomic and re-checks, under the host lock, the room and
//     what the host filters saw (ClaimOptions.Accept), so a stale view can
//     never over-commit a host nor place on one disabled since;
//   - a refused claim re-reads that host's usage;
//   - "no valid host" is only answered from a view loaded after the request
//     began (Select reloads and retries once), so room freed by others
//     (deletes, other schedulers) is never missed.
type hostCache struct {
	st     *store.Store
	maxAge time.Duration
	base   Weigher

	loadMu sync.Mutex // one load at a time
	mu     sync.Mutex // guards snap and the hosts in it
	snap   *hostSnapshot
}

// hostSnapshot is one load of the hosts, kept ordered best first by the
// base weigher (ties by name, as weigh orders them).
type hostSnapshot struct {
	started time.Time // when the load began: it saw every commit before
	byName  map[string]*HostState
	order   []*HostState
}

func newHostCache(st *store.Store, maxAge time.Duration, base Weigher) *hostCache {
	return &hostCache{st: st, maxAge: maxAge, base: base}
}

func (c *hostCache) compare(a, b *HostState) int {
	switch {
	case c.base.Less(*a, *b):
		return -1
	case c.base.Less(*b, *a):
		return 1
	}
	return cmp.Compare(a.Host, b.Host)
}

// view returns a snapshot loaded no earlier than notBefore (zero: any), or
// one younger than maxAge; a stale one is reloaded by this caller unless
// another is already loading it (then the stale one is used meanwhile).
func (c *hostCache) view(ctx context.Context, notBefore time.Time) (*hostSnapshot, error) {
	c.mu.Lock()
	snap := c.snap
	c.mu.Unlock()
	if snap != nil && !snap.started.Before(notBefore) {
		if time.Since(snap.started) <= c.maxAge {
			return snap, nil
		}
		if !c.loadMu.TryLock() {
			return snap, nil
		}
	} else {
		c.loadMu.Lock()
	}
	defer c.loadMu.Unlock()
	c.mu.Lock()
	snap = c.snap
	c.mu.Unlock()
	if snap != nil && !snap.started.Before(notBefore) && time.Since(snap.started) <= c.maxAge {
		return snap, nil // loaded by another caller while this one waited
	}
	fresh, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.snap = fresh
	c.mu.Unlock()
	return fresh, nil
}

// hostRow is the part of a service row the filters and weighers use.
type hostRow struct {
	Host                                                        string
	Zone                                                        string
	Disabled, ForcedDown                                        bool
	LastHeartbeat                                               *time.Time
	VCPUs                                                       int `gorm:"column:vcpus"`
	MemoryMB, DiskGB, ReservedMemoryMB                          int
	PCPUs                                                       int `gorm:"column:pcpus"`
	CPUAllocationRatio, RAMAllocationRatio, DiskAllocationRatio float64
}

func (c *hostCache) load(ctx context.Context) (*hostSnapshot, error) {
	started := time.Now()
	var rows []hostRow
	if err := c.st.WithContext(ctx).Model(&store.Service{}).
		Select("host, zone, disabled, forced_down, last_heartbeat, vcpus, memory_mb, disk_gb, reserved_memory_mb, pcpus, "+
			"cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio").
		Where("binary_name = ?", store.ComputeBinary).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("scheduler: list compute services: %w", err)
	}
	used, err := c.st.Usage(ctx)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	snap := &hostSnapshot{started: started, byName: make(map[string]*HostState, len(rows)),
		order: make([]*HostState, 0, len(rows))}
	for i := range rows {
		r := &rows[i]
		svc := store.Service{Host: r.Host, Zone: r.Zone, Disabled: r.Disabled, ForcedDown: r.ForcedDown,
			LastHeartbeat: r.LastHeartbeat, VCPUs: r.VCPUs, MemoryMB: r.MemoryMB, DiskGB: r.DiskGB,
			ReservedMemoryMB: r.ReservedMemoryMB, PCPUs: r.PCPUs, CPUAllocationRatio: r.CPUAllocationRatio,
			RAMAllocationRatio: r.RAMAllocationRatio, DiskAllocationRatio: r.DiskAllocationRatio}
		h := hostStateOf(&svc, used[r.Host])
		snap.byName[h.Host] = &h
		snap.order = append(snap.order, &h)
	}
	slices.SortFunc(snap.order, c.compare)
	return snap, nil
}

// states copies the snapshot's hosts, ordered by name.
func (c *hostCache) states(snap *hostSnapshot) []HostState {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]HostState, 0, len(snap.order))
	for _, h := range snap.order {
		out = append(out, *h)
	}
	slices.SortFunc(out, func(a, b HostState) int { return cmp.Compare(a.Host, b.Host) })
	return out
}

// adjust adds delta to what the snapshot counts as used on host and
// moves the host to its new place in the order.
func (c *hostCache) adjust(snap *hostSnapshot, host string, delta store.Resources) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.adjustLocked(snap, host, func(h *HostState) { h.Used = h.Used.Add(delta) })
}

// setUsed records a host's usage as just read from the database.
func (c *hostCache) setUsed(snap *hostSnapshot, host string, used store.Resources) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.adjustLocked(snap, host, func(h *HostState) { h.Used = used })
}

// drop removes a host that no longer exists from the snapshot.
func (c *hostCache) drop(snap *hostSnapshot, host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := snap.byName[host]
	if !ok {
		return
	}
	if i, found := slices.BinarySearchFunc(snap.order, h, c.compare); found {
		snap.order = slices.Delete(snap.order, i, i+1)
	}
	delete(snap.byName, host)
}

func (c *hostCache) adjustLocked(snap *hostSnapshot, host string, change func(*HostState)) {
	h, ok := snap.byName[host]
	if !ok {
		return
	}
	i, found := slices.BinarySearchFunc(snap.order, h, c.compare)
	if found {
		snap.order = slices.Delete(snap.order, i, i+1)
	}
	change(h)
	j, _ := slices.BinarySearchFunc(snap.order, h, c.compare)
	snap.order = slices.Insert(snap.order, j, h)
}

// pick returns the best host of snap that passes filters for req and is
// not in skip, and counts want on it right away (the caller claims it and
// gives want back with adjust if the claim fails).
func (c *hostCache) pick(snap *hostSnapshot, filters []Filter, req Request, skip map[string]bool,
	want store.Resources) (HostState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pass := func(h *HostState) bool {
		if skip[h.Host] {
			return false
		}
		for _, f := range filters {
			if !f.Pass(*h, req) {
				return false
			}
		}
		return true
	}
	var found *HostState
	if req.ForceHost != "" {
		if h, ok := snap.byName[req.ForceHost]; ok && pass(h) {
			found = h
		}
	} else {
		for _, h := range snap.order {
			if pass(h) {
				found = h
				break
			}
		}
	}
	if found == nil {
		return HostState{}, false
	}
	chosen := *found
	c.adjustLocked(snap, found.Host, func(h *HostState) { h.Used = h.Used.Add(want) })
	return chosen, true
}
