package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// EventSchedule is the instance-action event the scheduler records.
const EventSchedule = "schedule_instances"

// Run serves the scheduler queue until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.b.Consume(ctx, bus.SchedulerQueue, s.Handle); err != nil {
		return fmt.Errorf("scheduler: consume %s: %w", bus.SchedulerQueue, err)
	}
	s.log.Info("scheduler running", "weigher", s.weigher.Name(), "service_down_time", s.cfg.ServiceDownTime)
	host, _ := os.Hostname()
	s.st.KeepAlive(ctx, host, store.SchedulerBinary, 10*time.Second, func(err error) {
		s.log.Warn("scheduler heartbeat", "error", err)
	})
	return nil
}

// Handle processes one scheduler-queue message. Database and bus failures
// are marked bus.Retry (the message comes back); everything else is final.
func (s *Scheduler) Handle(ctx context.Context, m bus.Message) (any, error) {
	switch m.Kind {
	case protocol.KindScheduleInstance:
		var req protocol.ScheduleInstance
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, s.schedule(ctx, req)
	}
	return nil, fmt.Errorf("scheduler: unexpected message kind %q (%s)", m.Kind, m.ID)
}

// schedule places one instance. It is idempotent: a redelivered message
// finds the instance already placed (or gone) and at most re-sends the
// build, never claiming twice.
func (s *Scheduler) schedule(ctx context.Context, req protocol.ScheduleInstance) error {
	start := s.now().UTC()
	log := s.log.With("instance", req.InstanceID, "request_id", req.RequestID, "attempt", req.Attempt)
	inst, err := s.loadInstance(ctx, req.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		log.Debug("schedule request for an unknown instance ignored")
		return nil
	}
	if err != nil {
		return bus.Retry(err)
	}
	if inst.DeletedAt == nil && req.Evacuate {
		return s.scheduleEvacuate(ctx, req, inst, start, log)
	}
	if inst.DeletedAt == nil && inst.VMState == lifecycle.ShelvedOffloaded {
		return s.scheduleUnshelve(ctx, req, inst, start, log)
	}
	if inst.DeletedAt != nil || inst.VMState != lifecycle.Building {
		log.Debug("instance no longer building; schedule request ignored", "vm_state", inst.VMState)
		return nil
	}
	if req.Attempt > 0 && req.Attempt < inst.BuildAttempts {
		log.Debug("stale schedule request ignored", "build_attempts", inst.BuildAttempts)
		return nil
	}
	attempt := max(req.Attempt, inst.BuildAttempts, 1)
	switch inst.TaskState {
	case lifecycle.Scheduling:
	case lifecycle.Spawning:
		return s.resend(ctx, inst, req, attempt)
	default:
		log.Debug("instance not waiting for a host; schedule request ignored", "task_state", inst.TaskState)
		return nil
	}

	spec, err := instance.SpecFor(ctx, s.st, inst)
	if err != nil {
		return bus.Retry(err)
	}
	if spec.ImageRef == "" {
		return s.fail(ctx, inst, req.RequestID, start, fmt.Sprintf("Image %s could not be found.", inst.ImageID), "")
	}

	excluded := slices.Clone(req.Excluded)
	for _, h := range inst.TriedHostList() {
		if !slices.Contains(excluded, h) {
			excluded = append(excluded, h)
		}
	}
	return s.placeAndSend(ctx, inst, placement{
		request: Request{
			InstanceID: inst.ID, AvailabilityZone: inst.RequestedZone, Excluded: excluded, ForceHost: inst.RequestedHost,
			Resources: store.Resources{VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.ClaimDiskGB()},
			Dedicated: store.IsDedicated(inst.ExtraSpecs),
		},
		noHost: func(message, details string) error {
			return s.fail(ctx, inst, req.RequestID, start, message, details)
		},
		place: func(host, zone string) (bool, error) { return s.place(ctx, inst.ID, host, zone) },
		send:  func(host string) error { return s.publishBuild(ctx, host, req.RequestID, attempt, spec) },
		unplace: func(host string) error {
			// Nothing will build it there: the instance waits for a host again.
			return s.unplace(ctx, inst, host)
		},
		placed: func() { s.recordEvent(ctx, inst.ID, req.RequestID, start, true, "") },
	}, log)
}

// placement is what a first build and an unshelve differ in when they
// place a server: what host they ask for, how the choice is recorded and
// undone, what the host is sent, and how the server fails or succeeds.
type placement struct {
	request Request
	// noHost ends the request no host can take (message: the fault's).
	noHost func(message, details string) error
	// place records host (in zone) on the instance; false: the instance
	// no longer waits for a host.
	place func(host, zone string) (bool, error)
	// send sends host the build; unplace undoes place when it failed.
	send, unplace func(host string) error
	// placed records the success.
	placed func()
}

// placeAndSend selects a host for p.request (claiming its room), records
// it on inst and sends it the build; every failure after the claim gives
// the room back. Database and bus failures are bus.Retry.
func (s *Scheduler) placeAndSend(ctx context.Context, inst *store.Instance, p placement, log *slog.Logger) error {
	host, err := s.Select(ctx, p.request)
	var nv *NoValidHostError
	if errors.As(err, &nv) {
		log.Warn("no valid host", "explain", nv.Explain())
		return p.noHost(NoValidHostMessage, nv.Explain())
	}
	if err != nil {
		return bus.Retry(err)
	}
	log = log.With("host", host)

	zone, err := s.zoneOf(ctx, host)
	if err != nil {
		return s.undoClaim(ctx, inst.ID, host, err)
	}
	placed, err := p.place(host, zone)
	if err != nil {
		return s.undoClaim(ctx, inst.ID, host, err)
	}
	if !placed {
		// The instance changed under us (deleted, or placed by a
		// concurrent delivery of the same request): give the room back
		// unless the other delivery placed it on this very host.
		cur, err := s.loadInstance(ctx, inst.ID)
		if err == nil && cur.DeletedAt == nil && cur.Host == host {
			return nil
		}
		log.Info("instance changed while scheduling; claim released")
		return s.undoClaim(ctx, inst.ID, host, nil)
	}
	if err := p.send(host); err != nil {
		// Nothing will build it there: the instance waits for a host
		// again, its room freed, and the message comes back.
		log.Warn("sending the build failed; unplacing instance", "error", err)
		if uerr := p.unplace(host); uerr != nil {
			log.Error("unplace after failed publish", "error", uerr)
		}
		return s.undoClaim(ctx, inst.ID, host, err)
	}
	log.Info("instance scheduled", "zone", zone)
	p.placed()
	return nil
}

// resend re-publishes the build of an instance already placed, for a
// redelivered request whose first delivery placed it but may have died
// before the build message left. Without a claim on its host the
// placement was undone by someone else and there is nothing to resend.
func (s *Scheduler) resend(ctx context.Context, inst *store.Instance, req protocol.ScheduleInstance, attempt int) error {
	if inst.Host == "" {
		return nil
	}
	claimed, err := instance.HasClaim(s.st.WithContext(ctx), inst.ID, inst.Host)
	if err != nil {
		return bus.Retry(fmt.Errorf("scheduler: look up claim of %s: %w", inst.ID, err))
	}
	if !claimed {
		s.log.Debug("placed instance holds no claim; schedule request ignored", "instance", inst.ID, "host", inst.Host)
		return nil
	}
	spec, err := instance.SpecFor(ctx, s.st, inst)
	if err != nil {
		return bus.Retry(err)
	}
	if err := s.publishBuild(ctx, inst.Host, req.RequestID, attempt, spec); err != nil {
		return bus.Retry(err)
	}
	s.log.Info("build re-sent to the host already chosen", "instance", inst.ID, "host", inst.Host)
	return nil
}

func (s *Scheduler) publishBuild(ctx context.Context, host, requestID string, attempt int, spec protocol.InstanceSpec) error {
	msg, err := bus.NewMessage(protocol.KindBuildInstance, protocol.BuildInstance{
		RequestID: requestID, Attempt: attempt, Spec: spec})
	if err != nil {
		return err
	}
	if err := s.b.Publish(ctx, bus.ComputeQueue(host), msg); err != nil {
		return fmt.Errorf("scheduler: send build of %s to %s: %w", spec.ID, host, err)
	}
	return nil
}

// place records the chosen host (instance.Place) and reports false when
// the instance no longer waits for one.
func (s *Scheduler) place(ctx context.Context, id, host, zone string) (bool, error) {
	placed, err := instance.Place(s.st.WithContext(ctx), id, host, zone, s.now().UTC())
	if err != nil {
		return false, fmt.Errorf("scheduler: place %s on %s: %w", id, host, err)
	}
	return placed, nil
}

// unplace reverts place after the build could not be sent.
func (s *Scheduler) unplace(ctx context.Context, inst *store.Instance, host string) error {
	ctx = context.WithoutCancel(ctx)
	if err := instance.Unplace(s.st.WithContext(ctx), inst.ID, host, inst.AvailabilityZone, s.now().UTC()); err != nil {
		return fmt.Errorf("scheduler: unplace %s from %s: %w", inst.ID, host, err)
	}
	return nil
}

// undoClaim releases the claim just made on host and returns cause marked
// for retry (nil cause: nothing to retry).
func (s *Scheduler) undoClaim(ctx context.Context, id, host string, cause error) error {
	// The release must happen even when ctx was cancelled mid-way.
	if err := instance.ReleaseClaims(s.st.WithContext(context.WithoutCancel(ctx)), id, host); err != nil {
		s.log.Error("release claim", "instance", id, "host", host, "error", err)
		if cause == nil {
			cause = err
		}
	}
	if cause == nil {
		return nil
	}
	return bus.Retry(cause)
}

// fail puts a building instance into ERROR with a fault, releases every
// claim it holds and records the failed schedule event.
func (s *Scheduler) fail(ctx context.Context, inst *store.Instance, requestID string, start time.Time, message, details string) error {
	changed, err := instance.FailScheduling(s.st.WithContext(ctx), inst.ID,
		instance.Fault{Code: 500, Message: message, Details: details, At: s.now().UTC()})
	if err != nil {
		return bus.Retry(fmt.Errorf("scheduler: put %s in error: %w", inst.ID, err))
	}
	if changed {
		s.recordEvent(ctx, inst.ID, requestID, start, false, message)
	}
	return nil
}

// recordEvent adds the schedule event to the instance's action; failing
// to record it must not undo a placement, so errors are only logged.
func (s *Scheduler) recordEvent(ctx context.Context, id, requestID string, start time.Time, ok bool, detail string) {
	if requestID == "" {
		return
	}
	err := s.st.RecordEvent(ctx, store.Event{InstanceID: id, RequestID: requestID, Name: EventSchedule,
		Host: s.self, Start: start, Finish: s.now().UTC(), OK: ok, Detail: detail, Message: detail})
	if err != nil {
		s.log.Error("record schedule event", "instance", id, "request_id", requestID, "error", err)
	}
}

func (s *Scheduler) loadInstance(ctx context.Context, id string) (*store.Instance, error) {
	var inst store.Instance
	err := s.st.WithContext(ctx).Where("id = ?", id).First(&inst).Error
	if err != nil {
		return nil, store.NotFound(err, "scheduler: instance "+id)
	}
	return &inst, nil
}

// zoneOf returns the availability zone of a compute host ("" = default).
func (s *Scheduler) zoneOf(ctx context.Context, host string) (string, error) {
	var svc store.Service
	err := s.st.WithContext(ctx).Where(&store.Service{Host: host, Binary: store.ComputeBinary}).First(&svc).Error
	if err != nil {
		return "", store.NotFound(err, "scheduler: zone of "+host)
	}
	if svc.Zone == "" {
		return DefaultZone, nil
	}
	return svc.Zone, nil
}
