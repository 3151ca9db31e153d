package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/volume"
)

// Local volumes of a shelved server (instance/shelve.go): its offload
// pushes each to the registry, and only once every push is done removes
// the server and deletes this host's copies; the unshelve's host pulls
// them before it creates the server, and deletes its copies again when
// the unshelve fails (the registry still has the data).

// offload removes shelved server req.InstanceID from this host after its
// local volumes (req.VolumeRefs, if any) are in the registry, and drops
// its ephemeral disks. A failed push leaves everything as it was (the
// server stays shelved here).
func (a *Agent) offload(ctx context.Context, req protocol.InstanceAction) (drivers.PowerState, error) {
	id := req.InstanceID
	if err := a.pushShelvedVolumes(ctx, id, req.VolumeRefs); err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("offload instance %s: %w", id, err)
	}
	power, err := a.runAction(ctx, id, req.Action)
	if err != nil {
		return power, err
	}
	// Ephemeral disks die with the offload, as in Nova: the unshelve's
	// host makes them anew, blank.
	a.dropEphemeral(ctx, id)
	if err := a.dropShelvedVolumes(ctx, id, req.VolumeRefs); err != nil {
		return power, fmt.Errorf("offload instance %s: %w", id, err)
	}
	return power, nil
}

// pushShelvedVolumes pushes each local volume of refs to its reference.
// A volume no longer here was pushed by an earlier delivery of the same
// offload, which deleted it afterwards: its tag must be there.
func (a *Agent) pushShelvedVolumes(ctx context.Context, id string, refs map[string]string) error {
	if len(refs) == 0 {
		return nil
	}
	if a.vols == nil || a.reg == nil {
		return errdefs.FailedPrecondition("this host cannot push the server's local volumes (no volumes or no registry configured)")
	}
	for _, vol := range slices.Sorted(maps.Keys(refs)) {
		done := a.volc.enter(vol)
		here, err := a.vols.Exists(volume.Local, vol)
		var n int64
		switch {
		case err != nil:
		case here:
			n, err = a.vols.Export(ctx, volume.Local, vol, a.reg, refs[vol])
		default:
			err = a.pushed(ctx, vol, refs[vol])
		}
		done()
		if err != nil {
			return errdefs.Wrap(err, errdefs.ErrInternal,
				fmt.Sprintf("could not push volume %s to the registry (it stays on host %s)", vol, a.cfg.Host))
		}
		a.log.Info("shelve offload: volume pushed", "instance", id, "volume", vol, "ref", refs[vol], "bytes", n)
	}
	return nil
}

// pushed checks that vol's data is at ref.
func (a *Agent) pushed(ctx context.Context, vol, ref string) error {
	r, err := registry.ParseRef(ref)
	if err != nil {
		return err
	}
	if _, err := a.reg.At(r.Host).Manifest(ctx, r.Repo, r.Tag); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return errdefs.NotFoundf("volume %s is neither on this host nor in the registry (%s)", vol, ref)
		}
		return err
	}
	return nil
}

// dropShelvedVolumes deletes this host's copies of the volumes of refs
// (pushed already; the server is gone from here). Deleting what is not
// here succeeds.
func (a *Agent) dropShelvedVolumes(ctx context.Context, id string, refs map[string]string) error {
	var errs []error
	for _, vol := range slices.Sorted(maps.Keys(refs)) {
		err := a.deleteLocalCopy(ctx, vol)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete this host's copy of volume %s: %w", vol, err))
			continue
		}
		a.log.Info("shelve offload: deleted this host's copy of a pushed volume", "instance", id, "volume", vol)
	}
	return errors.Join(errs...)
}

// pullShelvedVolumes pulls the offloaded server's local volumes (refs)
// into copies on this host before the unshelve creates it, and returns
// the volumes it made here (also on failure). A copy here already is
// kept and not returned (a redelivered unshelve pulled it, and it may be
// the volume by now).
func (a *Agent) pullShelvedVolumes(ctx context.Context, s protocol.InstanceSpec, refs map[string]string) ([]string, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	if a.vols == nil || a.reg == nil {
		return nil, errdefs.FailedPrecondition("this host cannot take the server's local volumes (no volumes or no registry configured)")
	}
	sizes := map[string]int{}
	for _, vm := range s.Volumes {
		sizes[vm.Volume.ID] = vm.Volume.SizeGB
	}
	var pulled []string
	for _, vol := range slices.Sorted(maps.Keys(refs)) {
		if sizes[vol] <= 0 {
			return pulled, fmt.Errorf("volume %s: not among the server's attached volumes", vol)
		}
		done := a.volc.enter(vol)
		here, err := a.vols.Exists(volume.Local, vol)
		var n int64
		if err == nil && !here {
			pulled = append(pulled, vol)
			n, err = a.vols.Import(ctx, volume.Local, vol, sizes[vol], a.reg, refs[vol])
		}
		done()
		if err != nil {
			return pulled, errdefs.Wrap(err, errdefs.ErrInternal,
				fmt.Sprintf("could not pull volume %s onto host %s (its data stays in the registry)", vol, a.cfg.Host))
		}
		a.log.Info("unshelve: volume pulled", "instance", s.ID, "volume", vol, "ref", refs[vol], "bytes", n, "here_already", here)
	}
	return pulled, nil
}

// dropPulledVolumes deletes the copies a failed unshelve pulled here
// (vols): the volumes' data stays in the registry for the next unshelve.
func (a *Agent) dropPulledVolumes(ctx context.Context, id string, vols []string) error {
	if len(vols) == 0 || a.vols == nil {
		return nil
	}
	refs := make(map[string]string, len(vols))
	for _, v := range vols {
		refs[v] = ""
	}
	return a.dropShelvedVolumes(ctx, id, refs)
}
