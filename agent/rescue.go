package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// runRescue carries out a rescue or an unrescue and returns the power
// state the conductor records: running while the rescue system runs
// (Nova's rescued servers are running), the workload's after an unrescue.
// Both are idempotent, so a redelivery after an agent restart does the
// same again.
func (a *Agent) runRescue(ctx context.Context, req protocol.InstanceAction) (drivers.PowerState, error) {
	id := req.InstanceID
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StopTimeout+5*time.Minute)
	defer cancel()
	rs, ok := a.drv.(drivers.Rescuer)
	if !ok {
		return a.powerOf(ctx, id), errdefs.Wrap(fmt.Errorf("%s instance %s: driver %s: %w", req.Action, id, a.drv.Name(), drivers.ErrNotSupported),
			errdefs.ErrInvalidArgument, "the compute host cannot rescue servers")
	}
	if _, err := a.drv.Status(ctx, id); err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return drivers.PowerNoState, errdefs.Wrap(fmt.Errorf("%s instance %s: %w", req.Action, id, err),
				errdefs.ErrNotFound, "the server's container is missing on its host")
		}
		return drivers.PowerNoState, fmt.Errorf("%s instance %s: status: %w", req.Action, id, err)
	}
	if req.Action == lifecycle.ActRescue {
		if req.RescueImage == "" {
			return a.powerOf(ctx, id), fmt.Errorf("rescue instance %s: no rescue image", id)
		}
		wasRunning := a.powerOf(ctx, id) == drivers.PowerRunning
		// A volume-backed server's boot volume is what the rescue
		// system sees at /mnt: mounted on this host first.
		if err := a.beforeStart(ctx, id); err != nil {
			return a.powerOf(ctx, id), fmt.Errorf("rescue instance %s: %w", id, err)
		}
		if err := rs.Rescue(ctx, id, req.RescueImage, a.cfg.StopTimeout); err != nil {
			// Whatever the rescue got to, the rescue system goes and
			// the server is as it was: a running one is started again
			// (the rescue stops the workload first), so a failed
			// rescue never turns an ACTIVE server SHUTOFF.
			cctx := context.WithoutCancel(ctx)
			if uerr := rs.Unrescue(cctx, id, a.cfg.StopTimeout); uerr != nil {
				a.log.Error("rescue: cleanup after a failed rescue failed", "instance", id, "err", uerr)
			} else if wasRunning && a.powerOf(cctx, id) != drivers.PowerRunning {
				if serr := a.start(cctx, id); serr != nil {
					a.log.Error("rescue: start the server again after a failed rescue", "instance", id, "err", serr)
				}
			}
			return a.powerOf(ctx, id), fmt.Errorf("rescue instance %s: %w", id, err)
		}
		a.setRescuePassword(ctx, id, req.RescuePassHash)
		// The sandbox may have been started again (a stopped server):
		// its NICs are plumbed for the rescue system.
		if err := a.plumbFor(ctx, id); err != nil {
			return drivers.PowerRunning, fmt.Errorf("rescue instance %s: plumb: %w", id, err)
		}
		return drivers.PowerRunning, nil
	}
	if err := rs.Unrescue(ctx, id, a.cfg.StopTimeout); err != nil {
		return drivers.PowerRunning, fmt.Errorf("unrescue instance %s: %w", id, err)
	}
	if err := a.start(ctx, id); err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("unrescue instance %s: start: %w", id, err)
	}
	return a.powerOf(ctx, id), nil
}
