package instance

import (
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Block-device mappings of a server's create (api-server/compute
// bdm.go): the create records each volume (a new one in "creating" with
// no host yet, or the existing one the user named, "attaching") and its
// attachment ("attaching", with no host) with the server. The build
// carries them in the spec (volumesFor): the host the scheduler picked
// makes the new ones (so they are local to the server) and mounts them
// all, the boot volume as the server's root. The outcome of the build
// settles them here: attached and in-use with the server active; on a
// reschedule the new ones' data on the failed host goes and they wait
// for the next host; on a failed build (or a server deleted before it
// was built) the attachments go, new volumes are deleted when their
// mapping said delete_on_termination (else kept, in error when never
// made) and existing ones are available again.

// BootImage is the image the boot volume of server id was filled from
// ("" when it has none).
func BootImage(tx *gorm.DB, id string) (string, error) {
	var ids []string
	err := tx.Model(&store.Volume{}).Joins("JOIN volume_attachments ON volume_attachments.volume_id = volumes.id").
		Where("volume_attachments.instance_id = ? AND volume_attachments.mount_path = ?", id, protocol.RootMountPath).
		Pluck("volumes.image_id", &ids).Error
	if err != nil {
		return "", fmt.Errorf("boot volume of %s: %w", id, err)
	}
	if len(ids) == 0 {
		return "", nil
	}
	return ids[0], nil
}

// placeVolumes gives the volumes of building server id the host it was
// placed on: its attachments, and the new volumes, which that host makes.
func placeVolumes(tx *gorm.DB, id, host string) error {
	atts, err := store.InstanceVolumeAttachments(tx, id)
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.Status != store.AttachmentAttaching {
			continue
		}
		if err := tx.Model(&store.VolumeAttachment{}).Where("id = ?", a.ID).Update("host", host).Error; err != nil {
			return fmt.Errorf("attachment %s to host %s: %w", a.ID, host, err)
		}
		// A shared volume gets the host too: it makes the volume, and a
		// delete needs a host to cast to (one with no host has nothing
		// anywhere, so its delete would only drop the row).
		err := tx.Model(&store.Volume{}).Where("id = ? AND status = ?", a.VolumeID, store.VolumeCreating).
			Update("host", host).Error
		if err != nil {
			return fmt.Errorf("volume %s to host %s: %w", a.VolumeID, host, err)
		}
	}
	return nil
}

// AttachBuildVolumes records that server id's build mounted the volumes
// its create asked for: the new ones exist (available), all are in-use
// and their attachments attached. In the transaction of Launched.
func AttachBuildVolumes(tx *gorm.DB, id string) error {
	atts, err := store.InstanceVolumeAttachments(tx, id)
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.Status != store.AttachmentAttaching {
			continue
		}
		if _, err := store.ChangeVolumeStatus(tx, a.VolumeID, []store.VolumeStatus{store.VolumeCreating}, store.VolumeAvailable, nil); err != nil {
			return err
		}
		if _, err := store.ChangeVolumeStatus(tx, a.VolumeID, []store.VolumeStatus{store.VolumeAvailable}, store.VolumeAttaching, nil); err != nil {
			return err
		}
		if _, err := store.ChangeVolumeStatus(tx, a.VolumeID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeInUse,
			map[string]any{"error_message": ""}); err != nil {
			return err
		}
		if err := tx.Model(&store.VolumeAttachment{}).Where("id = ?", a.ID).Update("status", store.AttachmentAttached).Error; err != nil {
			return fmt.Errorf("attachment %s attached: %w", a.ID, err)
		}
	}
	return nil
}

// unplaceVolumes is a reschedule's part: the new volumes server id's
// failed build made on host go from there (their rows wait for the next
// host, still creating).
func unplaceVolumes(tx *gorm.DB, id, host string, out *outbox.Batch) error {
	atts, err := store.InstanceVolumeAttachments(tx, id)
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.Status != store.AttachmentAttaching {
			continue
		}
		v, err := store.GetVolume(tx, a.VolumeID)
		if err != nil {
			return fmt.Errorf("volume of attachment %s: %w", a.ID, err)
		}
		if v.Status != store.VolumeCreating || v.Host != host || v.Backend != protocol.BackendLocal {
			continue
		}
		if err := castVolumeDelete(tx, out, v, "req-unplace-"+id); err != nil {
			return err
		}
		if err := tx.Model(&store.Volume{}).Where("id = ?", v.ID).Update("host", "").Error; err != nil {
			return fmt.Errorf("volume %s off host %s: %w", v.ID, host, err)
		}
	}
	return nil
}

// releaseBuildVolumes lets go of the volumes of server id whose build
// failed for good (or that was deleted before it was built): see the
// package comment above.
func releaseBuildVolumes(tx *gorm.DB, id string, out *outbox.Batch) error {
	atts, err := store.InstanceVolumeAttachments(tx, id)
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.Status != store.AttachmentAttaching {
			continue
		}
		v, err := store.GetVolume(tx, a.VolumeID)
		if err != nil {
			return fmt.Errorf("volume of attachment %s: %w", a.ID, err)
		}
		if err := tx.Where("id = ?", a.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
			return fmt.Errorf("drop attachment %s: %w", a.ID, err)
		}
		switch {
		case v.Status == store.VolumeCreating && v.Host == "":
			// Never made anywhere.
			if a.DeleteOnTermination {
				if err := tx.Where("id = ? AND status = ?", v.ID, store.VolumeCreating).Delete(&store.Volume{}).Error; err != nil {
					return fmt.Errorf("drop volume %s: %w", v.ID, err)
				}
				continue
			}
			if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeCreating}, store.VolumeError,
				map[string]any{"error_message": "the build of server " + id + " it was made for failed"}); err != nil {
				return err
			}
		case v.Status == store.VolumeCreating:
			msg := map[string]any{"error_message": "the build of server " + id + " it was made for failed"}
			if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeCreating}, store.VolumeError, msg); err != nil {
				return err
			}
			if a.DeleteOnTermination {
				if err := DeleteVolume(tx, out, v, []store.VolumeStatus{store.VolumeError}); err != nil {
					return err
				}
			}
		default:
			if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeAvailable, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// castVolumeDelete asks v's host to remove v's data (its row stays).
func castVolumeDelete(tx *gorm.DB, out *outbox.Batch, v *store.Volume, reqID string) error {
	if v.Host == "" {
		return errors.New("volume " + v.ID + " has no host")
	}
	msg, err := bus.NewMessage(protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: reqID,
		Volume: protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: v.Host}})
	if err != nil {
		return err
	}
	return out.Enqueue(tx, bus.ComputeQueue(v.Host), "", msg)
}

// ForgetBuildVolumes undoes the mappings of a server whose create failed
// before it was scheduled (its rows are being removed): nothing was made
// on any host yet, so new volumes' rows go and existing volumes are
// available again.
func ForgetBuildVolumes(tx *gorm.DB, id string) error {
	atts, err := store.InstanceVolumeAttachments(tx, id)
	if err != nil {
		return err
	}
	for _, a := range atts {
		if err := tx.Where("id = ?", a.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
			return fmt.Errorf("drop attachment %s: %w", a.ID, err)
		}
		if err := tx.Where("id = ? AND status = ?", a.VolumeID, store.VolumeCreating).Delete(&store.Volume{}).Error; err != nil {
			return fmt.Errorf("drop volume %s: %w", a.VolumeID, err)
		}
		if _, err := store.ChangeVolumeStatus(tx, a.VolumeID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeAvailable, nil); err != nil {
			return err
		}
	}
	return nil
}
