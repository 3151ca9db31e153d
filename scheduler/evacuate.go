package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// EventEvacuate is the instance-action event of an evacuated server's
// placement (Nova's conductor records its rebuild under this name).
const EventEvacuate = "conductor_rebuild_server"

// scheduleEvacuate places a server evacuated from its dead host on any
// other host with room (in its pinned zone, or on the host an admin
// named) and sends that host the build of its image, with its ports,
// addresses and shared volumes (instance.PlaceEvacuation). Idempotent
// like schedule: a redelivery finds it placed and at most re-sends the
// build.
func (s *Scheduler) scheduleEvacuate(ctx context.Context, req protocol.ScheduleInstance, inst *store.Instance, start time.Time, log *slog.Logger) error {
	m, err := instance.Evacuation(s.st.WithContext(ctx), inst.ID)
	if err != nil {
		return bus.Retry(err)
	}
	if m == nil {
		log.Debug("no evacuation in progress; schedule request ignored", "task_state", inst.TaskState)
		return nil
	}
	// What the server ends as (instance.BeginEvacuate): stopped when it
	// was, or when the evacuation asked for it (2.95).
	stopped := m.SourceVMState == lifecycle.Stopped
	switch {
	case inst.TaskState == lifecycle.Rebuilding && inst.Host == m.SourceCompute:
	case inst.TaskState == lifecycle.RebuildSpawning && inst.Host != "" && inst.Host != m.SourceCompute:
		claimed, err := instance.HasClaim(s.st.WithContext(ctx), inst.ID, inst.Host)
		if err != nil {
			return bus.Retry(err)
		}
		if !claimed {
			return nil
		}
		spec, err := instance.SpecFor(ctx, s.st, inst)
		if err != nil {
			return bus.Retry(err)
		}
		if err := s.publishEvacuate(ctx, inst.Host, req.RequestID, spec, stopped); err != nil {
			return bus.Retry(err)
		}
		return nil
	default:
		log.Debug("instance not waiting to be evacuated; schedule request ignored", "task_state", inst.TaskState)
		return nil
	}
	spec, err := instance.SpecFor(ctx, s.st, inst)
	if err != nil {
		return bus.Retry(err)
	}
	if spec.ImageRef == "" {
		return s.evacuationUnplaced(ctx, inst, m, req.RequestID, start,
			fmt.Sprintf("Image %s could not be found: the server cannot be rebuilt from it.", inst.ImageID), "")
	}
	return s.placeAndSend(ctx, inst, placement{
		request: Request{
			InstanceID: inst.ID, AvailabilityZone: inst.RequestedZone, ForceHost: req.Host, Excluded: []string{m.SourceCompute},
			Resources: store.Resources{VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.ClaimDiskGB()},
			Dedicated: store.IsDedicated(inst.ExtraSpecs),
		},
		noHost: func(message, details string) error {
			return s.evacuationUnplaced(ctx, inst, m, req.RequestID, start, message, details)
		},
		place: func(host, zone string) (bool, error) {
			return instance.PlaceEvacuation(s.st.WithContext(ctx), inst.ID, m, host, zone, s.now().UTC())
		},
		send: func(host string) error {
			// The spec as placed: its ports bound to host.
			cur, err := s.loadInstance(ctx, inst.ID)
			if err != nil {
				return err
			}
			spec, err := instance.SpecFor(ctx, s.st, cur)
			if err != nil {
				return err
			}
			return s.publishEvacuate(ctx, host, req.RequestID, spec, stopped)
		},
		unplace: func(host string) error {
			return instance.UnplaceEvacuation(s.st.WithContext(context.WithoutCancel(ctx)), inst.ID, m, host, s.now().UTC())
		},
		placed: func() { s.recordEvacuateEvent(ctx, inst.ID, req.RequestID, start, true, "") },
	}, log)
}

func (s *Scheduler) publishEvacuate(ctx context.Context, host, requestID string, spec protocol.InstanceSpec, stopped bool) error {
	msg, err := bus.NewMessage(protocol.KindBuildInstance, protocol.BuildInstance{
		RequestID: requestID, Attempt: 1, Spec: spec, Evacuate: true, Stopped: stopped})
	if err != nil {
		return err
	}
	if err := s.b.Publish(ctx, bus.ComputeQueue(host), msg); err != nil {
		return fmt.Errorf("scheduler: send evacuation of %s to %s: %w", spec.ID, host, err)
	}
	return nil
}

// evacuationUnplaced ends an evacuation no host can take: the server
// stays as it was on its dead host, with the fault saying why.
func (s *Scheduler) evacuationUnplaced(ctx context.Context, inst *store.Instance, m *store.Migration, requestID string, start time.Time, message, details string) error {
	ok, err := instance.EvacuationUnplaced(s.st.WithContext(ctx), inst.ID, m,
		instance.Fault{Code: 500, Message: "Evacuation failed: " + message, Details: details, At: s.now().UTC()})
	if err != nil {
		return bus.Retry(fmt.Errorf("scheduler: end evacuation of %s: %w", inst.ID, err))
	}
	if ok {
		s.recordEvacuateEvent(ctx, inst.ID, requestID, start, false, message)
	}
	return nil
}

func (s *Scheduler) recordEvacuateEvent(ctx context.Context, id, requestID string, start time.Time, ok bool, detail string) {
	err := s.st.RecordEvent(ctx, store.Event{InstanceID: id, RequestID: requestID, Name: EventEvacuate,
		Host: s.self, Start: start, Finish: s.now().UTC(), OK: ok, Detail: detail, Message: detail})
	if err != nil {
		s.log.Error("record evacuate event", "instance", id, "request_id", requestID, "error", err)
	}
}
