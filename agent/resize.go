package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// handleResize is where the host decides how a same-host resize (or its
// revert) is made; the API decided it stays on this host (see
// api-server/compute resizeRoute). In order:
//   - a new root disk on a host that caps root disks: the container is
//     made again with it (rootDiskResize: stop, remake, limits, start),
//     the old one kept for a revert until the confirm;
//   - a redelivery of a cold resize cut short: finish it;
//   - otherwise live (a.resize); what the driver can change only on a
//     stopped instance (drivers.ErrNeedsRestart) is made cold (coldResize).
//
// handleResize applies req.Spec's size to the instance in place and
// reports to the conductor: action resize for a resize, revert_resize for
// a revert (which sends the old flavor as Spec). The driver rolls a
// failed resize back itself, so a failure leaves the old size running.
// A change the driver can make only to a stopped instance
// (drivers.ErrNeedsRestart) is made cold, as Nova's resize on the same
// host: stop, resize, start (coldResize); the instance keeps its
// container, so its disk, NICs and IP stay. A redelivered request (the
// agent died mid-way) that finds a server that ran (req.Running) stopped
// finishes the cold resize: apply, start, report as usual.
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
	var power drivers.PowerState
	var (
		dr     drivers.RootDiskResizer
		remake bool
		derr   error
	)
	if req.Spec.DiskGB != req.Old.DiskGB {
		// Only a flavor change of the disk remakes the container: a
		// server made before its host capped root disks is not
		// restarted by a resize of its CPUs or memory.
		dr, remake, derr = a.rootDiskChange(ctx, id, req.Spec.DiskGB)
	}
	switch {
	case derr != nil:
		power, err = a.powerOf(ctx, id), derr
	case remake:
		log.Info("the new flavor changes the root disk, which is fixed when the container is made; resizing cold (stop, make the container again with the new disk, start)",
			"disk_gb", req.Spec.DiskGB, "old_disk_gb", req.Old.DiskGB)
		power, err = a.rootDiskResize(ctx, dr, req.Spec, req.Old, req.Running)
	case req.Running && a.stopped(ctx, id):
		// The server ran when the resize began and its container is
		// stopped: this is a redelivery after the agent died during a
		// cold resize, between its stop and its start. Finish it.
		log.Warn("the running instance's container is stopped: finishing a cold resize cut short (resize, start)")
		power, err = a.resizeAndStart(ctx, req.Spec, req.Old)
	default:
		power, err = a.resize(ctx, req.Spec)
		if errors.Is(err, drivers.ErrNeedsRestart) && power == drivers.PowerRunning {
			log.Info("the new flavor cannot be applied to the running instance; resizing it cold (stop, resize, start)", "why", errdefs.Message(err))
			power, err = a.coldResize(ctx, req.Spec, req.Old)
		}
	}
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

// coldResize makes a resize of running instance s.ID that needs a
// restart: stop it, apply s (to the stopped instance), start it. When the
// new size cannot be applied, or the instance does not start with it, the
// old one (old) is applied again and the instance started, so a failure
// leaves the old flavor running, as a live resize's rollback does.
func (a *Agent) coldResize(ctx context.Context, s, old protocol.InstanceSpec) (drivers.PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*a.cfg.StopTimeout+3*a.callTimeout)
	defer cancel()
	if err := a.stop(ctx, s.ID); err != nil {
		return a.powerOf(ctx, s.ID), fmt.Errorf("cold resize of instance %s: stop: %w", s.ID, err)
	}
	return a.resizeAndStart(ctx, s, old)
}

// stopped reports whether instance id's container exists and is stopped.
func (a *Agent) stopped(ctx context.Context, id string) bool {
	p := a.powerOf(ctx, id)
	return p == drivers.PowerShutdown || p == drivers.PowerCrashed
}

// resizeAndStart is the second half of a cold resize, on the stopped
// instance s.ID: apply s, start it. It is also how a redelivered cold
// resize the agent died in ends (both steps are idempotent). On failure
// the old size (old) is applied again and the instance started.
func (a *Agent) resizeAndStart(ctx context.Context, s, old protocol.InstanceSpec) (drivers.PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StopTimeout+3*a.callTimeout)
	defer cancel()
	if _, err := a.resize(ctx, s); err != nil {
		if serr := a.start(ctx, s.ID); serr != nil {
			a.log.Error("cold resize: the instance did not start again with its old flavor", "instance", s.ID, "err", serr)
			err = fmt.Errorf("%w (starting it again with the old flavor failed: %v)", err, serr)
		}
		return a.powerOf(ctx, s.ID), fmt.Errorf("cold resize of instance %s: %w", s.ID, err)
	}
	if err := a.start(ctx, s.ID); err != nil {
		werr := fmt.Errorf("cold resize of instance %s: start with the new flavor: %w", s.ID, err)
		if _, rerr := a.resize(ctx, old); rerr != nil {
			a.log.Error("cold resize: could not put the old flavor back", "instance", s.ID, "err", rerr)
			return a.powerOf(ctx, s.ID), errdefs.Wrap(fmt.Errorf("%w (putting the old flavor back failed: %v)", werr, rerr),
				errdefs.ErrInternal, "the server did not start with the new flavor")
		}
		if serr := a.start(ctx, s.ID); serr != nil {
			a.log.Error("cold resize: the instance did not start again with its old flavor", "instance", s.ID, "err", serr)
			werr = fmt.Errorf("%w (starting it again with the old flavor failed: %v)", werr, serr)
		}
		return a.powerOf(ctx, s.ID), errdefs.Wrap(werr, errdefs.ErrInternal, "the server did not start with the new flavor")
	}
	return a.powerOf(ctx, s.ID), nil
}

// rootDiskChange asks the driver whether giving instance id a root disk of
// diskGB means making its container again (drivers.RootDiskResizer); a
// driver without root disk caps never does.
func (a *Agent) rootDiskChange(ctx context.Context, id string, diskGB int) (drivers.RootDiskResizer, bool, error) {
	dr, ok := a.drv.(drivers.RootDiskResizer)
	if !ok {
		return nil, false, nil
	}
	cctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	remake, err := dr.RootDiskChange(cctx, id, diskGB)
	if err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return nil, false, fmt.Errorf("resize instance %s: no such instance on host %s: %w", id, a.cfg.Host, err)
		}
		return nil, false, fmt.Errorf("resize instance %s: root disk: %w", id, err)
	}
	return dr, remake, nil
}

// rootDiskTimeout bounds a root disk resize: two stops, a commit of the
// server's data and a create; below the conductor's task timeout.
const rootDiskTimeout = 5 * time.Minute

// rootDiskResize gives instance s.ID the root disk, limits and flavor of
// s by making its container again (drivers.RootDiskResizer): stop it,
// remake it with s.DiskGB (a revert's brings the kept container back),
// apply s's limits, start it when it ran (start). Every step is
// idempotent, so a redelivery after an agent restart finishes it. A
// failure puts the old disk (old.DiskGB: the kept container comes back)
// and limits back and starts the server again when it ran.
func (a *Agent) rootDiskResize(ctx context.Context, dr drivers.RootDiskResizer, s, old protocol.InstanceSpec, start bool) (drivers.PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*a.cfg.StopTimeout+rootDiskTimeout)
	defer cancel()
	id := s.ID
	if p := a.powerOf(ctx, id); p == drivers.PowerRunning || p == drivers.PowerPaused {
		start = true
		if err := a.stop(ctx, id); err != nil {
			return a.powerOf(ctx, id), fmt.Errorf("root disk resize of instance %s: stop: %w", id, err)
		}
	}
	restart := func(werr error) error {
		if !start {
			return werr
		}
		if serr := a.start(ctx, id); serr != nil {
			a.log.Error("root disk resize: the instance did not start again with its old disk", "instance", id, "err", serr)
			return fmt.Errorf("%w (starting it again with the old flavor failed: %v)", werr, serr)
		}
		return werr
	}
	if err := dr.ResizeRootDisk(ctx, id, s.DiskGB); err != nil {
		err = restart(fmt.Errorf("root disk resize of instance %s: %w", id, err))
		return a.powerOf(ctx, id), err
	}
	back := func(werr error) error {
		if err := dr.ResizeRootDisk(ctx, id, old.DiskGB); err != nil {
			a.log.Error("root disk resize: could not put the old disk back", "instance", id, "err", err)
			return fmt.Errorf("%w (putting the old disk back failed: %v)", werr, err)
		}
		if _, err := a.resize(ctx, old); err != nil {
			a.log.Error("root disk resize: could not put the old limits back", "instance", id, "err", err)
		}
		return restart(werr)
	}
	if _, err := a.resize(ctx, s); err != nil {
		err = back(fmt.Errorf("root disk resize of instance %s: %w", id, err))
		return a.powerOf(ctx, id), err
	}
	if start {
		if err := a.start(ctx, id); err != nil {
			err = back(errdefs.Wrap(fmt.Errorf("root disk resize of instance %s: start with the new flavor: %w", id, err),
				errdefs.ErrInternal, "the server did not start with the new flavor"))
			return a.powerOf(ctx, id), err
		}
	}
	return a.powerOf(ctx, id), nil
}

// handleConfirmResize drops what a resize kept on this host for its
// revert (a root disk resize's old container). Nothing to report: the
// API confirmed already; the reconcile drops what a lost message left.
func (a *Agent) handleConfirmResize(ctx context.Context, req protocol.ResizeInstance) error {
	dr, ok := a.drv.(drivers.RootDiskResizer)
	if !ok || req.InstanceID == "" {
		return nil
	}
	unlock, err := a.locks.lock(ctx, req.InstanceID)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()
	if err := dr.ConfirmRootDisk(ctx, req.InstanceID); err != nil {
		return fmt.Errorf("agent: confirm resize of %s: %w", req.InstanceID, err)
	}
	return nil
}
