package image

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/store"
)

// SortKey is one key of a list's order: an image attribute Glance sorts
// by (one of sortKeys), descending or not.
type SortKey struct {
	Key  string
	Desc bool
}

// sortExpr is the column a sort key orders by. An image without a size
// sorts as -1, before every sized one, on both databases (SQLite puts
// NULL first, PostgreSQL last).
func sortExpr(key string) string {
	if key == "size" {
		return "COALESCE(images.size, -1)"
	}
	return "images." + key
}

// sortValue is img's value for a sort key, as sortExpr reads it.
func sortValue(img *store.Image, key string) any {
	switch key {
	case "name":
		return img.Name
	case "status":
		return img.Status
	case "container_format":
		return img.ContainerFormat
	case "disk_format":
		return img.DiskFormat
	case "size":
		if img.Size == nil {
			return int64(-1)
		}
		return *img.Size
	case "created_at":
		return img.CreatedAt
	case "updated_at":
		return img.UpdatedAt
	case "visibility":
		return img.Visibility
	case "owner":
		return img.Owner
	case "min_disk":
		return img.MinDisk
	case "min_ram":
		return img.MinRAM
	}
	return img.ID
}

// after narrows db to the rows that come after img in order: a keyset,
// (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ..., each key in its direction.
// order ends with id, so no two rows tie.
func after(db *gorm.DB, order []SortKey, img *store.Image) *gorm.DB {
	var ors []string
	var args []any
	for i, k := range order {
		var and []string
		for _, prev := range order[:i] {
			and = append(and, sortExpr(prev.Key)+" = ?")
			args = append(args, sortValue(img, prev.Key))
		}
		op := " > ?"
		if k.Desc {
			op = " < ?"
		}
		and = append(and, sortExpr(k.Key)+op)
		args = append(args, sortValue(img, k.Key))
		ors = append(ors, "("+strings.Join(and, " AND ")+")")
		if k.Key == "id" {
			break // unique: later keys never decide
		}
	}
	return db.Where(strings.Join(ors, " OR "), args...)
}

// Page reads a page of images from db (a query on the images table the
// caller has narrowed) in order, starting after the image from (nil: at
// the start): the first limit rows keep accepts (nil: every row; limit
// < 0: no limit), and whether another accepted row follows. Rows are
// read in batches of limit + 1, so a page costs one query when the
// database's filters are exact, and keep can still apply what SQL does
// not (property and tag filters).
func Page(db *gorm.DB, order []SortKey, from *store.Image, limit int, keep func(*store.Image) bool) ([]store.Image, bool, error) {
	db = db.Session(&gorm.Session{}) // each query below starts from db's conditions
	for _, k := range order {
		if !slices.Contains(sortKeys, k.Key) {
			return nil, false, fmt.Errorf("invalid sort key %q", k.Key)
		}
	}
	batch := limit + 1
	if limit < 0 {
		batch = 1000
	}
	var out []store.Image
	for {
		q := db
		if from != nil {
			q = after(q, order, from)
		}
		for _, k := range order {
			dir := " ASC"
			if k.Desc {
				dir = " DESC"
			}
			q = q.Order(sortExpr(k.Key) + dir)
		}
		var rows []store.Image
		if err := q.Limit(batch).Find(&rows).Error; err != nil {
			return nil, false, fmt.Errorf("read images: %w", err)
		}
		for i := range rows {
			if keep != nil && !keep(&rows[i]) {
				continue
			}
			if limit >= 0 && len(out) == limit {
				return out, true, nil
			}
			out = append(out, rows[i])
		}
		if len(rows) < batch {
			return out, false, nil
		}
		from = &rows[len(rows)-1]
		batch = min(batch*2, 2000) // keep dropped rows: read further at once
	}
}

// listScope narrows db (on images) to what GET /v2/images with query q
// may list for c: its visibility rules and the column filters. It may let
// through more than the list shows (buildFilters' predicates decide each
// row), never less.
func listScope(db *gorm.DB, c *auth.Credentials, q url.Values) *gorm.DB {
	admin := c.IsAdmin()
	own := "(images.owner <> '' AND images.owner = @project)"
	// Another project's image shared with the caller, its membership in
	// the status asked for (accepted by default). Admins read no
	// memberships: as in buildFilters, none is shared "with" them.
	shared := "FALSE"
	if !admin {
		shared = "(images.visibility = 'shared' AND NOT " + own + " AND EXISTS (SELECT 1 FROM image_members m " +
			"WHERE m.image_id = images.id AND m.member_id = @project AND (@status = 'all' OR m.status = @status)))"
	}
	named := map[string]any{"project": c.ProjectID, "status": cmp.Or(q.Get("member_status"), MemberAccepted),
		"public": VisibilityPublic, "community": VisibilityCommunity}
	visible := "TRUE"
	if !admin {
		visible = "(images.visibility IN (@public, @community) OR " + own + " OR " + shared + ")"
	}
	switch vis := q.Get("visibility"); vis {
	case "":
		if admin {
			db = db.Where("images.visibility <> @community OR "+own, named)
		} else {
			db = db.Where(own+" OR images.visibility = @public OR "+shared, named)
		}
	case "all":
		if !admin {
			db = db.Where(visible, named)
		}
	default:
		named["vis"] = vis
		db = db.Where("images.visibility = @vis AND "+visible, named)
	}
	hidden, err := parseBool(cmp.Or(q.Get("os_hidden"), "false"))
	if err == nil {
		db = db.Where("images.hidden = ?", hidden)
	}
	for _, key := range []string{"name", "status", "owner", "id", "container_format", "disk_format", "checksum"} {
		if !q.Has(key) {
			continue
		}
		want := q.Get(key)
		set := []string{want}
		if rest, ok := strings.CutPrefix(want, "in:"); ok {
			set = strings.Split(rest, ",")
		}
		db = db.Where("images."+key+" IN ?", set)
	}
	if b, err := parseBool(q.Get("protected")); err == nil {
		db = db.Where("images.protected = ?", b)
	}
	return db
}
