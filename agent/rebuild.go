package agent

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// handleRebuild replaces a server's workload with one from its new image
// and reports the outcome (Action rebuild) to the conductor.
func (a *Agent) handleRebuild(ctx context.Context, req protocol.RebuildInstance) error {
	id := req.Spec.ID
	if id == "" {
		return fmt.Errorf("agent: rebuild request %s without an instance id", req.RequestID)
	}
	log := a.log.With("instance", id, "request_id", req.RequestID, "action", lifecycle.ActRebuild)
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()

	rep := protocol.InstanceReport{
		RequestID: req.RequestID, InstanceID: id, Host: a.cfg.Host,
		Action: lifecycle.ActRebuild, Event: ActionEvent(lifecycle.ActRebuild), Started: a.now().UTC(),
	}
	log.Info("rebuilding instance", "image", req.Spec.ImageRef, "start", req.Start)
	power, err := a.rebuild(ctx, req)
	rep.PowerState = int(power)
	if err != nil {
		log.Error("rebuild failed", "err", err, "power_state", power)
		rep.Error = err.Error()
	} else {
		rep.OK = true
		log.Info("instance rebuilt", "power_state", power)
	}
	rep.Finished = a.now().UTC()
	return a.report(ctx, rep)
}

// rebuild swaps the workload through the driver, which keeps the sandbox
// (a running server's plumbing stays in place), then brings the new
// workload up when the server was running. A SHUTOFF server stays off:
// its sandbox is stopped and its ports unplugged, as after a stop.
func (a *Agent) rebuild(ctx context.Context, req protocol.RebuildInstance) (drivers.PowerState, error) {
	id := req.Spec.ID
	ctx, cancel := context.WithTimeout(ctx, a.buildTimeout+a.cfg.StopTimeout)
	defer cancel()
	spec, err := a.driverSpec(req.Spec)
	if err != nil {
		return a.powerOf(ctx, id), err
	}
	a.nics.set(id, req.Spec.NICs)
	if err := a.drv.Rebuild(ctx, spec, a.cfg.StopTimeout); err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("rebuild instance %s: %w", id, err)
	}
	if !req.Start {
		return a.powerOf(ctx, id), nil
	}
	return a.bringUp(ctx, id, req.Spec.NICs)
}
