package store_test

import (
	"context"
	"testing"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// TestNULInTextIsInvalidArgument: a NUL byte in a looked-up id, a filter
// or a stored name (a request's "a%00b" path id or "a\u0000b" JSON
// string) is the caller's bad input on both databases. PostgreSQL
// refuses NUL in text values outright; that refusal must reach the API
// as invalid input (400), not as a database failure (500).
func TestNULInTextIsInvalidArgument(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		db := st.WithContext(context.Background())
		var p store.Project
		err := db.Where("id = ?", "a\x00b").First(&p).Error
		if err != nil && !errdefs.IsNotFound(store.NotFound(err, "project")) && !errdefs.IsInvalidArgument(err) {
			t.Errorf("lookup of an id with a NUL byte: %v (kind %s), want not found or invalid argument", err, errdefs.KindOf(err))
		}
		err = db.Create(&store.Project{ID: "p-nul", Name: "a\x00b", DomainID: "default"}).Error
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("a name with a NUL byte: %v (kind %s), want stored or invalid argument", err, errdefs.KindOf(err))
		}
		// The connection is usable afterwards.
		if err := db.Create(&store.Project{ID: "p-ok", Name: "ok", DomainID: "default"}).Error; err != nil {
			t.Errorf("create after the refused one: %v", err)
		}
	})
}
