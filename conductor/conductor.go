// Package conductor is the control-plane role that owns the database on
// behalf of the agents: it records their heartbeats, the outcome of every
// action they run, reschedules failed builds, and answers their
// reconciliation queries. Agents never hold database credentials.
package conductor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/scheduler"
	"github.com/capsule-cloud/capsule/store"
)

// Conductor handles the conductor queue.
type Conductor struct {
	st          *store.Store
	b           bus.Bus
	cfg         config.Conductor
	maxAttempts int
	log         *slog.Logger
	now         func() time.Time
	// mig drives cold migrations (package migrate).
	mig *migrate.Engine
	// reg removes the registry tags of backups rotated out and of shelve
	// images no longer needed (nil: left behind, logged).
	reg ImageReleaser
	// outbox publishes the messages the conductor commits with a state
	// change (an offload's work); what it cannot, the relay sends later.
	outbox *outbox.Relay
	// volTimeouts are the deadlines of volume attach and detach work
	// (zero: the defaults).
	volTimeouts instance.VolumeTimeouts
}

// New returns a conductor; maxAttempts bounds build reschedules.
func New(st *store.Store, b bus.Bus, cfg config.Conductor, maxAttempts int, log *slog.Logger) *Conductor {
	if maxAttempts < 1 {
		maxAttempts = 1
	}
	c := &Conductor{st: st, b: b, cfg: cfg, maxAttempts: maxAttempts, log: log.With("role", "conductor"),
		now: func() time.Time { return time.Now().UTC() }}
	c.outbox = outbox.NewRelay(st, b, outbox.Options{Owner: outboxOwner(), Log: c.log})
	// A working engine by default (default scheduler, no registry: tags
	// are left behind, logged); the conductor role sets the real one.
	c.mig = migrate.New(migrate.Options{Store: st, Bus: b, Scheduler: scheduler.New(st, b, config.Default().Scheduler, log),
		RegistryAddress: config.Default().Registry.Address, StepTimeout: cfg.MigrationStepTimeout, Precopy: cfg.MigrationPrecopy, Log: log,
		Now: func() time.Time { return c.now() }})
	return c
}

// SetMigrations replaces the cold-migration engine.
func (c *Conductor) SetMigrations(e *migrate.Engine) { c.mig = e }

// Run consumes the conductor queue and runs the periodic checks until ctx
// ends.
func (c *Conductor) Run(ctx context.Context) error {
	if err := c.b.Consume(ctx, bus.ConductorQueue, c.Handle); err != nil {
		return fmt.Errorf("conductor: consume: %w", err)
	}
	host, _ := os.Hostname()
	go c.st.KeepAlive(ctx, host, store.ConductorBinary, 10*time.Second, func(err error) {
		c.log.Warn("conductor heartbeat", "error", err)
	})
	// Messages committed with their state changes that their writer
	// could not publish (it died, the broker was down): every conductor
	// relays, side by side (the claims keep each row to one).
	relay := outbox.NewRelay(c.st, c.b, outbox.Options{Owner: fmt.Sprintf("conductor@%s:%d", host, os.Getpid()),
		Interval: c.cfg.OutboxInterval, Log: c.log})
	go relay.Run(ctx)
	// Migrations whose work the previous conductor may never have sent.
	c.mig.Resume(ctx)
	every := c.cfg.PeriodicInterval
	if every <= 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		c.periodic(ctx)
		c.mig.Periodic(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Handle dispatches one conductor message.
func (c *Conductor) Handle(ctx context.Context, m bus.Message) (any, error) {
	if err := c.checkSender(ctx, m); err != nil {
		if bus.IsRetry(err) {
			return nil, err
		}
		c.log.Warn("message refused: its sender may not send it", "kind", m.Kind, "id", m.ID, "sender", m.Sender, "error", err)
		return nil, err
	}
	switch m.Kind {
	case protocol.KindHostReport:
		var r protocol.HostReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return nil, retryOnDB(c.onHostReport(ctx, r))
	case protocol.KindInstanceReport:
		var r protocol.InstanceReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return nil, retryOnDB(c.onInstanceReport(ctx, r))
	case protocol.KindPowerSync:
		var r protocol.PowerSync
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return nil, retryOnDB(c.onPowerSync(ctx, r))
	case protocol.KindInstancesOnHost:
		var r protocol.InstancesOnHostRequest
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return c.instancesOnHost(ctx, r.Host)
	case protocol.KindInstanceMetadata:
		var r protocol.InstanceMetadataRequest
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return c.instanceMetadata(ctx, r)
	case protocol.KindSetMetadataPassword:
		var r protocol.SetMetadataPassword
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return struct{}{}, c.setMetadataPassword(ctx, r)
	case protocol.KindSnapshotReport:
		var r protocol.SnapshotReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return nil, retryOnDB(c.onSnapshotReport(ctx, r))
	case protocol.KindVolumeReport:
		var r protocol.VolumeReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		if err := c.onVolumeReport(ctx, r); errdefs.IsForbidden(err) {
			c.log.Warn("volume report refused", "error", err)
			return nil, err
		} else if err != nil {
			return nil, retryOnDB(err)
		}
		return nil, nil
	case protocol.KindVolumesOnHost:
		var r protocol.VolumesOnHostRequest
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return c.volumesOnHost(ctx, r.Host)
	case protocol.KindServerUsage:
		var r protocol.ServerUsage
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		// Best effort: a lost round is a gap in the history.
		if err := c.onServerUsage(ctx, r); err != nil {
			c.log.Warn("record server usage", "host", r.Host, "points", len(r.Points), "error", err)
		}
		return nil, nil
	case protocol.KindHostEvent:
		var r protocol.HostEvent
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return nil, retryOnDB(c.onHostEvent(ctx, r))
	case protocol.KindMigrationReport:
		var r protocol.MigrationReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		return nil, retryOnDB(c.mig.OnReport(ctx, r))
	case protocol.KindMigrationProgress:
		var p protocol.MigrationProgress
		if err := m.Decode(&p); err != nil {
			return nil, err
		}
		// Best effort: the next progress message says more anyway.
		if err := c.mig.OnProgress(ctx, p); err != nil {
			c.log.Warn("record migration progress", "migration_id", p.MigrationID, "error", err)
		}
		return nil, nil
	case protocol.KindMigrationCheck:
		var q protocol.MigrationCheck
		if err := m.Decode(&q); err != nil {
			return nil, err
		}
		return c.mig.Check(ctx, q)
	case migrate.KindMigrationAdvance:
		var a migrate.Advance
		if err := m.Decode(&a); err != nil {
			return nil, err
		}
		return nil, retryOnDB(c.mig.Advance(ctx, a.MigrationID))
	}
	return nil, fmt.Errorf("conductor: unknown message kind %q", m.Kind)
}

// retryOnDB requeues messages whose handling failed for a reason other
// than the message itself (the database was unreachable, say).
func retryOnDB(err error) error {
	if err == nil || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return bus.Retry(err)
}

func (c *Conductor) onHostReport(ctx context.Context, r protocol.HostReport) error {
	if r.Host == "" {
		return nil
	}
	db := c.st.WithContext(ctx)
	now := c.now()
	cpuInfo := fmt.Sprintf(`{"arch": %q, "model": %q, "vendor": "", "features": [], "topology": {"cores": %d, "threads": 1, "sockets": 1}}`,
		r.Arch, r.CPUModel, r.VCPUs+r.PCPUs) // every host CPU, shared and dedicated
	fields := map[string]any{
		"host_ip": r.HostIP, "hypervisor_type": r.HypervisorType, "hypervisor_version": r.HypervisorVersion,
		"vcpus": r.VCPUs, "memory_mb": r.MemoryMB, "disk_gb": r.DiskGB, "running_vms": r.RunningVMs,
		"cpu_info": cpuInfo, "cpu_allocation_ratio": r.CPUAllocationRatio, "ram_allocation_ratio": r.RAMAllocationRatio,
		"disk_allocation_ratio": r.DiskAllocationRatio, "reserved_memory_mb": r.ReservedMemoryMB, "pcpus": r.PCPUs,
		"last_heartbeat": now, "updated_at": now,
	}
	res := db.Model(&store.Service{}).Where("host = ? AND binary_name = ?", r.Host, store.ComputeBinary).Updates(fields)
	if res.Error != nil {
		return fmt.Errorf("host report of %s: %w", r.Host, res.Error)
	}
	if res.RowsAffected > 0 {
		return nil
	}
	zone := r.Zone
	if zone == "" {
		zone = "nova"
	}
	svc := store.Service{UUID: uuid.NewString(), Host: r.Host, Binary: store.ComputeBinary, Zone: zone, AgentZone: zone}
	if err := db.Create(&svc).Error; err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("register host %s: %w", r.Host, err)
	}
	c.log.Info("compute host registered", "host", r.Host, "vcpus", r.VCPUs, "memory_mb", r.MemoryMB)
	return db.Model(&store.Service{}).Where("host = ? AND binary_name = ?", r.Host, store.ComputeBinary).Updates(fields).Error
}

func (c *Conductor) loadInstance(ctx context.Context, id string) (*store.Instance, error) {
	var inst store.Instance
	err := c.st.WithContext(ctx).Where("id = ?", id).First(&inst).Error
	if err != nil {
		return nil, store.NotFound(err, "instance "+id)
	}
	return &inst, nil
}

func (c *Conductor) onInstanceReport(ctx context.Context, r protocol.InstanceReport) error {
	inst, err := c.loadInstance(ctx, r.InstanceID)
	if err != nil {
		return err
	}
	ev := store.Event{InstanceID: r.InstanceID, RequestID: r.RequestID, Name: r.Event, Host: r.Host,
		Start: r.Started, Finish: r.Finished, OK: r.OK, Detail: r.Error, Message: r.ErrorMessage}
	if err := c.st.RecordEvent(ctx, ev); err != nil {
		return err
	}
	switch r.Action {
	case lifecycle.ActCreate:
		return c.onBuildReport(ctx, inst, r)
	case lifecycle.ActDelete:
		return c.onDeleteReport(ctx, inst, r)
	case lifecycle.ActResize, lifecycle.ActRevertResize:
		return c.onResizeReport(ctx, inst, r)
	case lifecycle.ActRebuild:
		return c.onRebuildReport(ctx, inst, r)
	case lifecycle.ActShelveOffload:
		return c.onOffloadReport(ctx, inst, r)
	case lifecycle.ActUnshelve:
		return c.onUnshelveReport(ctx, inst, r)
	case lifecycle.ActEvacuate:
		return c.onEvacuateReport(ctx, inst, r)
	default:
		return c.onActionReport(ctx, inst, r)
	}
}

func (c *Conductor) onBuildReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil || inst.VMState != lifecycle.Building {
		c.log.Debug("stale build report ignored", "instance", inst.ID, "host", r.Host)
		return nil
	}
	if !r.OK && rescheduledBy(inst, r) {
		// This failure was handled before, but its schedule request may
		// never have left (the publish failed, or the conductor died
		// before acking the report): send it again. A duplicate is
		// harmless, the scheduler is idempotent per attempt.
		c.log.Info("build failure seen again; re-sending its reschedule", "instance", inst.ID, "host", r.Host, "attempt", inst.BuildAttempts)
		return c.reschedule(ctx, inst.ID, r.RequestID, inst.BuildAttempts, inst.TriedHostList())
	}
	if inst.Host != r.Host {
		c.log.Debug("stale build report ignored", "instance", inst.ID, "host", r.Host, "instance_host", inst.Host)
		return nil
	}
	if r.OK {
		now := c.now()
		err := c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			ok, err := instance.Launched(tx, inst.ID, lifecycle.PowerState(r.PowerState), now)
			if err != nil || !ok {
				return err
			}
			// The volumes its create asked for are mounted now.
			return instance.AttachBuildVolumes(tx, inst.ID)
		})
		if err == nil {
			c.log.Info("instance active", "instance", inst.ID, "host", r.Host)
		}
		return err
	}
	// The build failed on r.Host: retry elsewhere or give up.
	tried := inst.TriedHostList()
	tried = append(tried, r.Host)
	attempt := max(r.Attempt, inst.BuildAttempts, 1)
	c.log.Warn("build failed", "instance", inst.ID, "host", r.Host, "attempt", attempt, "error", r.Error)
	var fault *instance.Fault
	if attempt >= c.maxAttempts {
		fault = &instance.Fault{Code: 500, At: c.now(), Details: r.Error,
			Message: fmt.Sprintf("Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance %s.", inst.ID)}
	}
	ok, err := instance.BuildFailed(c.st.WithContext(ctx), inst.ID,
		instance.BuildFailure{Host: r.Host, Tried: tried, Attempt: attempt}, fault, c.now())
	if err != nil || !ok || fault != nil {
		return err
	}
	return c.reschedule(ctx, inst.ID, r.RequestID, attempt+1, tried)
}

// rescheduledBy reports whether inst is waiting for a host because of the
// failure r reports (r is a duplicate of a report already handled).
func rescheduledBy(inst *store.Instance, r protocol.InstanceReport) bool {
	tried := inst.TriedHostList()
	return inst.TaskState == lifecycle.Scheduling && inst.Host == "" &&
		r.Attempt > 0 && inst.BuildAttempts == r.Attempt+1 &&
		len(tried) > 0 && tried[len(tried)-1] == r.Host
}

// reschedule asks the scheduler to place the instance again, away from
// the hosts it already failed on.
func (c *Conductor) reschedule(ctx context.Context, id, requestID string, attempt int, excluded []string) error {
	msg, err := bus.NewMessage(protocol.KindScheduleInstance, protocol.ScheduleInstance{
		InstanceID: id, RequestID: requestID, Attempt: attempt, Excluded: excluded})
	if err != nil {
		return err
	}
	if err := c.b.Publish(ctx, bus.SchedulerQueue, msg); err != nil {
		return fmt.Errorf("reschedule %s: %w", id, err)
	}
	return nil
}

func (c *Conductor) onDeleteReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil {
		return nil
	}
	if !r.OK {
		now := c.now()
		_, err := instance.Fail(c.st.WithContext(ctx), inst.ID, instance.In(inst.VMState, lifecycle.Deleting),
			instance.Fault{Code: 500, Message: "Failed to delete the instance on its host", Details: r.Error, At: now}, nil, now)
		return err
	}
	if err := instance.MarkDeleted(ctx, c.st, inst.ID, c.now()); err != nil {
		return err
	}
	c.forgetShelveImage(ctx, inst)
	// A migration in flight ends here: both hosts clean up, the tag goes
	// (the periodic pass would notice too).
	if err := c.mig.InstanceDeleted(ctx, inst.ID); err != nil {
		c.log.Error("end migrations of deleted instance", "instance", inst.ID, "error", err)
	}
	return nil
}

func (c *Conductor) onActionReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil || inst.Host != r.Host {
		return nil
	}
	now := c.now()
	var fault *instance.Fault
	if !r.OK {
		// The server stays in the state it was in (Nova shows a fault
		// on ERROR servers only); the fault and the event's details
		// say why the action failed.
		fault = &instance.Fault{Code: 500, Message: failedBecause(fmt.Sprintf("Action %s of instance %s failed", r.Action, inst.ID), r),
			Details: r.Error, At: now}
		c.log.Warn("action failed on the host", "instance", inst.ID, "host", r.Host, "action", r.Action, "error", r.Error)
		if r.ErrorKind == string(errdefs.ErrNotFound) && lifecycle.PowerState(r.PowerState) == lifecycle.NoState {
			// Nothing of the server is left on its host (not merely
			// a power state the host could not read): no state but
			// ERROR is true, and ERROR shows the fault.
			_, err := instance.Fail(c.st.WithContext(ctx), inst.ID, instance.In(inst.VMState, lifecycle.TaskOf(r.Action)), *fault,
				map[string]any{"power_state": int(lifecycle.NoState)}, now)
			return err
		}
	}
	_, err := instance.Finish(c.st.WithContext(ctx), inst, r.Action, r.OK, lifecycle.PowerState(r.PowerState), fault, now)
	return err
}

// failedBecause is what a fault of a failed report says: what failed and,
// when the agent's error has a message its user may read, why.
func failedBecause(what string, r protocol.InstanceReport) string {
	if r.ErrorMessage == "" {
		return what + "."
	}
	return what + ": " + strings.TrimSuffix(r.ErrorMessage, ".") + "."
}

// onPowerSync records the power states an agent observed. An active or
// paused instance whose container stopped or vanished behind the cloud's
// back becomes SHUTOFF, as Nova's power-state sync does; instances with a
// task in flight are left to that task.
func (c *Conductor) onPowerSync(ctx context.Context, r protocol.PowerSync) error {
	if err := c.onResumeFailed(ctx, r); err != nil {
		return err
	}
	for id, ps := range r.States {
		inst, err := c.loadInstance(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if inst.DeletedAt != nil || inst.Host != r.Host || inst.TaskState != "" {
			continue
		}
		vm := inst.VMState
		change := instance.Change{Task: lifecycle.NoTask, At: c.now(),
			Set: map[string]any{"power_state": int(lifecycle.RecordedPower(vm, lifecycle.PowerState(ps)))}}
		// A suspended container that stopped lost its memory: it is no
		// more suspended than a paused one would be.
		if (vm == lifecycle.Active || vm == lifecycle.Paused || vm == lifecycle.Suspended) && notRunning(lifecycle.PowerState(ps)) {
			change.VM = lifecycle.Stopped
			c.log.Warn("instance found not running; marking it stopped", "instance", id, "host", r.Host, "power_state", ps)
		}
		if _, err := instance.Apply(c.st.WithContext(ctx), id, instance.In(vm, lifecycle.NoTask), change); err != nil {
			return err
		}
	}
	for _, o := range r.Orphans {
		c.log.Warn("orphan container on host", "host", r.Host, "instance", o)
	}
	// The host removed what was left of servers evacuated from it.
	return instance.EvacuationCleaned(c.st.WithContext(ctx), r.Host, r.Evacuated, c.now())
}

// onResumeFailed puts into ERROR, with the agent's reason as the fault,
// every instance the agent could not start again after its host (or
// dockerd) came back with its containers stopped, while the instance is
// still running, paused or suspended with no task on that host.
func (c *Conductor) onResumeFailed(ctx context.Context, r protocol.PowerSync) error {
	for id, why := range r.ResumeFailed {
		now := c.now()
		g := instance.Guard{VM: []lifecycle.VMState{lifecycle.Active, lifecycle.Paused, lifecycle.Suspended, lifecycle.Resized},
			Task: []lifecycle.TaskState{lifecycle.NoTask}, Host: r.Host}
		// The message, which the owner sees, names the step that failed
		// (the agent's reason starts with it); the whole error, which
		// may name host paths and daemons, is the admins' details.
		step, _, _ := strings.Cut(why, ": ")
		ok, err := instance.Fail(c.st.WithContext(ctx), id, g, instance.Fault{Code: 500, At: now, Details: why,
			Message: fmt.Sprintf("Could not resume the instance after its host restarted: %s", step)},
			map[string]any{"power_state": int(lifecycle.NoState)}, now)
		if err != nil {
			return err
		}
		if ok {
			c.log.Error("instance could not be resumed after its host restarted", "instance", id, "host", r.Host, "reason", why)
		}
	}
	return nil
}

// notRunning reports whether ps means the instance's container is gone or
// stopped. A paused container is not: an active instance found paused
// stays active, as in Nova's power-state sync.
func notRunning(ps lifecycle.PowerState) bool {
	switch ps {
	case lifecycle.NoState, lifecycle.Shutdown, lifecycle.Crashed:
		return true
	}
	return false
}

func (c *Conductor) instancesOnHost(ctx context.Context, host string) (protocol.InstancesOnHostReply, error) {
	var insts []store.Instance
	if err := c.st.WithContext(ctx).Where("host = ? AND deleted_at IS NULL", host).Find(&insts).Error; err != nil {
		return protocol.InstancesOnHostReply{}, fmt.Errorf("instances on %s: %w", host, err)
	}
	out := protocol.InstancesOnHostReply{Instances: []protocol.ExpectedInstance{}, Migrating: []string{}}
	var err error
	if out.Migrating, err = migrate.ThroughHost(ctx, c.st.DB, host); err != nil {
		return out, err
	}
	for i := range insts {
		spec, err := instance.SpecFor(ctx, c.st, &insts[i])
		if err != nil {
			return out, err
		}
		out.Instances = append(out.Instances, protocol.ExpectedInstance{Spec: spec,
			VMState: insts[i].VMState, TaskState: insts[i].TaskState, PowerState: insts[i].PowerState})
	}
	evacuated, err := instance.EvacuatedFrom(c.st.WithContext(ctx), host)
	if err != nil {
		return out, err
	}
	out.Evacuated = evacuated
	return out, nil
}

// periodic puts builds that never finished into ERROR, drops claims left
// by deleted instances and ends the tasks whose worker died (sweepTasks)
// and the volume attaches and detaches whose work was lost
// (sweepVolumes), so nothing stays stuck or leaks.
func (c *Conductor) periodic(ctx context.Context) {
	timeout := c.cfg.BuildTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	var stuck []store.Instance
	cutoff := c.now().Add(-timeout)
	db := c.st.WithContext(ctx)
	if err := db.Where("vm_state = ? AND deleted_at IS NULL AND created_at < ?", string(lifecycle.Building), cutoff).Find(&stuck).Error; err != nil {
		c.log.Error("find stuck builds", "error", err)
		return
	}
	for _, inst := range stuck {
		now := c.now()
		ok, err := instance.Fail(db, inst.ID, instance.In(lifecycle.Building, inst.TaskState),
			instance.Fault{Code: 500, Message: fmt.Sprintf("Build of instance %s timed out after %s", inst.ID, timeout), At: now},
			nil, now)
		if err != nil {
			c.log.Error("fail stuck build", "instance", inst.ID, "error", err)
			continue
		}
		if ok {
			c.log.Warn("build timed out", "instance", inst.ID, "host", inst.Host)
		}
	}
	if err := instance.ReleaseClaimsOfDeleted(db); err != nil {
		c.log.Error("drop claims of deleted instances", "error", err)
	}
	c.offloadShelved(ctx)
	c.sweepTasks(ctx)
	c.sweepVolumes(ctx)
}
