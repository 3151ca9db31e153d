package conductor

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// onVolumeReport records an agent's outcome of volume work (see
// protocol/volumes.go): the volume's (or snapshot's, attachment's) status
// moves on with a guarded transition, so a redelivered report or one of
// work the API superseded changes nothing. A host may only report on
// volumes it holds or servers it runs.
func (c *Conductor) onVolumeReport(ctx context.Context, r protocol.VolumeReport) error {
	db := c.st.WithContext(ctx)
	log := c.log.With("volume", r.VolumeID, "kind", r.Kind, "host", r.Host, "ok", r.OK)
	if !r.OK {
		log.Warn("volume work failed", "error", r.Error)
	}
	// An export nothing imports any more (its attach was superseded)
	// leaves its tag to be deleted here too.
	orphanExport := false
	// A failed restore of a deleted shelved server's volume keeps its
	// tag: the data is only there.
	keepTag := false
	err := db.Transaction(func(tx *gorm.DB) error {
		switch r.Kind {
		case protocol.KindSnapshotCreate, protocol.KindSnapshotDelete:
			return c.onSnapshotWork(tx, r)
		}
		v, err := store.GetVolume(tx, r.VolumeID)
		if errdefs.IsNotFound(err) {
			// Deleted meanwhile; a copy its transfer made is not.
			orphanExport = r.Kind == protocol.KindVolumeExport
			if r.Kind == protocol.KindVolumeImport && r.OK {
				return c.dropVolumeCopy(tx, protocol.VolumeSpec{ID: r.VolumeID, Backend: protocol.BackendLocal}, r.Host)
			}
			return nil
		}
		if err != nil {
			return err
		}
		att, err := volumeAttachment(tx, v.ID)
		if err != nil {
			return err
		}
		if restore, del := instance.IsRestore(r.RequestID); restore && r.Kind == protocol.KindVolumeImport &&
			v.Status == store.VolumeMaintenance && att == nil {
			if r.Host != v.Host {
				return errdefs.Forbiddenf("conductor: host %s reported the restore of volume %s of host %s", r.Host, v.ID, v.Host)
			}
			keepTag = !r.OK
			return c.onRestoreReport(tx, v, r, del)
		}
		if r.Kind == protocol.KindVolumeDelete && (v.Status != store.VolumeDeleting || r.Host != v.Host) {
			// The removal of the copy a transfer left on another host.
			return nil
		}
		if transferSuperseded(v, att, r) {
			// The attach the transfer was for is gone (its server
			// deleted, the volume detached or deleting): a copy the
			// import made is not the volume and goes.
			orphanExport = r.Kind == protocol.KindVolumeExport
			// A failed import may have made its copy all the same (a
			// redelivery past its deadline of an import whose host died
			// after the pull): deleting what is not there succeeds.
			if r.Kind == protocol.KindVolumeImport && r.Host != v.Host {
				log.Info("volume copy of a superseded transfer: deleting it", "request_id", r.RequestID)
				return c.dropVolumeCopy(tx, protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: r.Host}, r.Host)
			}
			return nil
		}
		// Attach, detach and an import run on the server's host; the
		// rest on the host that holds the data.
		want := v.Host
		switch r.Kind {
		case protocol.KindVolumeAttach, protocol.KindVolumeDetach, protocol.KindVolumeExtend, protocol.KindVolumeImport:
			if att != nil {
				want = att.Host
			}
		}
		if want != r.Host {
			return errdefs.Forbiddenf("conductor: host %s reported %s of volume %s of host %s", r.Host, r.Kind, v.ID, want)
		}
		msg := errMessage(r)
		switch r.Kind {
		case protocol.KindVolumeCreate:
			to := store.VolumeAvailable
			if !r.OK {
				to = store.VolumeError
			}
			_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeCreating}, to, map[string]any{"error_message": msg})
			return err
		case protocol.KindVolumeDelete:
			if r.OK {
				return tx.Where("id = ? AND status = ?", v.ID, store.VolumeDeleting).Delete(&store.Volume{}).Error
			}
			_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeDeleting}, store.VolumeErrorDeleting, map[string]any{"error_message": msg})
			return err
		case protocol.KindVolumeExtend:
			if !r.OK {
				set := map[string]any{"error_message": msg}
				if r.SizeGB > 0 {
					set["size_gb"] = r.SizeGB // what the volume still is
				}
				_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeExtending}, store.VolumeErrorExtending, set)
				return err
			}
			to := store.VolumeAvailable
			if att != nil {
				to = store.VolumeInUse
			}
			_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeExtending}, to, map[string]any{"error_message": ""})
			return err
		case protocol.KindVolumeAttach:
			return c.onAttachReport(tx, v, att, r, msg)
		case protocol.KindVolumeDetach:
			return c.onDetachReport(tx, v, att, r, msg)
		case protocol.KindVolumeExport, protocol.KindVolumeImport:
			return c.onTransferReport(tx, v, att, r, msg)
		}
		log.Info("volume report of a kind the conductor does not record", "request_id", r.RequestID)
		return nil
	})
	if err == nil && r.Ref != "" && !keepTag && (r.Kind == protocol.KindVolumeImport || r.Kind == protocol.KindVolumeExport && (!r.OK || orphanExport)) {
		// The transfer's registry tag has done its job (or failed).
		if c.reg == nil {
			log.Warn("no registry client: volume transfer tag left in the registry", "ref", r.Ref)
		} else if rerr := c.releaseImage(ctx, r.Ref); rerr != nil {
			log.Warn("delete tag of volume transfer", "ref", r.Ref, "error", rerr)
		}
	}
	return err
}

// onRestoreReport ends the pull of a local volume whose server was
// deleted while offloaded (instance.restoreShelvedVolume) onto the host
// it was shelved on: available there (or deleted: del), or in error with
// its data still in the registry.
func (c *Conductor) onRestoreReport(tx *gorm.DB, v *store.Volume, r protocol.VolumeReport, del bool) error {
	if !r.OK {
		_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeMaintenance}, store.VolumeError,
			map[string]any{"error_message": fmt.Sprintf("pulling its data back onto host %s failed (%s); the data stays in the registry at %s",
				r.Host, errMessage(r), r.Ref)})
		return err
	}
	if del {
		var out outbox.Batch // the relay sends it once committed
		return instance.DeleteVolume(tx, &out, v, []store.VolumeStatus{store.VolumeMaintenance})
	}
	_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeMaintenance}, store.VolumeAvailable,
		map[string]any{"error_message": ""})
	return err
}

// onAttachReport ends an attach: in-use with the attachment attached, or
// (failed) available again without it.
func (c *Conductor) onAttachReport(tx *gorm.DB, v *store.Volume, att *store.VolumeAttachment, r protocol.VolumeReport, msg string) error {
	if att == nil || att.ID != r.AttachmentID || att.Status != store.AttachmentAttaching {
		return nil // superseded
	}
	if r.OK {
		if err := tx.Model(&store.VolumeAttachment{}).Where("id = ?", att.ID).Update("status", store.AttachmentAttached).Error; err != nil {
			return fmt.Errorf("attachment %s attached: %w", att.ID, err)
		}
		_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeInUse, map[string]any{"error_message": ""})
		return err
	}
	if err := tx.Where("id = ?", att.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
		return fmt.Errorf("drop failed attachment %s: %w", att.ID, err)
	}
	_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeAvailable, map[string]any{"error_message": msg})
	return err
}

// onDetachReport ends a detach: available without the attachment, or
// (refused, e.g. busy) in-use with it attached again.
func (c *Conductor) onDetachReport(tx *gorm.DB, v *store.Volume, att *store.VolumeAttachment, r protocol.VolumeReport, msg string) error {
	if att == nil || att.ID != r.AttachmentID || att.Status != store.AttachmentDetaching {
		return nil
	}
	if !r.OK {
		if err := tx.Model(&store.VolumeAttachment{}).Where("id = ?", att.ID).Update("status", store.AttachmentAttached).Error; err != nil {
			return fmt.Errorf("attachment %s back to attached: %w", att.ID, err)
		}
		_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeDetaching}, store.VolumeInUse, map[string]any{"error_message": msg})
		return err
	}
	if err := tx.Where("id = ?", att.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
		return fmt.Errorf("drop attachment %s: %w", att.ID, err)
	}
	if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeDetaching}, store.VolumeAvailable, map[string]any{"error_message": ""}); err != nil {
		return err
	}
	if !att.DeleteOnTermination {
		return nil
	}
	// delete_on_termination: the volume goes with its deleted server.
	var gone int64
	if err := tx.Model(&store.Instance{}).Where("id = ? AND deleted_at IS NOT NULL", att.InstanceID).Count(&gone).Error; err != nil {
		return fmt.Errorf("server of attachment %s: %w", att.ID, err)
	}
	if gone == 0 {
		return nil
	}
	var out outbox.Batch // the relay sends it once committed
	return instance.DeleteVolume(tx, &out, v, []store.VolumeStatus{store.VolumeAvailable})
}

// transferSuperseded reports whether r is the export or import of a
// transfer whose attach no longer waits for it.
func transferSuperseded(v *store.Volume, att *store.VolumeAttachment, r protocol.VolumeReport) bool {
	if r.Kind != protocol.KindVolumeExport && r.Kind != protocol.KindVolumeImport {
		return false
	}
	if att == nil || att.Status != store.AttachmentAttaching || v.Status != store.VolumeAttaching {
		return true
	}
	// An import's host must be the attach's (else it is not this
	// transfer's: refused below).
	return r.Kind == protocol.KindVolumeImport && att.Host != r.Host && v.Host != r.Host
}

// dropVolumeCopy casts the deletion of volume vs's copy on host, in tx
// (the outbox relay sends it once committed). Its report changes nothing
// (a delete reported by a host the volume does not live on).
func (c *Conductor) dropVolumeCopy(tx *gorm.DB, vs protocol.VolumeSpec, host string) error {
	if vs.Backend != protocol.BackendLocal || host == "" {
		return nil
	}
	m, err := bus.NewMessage(protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: "req-drop-copy-" + vs.ID, Volume: vs})
	if err != nil {
		return err
	}
	var out outbox.Batch
	return out.Enqueue(tx, bus.ComputeQueue(host), "", m)
}

// onTransferReport moves a local volume's data to the host of the server
// it is being attached to: export from the volume's host done -> import on
// the server's host; import done -> the volume lives there now, the old
// copy is removed and the attach goes ahead. A failure drops the
// attachment; the volume stays available where it was.
func (c *Conductor) onTransferReport(tx *gorm.DB, v *store.Volume, att *store.VolumeAttachment, r protocol.VolumeReport, msg string) error {
	if att == nil || att.Status != store.AttachmentAttaching || v.Status != store.VolumeAttaching {
		return nil // superseded
	}
	if !r.OK {
		if err := tx.Where("id = ?", att.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
			return fmt.Errorf("drop attachment %s: %w", att.ID, err)
		}
		where := "to host " + att.Host
		if att.Host == "" {
			where = "to the registry for its shelved server"
		}
		_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeAvailable,
			map[string]any{"error_message": "moving the volume " + where + " failed: " + msg})
		return err
	}
	var out outbox.Batch
	cast := func(host, kind string, body any) error {
		m, err := bus.NewMessage(kind, body)
		if err != nil {
			return err
		}
		return out.Enqueue(tx, bus.ComputeQueue(host), "", m)
	}
	spec := protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: v.Host}
	if r.Kind == protocol.KindVolumeExport && att.Host == "" {
		return c.parkVolume(tx, v, att, r, spec, cast)
	}
	if r.Kind == protocol.KindVolumeExport {
		if v.Host == att.Host {
			return nil
		}
		// Progress: the sweep's deadline (instance.VolumeTimeouts.Work)
		// starts again with the import.
		if err := tx.Model(&store.Volume{}).Where("id = ?", v.ID).Update("updated_at", c.now()).Error; err != nil {
			return fmt.Errorf("volume %s exported: %w", v.ID, err)
		}
		spec.Host = att.Host
		return cast(att.Host, protocol.KindVolumeImport, protocol.VolumeTransfer{RequestID: r.RequestID, Volume: spec, Ref: r.Ref,
			Deadline: c.volTimeouts.Deadline(c.now(), true)})
	}
	old := v.Host
	if old == att.Host {
		return nil // seen before
	}
	if err := tx.Model(&store.Volume{}).Where("id = ?", v.ID).Update("host", att.Host).Error; err != nil {
		return fmt.Errorf("volume %s to host %s: %w", v.ID, att.Host, err)
	}
	v.Host = att.Host
	if err := cast(old, protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: r.RequestID, Volume: spec}); err != nil {
		return err
	}
	return cast(att.Host, protocol.KindVolumeAttach, protocol.VolumeAttach{RequestID: r.RequestID, InstanceID: att.InstanceID,
		Mount: instance.VolumeMount(v, att), Deadline: c.volTimeouts.Deadline(c.now(), false)})
}

// parkVolume ends the export of a local volume being attached to a
// shelved-offloaded server (its attachment on no host; an unshelve since
// would have given it the server's new host): its data is in the
// registry next to the server's shelve image (instance.ParkedVolumeRef,
// the tag the unshelve pulls), so it lives on no host now, attached and
// in-use like the server's other local volumes, and the copy on the host
// it left goes. The tag stays: it is the volume's only copy.
func (c *Conductor) parkVolume(tx *gorm.DB, v *store.Volume, att *store.VolumeAttachment, r protocol.VolumeReport,
	spec protocol.VolumeSpec, cast func(host, kind string, body any) error) error {
	old := v.Host
	if old == "" {
		return nil // seen before
	}
	if err := tx.Model(&store.VolumeAttachment{}).Where("id = ? AND status = ?", att.ID, store.AttachmentAttaching).
		Update("status", store.AttachmentAttached).Error; err != nil {
		return fmt.Errorf("attachment %s attached: %w", att.ID, err)
	}
	ok, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeInUse,
		map[string]any{"host": "", "error_message": ""})
	if err != nil || !ok {
		return err
	}
	c.log.Info("volume attached to a shelved server: its data waits in the registry", "volume", v.ID, "instance", att.InstanceID,
		"ref", r.Ref, "old_host", old)
	return cast(old, protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: r.RequestID, Volume: spec})
}

func (c *Conductor) onSnapshotWork(tx *gorm.DB, r protocol.VolumeReport) error {
	sn, err := store.GetVolumeSnapshot(tx, r.SnapshotID)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if sn.Host != r.Host {
		return errdefs.Forbiddenf("conductor: host %s reported on snapshot %s of host %s", r.Host, sn.ID, sn.Host)
	}
	msg := errMessage(r)
	if r.Kind == protocol.KindSnapshotCreate {
		to := store.SnapshotAvailable
		if !r.OK {
			to = store.SnapshotError
		}
		_, err := store.ChangeSnapshotStatus(tx, sn.ID, []store.SnapshotStatus{store.SnapshotCreating}, to, map[string]any{"error_message": msg})
		return err
	}
	if r.OK {
		return tx.Where("id = ? AND status = ?", sn.ID, store.SnapshotDeleting).Delete(&store.VolumeSnapshot{}).Error
	}
	_, err = store.ChangeSnapshotStatus(tx, sn.ID, []store.SnapshotStatus{store.SnapshotDeleting}, store.SnapshotErrorDeleting, map[string]any{"error_message": msg})
	return err
}

// errMessage is what a failed report tells the volume's owner.
func errMessage(r protocol.VolumeReport) string {
	if r.OK {
		return ""
	}
	if r.ErrorMessage != "" {
		return r.ErrorMessage
	}
	return "volume work failed on host " + r.Host
}

func volumeAttachment(tx *gorm.DB, volumeID string) (*store.VolumeAttachment, error) {
	var a store.VolumeAttachment
	err := tx.Where("volume_id = ?", volumeID).Take(&a).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("attachment of volume %s: %w", volumeID, err)
	}
	return &a, nil
}

// volumesOnHost answers an agent's reconcile: the volumes and snapshots
// whose data the control plane places on host.
func (c *Conductor) volumesOnHost(ctx context.Context, host string) (*protocol.VolumesOnHostReply, error) {
	db := c.st.WithContext(ctx)
	var vols []store.Volume
	if err := db.Where("host = ? AND backend = ?", host, protocol.BackendLocal).Find(&vols).Error; err != nil {
		return nil, fmt.Errorf("volumes on host %s: %w", host, err)
	}
	out := &protocol.VolumesOnHostReply{Volumes: []protocol.VolumeSpec{}, Snapshots: []string{}}
	for _, v := range vols {
		out.Volumes = append(out.Volumes, protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: v.Host})
	}
	if err := db.Model(&store.VolumeSnapshot{}).Where("host = ?", host).Order("id").Pluck("id", &out.Snapshots).Error; err != nil {
		return nil, fmt.Errorf("snapshots on host %s: %w", host, err)
	}
	return out, nil
}
