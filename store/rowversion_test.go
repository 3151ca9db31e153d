package store_test

import (
	"context"
	"testing"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// TestInstanceRowVersion: every kind of UPDATE of an instance row raises
// its row_version (the trigger of migration 42), and nothing lowers it: a
// Save of a stale struct, a map of columns, UpdateColumn, raw SQL, even a
// statement that sets row_version itself.
func TestInstanceRowVersion(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		db := st.DB.WithContext(ctx)
		inst := store.Instance{ID: "rv1", Name: "a", ProjectID: "p1"}
		if err := db.Create(&inst).Error; err != nil {
			t.Fatal(err)
		}
		// A neighbour row: the trigger touches only the updated row.
		if err := db.Create(&store.Instance{ID: "rv2", Name: "b", ProjectID: "p1"}).Error; err != nil {
			t.Fatal(err)
		}
		version := func(id string) int64 {
			t.Helper()
			var v int64
			if err := db.Raw("SELECT row_version FROM instances WHERE id = ?", id).Scan(&v).Error; err != nil {
				t.Fatal(err)
			}
			return v
		}
		if v := version("rv1"); v != 0 {
			t.Fatalf("new row's version = %d, want 0", v)
		}
		stale := inst // read before every write below
		want := int64(0)
		for _, w := range []struct {
			name  string
			write func() error
		}{
			{"save", func() error { inst.Name = "saved"; return db.Save(&inst).Error }},
			{"updates map", func() error {
				return db.Model(&store.Instance{}).Where("id = ?", "rv1").Updates(map[string]any{"name": "m"}).Error
			}},
			{"updates struct", func() error {
				return db.Model(&store.Instance{ID: "rv1"}).Updates(store.Instance{Name: "s"}).Error
			}},
			{"update column", func() error {
				return db.Model(&store.Instance{ID: "rv1"}).UpdateColumn("name", "uc").Error
			}},
			{"update with expression", func() error {
				return db.Model(&store.Instance{ID: "rv1"}).Update("launch_index", gorm.Expr("launch_index + 1")).Error
			}},
			{"raw sql", func() error { return db.Exec("UPDATE instances SET name = 'raw' WHERE id = 'rv1'").Error }},
			{"raw sql setting an old version", func() error {
				return db.Exec("UPDATE instances SET name = 'old', row_version = 0 WHERE id = 'rv1'").Error
			}},
			{"stale save", func() error { stale.Name = "stale"; return db.Save(&stale).Error }},
			{"unchanged values", func() error {
				return db.Exec("UPDATE instances SET name = name WHERE id = 'rv1'").Error
			}},
			{"in a transaction", func() error {
				return db.Transaction(func(tx *gorm.DB) error {
					return tx.Model(&store.Instance{}).Where("id = ?", "rv1").Update("name", "tx").Error
				})
			}},
		} {
			if err := w.write(); err != nil {
				t.Fatalf("%s: %v", w.name, err)
			}
			want++
			if v := version("rv1"); v != want {
				t.Errorf("after %s: row_version = %d, want %d", w.name, v, want)
				want = v
			}
		}
		if v := version("rv2"); v != 0 {
			t.Errorf("untouched row's version = %d, want 0", v)
		}
		// A read returns the version; the struct's own is never written.
		var got store.Instance
		if err := db.Take(&got, "id = ?", "rv1").Error; err != nil || got.RowVersion != want || got.Name != "tx" {
			t.Errorf("read back %q v%d (%v), want %q v%d", got.Name, got.RowVersion, err, "tx", want)
		}
		// A soft delete is an UPDATE too.
		if err := db.Exec("UPDATE instances SET deleted_at = CURRENT_TIMESTAMP WHERE id = 'rv1'").Error; err != nil {
			t.Fatal(err)
		}
		if v := version("rv1"); v != want+1 {
			t.Errorf("after soft delete: row_version = %d, want %d", v, want+1)
		}
	})
}

// TestMigration42RowVersion: a database migrated before migration 42 gets
// the column (existing rows at 0) and the trigger, and re-running the
// migration leaves one trigger (one bump per update).
func TestMigration42RowVersion(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		db := st.DB.WithContext(ctx)
		if err := db.Create(&store.Instance{ID: "old", Name: "a", ProjectID: "p1"}).Error; err != nil {
			t.Fatal(err)
		}
		if st.Driver == "postgres" {
			if err := db.Exec("DROP TRIGGER instances_row_version ON instances").Error; err != nil {
				t.Fatal(err)
			}
		} else if err := db.Exec("DROP TRIGGER instances_row_version").Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Migrator().DropColumn(&store.Instance{}, "RowVersion"); err != nil {
			t.Fatal(err)
		}
		if err := db.Exec("DELETE FROM schema_migrations WHERE version >= 42").Error; err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		// Again: the step is idempotent.
		if err := db.Exec("DELETE FROM schema_migrations WHERE version >= 42").Error; err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("migrate again: %v", err)
		}
		var v int64
		if err := db.Raw("SELECT row_version FROM instances WHERE id = 'old'").Scan(&v).Error; err != nil || v != 0 {
			t.Fatalf("old row's version = %d (%v), want 0", v, err)
		}
		if err := db.Exec("UPDATE instances SET name = 'b' WHERE id = 'old'").Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Raw("SELECT row_version FROM instances WHERE id = 'old'").Scan(&v).Error; err != nil || v != 1 {
			t.Errorf("after an update: version = %d (%v), want 1", v, err)
		}
	})
}
