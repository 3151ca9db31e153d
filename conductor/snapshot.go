package conductor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// Glance statuses a snapshot goes through.
const (
	imageQueued = "queued"
	imageSaving = "saving"
	imageActive = "active"
	imageKilled = "killed"
)

// ImageReleaser removes an image from the private registry unless another
// image (others: the references the remaining image rows hold) still uses
// its manifest (registry.Client): what the conductor needs to rotate
// backups out.
type ImageReleaser interface {
	ReleaseImage(ctx context.Context, ref string, others []string) error
}

// SetRegistry sets the registry client backups are rotated out of.
func (c *Conductor) SetRegistry(reg ImageReleaser) { c.reg = reg }

// onSnapshotReport records the outcome of a createImage or createBackup:
// the image goes active with what was pushed, or is killed and removed;
// either way the server's image_snapshot/image_backup task ends. Updates
// are guarded on the image still waiting and the task still running, so
// a duplicate report changes nothing. A successful backup then rotates
// the instance's older backups out (see rotateBackups).
func (c *Conductor) onSnapshotReport(ctx context.Context, r protocol.SnapshotReport) error {
	ev := store.Event{InstanceID: r.InstanceID, RequestID: r.RequestID, Name: r.Event, Host: r.Host,
		Start: r.Started, Finish: r.Finished, OK: r.OK, Detail: r.Error, Message: r.ErrorMessage}
	if err := c.st.RecordEvent(ctx, ev); err != nil {
		return err
	}
	if r.Shelve {
		return c.onShelveReport(ctx, r)
	}
	var rotated []store.Image
	err := c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := c.recordSnapshot(tx, r); err != nil {
			return err
		}
		if !r.OK || r.Backup == nil {
			return nil
		}
		var err error
		rotated, err = c.rotateBackups(tx, r.InstanceID, r.ImageID, *r.Backup)
		return err
	})
	if err != nil {
		return err
	}
	c.deleteTags(ctx, rotated)
	return nil
}

// recordSnapshot activates or kills the image and ends the task.
func (c *Conductor) recordSnapshot(tx *gorm.DB, r protocol.SnapshotReport) error {
	now := c.now()
	if err := c.recordImage(tx, r, now); err != nil {
		return err
	}
	change := instance.Change{Task: lifecycle.NoTask, At: now}
	if !r.OK {
		// The server keeps running; its fault says why the image
		// was not made (as the event's details do).
		what := "Snapshot"
		if r.Backup != nil {
			what = "Backup"
		}
		change.Fault = &instance.Fault{Code: 500, Message: fmt.Sprintf("%s of instance %s failed: %s.", what, r.InstanceID, snapshotWhy(r)),
			Details: r.Error, At: now}
	}
	_, err := instance.Apply(tx, r.InstanceID, instance.During(lifecycle.ImageSnapshot, lifecycle.ImageBackup), change)
	if err != nil {
		return fmt.Errorf("end snapshot task of %s: %w", r.InstanceID, err)
	}
	return nil
}

// snapshotWhy is the safe reason of a failed snapshot report.
func snapshotWhy(r protocol.SnapshotReport) string {
	why := strings.TrimSuffix(r.ErrorMessage, ".")
	if why == "" {
		why = "the compute host could not make the image"
	}
	return why
}

// recordImage activates the image a snapshot report is about, or kills
// and removes it; an image no longer waiting is left alone.
func (c *Conductor) recordImage(tx *gorm.DB, r protocol.SnapshotReport, now time.Time) error {
	waiting := tx.Model(&store.Image{}).Where("id = ? AND status IN ?", r.ImageID, []string{imageQueued, imageSaving})
	if r.OK {
		size := r.Size
		res := waiting.Updates(map[string]any{"status": imageActive, "size": &size,
			"checksum": strings.TrimPrefix(r.Digest, "sha256:"), "registry_ref": r.Ref, "updated_at": now})
		if res.Error != nil {
			return fmt.Errorf("activate snapshot image %s: %w", r.ImageID, res.Error)
		}
		if res.RowsAffected > 0 {
			c.log.Info("snapshot image active", "image", r.ImageID, "instance", r.InstanceID, "ref", r.Ref, "size", size)
		}
	} else {
		// Glance's killed, then gone: a failed snapshot must not
		// linger as an image nobody can boot.
		res := waiting.Updates(map[string]any{"status": imageKilled, "updated_at": now})
		if res.Error != nil {
			return fmt.Errorf("kill snapshot image %s: %w", r.ImageID, res.Error)
		}
		if err := tx.Where("id = ? AND status = ?", r.ImageID, imageKilled).Delete(&store.Image{}).Error; err != nil {
			return fmt.Errorf("remove failed snapshot image %s: %w", r.ImageID, err)
		}
		c.log.Warn("snapshot failed; image removed", "image", r.ImageID, "instance", r.InstanceID, "error", r.Error)
	}
	return nil
}

// rotateBackups deletes the instance's active backups of type b.Type
// beyond the newest b.Rotation (Nova's _rotate_backups: rotation 0
// deletes them all, the one just made too) and returns the deleted rows,
// whose registry tags the caller removes once the deletion is committed.
// Only the backups of the project that owns the backup just made count
// (the server's project when its own members back it up; Nova lists them
// with the caller's context): any project can give its images the
// properties of a backup of any server, and such images must neither be
// deleted by nor push out the owner's backups. Backups still being saved
// are not counted: they rotate when they land. A protected image is
// kept, as Glance would refuse its delete.
func (c *Conductor) rotateBackups(tx *gorm.DB, instanceID, imageID string, b protocol.BackupRotation) ([]store.Image, error) {
	owner, err := backupOwner(tx, instanceID, imageID)
	if err != nil {
		return nil, err
	}
	if owner == "" {
		c.log.Warn("backup rotation skipped: neither the backup nor its server is known", "image", imageID, "instance", instanceID)
		return nil, nil
	}
	var cands []store.Image
	// The LIKE only narrows the scan; the properties decide.
	err = tx.Where("status = ? AND owner = ? AND properties LIKE ?", imageActive, owner, "%"+instanceID+"%").
		Order("created_at DESC").Order("id DESC").Find(&cands).Error
	if err != nil {
		return nil, fmt.Errorf("list backups of %s: %w", instanceID, err)
	}
	backups := slices.DeleteFunc(cands, func(img store.Image) bool { return !isBackupOf(&img, instanceID, b.Type) })
	if b.Rotation >= len(backups) {
		return nil, nil
	}
	var gone []store.Image
	for _, img := range backups[max(b.Rotation, 0):] {
		if img.Protected {
			c.log.Warn("backup beyond rotation is protected; kept", "image", img.ID, "instance", instanceID)
			continue
		}
		if err := tx.Where("id = ? AND owner = ?", img.ID, owner).Delete(&store.Image{}).Error; err != nil {
			return nil, fmt.Errorf("rotate out backup %s of %s: %w", img.ID, instanceID, err)
		}
		gone = append(gone, img)
	}
	return gone, nil
}

// backupOwner is the project whose backups of the instance a rotation
// counts: the owner of the backup image just made, or, when that row is
// gone already, the instance's own project; "" when neither is known.
func backupOwner(tx *gorm.DB, instanceID, imageID string) (string, error) {
	var owners []string
	if err := tx.Model(&store.Image{}).Where("id = ?", imageID).Limit(1).Pluck("owner", &owners).Error; err != nil {
		return "", fmt.Errorf("owner of backup %s: %w", imageID, err)
	}
	if len(owners) == 1 && owners[0] != "" {
		return owners[0], nil
	}
	var projects []string
	if err := tx.Model(&store.Instance{}).Where("id = ?", instanceID).Limit(1).Pluck("project_id", &projects).Error; err != nil {
		return "", fmt.Errorf("project of %s: %w", instanceID, err)
	}
	if len(projects) == 0 {
		return "", nil
	}
	return projects[0], nil
}

// isBackupOf reports whether img is a backup of the instance with
// backup_type typ (Nova's image properties).
func isBackupOf(img *store.Image, instanceID, typ string) bool {
	props := map[string]string{}
	if err := json.Unmarshal([]byte(img.Properties), &props); err != nil {
		return false
	}
	return props["image_type"] == "backup" && props["instance_uuid"] == instanceID && props["backup_type"] == typ
}

// deleteTags removes the registry tags of rotated-out backups (what no
// remaining image uses). The rows
// are gone already, so for clients the images are; a tag left behind is
// only wasted space (as with a Glance image delete), hence logged, not
// retried.
func (c *Conductor) deleteTags(ctx context.Context, imgs []store.Image) {
	for _, img := range imgs {
		c.log.Info("backup rotated out", "image", img.ID, "ref", img.RegistryRef)
		if img.RegistryRef == "" {
			continue
		}
		if c.reg == nil {
			c.log.Warn("no registry client: rotated-out backup left in the registry", "image", img.ID, "ref", img.RegistryRef)
			continue
		}
		if err := c.releaseImage(ctx, img.RegistryRef); err != nil {
			c.log.Warn("delete tag of rotated-out backup", "image", img.ID, "ref", img.RegistryRef, "error", err)
		}
	}
}

// releaseImage deletes ref from the registry unless an image row still
// uses its manifest (the rotated-out rows are gone already).
func (c *Conductor) releaseImage(ctx context.Context, ref string) error {
	r, err := registry.ParseRef(ref)
	if err != nil {
		return err
	}
	others, err := c.st.ImageRefsIn(ctx, r.Repository())
	if err != nil {
		return err
	}
	return c.reg.ReleaseImage(ctx, ref, others)
}
