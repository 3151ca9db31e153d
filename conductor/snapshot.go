package conductor

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Glance statuses a snapshot goes through.
const (
	imageQueued = "queued"
	imageSaving = "saving"
	imageActive = "active"
	imageKilled = "killed"
)

// onSnapshotReport records the outcome of a createImage: the image goes
// active with what was pushed, or is killed and removed; either way the
// server's image_snapshot task ends. Updates are guarded on the image
// still waiting and the task still running, so a duplicate report
// changes nothing.
func (c *Conductor) onSnapshotReport(ctx context.Context, r protocol.SnapshotReport) error {
	ev := store.Event{InstanceID: r.InstanceID, RequestID: r.RequestID, Name: r.Event, Host: r.Host,
		Start: r.Started, Finish: r.Finished, OK: r.OK, Detail: r.Error}
	if err := c.st.RecordEvent(ctx, ev); err != nil {
		return err
	}
	now := c.now()
	return c.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
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
		err := tx.Model(&store.Instance{}).Where("id = ? AND task_state = ?", r.InstanceID, string(lifecycle.ImageSnapshot)).
			Updates(map[string]any{"task_state": "", "updated_at": now}).Error
		if err != nil {
			return fmt.Errorf("end snapshot task of %s: %w", r.InstanceID, err)
		}
		return nil
	})
}
