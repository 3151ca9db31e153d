package docker

import (
	"context"
	"errors"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/internal/netnsfile"
)

// Rebuild implements drivers.Driver: it replaces the workload container
// of spec.ID with a new one made from spec (a new image: the old writable
// layer is gone, as a rebuilt VM's disk), keeping the sandbox and with it
// the server's network namespace and plumbing. The new image is pulled
// before anything is removed, so an image that cannot be had leaves the
// server as it was. The old workload gets SIGTERM and grace to shut down.
// The new one is created, not started. A missing workload (an earlier
// rebuild that failed half-way) is simply created.
func (d *Driver) Rebuild(ctx context.Context, spec drivers.Spec, grace time.Duration) error {
	if err := validate(spec); err != nil {
		return err
	}
	if err := d.ensureImage(ctx, spec.Image); err != nil {
		return fmt.Errorf("docker rebuild %s: %w", spec.ID, err)
	}
	old, err := d.inspect(ctx, "rebuild", spec.ID)
	// The server keeps its network mode: a sandbox's server gets a
	// workload joining that sandbox again.
	useNetns := d.netnsMode()
	switch {
	case errors.Is(err, drivers.ErrNotFound):
		if _, serr := d.inspectSandbox(ctx, "rebuild", spec.ID); serr == nil {
			useNetns = false
		}
	case err != nil:
		return err
	default:
		if spec.Networked && (sandboxed(old) || d.inNetns(old)) {
			useNetns = d.inNetns(old)
		}
		if err := d.stopWorkload(ctx, spec.ID, old, grace); err != nil {
			return err
		}
		if err := d.removeWorkload(ctx, spec.ID, old); err != nil {
			return err
		}
		d.log.Info("workload removed for a rebuild", "instance", spec.ID, "container", old.ID, "old_image", old.Config.Image)
	}
	return d.create(ctx, spec, useNetns)
}

// stopWorkload stops the workload container c of instance id alone,
// leaving its sandbox (and so the namespace's plumbing) up.
func (d *Driver) stopWorkload(ctx context.Context, id string, c container.InspectResponse, grace time.Duration) error {
	if !c.State.Running {
		return nil
	}
	if c.State.Paused {
		// Docker refuses to signal a frozen container.
		if err := d.cli.ContainerUnpause(ctx, c.ID); err != nil {
			return wrap("stop", id, err)
		}
	}
	if grace <= 0 {
		grace = d.opts.StopTimeout
	}
	if err := d.cli.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: secondsCeil(grace)}); err != nil {
		return wrap("stop", id, err)
	}
	return nil
}

// removeWorkload force-removes the workload container c of instance id
// with its anonymous volumes, and its migration image or root disk resize
// commit when it booted from one (private to this server, it would leak
// otherwise).
func (d *Driver) removeWorkload(ctx context.Context, id string, c container.InspectResponse) error {
	err := d.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
	case cerrdefs.IsConflict(err):
		// "removal already in progress": wait for the other removal.
		if err := d.waitGone(ctx, c.ID); err != nil {
			return wrap("remove", id, err)
		}
	default:
		return wrap("remove", id, err)
	}
	d.live.forget(c.ID)
	if err := netnsfile.RemoveMap(netnsfile.MapDir, c.ID); err != nil {
		d.log.Warn("could not remove the network namespace map entry of a removed workload", "instance", id, "err", err)
	}
	if c.Config == nil {
		return nil
	}
	src := c.Config.Image
	if s := c.Config.Labels[LabelSourceImage]; s != "" {
		// It ran a volume-free copy of s (volumes.go).
		d.removeVolumeFreeCopy(ctx, id, c.Image)
		src = s
	}
	if isMigrationImage(src) || isResizeImage(src) {
		if err := d.RemoveImage(ctx, src); err != nil {
			d.log.Warn("could not remove the migration or resize image of a removed workload", "instance", id, "image", src, "err", err)
		}
	}
	return nil
}
