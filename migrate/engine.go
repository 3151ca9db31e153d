package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// Selector picks and claims a migration's target (*scheduler.Scheduler).
// When no host can take it, the error has an Explain() string method.
type Selector interface {
	SelectTarget(ctx context.Context, t instance.MigrationTarget) (string, error)
}

// Registry deletes a migration's image from the private registry
// (*registry.Client): already gone is success.
type Registry interface {
	DeleteImage(ctx context.Context, ref, digest string) error
}

// EventSchedule is the instance-action event the conductor records for
// the scheduling step (Nova's).
const EventSchedule = "conductor_migrate_server"

// EventRollback is the (failed) instance-action event recording why a
// migration was rolled back; Nova shows a fault only on ERROR servers, so
// this is where a user of a server back on its source reads the reason.
const EventRollback = "conductor_rollback_migration"

// DefaultStepTimeout bounds a step when the configuration says nothing.
const DefaultStepTimeout = 15 * time.Minute

// Options configure an Engine.
type Options struct {
	Store     *store.Store
	Bus       bus.Bus
	Scheduler Selector
	// Registry deletes the migration's tag at the end; nil leaves tags
	// behind (logged), for setups without a registry.
	Registry Registry
	// RegistryAddress (host:port) is the registry the refs name.
	RegistryAddress string
	// StepTimeout is how long a step waits for its agent.
	StepTimeout time.Duration
	// Precopy: copy the server while it runs first (steps precopy and
	// prepull), so the export after the stop pushes only what changed.
	Precopy bool
	Log     *slog.Logger
	Now     func() time.Time // default time.Now
	Host    string           // names the conductor in instance-action events (default: hostname)
}

// Engine drives cold migrations: it carries each step out, handles the
// agents' reports, answers their checks and enforces deadlines. Every
// change is guarded on the step the caller saw, so concurrent handlers
// (and several conductors) can share it.
type Engine struct {
	st       *store.Store
	b        bus.Bus
	sched    Selector
	reg      Registry
	regAddr  string
	timeout  time.Duration
	precopy  bool
	log      *slog.Logger
	now      func() time.Time
	host     string
	mu       sync.Mutex
	inflight map[uint]Step // the step whose work this process published, per migration
}

// New returns an engine.
func New(o Options) *Engine {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = DefaultStepTimeout
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	return &Engine{st: o.Store, b: o.Bus, sched: o.Scheduler, reg: o.Registry, regAddr: o.RegistryAddress,
		timeout: o.StepTimeout, precopy: o.Precopy, log: o.Log.With("component", "migrate"), now: func() time.Time { return o.Now().UTC() },
		host: o.Host, inflight: map[uint]Step{}}
}

// StepTimeout is how long a step waits for its agent.
func (e *Engine) StepTimeout() time.Duration { return e.timeout }

// Ref is the registry reference of migration m's commit.
func (e *Engine) Ref(m *store.Migration) string {
	return registry.Ref{Host: e.regAddr, Repo: registry.MigrationRepo, Tag: m.UUID}.String()
}

// PreRef is the registry reference of migration m's pre-copy (its
// commit of the running server): the migration's reference with "-pre".
// Every migration's work names it, whether or not it pre-copied: a
// cleanup or a tag deletion of what is not there does nothing.
func PreRef(m *store.Migration) string {
	if m.SnapshotRef == "" {
		return ""
	}
	return m.SnapshotRef + "-pre"
}

func (e *Engine) logFor(m *store.Migration) *slog.Logger {
	return e.log.With("migration", m.UUID, "instance", m.InstanceID, "step", m.Step,
		"source", m.SourceCompute, "target", m.DestCompute)
}

// deadline is when m's current step stops waiting (zero: no deadline).
func (e *Engine) deadline(m *store.Migration) time.Time {
	if m.StepStartedAt == nil {
		return time.Time{}
	}
	return m.StepStartedAt.Add(e.timeout)
}

func (e *Engine) markInflight(id uint, s Step) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inflight[id] = s
}

func (e *Engine) isInflight(id uint, s Step) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inflight[id] == s
}

func (e *Engine) forget(id uint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.inflight, id)
}

func (e *Engine) load(ctx context.Context, id uint) (*store.Migration, error) {
	var m store.Migration
	if err := e.st.WithContext(ctx).Where("id = ?", id).First(&m).Error; err != nil {
		return nil, store.NotFound(err, fmt.Sprintf("migration %d", id))
	}
	return &m, nil
}

// instance loads m's instance; a purged one is returned as deleted.
func (e *Engine) instance(ctx context.Context, m *store.Migration) (*store.Instance, error) {
	var inst store.Instance
	err := e.st.WithContext(ctx).Where("id = ?", m.InstanceID).Limit(1).Find(&inst).Error
	if err != nil {
		return nil, fmt.Errorf("instance %s of migration %s: %w", m.InstanceID, m.UUID, err)
	}
	if inst.ID == "" {
		at := e.now()
		inst = store.Instance{ID: m.InstanceID, DeletedAt: &at}
	}
	return &inst, nil
}

// Advance carries migration id's current step out (KindMigrationAdvance):
// the scheduling step, or publishing the step's work unless this engine
// already did.
func (e *Engine) Advance(ctx context.Context, id uint) error {
	m, err := e.load(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return e.advance(ctx, m, false)
}

// advance carries m's current step out; force re-publishes work this
// engine already sent (the resume pass: the previous conductor may have
// died before its publish).
func (e *Engine) advance(ctx context.Context, m *store.Migration, force bool) error {
	step := Step(m.Step)
	if step == StepDone || step == "" {
		return nil
	}
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	if inst.DeletedAt != nil && step != StepAbandoned && step != StepDeleteTag {
		return e.abandon(ctx, m)
	}
	switch step {
	case StepScheduling:
		return e.schedule(ctx, m, inst)
	case StepExporting:
		if inst.TaskState == migratedTask {
			// Exported, but the conductor stopped before the import
			// step was recorded.
			return e.enterImporting(ctx, m)
		}
		return e.publish(ctx, m, inst, force)
	case StepPrecopy, StepPrepull, StepImporting, StepConfirming, StepRevertSource:
		return e.publish(ctx, m, inst, force)
	case StepRevertTarget:
		if err := e.publish(ctx, m, inst, force || m.Rollback); err != nil {
			return err
		}
		if m.Rollback {
			// A rollback does not wait for the target (it may be the
			// host that failed): the cleanup waits in its durable queue.
			return e.enterRevertSource(ctx, m)
		}
		return nil
	case StepAbandoned:
		if err := e.publish(ctx, m, inst, true); err != nil {
			return err
		}
		if err := e.moveTo(ctx, m, StepDeleteTag, nil); err != nil {
			return ignoreMoved(err)
		}
		return e.deleteTag(ctx, m)
	case StepDeleteTag:
		return e.deleteTag(ctx, m)
	}
	return nil
}

func ignoreMoved(err error) error {
	if errors.Is(err, errMoved) {
		return nil
	}
	return err
}

// moveTo is move in a transaction of its own, logged.
func (e *Engine) moveTo(ctx context.Context, m *store.Migration, to Step, fields map[string]any) error {
	from := m.Step
	err := e.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return move(tx, m, to, e.now(), fields) })
	if err == nil {
		e.logFor(m).Info("migration step", "from", from, "to", string(to), "status", m.Status)
	}
	return err
}

// Resume is the start-up pass: every unsettled migration's current step
// is carried out again (its work re-published: agents are idempotent),
// and steps past their deadline are ended.
func (e *Engine) Resume(ctx context.Context) { e.pass(ctx, true) }

// Periodic enforces deadlines, re-publishes work nothing is in flight
// for, retries tag deletions and notices deleted instances.
func (e *Engine) Periodic(ctx context.Context) { e.pass(ctx, false) }

func (e *Engine) pass(ctx context.Context, force bool) {
	var ms []store.Migration
	err := e.st.WithContext(ctx).Where("step <> '' AND step <> ?", string(StepDone)).Order("id").Find(&ms).Error
	if err != nil {
		e.log.Error("list unfinished migrations", "error", err)
		return
	}
	for i := range ms {
		if ctx.Err() != nil {
			return
		}
		m := &ms[i]
		var err error
		if d := e.deadline(m); !d.IsZero() && e.now().After(d) {
			err = e.expire(ctx, m, force)
		} else {
			err = e.advance(ctx, m, force)
		}
		if err != nil {
			e.logFor(m).Error("advance migration", "error", err)
		}
	}
}

// expire ends a step that waited past its deadline.
func (e *Engine) expire(ctx context.Context, m *store.Migration, force bool) error {
	log := e.logFor(m)
	inst, err := e.instance(ctx, m)
	if err != nil {
		return err
	}
	if inst.DeletedAt != nil && Step(m.Step) != StepAbandoned && !Step(m.Step).Settled() {
		return e.abandon(ctx, m)
	}
	switch step := Step(m.Step); step {
	case StepPrecopy, StepPrepull, StepExporting, StepImporting:
		log.Warn("migration step timed out; rolling back", "timeout", e.timeout)
		return e.rollback(ctx, m, fmt.Sprintf("Migration step %s on host %s timed out after %s.", step, step.HostOf(m), e.timeout))
	case StepConfirming:
		// The source's cleanup stays queued for its agent (MigrationCheck
		// lets it proceed): the confirm does not hang on a dead host.
		log.Warn("source cleanup not reported in time; confirming anyway", "timeout", e.timeout)
		return e.finishConfirm(ctx, m)
	case StepRevertTarget:
		log.Warn("target cleanup not reported in time; restoring the source anyway", "timeout", e.timeout)
		return e.enterRevertSource(ctx, m)
	case StepRevertSource:
		log.Error("restore on the source timed out", "timeout", e.timeout)
		return e.failOnSource(ctx, m, fmt.Sprintf("Restoring the instance on host %s timed out after %s.", m.SourceCompute, e.timeout))
	}
	return e.advance(ctx, m, force)
}

// InstanceDeleted ends the unsettled migrations of a deleted instance:
// both hosts are told to clean up, the tag is deleted, the migration
// ends in error.
func (e *Engine) InstanceDeleted(ctx context.Context, instanceID string) error {
	var ms []store.Migration
	err := e.st.WithContext(ctx).Where("instance_id = ? AND step NOT IN ?", instanceID,
		[]string{"", string(StepDone), string(StepDeleteTag), string(StepAbandoned)}).Find(&ms).Error
	if err != nil {
		return fmt.Errorf("migrations of deleted instance %s: %w", instanceID, err)
	}
	var errs []error
	for i := range ms {
		errs = append(errs, e.abandon(ctx, &ms[i]))
	}
	return errors.Join(errs...)
}

// publish sends m's current step's work unless this engine already did
// (force: send anyway).
func (e *Engine) publish(ctx context.Context, m *store.Migration, inst *store.Instance, force bool) error {
	step := Step(m.Step)
	if step.Work() == "" || (!force && e.isInflight(m.ID, step)) {
		return nil
	}
	hosts := []string{step.HostOf(m)}
	if step == StepAbandoned {
		hosts = []string{m.SourceCompute, m.DestCompute}
	}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		work, err := e.work(ctx, m, inst, h)
		if err != nil {
			return err
		}
		msg, err := bus.NewMessage(step.Work(), work)
		if err != nil {
			return err
		}
		if err := e.b.Publish(ctx, bus.ComputeQueue(h), msg); err != nil {
			return fmt.Errorf("send %s of migration %s to %s: %w", step.Work(), m.UUID, h, err)
		}
		e.logFor(m).Info("migration work sent", "kind", step.Work(), "host", h, "deadline", work.Deadline,
			"volumes", len(work.VolumeRefs), "drop_volumes", len(work.DropVolumes))
	}
	e.markInflight(m.ID, step)
	return nil
}

// work builds the message of m's current step for host.
func (e *Engine) work(ctx context.Context, m *store.Migration, inst *store.Instance, host string) (protocol.MigrationWork, error) {
	step := Step(m.Step)
	w := protocol.MigrationWork{RequestID: m.RequestID, MigrationID: m.ID, MigrationUUID: m.UUID,
		InstanceID: m.InstanceID, Step: m.Step, Ref: m.SnapshotRef, PreRef: PreRef(m)}
	if d := e.deadline(m); !d.IsZero() && step != StepAbandoned {
		w.Deadline = d
	}
	switch step {
	case StepExporting, StepImporting:
		w.VolumeRefs = e.volumeRefs(m)
	case StepConfirming, StepRevertTarget, StepAbandoned:
		drop, err := e.dropOn(ctx, m, host)
		if err != nil {
			return w, err
		}
		w.DropVolumes = drop
	}
	if inst.DeletedAt != nil {
		// Only a cleanup: the agent finds the container by instance id.
		w.Spec = protocol.InstanceSpec{ID: inst.ID, Name: inst.Name, ProjectID: inst.ProjectID}
		return w, nil
	}
	specOf := *inst
	if step == StepRevertSource && inst.OldFlavorID != "" {
		// The source copy runs with the old flavor.
		specOf.FlavorRowID, specOf.FlavorID, specOf.FlavorName = inst.OldFlavorRowID, inst.OldFlavorID, inst.OldFlavorName
		specOf.VCPUs, specOf.MemoryMB, specOf.RootGB, specOf.ExtraSpecs = inst.OldVCPUs, inst.OldMemoryMB, inst.OldRootGB, inst.OldExtraSpecs
	}
	spec, err := instance.SpecFor(ctx, e.st, &specOf)
	if err != nil {
		return w, fmt.Errorf("spec for migration %s: %w", m.UUID, err)
	}
	switch step {
	case StepImporting:
		spec.ImageRef = m.SnapshotRef
		w.Start = m.SourceVMState == "active"
	case StepRevertSource:
		w.Start = m.SourceVMState == "active"
	}
	w.Spec = spec
	return w, nil
}

// recordEvent adds an instance-action event under the migration's
// request id; failing to record it must not undo the step, so errors are
// only logged.
func (e *Engine) recordEvent(ctx context.Context, m *store.Migration, ev store.Event) {
	ev.InstanceID, ev.RequestID = m.InstanceID, m.RequestID
	if ev.RequestID == "" || ev.Name == "" {
		return
	}
	if err := e.st.RecordEvent(ctx, ev); err != nil {
		e.logFor(m).Error("record instance-action event", "event", ev.Name, "error", err)
	}
}
