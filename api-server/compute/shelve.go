package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// ImageReleaser removes an image from the private registry unless another
// image still uses its manifest (registry.Client): what the compute API
// needs to delete the shelve image of an offloaded server it deletes.
type ImageReleaser interface {
	ReleaseImage(ctx context.Context, ref string, others []string) error
}

// shelveServer (Nova's shelve): the server's host stops it, commits and
// pushes it as its shelve image (a private snapshot named
// <server>-shelved, recorded queued now); the conductor then records it
// shelved and offloads it (at once with shelved_offload_time 0). 202, no
// body.
func (s *Service) shelveServer(w http.ResponseWriter, r *http.Request, inst *store.Instance) {
	s.startSnapshot(w, r, inst, snapshotRequest{act: lifecycle.ActShelve, apiName: "shelve",
		name: instance.ShelveImageName(inst.Name), shelve: true})
}

// shelveOffload (Nova's shelveOffload, admin only by Nova's default
// policy): the host of a shelved server removes its container and
// sandbox, and its room is freed. 202.
func (s *Service) shelveOffload(w http.ResponseWriter, r *http.Request, inst *store.Instance) {
	if !auth.FromContext(r.Context()).IsAdmin() {
		writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-shelve:shelve_offload to be performed."))
		return
	}
	// Its local volumes go to the registry first (instance.OffloadVolumeRefs,
	// once the task is set: a volume attached or detached while it is
	// shelved must have settled, 409 otherwise).
	prep := func(tx *gorm.DB, msg *protocol.InstanceAction) error {
		if inst.VMState != lifecycle.Shelved {
			return nil
		}
		var err error
		msg.VolumeRefs, err = instance.OffloadVolumeRefs(tx, inst.ID, inst.Host)
		return err
	}
	if s.startActionPrep(w, r, inst, protocol.InstanceAction{Action: lifecycle.ActShelveOffload}, "shelveOffload", prep) == nil {
		noContent(w, http.StatusAccepted)
	}
}

// unshelveServer (Nova's unshelve; below 2.77 its body is not looked at;
// from 2.77 it may name the availability_zone an offloaded server is
// scheduled into, from 2.91 unpin it (null) or name its host (admins),
// a 409 for a server still on its host: unshelveZone). A shelved server
// is started on its host; an offloaded one is scheduled anywhere with
// room (its cores and RAM checked against the quota first, under the
// project's quota lock, since an offloaded server does not count them)
// and spawned from its shelve image with its ports, addresses and key.
func (s *Service) unshelveServer(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	target, err := s.unshelveZone(r, inst, arg)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if inst.VMState != lifecycle.ShelvedOffloaded {
		s.simpleAction(w, r, inst, lifecycle.ActUnshelve, "unshelve")
		return
	}
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	if _, err := lifecycle.Begin(lifecycle.ActUnshelve, inst.VMState, inst.TaskState); err != nil {
		stateConflict(w, inst, "unshelve")
		return
	}
	reqID := requestID(w)
	guard := s.growQuota(inst, "unshelve", store.QuotaUsage{Cores: inst.VCPUs, RAM: inst.MemoryMB})
	var out outbox.Batch
	err = s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := guard(tx); err != nil {
			return err
		}
		if _, err := instance.Begin(tx, inst, lifecycle.ActUnshelve, s.opts.Now(), nil); err != nil {
			return err
		}
		// After Begin (which holds the row): an attach made while it
		// was offloaded has either settled or is seen here.
		if vol, err := instance.VolumeAttaching(tx, inst.ID); err != nil || vol != "" {
			if err == nil {
				err = errdefs.Conflictf("Cannot 'unshelve' instance %s while volume %s is being attached to it; try again once it is in-use.", inst.ID, vol)
			}
			return err
		}
		if target.zone != "" || target.unpin {
			// The scheduler places the server in its (new) zone; a
			// requested host goes with the schedule message.
			if err := tx.Model(&store.Instance{}).Where("id = ?", inst.ID).Update("requested_zone", target.zone).Error; err != nil {
				return fmt.Errorf("set availability zone of %s: %w", inst.ID, err)
			}
		}
		now := s.opts.Now()
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "unshelve", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return err
		}
		msg, err := bus.NewMessage(protocol.KindScheduleInstance, protocol.ScheduleInstance{InstanceID: inst.ID,
			RequestID: reqID, Attempt: 1, Host: target.host})
		if err != nil {
			return err
		}
		return out.Enqueue(tx, bus.SchedulerQueue, inst.ID, msg)
	})
	switch {
	case errors.Is(err, errStateChanged):
		writeFault(w, errdefs.Conflictf("Cannot 'unshelve' instance %s: its state changed meanwhile", inst.ID))
		return
	case err != nil && errdefs.KindOf(err) != "":
		s.fail(w, r, err)
		return
	case err != nil:
		s.log.Error("start unshelve", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	s.deliver(ctx, &out)
	s.log.Info("unshelve requested", "instance", inst.ID)
	noContent(w, http.StatusAccepted)
}

// unshelveTarget is where an unshelve asks an offloaded server to go.
type unshelveTarget struct {
	zone    string // 2.77: schedule into this zone (and pin it)
	unpin   bool   // 2.91: availability_zone null unpins the server
	host    string // 2.91 (admins): schedule onto this host
	changed bool
}

// unshelveZone reads the unshelve body: null, or from 2.77
// {"availability_zone": a zone that exists}, and from 2.91 also
// availability_zone null (unpin) and "host" (admins only). A target is
// for a server that is offloaded (one still on its host stays there:
// Nova's 409).
func (s *Service) unshelveZone(r *http.Request, inst *store.Instance, arg json.RawMessage) (unshelveTarget, error) {
	var t unshelveTarget
	v := versionOf(r.Context())
	if !v.AtLeast(77) || len(arg) == 0 || string(arg) == "null" {
		return t, nil
	}
	var body map[string]json.RawMessage
	if json.Unmarshal(arg, &body) != nil || body == nil {
		return t, errdefs.InvalidArgument("Invalid input for field/attribute unshelve. Value must be null or an object.")
	}
	for k := range body {
		if k != "availability_zone" && (k != "host" || !v.AtLeast(91)) {
			return t, errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	if raw, ok := body["availability_zone"]; ok {
		if string(raw) == "null" {
			t.unpin, t.changed = v.AtLeast(91), v.AtLeast(91)
		} else if json.Unmarshal(raw, &t.zone) != nil || t.zone == "" || len(t.zone) > 255 {
			return t, errdefs.InvalidArgument("Invalid input for field/attribute availability_zone. Value must be a string of 1-255 characters.")
		} else {
			t.changed = true
		}
	}
	if raw, ok := body["host"]; ok {
		if !auth.FromContext(r.Context()).IsAdmin() {
			return t, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-shelve:unshelve_to_host to be performed.")
		}
		if json.Unmarshal(raw, &t.host) != nil || t.host == "" || len(t.host) > 255 {
			return t, errdefs.InvalidArgument("Invalid input for field/attribute host. Value must be a string of 1-255 characters.")
		}
		t.changed = true
	}
	if !t.changed {
		return t, nil
	}
	if inst.VMState != lifecycle.ShelvedOffloaded {
		return t, errdefs.Conflictf("The availability_zone and host parameters are only supported for instances in SHELVED_OFFLOADED state: instance %s is %s.",
			inst.ID, lifecycle.Status(inst.VMState, inst.TaskState))
	}
	if t.zone != "" && !s.zoneExists(r.Context(), t.zone) {
		return t, errdefs.InvalidArgumentf("The requested availability zone is not available: %s", t.zone)
	}
	if t.host != "" && !s.computeHostExists(r.Context(), t.host) {
		return t, errdefs.InvalidArgumentf("Compute host %s could not be found.", t.host)
	}
	return t, nil
}

// forgetShelveImage deletes the shelve image of a server deleted while
// offloaded (row, then registry tag, best effort as Glance's delete).
func (s *Service) forgetShelveImage(ctx context.Context, inst *store.Instance) {
	if inst.ShelvedImageID == "" {
		return
	}
	var img *store.Image
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		img, err = instance.DropShelveImage(tx, inst)
		return err
	})
	if err != nil {
		s.log.Error("delete the shelve image of a deleted server", "instance", inst.ID, "image", inst.ShelvedImageID, "error", err)
		return
	}
	if img == nil || img.RegistryRef == "" {
		return
	}
	if s.opts.Registry == nil {
		s.log.Warn("no registry client: shelve image left in the registry", "instance", inst.ID, "ref", img.RegistryRef)
		return
	}
	ref, err := registry.ParseRef(img.RegistryRef)
	if err != nil {
		s.log.Warn("shelve image reference", "instance", inst.ID, "ref", img.RegistryRef, "error", err)
		return
	}
	others, err := s.st.ImageRefsIn(ctx, ref.Repository())
	if err == nil {
		err = s.opts.Registry.ReleaseImage(context.WithoutCancel(ctx), img.RegistryRef, others)
	}
	if err != nil {
		s.log.Warn("delete tag of shelve image", "instance", inst.ID, "ref", img.RegistryRef, "error", err)
	}
}
