package scheduler

import (
	"context"
	"fmt"
	"slices"

	"github.com/capsule-cloud/capsule/store"
)

// Placement is what an instance asks of its host beyond resources: its
// server group's policy and the same_host / different_host hints (Nova's
// ServerGroupAffinity/AntiAffinity, SameHost and DifferentHost filters
// and the soft-affinity weighers).
type Placement struct {
	// Group is the instance's server group (nil: none) and MemberHosts
	// how many of its other members are on each host.
	Group       *store.ServerGroup
	MemberHosts map[string]int
	// SameHost is the hosts of the same_host servers; HasSameHost says the
	// hint was given (servers that are on no host leave no host at all).
	SameHost    []string
	HasSameHost bool
	// DifferentHost is the hosts of the different_host servers.
	DifferentHost []string
}

// placementOf loads the placement of instance id in group g (nil: none)
// with its hints (inst: its row, nil when not found, e.g. a test's bare
// request: no constraints).
func (s *Scheduler) placementOf(ctx context.Context, id string, inst *store.Instance, g *store.ServerGroup) (Placement, error) {
	var p Placement
	var err error
	db := s.st.WithContext(ctx)
	if g != nil {
		hosts, err := store.MemberHosts(db, g.ID, id)
		if err != nil {
			return p, fmt.Errorf("scheduler: %w", err)
		}
		p.Group, p.MemberHosts = g, hosts
	}
	if inst == nil {
		return p, nil
	}
	hints := inst.Hints()
	project := inst.ProjectID
	if hints.AnyProject {
		project = ""
	}
	if len(hints.SameHost) > 0 {
		if p.SameHost, err = store.HostsOf(db, hints.SameHost, project); err != nil {
			return p, fmt.Errorf("scheduler: %w", err)
		}
		p.HasSameHost = true
	}
	if p.DifferentHost, err = store.HostsOf(db, hints.DifferentHost, project); err != nil {
		return p, fmt.Errorf("scheduler: %w", err)
	}
	return p, nil
}

// guard is the claim guard enforcing the group's hard policy under the
// claim's lock: the filters saw a snapshot, and two members scheduled at
// once would otherwise both pick a host the other is about to take.
func (p Placement) guard(instanceID string) store.ClaimGuard {
	if p.Group == nil || !isHard(p.Group.Policy) {
		return nil
	}
	return store.GroupClaimGuard(p.Group, instanceID)
}

func isHard(policy string) bool {
	return policy == store.PolicyAffinity || policy == store.PolicyAntiAffinity
}

// ServerGroup passes, for a member of an affinity group, the host its
// other members are on (any host while there are none); for an
// anti-affinity group, hosts with fewer of them than its
// max_server_per_host (1 by default). Soft policies are the
// GroupWeigher's.
type ServerGroup struct{}

func (ServerGroup) Name() string { return "ServerGroup" }

func (ServerGroup) Pass(h HostState, req Request) bool {
	g := req.Placement.Group
	return g == nil || g.Allows(req.Placement.MemberHosts, h.Host)
}

// SameHost passes, when the same_host hint was given, the hosts one of
// those servers is on.
type SameHost struct{}

func (SameHost) Name() string { return "SameHost" }

func (SameHost) Pass(h HostState, req Request) bool {
	return !req.Placement.HasSameHost || slices.Contains(req.Placement.SameHost, h.Host)
}

// DifferentHost removes the hosts any different_host server is on.
type DifferentHost struct{}

func (DifferentHost) Name() string { return "DifferentHost" }

func (DifferentHost) Pass(h HostState, req Request) bool {
	return !slices.Contains(req.Placement.DifferentHost, h.Host)
}

// GroupWeigher puts a soft-affinity member's hosts with the most other
// members first, a soft-anti-affinity member's with the fewest; hosts
// equal on that are ordered by Then.
type GroupWeigher struct {
	Policy      string
	MemberHosts map[string]int
	Then        Weigher
}

func (w GroupWeigher) Name() string { return w.Policy + "+" + w.Then.Name() }

func (w GroupWeigher) Less(a, b HostState) bool {
	na, nb := w.MemberHosts[a.Host], w.MemberHosts[b.Host]
	if na != nb {
		if w.Policy == store.PolicySoftAffinity {
			return na > nb
		}
		return na < nb
	}
	return w.Then.Less(a, b)
}

// weigherFor is base, preceded by the group weigher when req's group has
// a soft policy.
func weigherFor(base Weigher, req Request) Weigher {
	g := req.Placement.Group
	if g == nil || (g.Policy != store.PolicySoftAffinity && g.Policy != store.PolicySoftAntiAffinity) {
		return base
	}
	return GroupWeigher{Policy: g.Policy, MemberHosts: req.Placement.MemberHosts, Then: base}
}
