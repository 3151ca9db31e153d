// Package scheduler places instances on compute hosts: it filters the
// registered hosts (alive, enabled, zone, room, not already failed),
// weighs the survivors (spread or pack) and claims resources on the best
// one atomically, then hands the build to that host's agent over the bus.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/store"
)

// NoValidHostMessage is Nova's fault message when scheduling fails;
// clients and Tempest match on it.
const NoValidHostMessage = instance.NoValidHostMessage

// NoValidHostError is returned by Select when no host can take a request.
// Filters and Rejected explain why, for logs and the fault details.
type NoValidHostError struct {
	Hosts    int            // compute hosts considered
	Filters  []FilterResult // per filter, how many hosts it removed
	Rejected []string       // hosts that passed the filters but whose claim failed (raced)
}

func (e *NoValidHostError) Error() string { return NoValidHostMessage }

// Explain summarises which filter removed which share of hosts.
func (e *NoValidHostError) Explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d compute host(s) considered", e.Hosts)
	for _, f := range e.Filters {
		if f.Removed > 0 {
			fmt.Fprintf(&b, "; filter %s removed %d of %d", f.Filter, f.Removed, f.Before)
		}
	}
	if len(e.Rejected) > 0 {
		fmt.Fprintf(&b, "; claim refused (no room left) on %s", strings.Join(e.Rejected, ","))
	}
	return b.String()
}

// IsNoValidHost reports whether err is a NoValidHostError.
func IsNoValidHost(err error) bool {
	var nv *NoValidHostError
	return errors.As(err, &nv)
}

// Scheduler selects hosts and serves the scheduler queue.
type Scheduler struct {
	st      *store.Store
	b       bus.Bus
	cfg     config.Scheduler
	log     *slog.Logger
	weigher Weigher
	filters []Filter
	now     func() time.Time
	// self names this scheduler in instance-action events.
	self string
}

// New returns a scheduler. An unknown weigher name falls back to spread
// (logged), so a typo in the config cannot stop placements.
func New(st *store.Store, b bus.Bus, cfg config.Scheduler, log *slog.Logger) *Scheduler {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("role", "scheduler")
	if cfg.ServiceDownTime <= 0 {
		cfg.ServiceDownTime = config.Default().Scheduler.ServiceDownTime
	}
	w, err := WeigherByName(cfg.Weigher)
	if err != nil {
		log.Warn("falling back to the spread weigher", "error", err)
		w = Spread{}
	}
	self, _ := os.Hostname()
	s := &Scheduler{st: st, b: b, cfg: cfg, log: log, weigher: w, now: time.Now, self: self}
	s.filters = DefaultFilters(cfg.ServiceDownTime, func() time.Time { return s.now() })
	return s
}

// HostStates returns every compute host with its capacity and usage.
func (s *Scheduler) HostStates(ctx context.Context) ([]HostState, error) {
	var svcs []store.Service
	if err := s.st.WithContext(ctx).Where(&store.Service{Binary: store.ComputeBinary}).Order("host").Find(&svcs).Error; err != nil {
		return nil, fmt.Errorf("scheduler: list compute services: %w", err)
	}
	used, err := s.st.Usage(ctx)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	out := make([]HostState, 0, len(svcs))
	for i := range svcs {
		out = append(out, hostStateOf(&svcs[i], used[svcs[i].Host]))
	}
	return out, nil
}

// candidates returns the hosts that pass the filters, best first, and
// the per-filter results.
func (s *Scheduler) candidates(ctx context.Context, req Request) ([]HostState, []FilterResult, int, error) {
	all, err := s.HostStates(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	hosts, results := applyFilters(s.filters, all, req)
	weigh(weigherFor(s.weigher, req), hosts)
	return hosts, results, len(all), nil
}

// Select claims req's resources on the best host and returns it. The
// filters see a snapshot, so a concurrent claim may have taken the room
// meanwhile: the claim is atomic, and on ErrInsufficient the next host is
// tried. When none is left the error is a *NoValidHostError.
func (s *Scheduler) Select(ctx context.Context, req Request) (string, error) {
	if !req.Dedicated && req.InstanceID != "" {
		// Callers sizing from the flavor alone (a migration's target)
		// get the instance's CPU policy here, so the filters see what
		// the claim will count.
		var specs []string
		if err := s.st.WithContext(ctx).Model(&store.Instance{}).Where("id = ?", req.InstanceID).Limit(1).
			Pluck("extra_specs", &specs).Error; err != nil {
			return "", fmt.Errorf("scheduler: cpu policy of %s: %w", req.InstanceID, err)
		}
		req.Dedicated = len(specs) > 0 && store.IsDedicated(specs[0])
	}
	if req.InstanceID != "" {
		p, err := s.placementOf(ctx, req.InstanceID)
		if err != nil {
			return "", err
		}
		req.Placement = p
	}
	hosts, results, total, err := s.candidates(ctx, req)
	if err != nil {
		return "", err
	}
	nv := &NoValidHostError{Hosts: total, Filters: results}
	for _, h := range hosts {
		err := s.st.ClaimOnHostIf(ctx, h.Host, req.InstanceID, req.Demand(), req.MigrationID, req.Placement.guard(req.InstanceID))
		switch {
		case err == nil:
			s.log.Debug("host selected", "instance", req.InstanceID, "host", h.Host, "weigher", s.weigher.Name(),
				"candidates", len(hosts), "filters", nv.Explain())
			return h.Host, nil
		case errors.Is(err, store.ErrInsufficient), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrGroupPolicy):
			// Raced with another claim (of room, or of a member of the
			// same server group), or the service was deleted since the
			// snapshot: try the next host.
			s.log.Debug("claim refused, trying next host", "instance", req.InstanceID, "host", h.Host, "error", err)
			nv.Rejected = append(nv.Rejected, h.Host)
		default:
			return "", fmt.Errorf("scheduler: claim on %s for %s: %w", h.Host, req.InstanceID, err)
		}
	}
	s.log.Debug("no valid host", "instance", req.InstanceID, "explain", nv.Explain())
	return "", nv
}

// SelectTarget picks and claims the target of a cold migration (package
// migrate's Selector): never its source; t.Host, when set, is the only
// candidate. No host is a *NoValidHostError.
func (s *Scheduler) SelectTarget(ctx context.Context, t instance.MigrationTarget) (string, error) {
	id := t.MigrationID
	return s.Select(ctx, Request{InstanceID: t.InstanceID, Resources: t.Resources,
		AvailabilityZone: t.AvailabilityZone, Excluded: []string{t.Source}, ForceHost: t.Host, MigrationID: &id})
}
