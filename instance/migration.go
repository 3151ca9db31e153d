package instance

import (
	"fmt"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// SetResizeStatus sets the status of the instance's newest resize
// migration (a live resize; cold migrations move through package
// migrate's step machine).
func SetResizeStatus(tx *gorm.DB, id string, status lifecycle.MigrationStatus) error {
	return store.SetResizeStatus(tx, id, status)
}

// AdvanceMigration moves migration migrationID from status from to to;
// it does nothing when the migration is no longer in from.
func AdvanceMigration(tx *gorm.DB, migrationID uint, from, to lifecycle.MigrationStatus) error {
	err := tx.Model(&store.Migration{}).Where("id = ? AND status = ?", migrationID, from).Update("status", to).Error
	if err != nil {
		return fmt.Errorf("migration %d: %s → %s: %w", migrationID, from, to, err)
	}
	return nil
}

// RestoreOldFlavor returns the columns that put inst's flavor copy back
// to the one it had before its resize.
func RestoreOldFlavor(inst *store.Instance) map[string]any { return store.RestoreOldFlavor(inst) }

// ForgetOldFlavor returns the columns that drop the pre-resize flavor
// copy (after a confirm, a revert or a failed resize).
func ForgetOldFlavor() map[string]any { return store.ForgetOldFlavor() }
