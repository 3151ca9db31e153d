package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/capsule-cloud/capsule/errdefs"
)

// MaxResourceTags is Neutron's limit of tags on one resource.
const MaxResourceTags = 50

// TaggedTables are the Networking resources that take tags
// (standard-attr-tag), by their API collection: each table has a Tags
// column holding a sorted JSON list of distinct strings.
var TaggedTables = map[string]string{
	"networks": "networks", "subnets": "subnets", "ports": "ports", "security-groups": "security_groups",
}

// DecodeTags reads a Tags column: the tags, [] (never nil) when none.
func DecodeTags(col string) []string {
	out := []string{}
	if col != "" {
		_ = json.Unmarshal([]byte(col), &out)
	}
	return out
}

// SetResourceTags applies change to the tags of the resource id of API
// collection coll under its row lock (concurrent tag requests keep each
// other's tags), bumping its revision_number as any change of a standard
// attribute does in Neutron, and returns the tags written. change gets
// the current tags; an error from it aborts.
func (s *Store) SetResourceTags(ctx context.Context, coll, id string, now time.Time, change func(tags []string) ([]string, error)) ([]string, error) {
	table, ok := TaggedTables[coll]
	if !ok {
		return nil, fmt.Errorf("tags of %s: %w", coll, errdefs.ErrNotFound)
	}
	var out []string
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row struct{ Tags string }
		res := tx.Table(table).Clauses(clause.Locking{Strength: "UPDATE"}).Select("tags").Where("id = ?", id).Limit(1).Scan(&row)
		if res.Error != nil {
			return fmt.Errorf("tags of %s %s: %w", coll, id, res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("%s %s: %w", coll, id, gorm.ErrRecordNotFound)
		}
		next, err := change(DecodeTags(row.Tags))
		if err != nil {
			return err
		}
		enc := EncodeTags(next)
		out = DecodeTags(enc)
		if len(out) > MaxResourceTags {
			return errdefs.InvalidArgumentf("Invalid input for operation: a resource has at most %d tags.", MaxResourceTags)
		}
		if row.Tags == enc {
			return nil
		}
		if err := tx.Table(table).Where("id = ?", id).Updates(map[string]any{
			"tags": enc, "revision_number": gorm.Expr("revision_number + 1"), "updated_at": now}).Error; err != nil {
			return fmt.Errorf("set tags of %s %s: %w", coll, id, err)
		}
		return nil
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	return out, err
}
