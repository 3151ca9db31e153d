package instance

import (
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// volumesFor is a server's attached volumes as its spec carries them
// (attachments still attaching or detaching are the attach and detach
// work's to mount or unmount). A building server's spec also carries the
// volumes its create asked for (block-device mappings, attaching until
// the build is done), those still to be made with their source.
func volumesFor(tx *gorm.DB, inst *store.Instance) ([]protocol.VolumeMount, error) {
	atts, err := store.InstanceVolumeAttachments(tx, inst.ID)
	if err != nil {
		return nil, err
	}
	building := inst.VMState == lifecycle.Building
	var out []protocol.VolumeMount
	for _, a := range atts {
		if a.Status != store.AttachmentAttached && !(building && a.Status == store.AttachmentAttaching) {
			continue
		}
		v, err := store.GetVolume(tx, a.VolumeID)
		if err != nil {
			return nil, fmt.Errorf("volume of attachment %s: %w", a.ID, err)
		}
		m := VolumeMount(v, &a)
		if building && v.Status == store.VolumeCreating {
			m.Create = &protocol.VolumeSource{SnapshotID: v.SnapshotID}
			if v.ImageID != "" && v.SnapshotID == "" {
				ref, err := imageRef(tx, v.ImageID)
				if err != nil {
					return nil, fmt.Errorf("image of volume %s: %w", v.ID, err)
				}
				m.Create.ImageRef = ref
			}
		}
		out = append(out, m)
	}
	for i, d := range inst.Ephemerals() {
		out = append(out, protocol.VolumeMount{MountPath: protocol.EphemeralMountPath(i),
			Volume: protocol.VolumeSpec{ID: protocol.EphemeralID(inst.ID, i), ProjectID: inst.ProjectID, SizeGB: d.SizeGB,
				Backend: protocol.BackendLocal, Host: inst.Host},
			Create: &protocol.VolumeSource{}})
	}
	return out, nil
}

// imageRef is image id's registry reference.
func imageRef(tx *gorm.DB, id string) (string, error) {
	var img store.Image
	if err := tx.Where("id = ?", id).First(&img).Error; err != nil {
		return "", store.NotFound(err, "image "+id)
	}
	return img.RegistryRef, nil
}

// VolumeTimeouts are the deadlines of volume attach and detach work
// (config volume.attach_timeout and volume.move_timeout). An attach or
// detach whose work made no progress for its deadline (its host died, or
// its report was lost) is ended as failed by the conductor's sweep
// (conductor.sweepVolumes), as Cinder's admin would with
// os-reset_status; each message of that work carries the deadline
// (Deadline), and a host refuses work it picks up after it, so work lost
// with its host cannot land once the volume was given back. Moving a
// local volume's data between hosts (VolumeMoving) gets Move: its size is
// the user's. A zero field is its default.
type VolumeTimeouts struct {
	Attach time.Duration // a mount or unmount (default 10 minutes)
	Move   time.Duration // while a local volume's data moves (default 1 hour)
}

func (t VolumeTimeouts) attach() time.Duration {
	if t.Attach > 0 {
		return t.Attach
	}
	return 10 * time.Minute
}

func (t VolumeTimeouts) move() time.Duration {
	if t.Move > 0 {
		return t.Move
	}
	return time.Hour
}

// Shortest is the shortest deadline of any volume work.
func (t VolumeTimeouts) Shortest() time.Duration { return min(t.attach(), t.move()) }

// VolumeMoving reports whether attachment a (attaching) of volume v waits
// for v's data to move: a local volume whose data is not yet on the
// attachment's host (or, for an offloaded server's attachment on no
// host, not yet in the registry).
func VolumeMoving(v *store.Volume, a *store.VolumeAttachment) bool {
	return a.Status == store.AttachmentAttaching && v.Backend == protocol.BackendLocal && v.Host != a.Host
}

// Work is how long the work of attachment a of volume v may go without
// progress.
func (t VolumeTimeouts) Work(v *store.Volume, a *store.VolumeAttachment) time.Duration {
	if VolumeMoving(v, a) {
		return t.move()
	}
	return t.attach()
}

// Deadline is the deadline of a message of that work sent at now
// (moving: the data moves first).
func (t VolumeTimeouts) Deadline(now time.Time, moving bool) time.Time {
	if moving {
		return now.Add(t.move())
	}
	return now.Add(t.attach())
}

// VolumeMount is attachment a of volume v as the agents get it.
func VolumeMount(v *store.Volume, a *store.VolumeAttachment) protocol.VolumeMount {
	return protocol.VolumeMount{AttachmentID: a.ID, MountPath: a.MountPath, ReadOnly: a.ReadOnly,
		Volume: protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: v.Host}}
}

// releaseVolumes detaches a deleted server's volumes in tx: from a server
// that was on a host, the host is asked to unmount them (a forced detach:
// the container is gone; the conductor deletes delete_on_termination
// volumes once that is done); from one that never reached a host, they
// are released at once, delete_on_termination ones deleted.
func releaseVolumes(tx *gorm.DB, inst *store.Instance) error {
	var out outbox.Batch // sent by the conductor's outbox relay
	// Attachments still attaching (a build's block-device mappings, an
	// attach in flight) end first.
	if err := releaseBuildVolumes(tx, inst.ID, &out); err != nil {
		return err
	}
	atts, err := store.InstanceVolumeAttachments(tx, inst.ID)
	if err != nil || len(atts) == 0 {
		return err
	}
	for _, a := range atts {
		v, err := store.GetVolume(tx, a.VolumeID)
		if err != nil {
			return fmt.Errorf("volume of attachment %s: %w", a.ID, err)
		}
		if inst.VMState == lifecycle.ShelvedOffloaded && v.Backend == protocol.BackendLocal && v.Host == "" {
			if err := restoreShelvedVolume(tx, &out, inst, v, &a, a.DeleteOnTermination,
				"the server it was attached to was deleted while shelved"); err != nil {
				return err
			}
			continue
		}
		host := a.Host
		if host == "" {
			host = inst.Host
		}
		if host != "" && a.Status != store.AttachmentAttaching {
			if a.Status == store.AttachmentDetaching {
				continue // a detach is under way already
			}
			if err := tx.Model(&store.VolumeAttachment{}).Where("id = ?", a.ID).Update("status", store.AttachmentDetaching).Error; err != nil {
				return fmt.Errorf("attachment %s detaching: %w", a.ID, err)
			}
			if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeInUse}, store.VolumeDetaching, nil); err != nil {
				return err
			}
			msg, err := bus.NewMessage(protocol.KindVolumeDetach, protocol.VolumeDetach{RequestID: "req-delete-" + inst.ID,
				InstanceID: inst.ID, Mount: VolumeMount(v, &a), Force: true})
			if err != nil {
				return err
			}
			if err := out.Enqueue(tx, bus.ComputeQueue(host), "", msg); err != nil {
				return err
			}
			continue
		}
		if err := tx.Where("id = ?", a.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
			return fmt.Errorf("drop attachment %s: %w", a.ID, err)
		}
		from := []store.VolumeStatus{store.VolumeInUse, store.VolumeAttaching}
		if !a.DeleteOnTermination || v.Host == "" {
			if _, err := store.ChangeVolumeStatus(tx, v.ID, from, store.VolumeAvailable, nil); err != nil {
				return err
			}
			continue
		}
		if err := DeleteVolume(tx, &out, v, from); err != nil {
			return err
		}
	}
	return nil
}

// DetachShelvedVolume detaches local volume v (attachment a) from
// offloaded server inst, its data in the registry (ShelvedVolumeRef):
// the volume is pulled back onto the host the server was shelved on (see
// restoreShelvedVolume) and is available there once pulled; out gets the
// pull.
func DetachShelvedVolume(tx *gorm.DB, out *outbox.Batch, inst *store.Instance, v *store.Volume, a *store.VolumeAttachment) error {
	return restoreShelvedVolume(tx, out, inst, v, a, false, "it was detached from a shelved server")
}

// restoreShelvedVolume detaches local volume v (attachment a) from
// offloaded server inst (deleted, or the volume detached: why): its data
// is only in the registry (ShelvedVolumeRef), so it is pulled back onto
// the host the server was shelved on, in maintenance until that host
// reports; the conductor then makes it available (or deletes it:
// deleteAfter) and deletes the tag, or leaves it in error with the data
// still in the registry.
func restoreShelvedVolume(tx *gorm.DB, out *outbox.Batch, inst *store.Instance, v *store.Volume, a *store.VolumeAttachment,
	deleteAfter bool, why string) error {
	if err := tx.Where("id = ?", a.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
		return fmt.Errorf("drop attachment %s: %w", a.ID, err)
	}
	img, err := ShelveImage(tx, inst)
	if err != nil {
		return err
	}
	host := inst.ShelvedHost
	if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeInUse}, store.VolumeMaintenance,
		map[string]any{"host": host, "error_message": ""}); err != nil {
		return err
	}
	if img == nil || host == "" {
		// Nowhere known to pull it from or to: an admin's to recover.
		_, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeMaintenance}, store.VolumeError, map[string]any{"error_message": fmt.Sprintf(
			"%s; its data is in the registry under capsule/volumes/%s:shelved", why, v.ID)})
		return err
	}
	ref, err := ShelvedVolumeRef(img.RegistryRef, v.ID)
	if err != nil {
		return err
	}
	spec := protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: host}
	msg, err := bus.NewMessage(protocol.KindVolumeImport, protocol.VolumeTransfer{
		RequestID: RestoreRequestID(v.ID, deleteAfter), Volume: spec, Ref: ref})
	if err != nil {
		return err
	}
	return out.Enqueue(tx, bus.ComputeQueue(host), "", msg)
}

// Request ids of the pulls restoreShelvedVolume casts: the volume is
// deleted once pulled when its attachment said delete_on_termination.
const (
	restorePrefix       = "req-restore-"
	restoreDeletePrefix = "req-restore-delete-"
)

// RestoreRequestID is the request id of the pull that restores volume
// id of a server deleted while offloaded.
func RestoreRequestID(id string, deleteAfter bool) string {
	if deleteAfter {
		return restoreDeletePrefix + id
	}
	return restorePrefix + id
}

// IsRestore reports whether requestID is a RestoreRequestID, and whether
// the volume goes once restored.
func IsRestore(requestID string) (restore, deleteAfter bool) {
	if strings.HasPrefix(requestID, restoreDeletePrefix) {
		return true, true
	}
	return strings.HasPrefix(requestID, restorePrefix), false
}

// DeleteVolume moves v from one of from to deleting and casts its delete
// to the host holding it, in tx (out gets the message).
func DeleteVolume(tx *gorm.DB, out *outbox.Batch, v *store.Volume, from []store.VolumeStatus) error {
	// in-use and attaching cannot go to deleting directly: pass through
	// available, as a detach would.
	for _, f := range from {
		if !f.CanBecome(store.VolumeDeleting) {
			if _, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{f}, store.VolumeAvailable, nil); err != nil {
				return err
			}
		}
	}
	ok, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAvailable, store.VolumeError}, store.VolumeDeleting,
		map[string]any{"updated_at": time.Now().UTC()})
	if err != nil || !ok {
		return err
	}
	msg, err := bus.NewMessage(protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: "req-dot-" + v.ID,
		Volume: protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: v.Host}})
	if err != nil {
		return err
	}
	return out.Enqueue(tx, bus.ComputeQueue(v.Host), "", msg)
}
