// Package store is Capsule's database: the gorm models, versioned schema
// migrations, and the few operations that must be atomic (resource claims).
// Only control-plane roles (api, scheduler, conductor) open it; agents
// never hold database credentials.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/glebarez/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The store's generic errors are the errdefs kinds themselves: errors.Is(err,
// store.ErrNotFound) holds for any NotFound the store returns, the
// network errors below included. APIs map kinds to statuses (package
// errdefs).
const (
	ErrNotFound = errdefs.ErrNotFound
	ErrConflict = errdefs.ErrConflict
)

// Store wraps the database handle.
type Store struct {
	DB     *gorm.DB
	Driver string
}

// Open connects to driver ("sqlite" or "postgres") at dsn and applies the
// pending schema migrations.
func Open(ctx context.Context, driver, dsn string) (*Store, error) {
	var dial gorm.Dialector
	switch driver {
	case "sqlite", "":
		driver = "sqlite"
		if err := secureSQLiteFile(dsn); err != nil {
			return nil, err
		}
		if !strings.Contains(dsn, "?") {
			// WAL: readers never block the single writer. _txlock=immediate:
			// every transaction takes the write lock at BEGIN, so a
			// transaction never has to upgrade a read lock (which SQLite
			// refuses with SQLITE_BUSY at once); busy_timeout makes the
			// next writer wait for it instead of failing.
			dsn += "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
		}
		dial = sqlite.Open(dsn)
	case "postgres", "postgresql":
		driver = "postgres"
		dial = postgres.Open(dsn)
	default:
		return nil, fmt.Errorf("store: unknown database driver %q (want sqlite or postgres)", driver)
	}
	db, err := gorm.Open(dial, &gorm.Config{
		Logger:         logger.Default.LogMode(logger.Silent),
		NowFunc:        func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		TranslateError: true,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", driver, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("store: handle: %w", err)
	}
	if driver == "sqlite" {
		// Several connections let API reads (token checks, GETs) proceed
		// while a write runs; writes are still one at a time (see above),
		// which is what keeps claims atomic.
		sqlDB.SetMaxOpenConns(4)
	} else {
		sqlDB.SetMaxOpenConns(20)
	}
	if driver == "postgres" {
		if err := registerPGInvalidText(db); err != nil {
			return nil, fmt.Errorf("store: register callbacks: %w", err)
		}
	}
	s := &Store{DB: db, Driver: driver}
	if err := s.Migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases the database handle.
func (s *Store) Close() error {
	sqlDB, err := s.DB.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// WithContext returns a gorm session bound to ctx.
func (s *Store) WithContext(ctx context.Context) *gorm.DB { return s.DB.WithContext(ctx) }

// NotFound turns gorm's record-not-found into ErrNotFound, wrapping what.
func NotFound(err error, what string) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("%s: %w", what, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// logSchema logs one applied migration.
func logSchema(v int, name string) {
	slog.Info("schema migration applied", "version", v, "name", name)
}
