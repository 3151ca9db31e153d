package agent

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// handleRebuild replaces a server's workload with one from its new image
// and reports the outcome (Action rebuild) to the conductor.
func (a *Agent) handleRebuild(ctx context.Context, req protocol.RebuildInstance) error {
	if req.Spec.ID == "" {
		return fmt.Errorf("agent: rebuild request %s without an instance id", req.RequestID)
	}
	a.log.Info("rebuilding instance", "instance", req.Spec.ID, "request_id", req.RequestID, "image", req.Spec.ImageRef, "start", req.Start)
	return a.runReported(ctx, req.RequestID, req.Spec.ID, lifecycle.ActRebuild, func(ctx context.Context) (drivers.PowerState, error) {
		return a.rebuild(ctx, req)
	})
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
	// A new disk: its first boot runs the user data again, with a fresh
	// config drive, as on a rebuilt Nova server.
	if spec.Files, err = a.firstBootFiles(ctx, req.Spec); err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("rebuild %s: %w", id, err)
	}
	spec.AdminPassHash = a.buildPassword(req.Spec)
	a.nics.set(id, req.Spec.NICs)
	a.volc.set(id, req.Spec.Volumes)
	if err := a.drv.Rebuild(ctx, spec, a.cfg.StopTimeout); err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("rebuild instance %s: %w", id, err)
	}
	a.setBuildPassword(ctx, req.Spec)
	if !req.Start {
		return a.powerOf(ctx, id), nil
	}
	return a.bringUp(ctx, id, req.Spec.NICs)
}
