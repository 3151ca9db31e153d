package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/protocol"
)

// Instance-action events of a resize (Nova's names).
const (
	EventResize       = "compute_resize_instance"
	EventRevertResize = "compute_revert_resize"
)

// handleResize applies req.Spec's size to the instance in place and
// reports to the conductor: action resize for a resize, revert_resize for
// a revert (which sends the old flavor as Spec). The driver rolls a
// failed resize back itself, so a failure leaves the old size running.
func (a *Agent) handleResize(ctx context.Context, req protocol.ResizeInstance, revert bool) error {
	id := req.InstanceID
	if id == "" {
		return fmt.Errorf("agent: resize request %s without an instance id", req.RequestID)
	}
	action, event := lifecycle.ActResize, EventResize
	if revert {
		action, event = lifecycle.ActRevertResize, EventRevertResize
	}
	log := a.log.With("instance", id, "request_id", req.RequestID, "action", action)
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()

	rep := protocol.InstanceReport{RequestID: req.RequestID, InstanceID: id, Host: a.cfg.Host,
		Action: action, Event: event, Started: a.now().UTC()}
	power, err := a.resize(ctx, req.Spec)
	rep.PowerState = int(power)
	if err != nil {
		log.Error("resize failed", "err", err, "vcpus", req.Spec.VCPUs, "memory_mb", req.Spec.MemoryMB)
		rep.Error, rep.ErrorMessage = err.Error(), errdefs.Message(err)
	} else {
		rep.OK = true
		log.Info("resized", "vcpus", req.Spec.VCPUs, "memory_mb", req.Spec.MemoryMB, "power_state", power)
	}
	rep.Finished = a.now().UTC()
	return a.report(ctx, rep)
}

// resize applies s's vCPUs, memory and extra-spec limits to the instance
// and returns its power state afterwards.
func (a *Agent) resize(ctx context.Context, s protocol.InstanceSpec) (drivers.PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, a.callTimeout+a.cfg.StopTimeout)
	defer cancel()
	if !a.drv.Capabilities().LiveResize {
		return a.powerOf(ctx, s.ID), fmt.Errorf("resize instance %s: driver %s cannot resize in place: %w",
			s.ID, a.drv.Name(), drivers.ErrNotSupported)
	}
	lim, err := limits.Parse(s.ExtraSpecs, s.VCPUs)
	if err != nil {
		return a.powerOf(ctx, s.ID), fmt.Errorf("resize instance %s: flavor extra specs: %w", s.ID, err)
	}
	if lim.PidsMax <= 0 {
		// The host's default cap, as at build: a flavor without
		// capsule:pids_max must not keep the old flavor's cap.
		lim.PidsMax = a.cfg.PidsLimit
	}
	if _, err := a.drv.Status(ctx, s.ID); err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return drivers.PowerNoState, fmt.Errorf("resize instance %s: no such instance on host %s: %w", s.ID, a.cfg.Host, err)
		}
		return drivers.PowerNoState, fmt.Errorf("resize instance %s: status: %w", s.ID, err)
	}
	if err := a.drv.Resize(ctx, s.ID, s.VCPUs, s.MemoryMB, lim); err != nil {
		return a.powerOf(ctx, s.ID), fmt.Errorf("resize instance %s: %w", s.ID, err)
	}
	return a.powerOf(ctx, s.ID), nil
}
