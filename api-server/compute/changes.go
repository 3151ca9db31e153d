package compute

import (
	"net/url"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/errdefs"
)

// changesWindow reads Nova's changes-since and (from 2.66) changes-before
// filters on a resource's updated_at: ISO 8601 times, since not after
// before. sinceOK says whether changes-since applies to this resource at
// the request's microversion (servers: always; instance actions: 2.58;
// migrations: 2.59). A filter that does not apply yet is ignored, as
// Nova's query schemas of those microversions allow unknown keys.
func changesWindow(q url.Values, v apiVersion, sinceOK bool) (since, before *time.Time, err error) {
	parse := func(key string) (*time.Time, error) {
		raw := q.Get(key)
		if raw == "" {
			return nil, nil
		}
		t, err := time.Parse(time.RFC3339, raw)
		if err != nil {
			return nil, errdefs.InvalidArgumentf("Invalid input for query parameters %s. Value: %s. It is not a valid date-time.", key, raw)
		}
		t = t.UTC()
		return &t, nil
	}
	if sinceOK {
		if since, err = parse("changes-since"); err != nil {
			return nil, nil, err
		}
	}
	if v.AtLeast(66) {
		if before, err = parse("changes-before"); err != nil {
			return nil, nil, err
		}
	}
	if since != nil && before != nil && since.After(*before) {
		return nil, nil, errdefs.InvalidArgument("The value of changes-since must be less than or equal to changes-before.")
	}
	return since, before, nil
}

// whereChanged narrows db to rows whose updated_at is in the window.
func whereChanged(db *gorm.DB, since, before *time.Time) *gorm.DB {
	if since != nil {
		db = db.Where("updated_at >= ?", *since)
	}
	if before != nil {
		db = db.Where("updated_at <= ?", *before)
	}
	return db
}
