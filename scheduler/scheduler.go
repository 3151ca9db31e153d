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
	hosts   *hostCache
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
	if cfg.HostStateMaxAge <= 0 {
		cfg.HostStateMaxAge = config.Default().Scheduler.HostStateMaxAge
	}
	s.hosts = newHostCache(st, cfg.HostStateMaxAge, w)
	return s
}

// HostStates returns every compute host with its capacity and usage, as
// the database has them now.
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

// errHostChanged refuses a claim on a host that, read under the claim's
// lock, no longer passes the filters the cached view passed it on.
var errHostChanged = fmt.Errorf("host no longer passes the filters: %w", store.ErrInsufficient)

// Select claims req's resources on the best host and returns it. The
// filters and weighers see the scheduler's cached view of the hosts (see
// hostCache); the claim is atomic and re-checks the host under its lock,
// and on a refusal the next host is tried. When none is left the error is
// a *NoValidHostError, always from a view loaded after Select began.
func (s *Scheduler) Select(ctx context.Context, req Request) (string, error) {
	begun := time.Now()
	if req.InstanceID != "" {
		if err := s.resolve(ctx, &req); err != nil {
			return "", err
		}
	}
	host, viewStarted, err := s.selectOnce(ctx, req, time.Time{})
	if IsNoValidHost(err) && viewStarted.Before(begun) {
		// The view predates the request: room freed since (a delete,
		// another scheduler's failed build) is not in it. Look again.
		host, _, err = s.selectOnce(ctx, req, begun)
	}
	return host, err
}

// resolve fills in, from the instance, its CPU policy (callers sizing from
// the flavor alone, such as a migration's target, leave it unset) and its
// server group and hints.
func (s *Scheduler) resolve(ctx context.Context, req *Request) error {
	// One read for the instance and its group membership.
	var rows []struct {
		store.Instance
		GroupID *string
	}
	if err := s.st.WithContext(ctx).Table("instances").
		Select("instances.id, instances.project_id, instances.extra_specs, instances.scheduler_hints, "+
			"server_group_members.group_id AS group_id").
		Joins("LEFT JOIN server_group_members ON server_group_members.instance_id = instances.id").
		Where("instances.id = ?", req.InstanceID).Limit(1).Scan(&rows).Error; err != nil {
		return fmt.Errorf("scheduler: instance %s: %w", req.InstanceID, err)
	}
	var inst *store.Instance
	var group *store.ServerGroup
	var err error
	if len(rows) > 0 {
		inst = &rows[0].Instance
		req.Dedicated = req.Dedicated || store.IsDedicated(inst.ExtraSpecs)
		if rows[0].GroupID != nil {
			if group, err = s.st.GetServerGroup(ctx, *rows[0].GroupID); errors.Is(err, store.ErrNotFound) {
				group, err = nil, nil // deleted meanwhile: no constraint left
			}
		}
	} else {
		group, err = s.st.GroupOf(ctx, req.InstanceID)
	}
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	p, err := s.placementOf(ctx, req.InstanceID, inst, group)
	if err != nil {
		return err
	}
	req.Placement = p
	return nil
}

// selectOnce tries the hosts of one view (loaded no earlier than
// notBefore) best first and returns the one claimed, or a
// *NoValidHostError; viewStarted is when that view was loaded.
func (s *Scheduler) selectOnce(ctx context.Context, req Request, notBefore time.Time) (string, time.Time, error) {
	snap, err := s.hosts.view(ctx, notBefore)
	if err != nil {
		return "", time.Time{}, err
	}
	want := req.Demand()
	opts := store.ClaimOptions{MigrationID: req.MigrationID, Guard: req.Placement.guard(req.InstanceID), Resolved: true,
		Accept: func(svc *store.Service, used store.Resources) error {
			h := hostStateOf(svc, used)
			for _, f := range s.filters {
				if !f.Pass(h, req) {
					return fmt.Errorf("claim on %s: filter %s: %w", svc.Host, f.Name(), errHostChanged)
				}
			}
			return nil
		}}
	var rejected []string
	// try claims h (already counted in the view) and reports whether it
	// is taken; a refusal gives the room back in the view.
	try := func(h string) (bool, error) {
		err := s.st.Claim(ctx, h, req.InstanceID, want, opts)
		if err == nil {
			return true, nil
		}
		s.hosts.adjust(snap, h, want.Scale(-1))
		switch {
		case errors.Is(err, store.ErrInsufficient):
			// Raced with another claim, or the view was stale: learn the
			// host's real usage, then try the next host.
			if used, uerr := s.st.HostUsage(ctx, h); uerr == nil {
				s.hosts.setUsed(snap, h, used)
			}
		case errors.Is(err, store.ErrNotFound):
			s.hosts.drop(snap, h) // deleted since the view was loaded
		case errors.Is(err, store.ErrGroupPolicy):
			// A member of the same server group took it meanwhile.
		default:
			return false, fmt.Errorf("scheduler: claim on %s for %s: %w", h, req.InstanceID, err)
		}
		s.log.Debug("claim refused, trying next host", "instance", req.InstanceID, "host", h, "error", err)
		rejected = append(rejected, h)
		return false, nil
	}
	if w, group := weigherFor(s.weigher, req).(GroupWeigher); group {
		// A soft group policy weighs by the group first: order this
		// request's survivors itself.
		hosts, _ := applyFilters(s.filters, s.hosts.states(snap), req)
		weigh(w, hosts)
		for _, h := range hosts {
			s.hosts.adjust(snap, h.Host, want)
			ok, err := try(h.Host)
			if err != nil {
				return "", snap.started, err
			}
			if ok {
				return h.Host, snap.started, nil
			}
		}
	} else {
		skip := map[string]bool{}
		for {
			h, found := s.hosts.pick(snap, s.filters, req, skip, want)
			if !found {
				break
			}
			ok, err := try(h.Host)
			if err != nil {
				return "", snap.started, err
			}
			if ok {
				s.log.Debug("host selected", "instance", req.InstanceID, "host", h.Host, "weigher", s.weigher.Name())
				return h.Host, snap.started, nil
			}
			skip[h.Host] = true
		}
	}
	all := s.hosts.states(snap)
	_, results := applyFilters(s.filters, all, req)
	nv := &NoValidHostError{Hosts: len(all), Filters: results, Rejected: rejected}
	s.log.Debug("no valid host", "instance", req.InstanceID, "explain", nv.Explain())
	return "", snap.started, nv
}

// SelectTarget picks and claims the target of a cold migration (package
// migrate's Selector): never its source; t.Host, when set, is the only
// candidate. No host is a *NoValidHostError.
func (s *Scheduler) SelectTarget(ctx context.Context, t instance.MigrationTarget) (string, error) {
	id := t.MigrationID
	return s.Select(ctx, Request{InstanceID: t.InstanceID, Resources: t.Resources,
		AvailabilityZone: t.AvailabilityZone, Excluded: []string{t.Source}, ForceHost: t.Host, MigrationID: &id})
}
