package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// sqliteFile is the file path of a SQLite DSN ("" for an in-memory one).
func sqliteFile(dsn string) string {
	path, query, _ := strings.Cut(dsn, "?")
	path = strings.TrimPrefix(path, "file:")
	if path == "" || path == ":memory:" || strings.Contains(query, "mode=memory") {
		return ""
	}
	return path
}

// secureSQLiteFile makes the database file of dsn readable by its owner
// only: it holds password hashes, token hashes and every tenant's records.
// A new file is created 0600 (its directory 0700 when that is new too)
// before SQLite opens it, so it never exists with wider modes; an existing
// one, and its WAL and shared-memory files, are narrowed to 0600. SQLite
// gives the journal files it creates later the database file's mode.
func secureSQLiteFile(dsn string) error {
	path := sqliteFile(dsn)
	if path == "" {
		return nil
	}
	if dir := filepath.Dir(path); dir != "" {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("store: create the database directory %s: %w", dir, err)
			}
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		return f.Close()
	case !errors.Is(err, fs.ErrExist):
		return fmt.Errorf("store: create the database file %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		if st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, st.Mode().Perm()&0o600); err != nil {
				return fmt.Errorf("store: narrow the modes of %s to its owner: %w", p, err)
			}
		}
	}
	return nil
}
