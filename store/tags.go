package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/capsule-cloud/capsule/errdefs"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// MaxServerTags is Nova's per-server tag limit.
const MaxServerTags = 50

// ErrTooManyTags refuses a change that would leave a server with more
// than MaxServerTags tags.
var ErrTooManyTags = errdefs.QuotaExceeded("too many tags")

// TagsOf decodes an instance's Tags column: a sorted list of distinct
// tags, empty (never nil) when there are none.
func TagsOf(inst *Instance) []string {
	out := []string{}
	if inst.Tags != "" {
		_ = json.Unmarshal([]byte(inst.Tags), &out)
	}
	return out
}

// EncodeTags is the Tags column value of tags: sorted, duplicates dropped.
func EncodeTags(tags []string) string {
	t := slices.Clone(tags)
	slices.Sort(t)
	t = slices.Compact(t)
	if len(t) == 0 {
		return ""
	}
	b, _ := json.Marshal(t)
	return string(b)
}

// UpdateTags applies change to the live instance id's tags under a row
// lock (concurrent tag requests do not lose each other's tags) and
// returns the tags it wrote. change gets the current tags and returns the
// new ones; an error from it aborts the update.
func (s *Store) UpdateTags(ctx context.Context, id string, change func(tags []string) ([]string, error)) ([]string, error) {
	var out []string
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var inst Instance
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("id", "tags").Where("id = ? AND deleted_at IS NULL", id).First(&inst).Error; err != nil {
			return NotFound(err, "instance "+id)
		}
		next, err := change(TagsOf(&inst))
		if err != nil {
			return err
		}
		enc := EncodeTags(next)
		if err := json.Unmarshal([]byte(orEmptyList(enc)), &out); err != nil {
			return err
		}
		if len(out) > MaxServerTags {
			return fmt.Errorf("%d tags: %w", len(out), ErrTooManyTags)
		}
		if err := tx.Model(&Instance{}).Where("id = ?", id).Update("tags", enc).Error; err != nil {
			return fmt.Errorf("update tags of %s: %w", id, err)
		}
		return nil
	})
	return out, err
}

func orEmptyList(enc string) string {
	if enc == "" {
		return "[]"
	}
	return enc
}
