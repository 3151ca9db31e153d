package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/metrics"
	"github.com/capsule-cloud/capsule/protocol"
)

// The alarm loop: every Alarms.Interval the agent reads each server's
// cgroup figures and the host's, and raises a protocol.HostEvent to the
// conductor for every threshold crossed and every OOM kill. A crossed
// threshold raises once; the alarm re-arms only after the figure fell
// back below rearmFraction of the threshold, so a figure hovering around
// it does not flood the conductor.

// rearmFraction of a threshold is where a raised alarm re-arms.
const rearmFraction = 0.9

// minThrottlePeriods is how many CFS periods (100 ms each by default) a
// server must have run in one interval for its throttled ratio to mean
// something: a server that woke twice and was throttled once is idle,
// not starved.
const minThrottlePeriods = 10

// maxPendingEvents bounds the events kept for the next round while the
// bus does not take them: a long outage drops the oldest, not the agent.
const maxPendingEvents = 256

// serverStats reads running instance id's counters. Errors are the
// driver's: ErrInvalidState when it does not run, ErrNotFound when it is
// gone.
func (a *Agent) serverStats(ctx context.Context, id string) (drivers.InstanceStats, error) {
	sr, ok := a.drv.(drivers.StatsReader)
	if !ok {
		return drivers.InstanceStats{}, fmt.Errorf("%s driver cannot measure servers: %w", a.drv.Name(), drivers.ErrNotSupported)
	}
	return sr.InstanceStats(ctx, id)
}

// serverFigures are one server's figures in one alarm round.
type serverFigures struct {
	ID        string
	StartedAt time.Time // a new start is a new cgroup: its counters restart
	// Measured is false for a server listed but not running (or not
	// readable): it keeps its alarm state, nothing is checked.
	Measured bool
	// DiedOOM says the driver saw the workload end killed by the OOM
	// killer (its cgroup, and counter, went with it).
	DiedOOM bool
	// The server's counters, when Measured. A working set of 0 is one
	// the driver cannot tell: memory alarms then count the whole usage.
	cgroup.Stats

	hasBaseline bool // OOMKills were read for this StartedAt (state only)
}

// hostFigures are the host's figures in one alarm round.
type hostFigures struct {
	Tasks, PidMax           uint64
	HasPids                 bool
	Conntrack, ConntrackMax uint64
	HasConntrack            bool
}

// alarmRound is what one round read. Listed is false when the driver
// could not list its servers: server alarms then keep their state.
type alarmRound struct {
	At      time.Time
	Listed  bool
	Servers []serverFigures
	Host    hostFigures
	// RootDisk is the driver's drivers.HostInfo.RootDisk ("" when it
	// does not say).
	RootDisk string
}

// alarmKey names one alarm: a kind on a server ("" for the host).
type alarmKey struct {
	instance string
	kind     protocol.EventKind
}

// alarms is the alarm loop's state: which alarms are raised (not yet
// re-armed) and each server's previous figures, for the counters'
// increase over the interval. It belongs to one loop: not safe for
// concurrent use.
type alarms struct {
	host    string
	cfg     config.Alarms
	newID   func() string
	raised  map[alarmKey]bool
	prev    map[string]serverFigures // by instance, measured or not
	started bool                     // a round with a listing happened: later first sightings are new servers
}

func newAlarms(host string, cfg config.Alarms) *alarms {
	return &alarms{host: host, cfg: cfg, newID: uuid.NewString, raised: map[alarmKey]bool{}, prev: map[string]serverFigures{}}
}

// evaluate returns the events round raises and moves the state on.
func (al *alarms) evaluate(r alarmRound) []protocol.HostEvent {
	var out []protocol.HostEvent
	ev := func(instance string, kind protocol.EventKind, severity string, value, threshold float64, format string, args ...any) {
		out = append(out, protocol.HostEvent{ID: al.newID(), Host: al.host, InstanceID: instance, Kind: kind,
			Severity: severity, Message: fmt.Sprintf(format, args...), Value: value, Threshold: threshold, At: r.At.UTC()})
	}
	if r.Listed {
		listed := make(map[string]bool, len(r.Servers))
		for _, s := range r.Servers {
			listed[s.ID] = true
			al.server(s, ev)
		}
		for id := range al.prev {
			if !listed[id] {
				delete(al.prev, id) // destroyed
			}
		}
		for k := range al.raised {
			if k.instance != "" && !listed[k.instance] {
				delete(al.raised, k)
			}
		}
		al.started = true
	}

	// A host figure against its kernel maximum: format gets the figure,
	// the maximum, its percentage and the threshold's.
	host := func(has bool, kind protocol.EventKind, used, max uint64, threshold float64, format string) {
		if !has || max == 0 {
			return
		}
		ratio := float64(used) / float64(max)
		if al.level(alarmKey{"", kind}, ratio, threshold) {
			ev("", kind, protocol.SeverityCritical, float64(used), threshold*float64(max), format, used, max, 100*ratio, 100*threshold)
		}
	}
	// A data root that cannot cap servers' root disks: once, until it can.
	key := alarmKey{"", protocol.EventRootDisk}
	if reason, ok := strings.CutPrefix(r.RootDisk, drivers.RootDiskNotEnforced); ok {
		if !al.raised[key] {
			al.raised[key] = true
			ev("", protocol.EventRootDisk, protocol.SeverityWarning, 0, 0,
				"root disk not enforced on host %s%s: a server can fill the Docker data root (docs/operations.md, Root disk)",
				al.host, reason)
		}
	} else if r.RootDisk == drivers.RootDiskEnforced {
		delete(al.raised, key)
	}
	h := r.Host
	host(h.HasPids, protocol.EventHostPids, h.Tasks, h.PidMax, al.cfg.HostPids,
		"host runs %d tasks of kernel.pid_max %d (%.0f%%); alarm at %.0f%%: forks fail for every server once it is reached")
	host(h.HasConntrack, protocol.EventConntrack, h.Conntrack, h.ConntrackMax, al.cfg.HostConntrack,
		"host tracks %d connections of nf_conntrack_max %d (%.0f%%); alarm at %.0f%%: new connections are dropped once it is full")
	return out
}

// server checks one server's figures against the previous round's.
func (al *alarms) server(s serverFigures, ev func(string, protocol.EventKind, string, float64, float64, string, ...any)) {
	p, seen := al.prev[s.ID]
	sameStart := seen && p.StartedAt.Equal(s.StartedAt)
	if !s.Measured {
		if s.DiedOOM && p.Measured {
			// Ran at the last round, now dead of an OOM kill: the
			// counter went with the cgroup, the driver tells.
			ev(s.ID, protocol.EventOOMKill, protocol.SeverityCritical, 1, 0,
				"the OOM killer ended the server's workload: the server stopped (memory limit %s)", mib(p.MemoryLimitBytes))
		}
		if sameStart {
			p.Measured = false // keeps its baseline: a read that failed once loses nothing
			al.prev[s.ID] = p
		} else {
			al.prev[s.ID] = serverFigures{ID: s.ID, StartedAt: s.StartedAt}
		}
		return
	}
	s.hasBaseline = true
	al.prev[s.ID] = s

	// OOM kills: any increase, always. A start since the last round is
	// a new cgroup, whose whole counter is new; so is a server first
	// seen after the first round. At the first round the counters are a
	// baseline: kills before the agent started are not guessed at.
	var kills uint64
	switch {
	case sameStart && p.hasBaseline:
		kills = s.OOMKills - min(p.OOMKills, s.OOMKills)
	case seen && !sameStart, !seen && al.started:
		kills = s.OOMKills
	}
	if kills > 0 {
		ev(s.ID, protocol.EventOOMKill, protocol.SeverityCritical, float64(kills), 0,
			"the OOM killer killed %d process(es) in the server: its memory limit is %s (%s held now)",
			kills, mib(s.MemoryLimitBytes), mib(s.MemoryWorkingSetBytes))
	}

	if s.PidsLimit > 0 {
		ratio := float64(s.Pids) / float64(s.PidsLimit)
		if al.level(alarmKey{s.ID, protocol.EventPidsAlarm}, ratio, al.cfg.ServerPids) {
			sev := protocol.SeverityWarning
			if s.Pids >= s.PidsLimit {
				sev = protocol.SeverityCritical // at the cap: its forks fail now
			}
			ev(s.ID, protocol.EventPidsAlarm, sev, float64(s.Pids), al.cfg.ServerPids*float64(s.PidsLimit),
				"server runs %d tasks of its %d cap (%.0f%%); alarm at %.0f%%: a thread or fork leak?",
				s.Pids, s.PidsLimit, 100*ratio, 100*al.cfg.ServerPids)
		}
	}

	if s.MemoryLimitBytes > 0 {
		used := s.MemoryWorkingSetBytes
		if used == 0 {
			used = s.MemoryUsageBytes // cannot tell cache apart: count it all
		}
		ratio := float64(used) / float64(s.MemoryLimitBytes)
		if al.level(alarmKey{s.ID, protocol.EventMemoryAlarm}, ratio, al.cfg.ServerMemory) {
			ev(s.ID, protocol.EventMemoryAlarm, protocol.SeverityWarning, float64(used), al.cfg.ServerMemory*float64(s.MemoryLimitBytes),
				"server holds %s it cannot give back of its %s memory limit (%.0f%%; %s of usage is reclaimable page cache); alarm at %.0f%%",
				mib(used), mib(s.MemoryLimitBytes), 100*ratio, mib(s.MemoryUsageBytes-min(used, s.MemoryUsageBytes)), 100*al.cfg.ServerMemory)
		}
	}

	if sameStart && p.Measured && s.CPUPeriods >= p.CPUPeriods && s.CPUThrottledPeriods >= p.CPUThrottledPeriods {
		periods, throttled := s.CPUPeriods-p.CPUPeriods, s.CPUThrottledPeriods-p.CPUThrottledPeriods
		ratio := 0.0 // idle over the interval: not starved, re-arms
		if periods >= minThrottlePeriods {
			ratio = float64(throttled) / float64(periods)
		}
		if al.level(alarmKey{s.ID, protocol.EventCPUAlarm}, ratio, al.cfg.ServerThrottled) {
			ev(s.ID, protocol.EventCPUAlarm, protocol.SeverityWarning, ratio, al.cfg.ServerThrottled,
				"server was throttled by its CPU quota in %d of %d periods (%.0f%%) since the last check; alarm at %.0f%%",
				throttled, periods, 100*ratio, 100*al.cfg.ServerThrottled)
		}
	}
}

// level applies the hysteresis to one alarm: it says whether ratio raises
// it now (crossed while armed); a raised alarm re-arms below
// rearmFraction of the threshold. A threshold <= 0 disables the alarm.
func (al *alarms) level(k alarmKey, ratio, threshold float64) bool {
	if threshold <= 0 {
		delete(al.raised, k)
		return false
	}
	if al.raised[k] {
		if ratio < threshold*rearmFraction {
			delete(al.raised, k)
		}
		return false
	}
	if ratio >= threshold {
		al.raised[k] = true
		return true
	}
	return false
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// readAlarmRound reads the figures of one round: every server the driver
// lists (running ones measured) and the host's.
func (a *Agent) readAlarmRound(ctx context.Context) alarmRound {
	r := alarmRound{At: a.now()}
	if rd, ok := a.drv.(drivers.RootDiskReporter); ok {
		r.RootDisk = rd.RootDisk()
	}
	if n, m, err := metrics.HostPids(procDir); err == nil {
		r.Host.Tasks, r.Host.PidMax, r.Host.HasPids = n, m, true
	} else {
		a.log.Debug("alarms: host pids not read", "err", err)
	}
	if n, m, ok, err := metrics.Conntrack(procDir); err == nil {
		r.Host.Conntrack, r.Host.ConntrackMax, r.Host.HasConntrack = n, m, ok
	} else {
		a.log.Debug("alarms: conntrack not read", "err", err)
	}
	list, err := a.drv.List(ctx)
	if err != nil {
		a.log.Warn("alarms: servers not listed; their alarms wait for the next round", "err", err)
		return r
	}
	r.Listed = true
	for _, st := range list {
		f := serverFigures{ID: st.ID, StartedAt: st.StartedAt}
		if st.Power == drivers.PowerRunning || st.Power == drivers.PowerPaused {
			s, err := a.serverStats(ctx, st.ID)
			switch {
			case err == nil:
				f.Measured, f.Stats = true, s.Stats
			case errors.Is(err, drivers.ErrInvalidState), errors.Is(err, drivers.ErrNotFound):
				// stopped or gone since the listing
			default:
				a.log.Warn("alarms: server figures not read", "instance", st.ID, "err", err)
			}
		} else {
			// Docker's words for a workload the OOM killer ended
			// (drivers.Status has no flag of its own): killed, 137.
			f.DiedOOM = st.ExitCode == 137 && strings.Contains(st.Description, "OOM killed")
		}
		r.Servers = append(r.Servers, f)
	}
	return r
}

// alarmLoop runs an alarm round at once and every Alarms.Interval until
// ctx ends. Events the bus did not take are tried again next round.
func (a *Agent) alarmLoop(ctx context.Context) {
	cfg := a.cfg.Alarms
	if cfg.Interval <= 0 {
		a.log.Info("alarms disabled (agent.alarms.interval is 0)")
		return
	}
	al := newAlarms(a.cfg.Host, cfg)
	var pending []protocol.HostEvent
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, cfg.Interval+a.callTimeout)
		for _, ev := range al.evaluate(a.readAlarmRound(rctx)) {
			a.log.Warn("alarm: "+ev.Message, "event", ev.ID, "kind", ev.Kind, "severity", ev.Severity,
				"instance", ev.InstanceID, "value", ev.Value, "threshold", ev.Threshold)
			pending = append(pending, ev)
		}
		pending = a.publishEvents(rctx, pending)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishEvents sends events to the conductor in order and returns those
// not sent (the first failure stops the round: the bus is down).
func (a *Agent) publishEvents(ctx context.Context, events []protocol.HostEvent) []protocol.HostEvent {
	for i, ev := range events {
		if err := a.publish(ctx, protocol.KindHostEvent, ev); err != nil {
			rest := events[i:]
			if len(rest) > maxPendingEvents {
				a.log.Error("alarms: events dropped, the conductor queue takes none", "dropped", len(rest)-maxPendingEvents)
				rest = rest[len(rest)-maxPendingEvents:]
			}
			if ctx.Err() == nil {
				a.log.Warn("alarms: events not sent; retrying next round", "pending", len(rest), "err", err)
			}
			return rest
		}
	}
	return nil
}
