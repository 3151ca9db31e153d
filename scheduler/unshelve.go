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

// EventUnshelve is the instance-action event of an offloaded server's
// placement (Nova's conductor records its unshelve under this name).
const EventUnshelve = "conductor_unshelve_instance"

// scheduleUnshelve places a shelved-offloaded server being unshelved on
// any host with room (in its zone; a host forced at its creation no
// longer binds it, as Nova resets forced destinations) and sends that
// host the build of its shelve image. Idempotent like schedule: a
// redelivery finds it placed and at most re-sends the build.
func (s *Scheduler) scheduleUnshelve(ctx context.Context, req protocol.ScheduleInstance, inst *store.Instance, start time.Time, log *slog.Logger) error {
	switch inst.TaskState {
	case lifecycle.Unshelving:
	case lifecycle.Spawning:
		if inst.Host == "" {
			return nil
		}
		claimed, err := instance.HasClaim(s.st.WithContext(ctx), inst.ID, inst.Host)
		if err != nil {
			return bus.Retry(err)
		}
		if !claimed {
			return nil
		}
		spec, refs, err := s.unshelveSpec(ctx, inst)
		if err != nil {
			return bus.Retry(err)
		}
		if spec.ImageRef == "" {
			return nil
		}
		if err := s.publishUnshelve(ctx, inst.Host, req.RequestID, spec, refs); err != nil {
			return bus.Retry(err)
		}
		return nil
	default:
		log.Debug("instance not waiting to be unshelved; schedule request ignored", "task_state", inst.TaskState)
		return nil
	}
	spec, refs, err := s.unshelveSpec(ctx, inst)
	if err != nil {
		return bus.Retry(err)
	}
	if spec.ImageRef == "" {
		return s.unplaced(ctx, inst, req.RequestID, start, fmt.Sprintf("Image %s could not be found.", inst.ShelvedImageID), "")
	}
	return s.placeAndSend(ctx, inst, placement{
		request: Request{
			InstanceID: inst.ID, AvailabilityZone: inst.RequestedZone, ForceHost: req.Host,
			Resources: store.Resources{VCPUs: inst.VCPUs, MemoryMB: inst.MemoryMB, DiskGB: inst.ClaimDiskGB()},
			Dedicated: store.IsDedicated(inst.ExtraSpecs),
		},
		noHost: func(message, details string) error {
			return s.unplaced(ctx, inst, req.RequestID, start, message, details)
		},
		place: func(host, zone string) (bool, error) {
			return instance.PlaceUnshelve(s.st.WithContext(ctx), inst.ID, host, zone, s.now().UTC())
		},
		send: func(host string) error { return s.publishUnshelve(ctx, host, req.RequestID, spec, refs) },
		unplace: func(host string) error {
			// The server waits for a host again.
			db := s.st.WithContext(context.WithoutCancel(ctx))
			_, err := instance.Apply(db, inst.ID, instance.In(lifecycle.ShelvedOffloaded, lifecycle.Spawning).OnHost(host),
				instance.Change{Task: lifecycle.Unshelving, Set: map[string]any{"host": ""}, At: s.now().UTC()})
			return err
		},
		placed: func() { s.recordUnshelveEvent(ctx, inst.ID, req.RequestID, start, true, "") },
	}, log)
}

// unshelveSpec is inst's spec with its shelve image as the image to
// build from (ImageRef "" when that image is gone), and where the local
// volumes its offload pushed are (instance.ShelvedVolumeRefs).
func (s *Scheduler) unshelveSpec(ctx context.Context, inst *store.Instance) (protocol.InstanceSpec, map[string]string, error) {
	spec, err := instance.SpecFor(ctx, s.st, inst)
	if err != nil {
		return spec, nil, err
	}
	db := s.st.WithContext(ctx)
	img, err := instance.ShelveImage(db, inst)
	if err != nil {
		return spec, nil, err
	}
	spec.ImageRef = ""
	if img == nil || img.Status != "active" {
		return spec, nil, nil
	}
	spec.ImageRef = img.RegistryRef
	refs, err := instance.ShelvedVolumeRefs(db, inst.ID, "", img.RegistryRef)
	return spec, refs, err
}

func (s *Scheduler) publishUnshelve(ctx context.Context, host, requestID string, spec protocol.InstanceSpec, refs map[string]string) error {
	msg, err := bus.NewMessage(protocol.KindBuildInstance, protocol.BuildInstance{
		RequestID: requestID, Attempt: 1, Spec: spec, Unshelve: true, VolumeRefs: refs})
	if err != nil {
		return err
	}
	if err := s.b.Publish(ctx, bus.ComputeQueue(host), msg); err != nil {
		return fmt.Errorf("scheduler: send unshelve of %s to %s: %w", spec.ID, host, err)
	}
	return nil
}

// unplaced ends an unshelve no host can take: the server stays
// offloaded, with the fault.
func (s *Scheduler) unplaced(ctx context.Context, inst *store.Instance, requestID string, start time.Time, message, details string) error {
	ok, err := instance.UnshelveUnplaced(s.st.WithContext(ctx), inst.ID,
		instance.Fault{Code: 500, Message: message, Details: details, At: s.now().UTC()})
	if err != nil {
		return bus.Retry(fmt.Errorf("scheduler: end unshelve of %s: %w", inst.ID, err))
	}
	if ok {
		s.recordUnshelveEvent(ctx, inst.ID, requestID, start, false, message)
	}
	return nil
}

func (s *Scheduler) recordUnshelveEvent(ctx context.Context, id, requestID string, start time.Time, ok bool, detail string) {
	err := s.st.RecordEvent(ctx, store.Event{InstanceID: id, RequestID: requestID, Name: EventUnshelve,
		Host: s.self, Start: start, Finish: s.now().UTC(), OK: ok, Detail: detail, Message: detail})
	if err != nil {
		s.log.Error("record unshelve event", "instance", id, "request_id", requestID, "error", err)
	}
}
