package conductor

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// sweepVolumes ends the volume attaches and detaches whose work was lost:
// a volume attaching or detaching that made no progress (its row's
// updated_at: each step of the work touches it) for its deadline
// (instance.VolumeTimeouts.Work) is given back as the host's failure
// report would: an attach's volume available again without its
// attachment (whatever step it was at: moving the data, mounting it), a
// detach's in-use and attached again, each with an error message, and
// the server gets an instance action whose event failed. That is what an
// admin's os-reset_status would do by hand (Cinder's answer to a volume
// stuck in attaching), done once its work cannot land any more: each
// message of the work carried the same deadline, so a host that comes
// back refuses it (its report then changes nothing), and a copy of the
// data an import made is deleted by that report.
//
// A server's build attaches its block-device mappings with its own
// deadline (periodic's build timeout, then releaseBuildVolumes); a
// deleted server's forced detaches are left alone (its volumes have no
// server to go back to).
func (c *Conductor) sweepVolumes(ctx context.Context) {
	now := c.now()
	var vols []store.Volume
	err := c.st.WithContext(ctx).Where("status IN ? AND updated_at < ?",
		[]store.VolumeStatus{store.VolumeAttaching, store.VolumeDetaching}, now.Add(-c.volTimeouts.Shortest())).
		Order("updated_at").Find(&vols).Error
	if err != nil {
		c.log.Error("find volumes stuck attaching or detaching", "error", err)
		return
	}
	for i := range vols {
		if err := c.expireVolumeWork(ctx, vols[i].ID, now); err != nil {
			c.log.Error("end a stuck volume attach or detach", "volume", vols[i].ID, "error", err)
		}
	}
}

// expireVolumeWork ends the attach or detach of volume id when it is
// still past its deadline at now (see sweepVolumes).
func (c *Conductor) expireVolumeWork(ctx context.Context, id string, now time.Time) error {
	var ended *store.InstanceAction
	var ev store.Event
	err := c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		v, err := store.GetVolume(tx, id)
		if err != nil {
			return err
		}
		att, err := volumeAttachment(tx, v.ID)
		if err != nil || att == nil {
			return err
		}
		timeout := c.volTimeouts.Work(v, att)
		if v.UpdatedAt.After(now.Add(-timeout)) {
			return nil
		}
		var inst store.Instance
		if err := tx.Unscoped().Where("id = ?", att.InstanceID).Limit(1).Find(&inst).Error; err != nil {
			return fmt.Errorf("server of attachment %s: %w", att.ID, err)
		}
		if inst.ID == "" || inst.DeletedAt != nil || inst.VMState == lifecycle.Building {
			return nil
		}
		host := att.Host
		if instance.VolumeMoving(v, att) {
			host = v.Host // the export's, or the import's on att.Host: either may be the lost one
		}
		var action, msg string
		switch {
		case v.Status == store.VolumeAttaching && att.Status == store.AttachmentAttaching:
			action = "attach_volume"
			msg = fmt.Sprintf("attaching the volume to server %s got no answer within %s (host %s down or its work lost); it was given back", inst.ID, timeout, hostName(host))
			if err := tx.Where("id = ?", att.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
				return fmt.Errorf("drop attachment %s: %w", att.ID, err)
			}
			if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeAvailable,
				map[string]any{"error_message": msg}); err != nil {
				return err
			}
		case v.Status == store.VolumeDetaching && att.Status == store.AttachmentDetaching:
			action = "detach_volume"
			msg = fmt.Sprintf("detaching the volume from server %s got no answer within %s (host %s down or its work lost); it stays attached", inst.ID, timeout, hostName(host))
			if err := tx.Model(&store.VolumeAttachment{}).Where("id = ?", att.ID).Update("status", store.AttachmentAttached).Error; err != nil {
				return fmt.Errorf("attachment %s back to attached: %w", att.ID, err)
			}
			if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeDetaching}, store.VolumeInUse,
				map[string]any{"error_message": msg}); err != nil {
				return err
			}
		default:
			return nil
		}
		c.log.Warn("volume work timed out; given back", "volume", v.ID, "instance", inst.ID, "action", action,
			"host", host, "timeout", timeout, "since", v.UpdatedAt)
		ended = &store.InstanceAction{InstanceID: inst.ID, Action: action, RequestID: "req-" + uuid.NewString(),
			UserID: inst.UserID, ProjectID: inst.ProjectID, StartTime: att.CreatedAt, UpdatedAt: now}
		if err := tx.Create(ended).Error; err != nil {
			return fmt.Errorf("record %s action of %s: %w", action, inst.ID, err)
		}
		ev = store.Event{InstanceID: inst.ID, RequestID: ended.RequestID, Name: "conductor_volume_timeout", Host: host,
			Start: v.UpdatedAt, Finish: now, Detail: msg, Message: fmt.Sprintf("Volume %s: %s.", v.ID, msg)}
		return nil
	})
	if err != nil || ended == nil {
		return err
	}
	return c.st.RecordEvent(ctx, ev)
}

// SetVolumeTimeouts sets the deadlines of volume attach and detach work
// (config volume.attach_timeout, volume.move_timeout): those of the
// messages it casts and its sweep's.
func (c *Conductor) SetVolumeTimeouts(t instance.VolumeTimeouts) { c.volTimeouts = t }

// hostName is host for a message ("(none)" for no host).
func hostName(host string) string {
	if host == "" {
		return "(none)"
	}
	return host
}
