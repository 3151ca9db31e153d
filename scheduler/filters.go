package scheduler

import (
	"slices"
	"time"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/store"
)

// DefaultZone is Nova's default availability zone: a request for it (or
// for no zone) may land on any host.
const DefaultZone = instance.DefaultZone

// HostState is a compute host as the filters and weighers see it: the
// service row plus what is already claimed on it.
type HostState struct {
	Host          string
	Zone          string
	Disabled      bool
	ForcedDown    bool
	LastHeartbeat *time.Time
	Capacity      store.Resources // physical × allocation ratio − reserved
	Used          store.Resources // sum of claims
}

// Free is what is left to claim (negative when over-committed, e.g. after
// an operator lowered a ratio).
func (h HostState) Free() store.Resources {
	return store.Resources{
		VCPUs:    h.Capacity.VCPUs - h.Used.VCPUs,
		MemoryMB: h.Capacity.MemoryMB - h.Used.MemoryMB,
		DiskGB:   h.Capacity.DiskGB - h.Used.DiskGB,
		PCPUs:    h.Capacity.PCPUs - h.Used.PCPUs,
	}
}

// hostStateOf builds a HostState from a service row and its usage.
func hostStateOf(svc *store.Service, used store.Resources) HostState {
	return HostState{
		Host: svc.Host, Zone: svc.Zone, Disabled: svc.Disabled, ForcedDown: svc.ForcedDown,
		LastHeartbeat: svc.LastHeartbeat, Capacity: store.Capacity(svc), Used: used,
	}
}

// Request is what an instance needs from a host.
type Request struct {
	InstanceID string
	// Resources is the flavor's size (its vCPUs in VCPUs).
	Resources store.Resources
	// Dedicated is hw:cpu_policy=dedicated: the vCPUs are wanted as the
	// host's PCPUs. Select finds it from the instance's extra specs when
	// the caller did not set it.
	Dedicated        bool
	AvailabilityZone string   // "" = any
	Excluded         []string // hosts a build already failed on (or the source of a migration)
	ForceHost        string   // only this host may be chosen (migrate --host)
	MigrationID      *uint    // recorded on the claim of a migration's target
	// Placement is the instance's server group and scheduler hints; Select
	// loads it from the instance (see placementOf).
	Placement Placement
}

// Demand is what req takes from a host: a dedicated request's vCPUs are
// PCPUs.
func (r Request) Demand() store.Resources {
	if r.Dedicated {
		return r.Resources.AsDedicated()
	}
	return r.Resources
}

// Filter removes hosts that cannot take a request.
type Filter interface {
	Name() string
	Pass(h HostState, req Request) bool
}

// ComputeAlive passes hosts whose agent reported within DownTime and that
// an operator has not forced down.
type ComputeAlive struct {
	DownTime time.Duration
	Now      func() time.Time
}

func (ComputeAlive) Name() string { return "ComputeAlive" }

func (f ComputeAlive) Pass(h HostState, _ Request) bool {
	if h.ForcedDown || h.LastHeartbeat == nil {
		return false
	}
	return f.Now().Sub(*h.LastHeartbeat) <= f.DownTime
}

// Enabled passes hosts whose service is not disabled.
type Enabled struct{}

func (Enabled) Name() string { return "Enabled" }

func (Enabled) Pass(h HostState, _ Request) bool { return !h.Disabled }

// AvailabilityZone passes hosts in the requested zone; a request for no
// zone or for the default zone passes every host, as a client that never
// heard of zones sends one of those.
type AvailabilityZone struct{}

func (AvailabilityZone) Name() string { return "AvailabilityZone" }

func (AvailabilityZone) Pass(h HostState, req Request) bool {
	return req.AvailabilityZone == "" || req.AvailabilityZone == DefaultZone || req.AvailabilityZone == h.Zone
}

// Resources passes hosts with room for the request's shared vCPUs, RAM
// and disk after what is already claimed, counting allocation ratios
// (dedicated CPUs are DedicatedCPUs'). It is only a pre-check on a
// snapshot: the claim itself (store.ClaimOnHost) is what is atomic.
type Resources struct{}

func (Resources) Name() string { return "Resources" }

func (Resources) Pass(h HostState, req Request) bool {
	want := req.Demand()
	want.PCPUs = 0
	return store.Fits(h.Capacity, h.Used, want)
}

// DedicatedCPUs passes, for a hw:cpu_policy=dedicated request, hosts with
// as many free PCPUs (CPUs of their cpu_dedicated_set no dedicated server
// holds) as it has vCPUs; every host for any other request. A pre-check
// too: ClaimOnHost counts PCPUs under the host lock.
type DedicatedCPUs struct{}

func (DedicatedCPUs) Name() string { return "DedicatedCPUs" }

func (DedicatedCPUs) Pass(h HostState, req Request) bool {
	want := req.Demand().PCPUs
	return want == 0 || h.Used.PCPUs+want <= h.Capacity.PCPUs
}

// Excluded removes hosts a build already failed on.
type Excluded struct{}

func (Excluded) Name() string { return "Excluded" }

func (Excluded) Pass(h HostState, req Request) bool { return !slices.Contains(req.Excluded, h.Host) }

// ForcedHost keeps only the requested host when one is forced.
type ForcedHost struct{}

func (ForcedHost) Name() string { return "ForcedHost" }

func (ForcedHost) Pass(h HostState, req Request) bool {
	return req.ForceHost == "" || req.ForceHost == h.Host
}

// DefaultFilters is the filter chain in the order it runs: cheap,
// host-identity checks first so the explanation blames the real cause.
func DefaultFilters(downTime time.Duration, now func() time.Time) []Filter {
	return []Filter{ForcedHost{}, Excluded{}, ComputeAlive{DownTime: downTime, Now: now}, Enabled{},
		AvailabilityZone{}, Resources{}, DedicatedCPUs{}, ServerGroup{}, SameHost{}, DifferentHost{}}
}

// FilterResult says how many hosts one filter removed.
type FilterResult struct {
	Filter  string
	Before  int
	Removed int
}

// applyFilters runs the chain and returns the survivors and, per filter,
// how many hosts it removed (for the "No valid host" explanation).
func applyFilters(filters []Filter, hosts []HostState, req Request) ([]HostState, []FilterResult) {
	results := make([]FilterResult, 0, len(filters))
	for _, f := range filters {
		kept := hosts[:0:0]
		for _, h := range hosts {
			if f.Pass(h, req) {
				kept = append(kept, h)
			}
		}
		results = append(results, FilterResult{Filter: f.Name(), Before: len(hosts), Removed: len(hosts) - len(kept)})
		hosts = kept
	}
	return hosts, results
}
