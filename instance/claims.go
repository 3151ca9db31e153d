package instance

import (
	"fmt"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/store"
)

// Claims: what an instance holds on a host. The scheduler's placement
// claims through store.ClaimOnHostIf (under the host's lock, with its
// group guard); the operations here change or give back claims already
// made.

// ResizeClaim changes the instance's claim on host to want, in tx (see
// store.ResizeClaimTx): store.ErrInsufficient when the host lacks room.
func ResizeClaim(tx *gorm.DB, id, host string, want store.Resources) error {
	return store.ResizeClaimTx(tx, id, host, want)
}

// SetClaim records that id holds res on host, whatever the room: it is
// what really runs there (a driver rolled back, a revert failed, a resize
// never reached its host), and the claim must say so.
func SetClaim(tx *gorm.DB, id, host string, res store.Resources) error {
	err := tx.Model(&store.Claim{}).Where("instance_id = ? AND host = ?", id, host).
		Updates(map[string]any{"vcpus": res.VCPUs, "memory_mb": res.MemoryMB, "disk_gb": res.DiskGB}).Error
	if err != nil {
		return fmt.Errorf("set claim of %s on %s: %w", id, host, err)
	}
	return nil
}

// ReleaseClaims drops id's claims on host ("" = on every host).
func ReleaseClaims(tx *gorm.DB, id, host string) error {
	q := tx.Where("instance_id = ?", id)
	if host != "" {
		q = q.Where("host = ?", host)
	}
	if err := q.Delete(&store.Claim{}).Error; err != nil {
		return fmt.Errorf("release claims of %s on %q: %w", id, host, err)
	}
	return nil
}

// BindPorts binds the instance's ports (its NICs, see store.ServerPorts)
// to host (Neutron's binding:host_id) and marks them active: where the
// scheduler placed it, or where a migration moves it.
func BindPorts(tx *gorm.DB, id, host string) error {
	err := tx.Model(&store.Port{}).Where("device_id = ? AND compute_bound = ? AND project_id IN (?)", id, true,
		tx.Model(&store.Instance{}).Select("project_id").Where("id = ?", id)).
		Updates(map[string]any{"binding_host_id": host, "status": store.PortActive}).Error
	if err != nil {
		return fmt.Errorf("bind ports of %s to %s: %w", id, host, err)
	}
	return nil
}

// HasClaim reports whether id holds a claim on host.
func HasClaim(tx *gorm.DB, id, host string) (bool, error) {
	var n int64
	if err := tx.Model(&store.Claim{}).Where("instance_id = ? AND host = ?", id, host).Count(&n).Error; err != nil {
		return false, fmt.Errorf("claim of %s on %s: %w", id, host, err)
	}
	return n > 0, nil
}

// MigrationClaimHost returns the host on which migration migrationID of
// id already holds a claim ("" = none).
func MigrationClaimHost(tx *gorm.DB, id string, migrationID uint) (string, error) {
	var c store.Claim
	if err := tx.Where("instance_id = ? AND migration_id = ?", id, migrationID).Limit(1).Find(&c).Error; err != nil {
		return "", fmt.Errorf("claims of migration %d of %s: %w", migrationID, id, err)
	}
	return c.Host, nil
}

// ReleaseClaimAway drops id's claim on host unless the instance lives
// there (then its room must stay claimed): a migration's other end.
func ReleaseClaimAway(tx *gorm.DB, id, host string) error {
	err := tx.Where("instance_id = ? AND host = ? AND host NOT IN (?)", id, host,
		tx.Model(&store.Instance{}).Select("host").Where("id = ? AND deleted_at IS NULL", id)).
		Delete(&store.Claim{}).Error
	if err != nil {
		return fmt.Errorf("release claim of %s on %s: %w", id, host, err)
	}
	return nil
}

// AdoptClaim makes id's claim on host, taken by a migration, the
// instance's own (the migration is confirmed).
func AdoptClaim(tx *gorm.DB, id, host string) error {
	err := tx.Model(&store.Claim{}).Where("instance_id = ? AND host = ?", id, host).Update("migration_id", nil).Error
	if err != nil {
		return fmt.Errorf("adopt claim of %s on %s: %w", id, host, err)
	}
	return nil
}

// ReleaseClaimsIfDeleted drops id's claims if the instance is deleted
// (a claim that raced its deletion).
func ReleaseClaimsIfDeleted(tx *gorm.DB, id string) error {
	err := tx.Where("instance_id = ? AND instance_id IN (?)", id,
		tx.Model(&store.Instance{}).Select("id").Where("id = ? AND deleted_at IS NOT NULL", id)).
		Delete(&store.Claim{}).Error
	if err != nil {
		return fmt.Errorf("release claims of deleted instance %s: %w", id, err)
	}
	return nil
}

// ReleaseClaimsOfDeleted drops every claim held by a deleted instance.
func ReleaseClaimsOfDeleted(tx *gorm.DB) error {
	err := tx.Where("instance_id IN (?)", tx.Model(&store.Instance{}).Select("id").Where("deleted_at IS NOT NULL")).
		Delete(&store.Claim{}).Error
	if err != nil {
		return fmt.Errorf("drop claims of deleted instances: %w", err)
	}
	return nil
}
