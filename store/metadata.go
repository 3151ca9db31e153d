package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// UpdateMetadata applies change to the live instance id's metadata under
// a row lock and returns what it wrote: concurrent metadata requests do
// not lose each other's items, and a limit change checks (the
// metadata_items quota) holds for the result, since no other change can
// land between its read and its write. change gets the current items and
// returns the new ones; an error from it aborts the update.
func (s *Store) UpdateMetadata(ctx context.Context, id string, at time.Time, change func(meta map[string]string) (map[string]string, error)) (map[string]string, error) {
	var out map[string]string
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var inst Instance
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("id", "metadata").
			Where("id = ? AND deleted_at IS NULL", id).First(&inst).Error; err != nil {
			return NotFound(err, "instance "+id)
		}
		cur := map[string]string{}
		if inst.Metadata != "" {
			if err := json.Unmarshal([]byte(inst.Metadata), &cur); err != nil {
				return fmt.Errorf("metadata of %s: %w", id, err)
			}
		}
		next, err := change(cur)
		if err != nil {
			return err
		}
		if next == nil {
			next = map[string]string{}
		}
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if err := tx.Model(&Instance{}).Where("id = ?", id).
			Updates(map[string]any{"metadata": string(b), "updated_at": at}).Error; err != nil {
			return fmt.Errorf("update metadata of %s: %w", id, err)
		}
		out = next
		return nil
	})
	return out, err
}
