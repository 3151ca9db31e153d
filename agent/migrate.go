package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// Instance-action events of a cold migration's steps (Nova's names; the
// export is EventResize, compute_resize_instance, and the cleanup of a
// revert EventRevertResize, compute_revert_resize).
const (
	EventFinishResize       = "compute_finish_resize"
	EventConfirmResize      = "compute_confirm_resize"
	EventFinishRevertResize = "compute_finish_revert_resize"
)

// stepConfirming is package migrate's step of a confirm: its cleanup is
// the confirm's event, any other cleanup a revert's (or a rollback's).
const stepConfirming = "confirming"

// progressInterval throttles MigrationProgress messages: the conductor
// writes each to the database.
const progressInterval = time.Second

// migrationExporter is what a driver offers beyond drivers.Snapshotter
// when it can tell the compressed bytes a migration's push really sent
// (the layers the registry lacked; the docker driver). A driver without
// it exports with Snapshot, and the report carries the bytes its progress
// last told.
type migrationExporter interface {
	ExportMigration(ctx context.Context, id, ref string, progress func(bytes int64)) (digest string, pushed int64, err error)
}

// migrationPrecopier is what a driver offers when it can copy a running
// instance ahead of its export (the docker driver): the pre-copy, then an
// export that pushes only what changed since over it. A driver without
// it pre-copies nothing, and its export moves everything.
type migrationPrecopier interface {
	PrecopyMigration(ctx context.Context, id, preRef string, progress func(bytes int64)) (digest string, pushed int64, err error)
	ExportMigrationOnto(ctx context.Context, id, preRef, ref string, progress func(bytes int64)) (digest string, pushed int64, err error)
	ForgetPrecopy(id string)
}

// sandboxPreparer is a driver that can make a networked instance's
// sandbox ahead of its creation (the docker driver): the pre-pull does,
// so the import, while the server is down, does not.
type sandboxPreparer interface {
	PrepareSandbox(ctx context.Context, spec drivers.Spec) error
}

// deltaPuller is a driver that can fetch a migration's final image as
// the one layer it adds over the pre-copy this host pre-pulled (the
// docker driver), with fewer registry round trips than a pull: the
// import does it while the server is down.
type deltaPuller interface {
	PullDelta(ctx context.Context, ref, preRef string, progress func(bytes int64)) (int64, error)
}

// migrationEvent names the instance-action event of a migration work
// (the pre-copy and pre-pull have none: Nova has no such steps).
func migrationEvent(kind, step string) string {
	switch kind {
	case protocol.KindMigrationExport:
		return EventResize
	case protocol.KindMigrationImport:
		return EventFinishResize
	case protocol.KindMigrationCleanup:
		if step == stepConfirming {
			return EventConfirmResize
		}
		return EventRevertResize
	case protocol.KindMigrationRestore:
		return EventFinishRevertResize
	}
	return ""
}

// migrating reports whether e is in a cold migration's (or resize's)
// steps: its containers and plumbing on the source and the target are
// the migration's to manage, not reconcile's.
func migrating(e protocol.ExpectedInstance) bool {
	switch e.TaskState {
	case lifecycle.ResizePrep, lifecycle.ResizeMigrating, lifecycle.ResizeMigrated, lifecycle.ResizeFinish,
		lifecycle.ResizeReverting, lifecycle.ResizeConfirming, lifecycle.Migrating:
		return true
	}
	return false
}

// handleMigration carries out one step of a cold migration on this host
// and publishes exactly one MigrationReport. Every kind first makes sure
// the conductor still waits for this step from this host: work
// redelivered after a rollback or a step timeout must not stop, create or
// start anything. Failures are reported, not retried; the conductor
// decides (a failed export is rolled back with a restore).
func (a *Agent) handleMigration(ctx context.Context, kind string, w protocol.MigrationWork) error {
	id := w.InstanceID
	if id == "" || w.MigrationID == 0 {
		return fmt.Errorf("agent: %s request %s without an instance or migration id", kind, w.RequestID)
	}
	log := a.log.With("instance", id, "request_id", w.RequestID, "migration", w.MigrationID, "kind", kind, "step", w.Step)
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()

	rep := protocol.MigrationReport{
		RequestID: w.RequestID, MigrationID: w.MigrationID, InstanceID: id, Host: a.cfg.Host,
		Kind: kind, Step: w.Step, Event: migrationEvent(kind, w.Step), Started: a.now().UTC(),
	}
	// Work this host already carried out, and reported done, for this
	// step is a duplicate (conductors side by side each send work nothing
	// is in flight for, a starting one sends it again): it is answered
	// with that report again, not run again. The conductor's check alone
	// would let it run while that report still waits in the conductor
	// queue; the report sent again is a duplicate the conductor drops,
	// or the one it lost.
	key := migrationStepKey(kind, w)
	if done, ok := a.migDone.get(key, a.now()); ok {
		log.Info("migration step already carried out on this host; its report sent again")
		return a.publish(ctx, protocol.KindMigrationReport, done)
	}
	proceed, reason, err := a.migrationCheck(ctx, w)
	if err != nil {
		log.Warn("could not ask the conductor whether the migration step is still on; retrying later", "err", err)
		return bus.Retry(err)
	}
	if !proceed {
		log.Info("migration step no longer awaited; skipped", "reason", reason)
		rep.Skipped = true
		rep.Error = "skipped: " + reason
		rep.Finished = a.now().UTC()
		return a.publish(ctx, protocol.KindMigrationReport, rep)
	}

	var power drivers.PowerState
	switch kind {
	case protocol.KindMigrationExport:
		rep.Digest, rep.Bytes, power, err = a.exportInstance(ctx, w)
	case protocol.KindMigrationImport:
		rep.Bytes, power, err = a.importInstance(ctx, w)
	case protocol.KindMigrationCleanup:
		power, err = a.cleanupInstance(ctx, w)
	case protocol.KindMigrationRestore:
		power, err = a.restoreInstance(ctx, w)
	case protocol.KindMigrationPrecopy:
		rep.Digest, rep.Bytes, power, err = a.precopyInstance(ctx, w)
	case protocol.KindMigrationPrepull:
		rep.Bytes, power, err = a.prepullInstance(ctx, w)
	default:
		err = fmt.Errorf("agent: %s is not a migration work kind", kind)
	}
	rep.PowerState = int(power)
	if err != nil {
		log.Error("migration step failed", "err", err, "power_state", power)
		rep.Error, rep.ErrorMessage = err.Error(), errdefs.Message(err)
	} else {
		rep.OK = true
		log.Info("migration step done", "power_state", power, "bytes", rep.Bytes, "digest", rep.Digest)
	}
	rep.Finished = a.now().UTC()
	if err := a.publish(ctx, protocol.KindMigrationReport, rep); err != nil {
		return err // redelivered: carried out again, reported then
	}
	if rep.OK {
		// A failed step is the conductor's to roll back: its check
		// answers a duplicate of that.
		a.migDone.add(key, rep, a.now())
	}
	return nil
}

// migrationStepKey names one step's work of one migration on this host.
func migrationStepKey(kind string, w protocol.MigrationWork) string {
	return fmt.Sprintf("%d/%s/%s/%s", w.MigrationID, w.InstanceID, w.Step, kind)
}

// doneSteps are the reports of migration steps done on this host, kept
// for ttl (far longer than a step's deadline).
type doneSteps struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]doneStep
}

type doneStep struct {
	rep protocol.MigrationReport
	at  time.Time
}

func newDoneSteps(ttl time.Duration) *doneSteps {
	return &doneSteps{ttl: ttl, m: map[string]doneStep{}}
}

func (d *doneSteps) add(key string, rep protocol.MigrationReport, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, s := range d.m {
		if now.Sub(s.at) > d.ttl {
			delete(d.m, k)
		}
	}
	d.m[key] = doneStep{rep: rep, at: now}
}

func (d *doneSteps) get(key string, now time.Time) (protocol.MigrationReport, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.m[key]
	return s.rep, ok && now.Sub(s.at) <= d.ttl
}

// migrationCheck tells whether the conductor still waits for w's step
// from this host, and why not. Work picked up after its deadline is over
// without asking: the conductor has rolled back.
func (a *Agent) migrationCheck(ctx context.Context, w protocol.MigrationWork) (bool, string, error) {
	if now := a.now(); !w.Deadline.IsZero() && now.After(w.Deadline) {
		return false, fmt.Sprintf("the step's deadline %s passed (now %s)",
			w.Deadline.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)), nil
	}
	m, err := bus.NewMessage(protocol.KindMigrationCheck,
		protocol.MigrationCheck{MigrationID: w.MigrationID, Host: a.cfg.Host, Step: w.Step})
	if err != nil {
		return false, "", err
	}
	cctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	var reply protocol.MigrationCheckReply
	if err := a.bus.Call(cctx, bus.ConductorQueue, m, &reply); err != nil {
		return false, "", fmt.Errorf("agent: ask the conductor whether migration %d waits for step %s from %s: %w",
			w.MigrationID, w.Step, a.cfg.Host, err)
	}
	if !reply.Proceed && reply.Reason == "" {
		reply.Reason = "the conductor no longer waits for this step"
	}
	return reply.Proceed, reply.Reason, nil
}

// migrator returns the driver's Migrator, or ErrNotSupported.
func (a *Agent) migrator(op, id string) (drivers.Migrator, error) {
	m, ok := a.drv.(drivers.Migrator)
	if !ok {
		return nil, fmt.Errorf("%s instance %s: driver %s cannot migrate: %w", op, id, a.drv.Name(), drivers.ErrNotSupported)
	}
	return m, nil
}

// exportInstance is the source's part: refuse an instance with data in
// volumes (before touching it), stop it, unplug its NICs, commit and push
// it to w.Ref. It returns the pushed digest, the bytes pushed and the
// power state the instance is left in. A failure leaves the instance
// stopped: the conductor's rollback restarts it (a restore).
func (a *Agent) exportInstance(ctx context.Context, w protocol.MigrationWork) (string, int64, drivers.PowerState, error) {
	id := w.InstanceID
	if w.Ref == "" {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("export instance %s: no registry reference to push to", id)
	}
	mig, err := a.migrator("export", id)
	if err != nil {
		return "", 0, a.powerOf(ctx, id), err
	}
	sn, ok := a.drv.(drivers.Snapshotter)
	if !ok {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("export instance %s: driver %s cannot commit: %w", id, a.drv.Name(), drivers.ErrNotSupported)
	}
	if _, err := a.drv.Status(ctx, id); err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return "", 0, drivers.PowerNoState, fmt.Errorf("export instance %s: no such instance on host %s: %w", id, a.cfg.Host, err)
		}
		return "", 0, drivers.PowerNoState, fmt.Errorf("export instance %s: status: %w", id, err)
	}
	vols, err := mig.Volumes(ctx, id)
	if err != nil {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("export instance %s: list its volumes: %w", id, err)
	}
	if len(vols) > 0 {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("export instance %s: mounts %s: %w", id, strings.Join(vols, ", "), drivers.ErrHasVolumes)
	}

	sctx, cancel := context.WithTimeout(ctx, a.cfg.StopTimeout+2*time.Minute)
	err = a.drv.Stop(sctx, id, a.cfg.StopTimeout)
	cancel()
	if err != nil {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("export instance %s: stop: %w", id, err)
	}
	// As a stop does: the sandbox went with the workload, so the ports
	// go too, before the target plugs the same ones (the report, after
	// both, lets it). A failure leaves only inert OVS records behind; the
	// migration goes on. It runs beside the push: both are downtime.
	var unplugged sync.WaitGroup
	unplugged.Go(func() {
		if err := a.unplug(ctx, id); err != nil {
			a.log.Error("export: could not unplug the stopped instance", "instance", id, "err", err)
		}
	})
	defer unplugged.Wait()

	prog := a.newProgress(ctx, w)
	defer prog.wait()
	var digest string
	var pushed int64
	if pc, ok := a.drv.(migrationPrecopier); ok && w.PreRef != "" {
		digest, pushed, err = pc.ExportMigrationOnto(ctx, id, w.PreRef, w.Ref, prog.report)
	} else if ex, ok := a.drv.(migrationExporter); ok {
		digest, pushed, err = ex.ExportMigration(ctx, id, w.Ref, prog.report)
	} else {
		digest, _, err = sn.Snapshot(ctx, id, w.Ref, prog.report)
		pushed = prog.latest()
	}
	if err != nil {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("export instance %s to %s (%d bytes pushed): %w", id, w.Ref, prog.latest(), err)
	}
	vbytes, err := a.exportVolumes(ctx, w)
	if err != nil {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("export instance %s: %w", id, err)
	}
	return digest, pushed + vbytes, a.powerOf(ctx, id), nil
}

// precopyInstance is the source's pre-copy: the instance, still running,
// is committed (not paused) and pushed to w.PreRef; the export after the
// stop then pushes only what changed since. It returns the pushed digest
// ("" when the driver cannot pre-copy: the engine skips the pre-pull) and
// the bytes pushed. The instance keeps running whatever happens.
func (a *Agent) precopyInstance(ctx context.Context, w protocol.MigrationWork) (string, int64, drivers.PowerState, error) {
	id := w.InstanceID
	pc, ok := a.drv.(migrationPrecopier)
	if !ok || w.PreRef == "" {
		return "", 0, a.powerOf(ctx, id), nil
	}
	mig, err := a.migrator("pre-copy", id)
	if err != nil {
		return "", 0, a.powerOf(ctx, id), err
	}
	if _, err := a.drv.Status(ctx, id); err != nil {
		return "", 0, drivers.PowerNoState, fmt.Errorf("pre-copy instance %s: status: %w", id, err)
	}
	// The export refuses data in Docker volumes: refuse it before any
	// copying too.
	vols, err := mig.Volumes(ctx, id)
	if err != nil {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("pre-copy instance %s: list its volumes: %w", id, err)
	}
	if len(vols) > 0 {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("pre-copy instance %s: mounts %s: %w", id, strings.Join(vols, ", "), drivers.ErrHasVolumes)
	}
	prog := a.newProgress(ctx, w)
	defer prog.wait()
	digest, pushed, err := pc.PrecopyMigration(ctx, id, w.PreRef, prog.report)
	if err != nil {
		return "", 0, a.powerOf(ctx, id), fmt.Errorf("pre-copy instance %s to %s: %w", id, w.PreRef, err)
	}
	return digest, pushed, a.powerOf(ctx, id), nil
}

// prepullInstance is the target's pre-pull of the pre-copy: the import
// then fetches only the export's last layer. Nothing is created.
func (a *Agent) prepullInstance(ctx context.Context, w protocol.MigrationWork) (int64, drivers.PowerState, error) {
	id := w.InstanceID
	if w.PreRef == "" {
		return 0, drivers.PowerNoState, nil
	}
	mig, err := a.migrator("pre-pull", id)
	if err != nil {
		return 0, drivers.PowerNoState, err
	}
	// The sandbox is made while the image is pulled (best effort: the
	// import makes it otherwise). A failed pull leaves it to the
	// rollback's cleanup of this host, as any later failure does.
	var wg sync.WaitGroup
	if sp, ok := a.drv.(sandboxPreparer); ok && w.Spec.ID == id && len(w.Spec.NICs) > 0 {
		wg.Go(func() {
			if spec, err := a.driverSpec(w.Spec); err != nil {
				a.log.Warn("pre-pull: no sandbox made ahead", "instance", id, "err", err)
			} else if err := sp.PrepareSandbox(ctx, spec); err != nil {
				a.log.Warn("pre-pull: no sandbox made ahead; the import makes it", "instance", id, "err", err)
			}
		})
	}
	prog := a.newProgress(ctx, w)
	pulled, err := mig.Pull(ctx, w.PreRef, prog.report)
	prog.wait()
	wg.Wait()
	if err != nil {
		return pulled, drivers.PowerNoState, fmt.Errorf("pre-pull for instance %s: pull %s: %w", id, w.PreRef, err)
	}
	return pulled, drivers.PowerNoState, nil
}

// importInstance is the target's part: pull w.Ref, create the instance
// from it with w.Spec (same UUID, NICs now bound here, the flavor's
// limits) and start it when w.Start. It returns the bytes pulled and the
// power state. What a failure created is destroyed, as for a failed
// build.
func (a *Agent) importInstance(ctx context.Context, w protocol.MigrationWork) (int64, drivers.PowerState, error) {
	id := w.InstanceID
	s := w.Spec
	if s.ID == "" {
		s.ID = id
	}
	if s.ID != id {
		return 0, drivers.PowerNoState, fmt.Errorf("import instance %s: the spec is of instance %s", id, s.ID)
	}
	ref := w.Ref
	if ref == "" {
		ref = s.ImageRef
	}
	if s.ImageRef == "" {
		s.ImageRef = ref
	}
	if ref == "" {
		return 0, drivers.PowerNoState, fmt.Errorf("import instance %s: no registry reference to pull", id)
	}
	mig, err := a.migrator("import", id)
	if err != nil {
		return 0, drivers.PowerNoState, err
	}
	prog := a.newProgress(ctx, w)
	var pulled int64
	if dp, ok := a.drv.(deltaPuller); ok && w.PreRef != "" {
		pulled, err = dp.PullDelta(ctx, ref, w.PreRef, prog.report)
	} else {
		pulled, err = mig.Pull(ctx, ref, prog.report)
	}
	prog.wait()
	if err != nil {
		return 0, a.powerOf(ctx, id), fmt.Errorf("import instance %s: pull %s: %w", id, ref, err)
	}
	// The volumes before the server: its start mounts them
	// (s.Volumes). A failure leaves the copies made so far to the
	// rollback's cleanup (DropVolumes).
	vbytes, err := a.importVolumes(ctx, w)
	if err != nil {
		return pulled, a.powerOf(ctx, id), fmt.Errorf("import instance %s: %w", id, err)
	}
	pulled += vbytes

	power, err := a.createFromImport(ctx, s, w.Start)
	if err != nil {
		if derr := a.destroy(ctx, id); derr != nil {
			a.log.Error("cleanup after a failed import failed: the container may stay until the migration's cleanup", "instance", id, "err", derr)
			err = fmt.Errorf("%w; cleanup failed: %v", err, derr)
		}
		return pulled, a.powerOf(ctx, id), err
	}
	if w.PreRef != "" {
		// The pre-copy's tag: its layers stay, the imported image's.
		if err := mig.RemoveImage(ctx, w.PreRef); err != nil {
			a.log.Warn("import: could not untag the pre-copy; the migration's cleanup tries again", "instance", id, "ref", w.PreRef, "err", err)
		}
	}
	return pulled, power, nil
}

// createFromImport creates the imported instance and, when start, plumbs
// and starts it; else it stays created and stopped, unplugged, as any
// stopped server (its NICs are known: a start plumbs them).
func (a *Agent) createFromImport(ctx context.Context, s protocol.InstanceSpec, start bool) (drivers.PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, a.buildTimeout)
	defer cancel()
	// The imported disk carries /root/.ssh/authorized_keys as the server
	// left it; writing the boot key again would undo the user's changes.
	s.AuthorizedKeys = ""
	if err := a.create(ctx, s, false); err != nil {
		return drivers.PowerNoState, fmt.Errorf("import: %w", err)
	}
	if !start {
		st, err := a.drv.Status(ctx, s.ID)
		if err != nil {
			return drivers.PowerNoState, fmt.Errorf("import: status of instance %s after create: %w", s.ID, err)
		}
		return st.Power, nil
	}
	power, err := a.bringUp(ctx, s.ID, s.NICs)
	if err != nil {
		return power, fmt.Errorf("import: %w", err)
	}
	return power, nil
}

// cleanupInstance removes the instance's container and plumbing from this
// host (the source after a confirm, the target after a revert or a
// failure) and the migration image; what is already gone is fine.
func (a *Agent) cleanupInstance(ctx context.Context, w protocol.MigrationWork) (drivers.PowerState, error) {
	id := w.InstanceID
	// Forget the NICs first so destroy removes the plumbing by the
	// instance's tag on this host's bridges rather than by port name:
	// the other host plugged the same ports, and where two "hosts" share
	// one kernel and Open vSwitch (test and all-in-one setups) a removal
	// by name would take the other host's.
	a.nics.del(id)
	if err := a.destroy(ctx, id); err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("clean up instance %s: %w", id, err)
	}
	if err := a.dropVolumes(ctx, w); err != nil {
		return drivers.PowerNoState, fmt.Errorf("clean up instance %s: %w", id, err)
	}
	if pc, ok := a.drv.(migrationPrecopier); ok {
		pc.ForgetPrecopy(id)
	}
	mig, ok := a.drv.(drivers.Migrator)
	if !ok {
		return drivers.PowerNoState, nil // it cannot have pulled the image
	}
	rctx, cancel := context.WithTimeout(ctx, a.callTimeout+time.Minute)
	defer cancel()
	for _, ref := range []string{w.Ref, w.PreRef} {
		if ref == "" {
			continue
		}
		if err := mig.RemoveImage(rctx, ref); err != nil {
			return drivers.PowerNoState, fmt.Errorf("clean up instance %s: remove image %s: %w", id, ref, err)
		}
	}
	return drivers.PowerNoState, nil
}

// restoreInstance brings the stopped source back after a revert or a
// failed migration: its NICs (bound here again) are plumbed and it is
// started when w.Start.
func (a *Agent) restoreInstance(ctx context.Context, w protocol.MigrationWork) (drivers.PowerState, error) {
	id := w.InstanceID
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StopTimeout+2*time.Minute)
	defer cancel()
	st, err := a.drv.Status(ctx, id)
	if err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return drivers.PowerNoState, fmt.Errorf("restore instance %s: its container is missing on host %s, nothing to restore: %w",
				id, a.cfg.Host, err)
		}
		return drivers.PowerNoState, fmt.Errorf("restore instance %s: status: %w", id, err)
	}
	if pc, ok := a.drv.(migrationPrecopier); ok {
		pc.ForgetPrecopy(id)
	}
	if st.Power == drivers.PowerRunning {
		// Rolled back before the export stopped it (during the
		// pre-copy): it never stopped, nor lost its plumbing.
		return st.Power, nil
	}
	var nics []protocol.NIC
	if w.Spec.ID != "" || len(w.Spec.NICs) > 0 {
		nics = w.Spec.NICs
		a.nics.set(id, nics)
		if a.vols != nil {
			a.volc.set(id, w.Spec.Volumes)
		}
	} else if nics, err = a.nicsOf(ctx, id); err != nil {
		return st.Power, fmt.Errorf("restore instance %s: %w", id, err)
	}
	if !w.Start {
		return st.Power, nil
	}
	power, err := a.bringUp(ctx, id, nics)
	if err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("restore instance %s: %w", id, err)
	}
	return power, nil
}

// progress publishes a migration's MigrationProgress at most once per
// progressInterval, best effort: a lost or late one only delays a progress bar.
// Publishing runs beside the transfer (one at a time) so a slow bus never
// slows the push or pull; wait lets the last one finish.
type progress struct {
	a    *Agent
	ctx  context.Context
	body protocol.MigrationProgress

	mu   sync.Mutex
	last time.Time
	n    int64
	busy bool
	wg   sync.WaitGroup
}

func (a *Agent) newProgress(ctx context.Context, w protocol.MigrationWork) *progress {
	return &progress{a: a, ctx: ctx, body: protocol.MigrationProgress{MigrationID: w.MigrationID, Host: a.cfg.Host, Step: w.Step}}
}

// report is the driver's progress callback.
func (p *progress) report(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n = n
	now := time.Now()
	if p.busy || (!p.last.IsZero() && now.Sub(p.last) < progressInterval) {
		return
	}
	p.last, p.busy = now, true
	body := p.body
	body.Bytes = n
	p.wg.Go(func() {
		defer func() {
			p.mu.Lock()
			p.busy = false
			p.mu.Unlock()
		}()
		m, err := bus.NewMessage(protocol.KindMigrationProgress, body)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.a.callTimeout)
		defer cancel()
		if err := p.a.bus.Publish(ctx, bus.ConductorQueue, m); err != nil {
			p.a.log.Debug("could not publish migration progress", "migration", body.MigrationID, "err", err)
		}
	})
}

// latest returns the bytes last reported.
func (p *progress) latest() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *progress) wait() { p.wg.Wait() }
