package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// capsule.db holds password and token hashes and every tenant's records:
// it, its WAL and shared-memory files and a directory made for it are the
// owner's only.
func TestSQLiteFilesOwnerOnly(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "lib")
	path := filepath.Join(dir, "capsule.db")
	st, err := Open(ctx, "sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DB.Create(&Project{ID: "p1", Name: "p1", DomainID: "default", Enabled: true}).Error; err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if m := mode(t, p); m != 0o600 {
			t.Errorf("%s: mode %o, want 600", filepath.Base(p), m)
		}
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("new database directory: mode %o, want 700", m)
	}
	_ = st.Close()

	// A database made world-readable before (an older Capsule) is narrowed.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = Open(ctx, "sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	if m := mode(t, path); m != 0o600 {
		t.Errorf("existing database: mode %o after open, want 600", m)
	}
}

func TestSQLiteFile(t *testing.T) {
	for dsn, want := range map[string]string{
		"/var/lib/capsule/capsule.db":       "/var/lib/capsule/capsule.db",
		"file:/x/c.db?_txlock=immediate":    "/x/c.db",
		":memory:":                          "",
		"file:mem?mode=memory&cache=shared": "",
		"":                                  "",
	} {
		if got := sqliteFile(dsn); got != want {
			t.Errorf("sqliteFile(%q) = %q, want %q", dsn, got, want)
		}
	}
}
