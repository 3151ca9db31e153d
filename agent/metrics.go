package agent

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/metrics"
	"github.com/capsule-cloud/capsule/protocol"
)

// procDir is where the host's figures (pids, conntrack) are read.
const procDir = "/proc"

// MetricsRegistry returns a Prometheus registry of this host's and its
// servers' figures, read at each scrape (serve it with metrics.Serve).
// ovsCheck, when not nil, tells whether Open vSwitch answers; pass nil on
// a host without OVS plumbing, and the OVS health is not exported.
func (a *Agent) MetricsRegistry(ovsCheck func(context.Context) error) *prometheus.Registry {
	src := &metricsSource{a: a, ovsCheck: ovsCheck, projects: map[string]string{}}
	return metrics.NewRegistry(a.cfg.Host, src, a.callTimeout, a.log)
}

// metricsSource is the agent's metrics.Source: the driver's instances and
// their cgroup counters, the NICs the agent plumbed, and the projects the
// conductor placed the servers for.
type metricsSource struct {
	a        *Agent
	ovsCheck func(context.Context) error

	// projects caches each instance's project: it never changes, and
	// asking the conductor on every scrape would load it for nothing.
	// Only an instance not seen before makes a scrape ask.
	mu       sync.Mutex
	projects map[string]string
}

// Servers implements metrics.Source: every instance the driver has, with
// cgroup counters while its workload runs.
func (s *metricsSource) Servers(ctx context.Context) ([]metrics.Server, error) {
	a := s.a
	list, err := a.drv.List(ctx)
	if err != nil {
		return nil, err
	}
	expected := s.learnProjects(ctx, list)
	_, canMeasure := a.drv.(drivers.StatsReader)
	out := make([]metrics.Server, 0, len(list))
	for _, st := range list {
		srv := metrics.Server{ID: st.ID, Project: s.project(st.ID)}
		running := st.Power == drivers.PowerRunning || st.Power == drivers.PowerPaused
		if running && canMeasure {
			stats, err := a.serverStats(ctx, st.ID)
			switch {
			case err == nil:
				srv.Stats, srv.HasStats = stats.Stats, true
			case errors.Is(err, drivers.ErrInvalidState), errors.Is(err, drivers.ErrNotFound):
				running = false // stopped or gone since List
			default:
				a.log.Warn("metrics: instance counters not read", "instance", st.ID, "err", err)
			}
		}
		srv.NICs = s.nics(ctx, st.ID, running, expected)
		out = append(out, srv)
	}
	return out, nil
}

// learnProjects asks the conductor for the instances on this host when one
// of list has no known project, and returns what it answered (nil when
// it was not asked or did not answer: those projects stay "" this time).
func (s *metricsSource) learnProjects(ctx context.Context, list []drivers.Status) []protocol.ExpectedInstance {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool, len(list))
	unknown := false
	for _, st := range list {
		seen[st.ID] = true
		if _, ok := s.projects[st.ID]; !ok {
			unknown = true
		}
	}
	for id := range s.projects {
		if !seen[id] {
			delete(s.projects, id) // destroyed: keep the cache bounded
		}
	}
	if !unknown {
		return nil
	}
	expected, err := s.a.instancesOnHost(ctx)
	if err != nil {
		s.a.log.Debug("metrics: projects of new instances unknown for now", "err", err)
		return nil
	}
	for id := range seen {
		// An instance the conductor does not place here (an orphan) is
		// remembered without a project, not asked about at every scrape.
		s.projects[id] = ""
	}
	for _, e := range expected {
		if seen[e.Spec.ID] {
			s.projects[e.Spec.ID] = e.Spec.ProjectID
		}
	}
	return expected
}

func (s *metricsSource) project(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.projects[id]
}

// nics reads the host-side veth counters of instance id's NICs and, while
// it runs, its shaping drops in both directions (best effort, as
// diagnostics does).
func (s *metricsSource) nics(ctx context.Context, id string, running bool, expected []protocol.ExpectedInstance) []metrics.NIC {
	a := s.a
	nics, ok := a.nics.get(id)
	if !ok {
		for _, e := range expected {
			if e.Spec.ID == id {
				nics = e.Spec.NICs
			}
		}
	}
	if len(nics) == 0 {
		return nil
	}
	diags := make([]protocol.NICDiagnostics, 0, len(nics))
	for _, n := range nics {
		d, err := nicDiagnostics(n)
		if err != nil {
			a.log.Debug("metrics: NIC counters", "instance", id, "port", n.PortID, "err", err)
		}
		diags = append(diags, d)
	}
	if running {
		if err := a.outboundShaping(ctx, id, diags); err != nil {
			a.log.Debug("metrics: outbound shaping counters not read", "instance", id, "err", err)
		}
	}
	out := make([]metrics.NIC, 0, len(diags))
	for _, d := range diags {
		if !d.Present {
			continue // not plugged: no counters to export
		}
		out = append(out, metrics.NIC{PortID: d.PortID, Interface: d.Interface,
			RxBytes: d.RxBytes, TxBytes: d.TxBytes, RxDrops: d.RxDrops, TxDrops: d.TxDrops,
			Shaped: d.InboundShaped || d.OutboundShaped, TCDrops: d.InboundDrops + d.OutboundDrops})
	}
	return out
}

// Host implements metrics.Source.
func (s *metricsSource) Host(ctx context.Context) metrics.Host {
	a := s.a
	var h metrics.Host
	var err error
	if h.PidsInUse, h.PidMax, err = metrics.HostPids(procDir); err == nil {
		h.HasPids = true
	} else {
		a.log.Warn("metrics: host pids", "err", err)
	}
	if h.ConntrackCount, h.ConntrackMax, h.HasConntrack, err = metrics.Conntrack(procDir); err != nil {
		a.log.Warn("metrics: conntrack", "err", err)
	}
	// The fingerprint is what the heartbeat sends: if it fails, the
	// scheduler sees no capacity either, so it is the runtime's health.
	_, err = a.drv.Fingerprint(ctx)
	h.DockerUp = err == nil
	if list, err := a.drv.List(ctx); err == nil {
		for _, st := range list {
			if st.Power == drivers.PowerRunning {
				h.RunningServers++
			}
		}
	}
	if s.ovsCheck != nil {
		up := s.ovsCheck(ctx) == nil
		h.OVSUp = &up
	}
	return h
}
