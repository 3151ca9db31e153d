package migrate

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// Volumes move with their server. A shared volume needs nothing: the
// target mounts the same image from the shared export (the spec carries
// the server's volumes). A local volume's data is copied: when the target
// is chosen the migration records the server's local volumes
// (Migration.VolumeIDs; attach and detach are refused while it runs), the
// source pushes each after the server stopped (its data is consistent)
// and the target pulls each into a fresh copy before the server starts
// there. Until the confirm the control plane keeps the volume on the
// source (Volume.Host); the confirm moves it (and the attachments) to the
// target, then the source's copy is deleted by the confirm's cleanup. A
// revert or a failure deletes the target's copy and the server comes back
// to the untouched source copy, as its root disk does (what was written
// on the target is dropped with it). A server deleted meanwhile leaves
// the copy the volume row does not name (or both, when the volume went
// with it). Every migration's volume tags go with its own tag.

// VolumeRef is the registry reference of volume volID's data in
// migration m.
func (e *Engine) VolumeRef(m *store.Migration, volID string) string {
	return registry.Ref{Host: e.regAddr, Repo: "capsule/volumes/" + volID, Tag: m.UUID}.String()
}

// volumeIDs are the local volumes m copies.
func volumeIDs(m *store.Migration) []string { return strings.Fields(m.VolumeIDs) }

// localVolumesOf lists the local volumes attached to instanceID whose
// data is on host (the migration's source), space-separated.
func localVolumesOf(tx *gorm.DB, instanceID, host string) (string, error) {
	var ids []string
	err := tx.Model(&store.VolumeAttachment{}).
		Joins("JOIN volumes ON volumes.id = volume_attachments.volume_id").
		Where("volume_attachments.instance_id = ? AND volumes.backend = ? AND volumes.host = ?", instanceID, protocol.BackendLocal, host).
		Order("volumes.id").Pluck("volumes.id", &ids).Error
	if err != nil {
		return "", fmt.Errorf("local volumes of instance %s: %w", instanceID, err)
	}
	return strings.Join(ids, " "), nil
}

// volumeRefs is what the export pushes and the import pulls.
func (e *Engine) volumeRefs(m *store.Migration) map[string]string {
	ids := volumeIDs(m)
	if len(ids) == 0 {
		return nil
	}
	refs := make(map[string]string, len(ids))
	for _, id := range ids {
		refs[id] = e.VolumeRef(m, id)
	}
	return refs
}

// dropOn lists the copies of m's volumes host must delete: those of
// volumes the control plane places on another host, or deleted.
func (e *Engine) dropOn(ctx context.Context, m *store.Migration, host string) ([]string, error) {
	ids := volumeIDs(m)
	if len(ids) == 0 || host == "" {
		return nil, nil
	}
	var vols []store.Volume
	if err := e.st.WithContext(ctx).Where("id IN ?", ids).Find(&vols).Error; err != nil {
		return nil, fmt.Errorf("volumes of migration %s: %w", m.UUID, err)
	}
	keep := map[string]bool{}
	for _, v := range vols {
		if v.Host == host {
			keep[v.ID] = true
		}
	}
	var drop []string
	for _, id := range ids {
		if !keep[id] {
			drop = append(drop, id)
		}
	}
	return drop, nil
}

// moveVolumes is the confirm's part (in its transaction): m's local
// volumes and the server's attachments now belong to the target.
func moveVolumes(tx *gorm.DB, m *store.Migration) error {
	if ids := volumeIDs(m); len(ids) > 0 {
		err := tx.Model(&store.Volume{}).Where("id IN ? AND host = ? AND backend = ?", ids, m.SourceCompute, protocol.BackendLocal).
			Update("host", m.DestCompute).Error
		if err != nil {
			return fmt.Errorf("volumes of migration %s to host %s: %w", m.UUID, m.DestCompute, err)
		}
	}
	err := tx.Model(&store.VolumeAttachment{}).Where("instance_id = ?", m.InstanceID).Update("host", m.DestCompute).Error
	if err != nil {
		return fmt.Errorf("attachments of instance %s to host %s: %w", m.InstanceID, m.DestCompute, err)
	}
	return nil
}

// deleteVolumeTags removes m's volume tags from the registry.
func (e *Engine) deleteVolumeTags(ctx context.Context, m *store.Migration) error {
	for _, id := range volumeIDs(m) {
		if err := e.reg.DeleteImage(ctx, e.VolumeRef(m, id), ""); err != nil {
			return fmt.Errorf("delete tag of volume %s: %w", id, err)
		}
	}
	return nil
}
