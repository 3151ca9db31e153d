// Package agent is Capsule's per-host compute agent: it runs the build and
// lifecycle requests the conductor sends on the host's compute queue
// through a drivers.Driver, and reports back to the conductor (results,
// heartbeats with the host's capacity, observed power states). It never
// opens the database: the bus is its only link to the control plane.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/volume"
)

// Defaults for what config.Agent does not carry.
const (
	DefaultReconcileInterval = 60 * time.Second
	DefaultCallTimeout       = 10 * time.Second
	DefaultDrainTimeout      = 2 * time.Minute
	DefaultBuildTimeout      = 10 * time.Minute
	// tombstoneTTL bounds how long a deleted id blocks a late build; far
	// longer than any queue delay, short enough to keep the map small.
	tombstoneTTL = time.Hour
)

// Agent is one host's compute agent. Create it with New and run it with
// Run; its methods are safe for concurrent use.
type Agent struct {
	cfg config.Agent
	drv drivers.Driver
	bus bus.Bus
	log *slog.Logger

	reconcileInterval time.Duration
	callTimeout       time.Duration
	drainTimeout      time.Duration
	buildTimeout      time.Duration
	reconcileBackoff  time.Duration // first delay between start-up reconcile tries
	now               func() time.Time

	locks    *instanceLocks
	deleted  *tombstones
	inflight *inflight
	// migDone remembers the migration steps this host carried out and
	// reported done, so a duplicate of their work is answered with that
	// report instead of run again: several conductors may each send a
	// step's work.
	migDone *doneSteps

	plumber Plumber // nil: no networking on this host
	// consoleTLS checks an https console proxy the agent dials back to.
	consoleTLS *tls.Config
	nics       *nicCache
	// fwSeen orders the firewall refreshes of each port (firewall.go).
	fwSeen fwClock

	// vols keeps this host's volumes (nil: none); reg is the registry
	// local volumes move through; volc the servers' attached volumes.
	vols *volume.Manager
	reg  *registry.Client
	volc *volCache

	// resumeDue is set until a reconcile resumed the servers a host
	// boot (or a runtime restart) stopped (resumeGuests) and its power
	// sync was sent.
	resumeDue atomic.Bool
	// kick asks the reconcile loop for a reconcile now (the runtime
	// came back); one pending kick is enough.
	kick chan struct{}
}

// Option tunes an Agent beyond config.Agent.
type Option func(*Agent)

// WithReconcileInterval sets how often the agent re-syncs power states
// with the conductor (default DefaultReconcileInterval; <= 0 disables the
// periodic run, the start-up one always happens).
func WithReconcileInterval(d time.Duration) Option {
	return func(a *Agent) { a.reconcileInterval = d }
}

// WithCallTimeout bounds each instances_on_host call to the conductor.
func WithCallTimeout(d time.Duration) Option { return func(a *Agent) { a.callTimeout = d } }

// WithDrainTimeout bounds how long Run waits, once its context ended, for
// operations in flight before cancelling them.
func WithDrainTimeout(d time.Duration) Option { return func(a *Agent) { a.drainTimeout = d } }

// WithBuildTimeout bounds one build (image pull, create, start).
func WithBuildTimeout(d time.Duration) Option { return func(a *Agent) { a.buildTimeout = d } }

// WithReconcileBackoff sets the first delay between start-up reconcile
// attempts while the conductor does not answer (doubles up to 30s).
func WithReconcileBackoff(d time.Duration) Option {
	return func(a *Agent) { a.reconcileBackoff = d }
}

// New returns an agent for cfg.Host running servers through drv. Zero
// values in cfg get config.Default's; PidsLimit in particular is never
// left at 0 (an unbounded pid count let one tenant's thread leak exhaust
// a host).
func New(cfg config.Agent, drv drivers.Driver, b bus.Bus, log *slog.Logger, opts ...Option) *Agent {
	if log == nil {
		log = slog.Default()
	}
	def := config.Default().Agent
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = def.PidsLimit
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = def.HeartbeatInterval
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = def.StopTimeout
	}
	if cfg.CPUAllocationRatio <= 0 {
		cfg.CPUAllocationRatio = def.CPUAllocationRatio
	}
	if cfg.RAMAllocationRatio <= 0 {
		cfg.RAMAllocationRatio = def.RAMAllocationRatio
	}
	if cfg.DiskAllocationRatio <= 0 {
		cfg.DiskAllocationRatio = def.DiskAllocationRatio
	}
	if cfg.Zone == "" {
		cfg.Zone = def.Zone
	}
	a := &Agent{
		cfg:               cfg,
		drv:               drv,
		bus:               b,
		log:               log.With("role", "agent", "host", cfg.Host, "driver", drv.Name()),
		reconcileInterval: DefaultReconcileInterval,
		callTimeout:       DefaultCallTimeout,
		drainTimeout:      DefaultDrainTimeout,
		buildTimeout:      DefaultBuildTimeout,
		reconcileBackoff:  time.Second,
		now:               time.Now,
		locks:             newInstanceLocks(),
		deleted:           newTombstones(tombstoneTTL),
		migDone:           newDoneSteps(tombstoneTTL),
		inflight:          newInflight(),
		nics:              newNICCache(),
		volc:              newVolCache(),
		kick:              make(chan struct{}, 1),
	}
	a.resumeDue.Store(cfg.ResumeOnHostBoot())
	for _, o := range opts {
		o(a)
	}
	if a.callTimeout <= 0 {
		a.callTimeout = DefaultCallTimeout
	}
	if a.drainTimeout <= 0 {
		a.drainTimeout = DefaultDrainTimeout
	}
	if a.buildTimeout <= 0 {
		a.buildTimeout = DefaultBuildTimeout
	}
	if a.reconcileBackoff <= 0 {
		a.reconcileBackoff = time.Second
	}
	return a
}

// Run serves the host's compute queue, heartbeats and reconciles with the
// conductor (at start-up until it answers, then periodically) until ctx
// ends. On stop it takes no new message, lets the operations in flight
// finish and report (up to the drain timeout) and returns nil; it returns
// an error only when it cannot serve at all. Run is called once per Agent.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.Host == "" {
		return errors.New("agent: config agent.host is empty")
	}
	// Operations run under work, not ctx: a stop must not cut a build
	// between Create and its report. work ends only after the drain.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	// Background loops end with ctx, or when Run fails early.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()

	// Consume first: it declares the compute queue, which must exist
	// before a heartbeat lets the scheduler pick this host (a publish to
	// a missing queue is unroutable). Operations are idempotent and
	// serialized per instance, so nothing needs the start-up reconcile to
	// come first.
	queue := bus.ComputeQueue(a.cfg.Host)
	handler := func(_ context.Context, m bus.Message) (any, error) {
		if err := a.inflight.enter(); err != nil {
			return nil, bus.Retry(err)
		}
		defer a.inflight.leave()
		return a.Handle(work, m)
	}
	if err := a.bus.Consume(ctx, queue, handler); err != nil {
		return fmt.Errorf("agent: consume %s: %w", queue, err)
	}
	a.log.Info("agent serving", "queue", queue)
	wg.Go(func() { a.heartbeatLoop(ctx) })
	wg.Go(func() { a.alarmLoop(ctx) })
	wg.Go(func() { a.usageLoop(ctx) })
	wg.Go(func() {
		if err := a.reconcileUntilDone(ctx); err != nil {
			return // stopped before the conductor ever answered
		}
		a.reconcileLoop(ctx, work)
	})
	if w, ok := a.drv.(drivers.RuntimeWatcher); ok {
		wg.Go(func() { w.WatchRuntime(ctx, a.runtimeRestarted) })
	}

	<-ctx.Done()
	a.log.Info("agent stopping: draining operations in flight")
	idle := a.inflight.stop()
	drain := time.NewTimer(a.drainTimeout)
	defer drain.Stop()
	select {
	case <-idle:
	case <-drain.C:
		a.log.Warn("agent: operations still running after the drain timeout; cancelling them", "drain_timeout", a.drainTimeout)
		cancelWork()
		<-idle
	}
	a.log.Info("agent stopped")
	return nil
}

// reconcileUntilDone runs Reconcile until it succeeds once, backing off
// while the conductor is unreachable; it fails only when ctx ends.
func (a *Agent) reconcileUntilDone(ctx context.Context) error {
	delay := a.reconcileBackoff
	for {
		err := a.Reconcile(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Warn("start-up reconcile failed; retrying", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// runtimeRestarted is called when the driver's runtime (dockerd) answers
// again after it stopped, was killed or restarted. With live-restore the
// servers kept running and the reconcile it asks for changes nothing; a
// server the outage stopped was not stopped by its owner, so, as after a
// host boot, it is started again (when resume is on) before any power sync
// could record it SHUTOFF.
func (a *Agent) runtimeRestarted() {
	if a.cfg.ResumeOnHostBoot() {
		a.resumeDue.Store(true)
	}
	a.log.Info("container runtime answers again; reconciling", "resume_stopped_servers", a.cfg.ResumeOnHostBoot())
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// reconcileLoop re-syncs power states every reconcileInterval (never
// when it is <= 0) and whenever the runtime came back, until ctx ends.
// Each run uses work so a stop does not cut a destroy in half.
func (a *Agent) reconcileLoop(ctx, work context.Context) {
	var tick <-chan time.Time
	if a.reconcileInterval > 0 {
		t := time.NewTicker(a.reconcileInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-a.kick:
		}
		if err := a.inflight.enter(); err != nil {
			return
		}
		err := a.Reconcile(work)
		a.inflight.leave()
		if err != nil {
			a.log.Warn("periodic reconcile failed", "err", err)
		}
	}
}
