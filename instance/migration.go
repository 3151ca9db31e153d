package instance

import (
	"fmt"
	"maps"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// SetResizeStatus sets the status of the instance's newest resize
// migration (a live resize; cold migrations move through package
// migrate's step machine).
func SetResizeStatus(tx *gorm.DB, id string, status lifecycle.MigrationStatus) error {
	var m store.Migration
	err := tx.Where("instance_id = ? AND migration_type = ?", id, "resize").Order("id DESC").Limit(1).Find(&m).Error
	if err != nil {
		return fmt.Errorf("migration of %s: %w", id, err)
	}
	if m.ID == 0 {
		return nil
	}
	if err := tx.Model(&store.Migration{}).Where("id = ?", m.ID).Update("status", status).Error; err != nil {
		return fmt.Errorf("set migration %d of %s to %s: %w", m.ID, id, status, err)
	}
	return nil
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

// SwapFlavor returns the columns that start a resize of inst to f (whose
// extra specs, as stored, are specsJSON): the current flavor copy is kept
// as the old one (Nova's instance.old_flavor) with the vm_state to return
// to, and f's copy becomes the instance's. With f nil (a plain
// migration) only the vm_state to return to is kept.
func SwapFlavor(inst *store.Instance, f *store.Flavor, specsJSON string) map[string]any {
	fields := map[string]any{"resize_from_state": inst.VMState}
	if f == nil {
		return fields
	}
	maps.Copy(fields, map[string]any{
		"old_flavor_row_id": inst.FlavorRowID, "old_flavor_id": inst.FlavorID, "old_flavor_name": inst.FlavorName,
		"old_vcpus": inst.VCPUs, "old_memory_mb": inst.MemoryMB, "old_root_gb": inst.RootGB,
		"old_extra_specs": inst.ExtraSpecs,
		"flavor_row_id":   f.ID, "flavor_id": f.FlavorID, "flavor_name": f.Name,
		"vcpus": f.VCPUs, "memory_mb": f.MemoryMB, "root_gb": f.RootGB, "extra_specs": specsJSON,
	})
	return fields
}

// FlavorBack returns the columns that give a resized instance its old
// flavor copy back and forget the resize (only the latter when inst has
// no old flavor: a plain migration).
func FlavorBack(inst *store.Instance) map[string]any {
	f := ForgetOldFlavor()
	if inst.OldFlavorID == "" {
		return map[string]any{"resize_from_state": ""}
	}
	maps.Copy(f, map[string]any{
		"flavor_row_id": inst.OldFlavorRowID, "flavor_id": inst.OldFlavorID, "flavor_name": inst.OldFlavorName,
		"vcpus": inst.OldVCPUs, "memory_mb": inst.OldMemoryMB, "root_gb": inst.OldRootGB, "extra_specs": inst.OldExtraSpecs,
	})
	return f
}

// ForgetOldFlavor returns the columns that drop the pre-resize flavor
// copy (after a confirm, a revert or a failed resize).
func ForgetOldFlavor() map[string]any {
	return map[string]any{
		"old_flavor_row_id": 0, "old_flavor_id": "", "old_flavor_name": "", "old_vcpus": 0, "old_memory_mb": 0,
		"old_root_gb": 0, "old_extra_specs": "", "resize_from_state": "",
	}
}
