// Package storetest opens throw-away stores for tests: SQLite in the
// test's temporary directory, or a PostgreSQL database of its own on the
// test server (so concurrent runs never see each other's rows), dropped
// when the test ends.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/store"
)

// SQLite opens a fresh SQLite store.
func SQLite(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite", filepath.Join(t.TempDir(), "capsule.db"))
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Postgres creates a database named capsule_test_<random> on the server
// of testenv.PostgresDSN, opens a store on it and drops it at cleanup.
func Postgres(t testing.TB) *store.Store {
	t.Helper()
	dsn := testenv.PostgresDSN(t)
	admin, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatalf("connect to postgres: %v", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "capsule_test_" + hex.EncodeToString(b)
	// CREATE DATABASE copies template1 and fails while another session
	// (a test process running beside this one) is copying it too: retry.
	for attempt := 1; ; attempt++ {
		err := admin.Exec("CREATE DATABASE " + name).Error
		if err == nil {
			break
		}
		if attempt == 20 || !strings.Contains(err.Error(), "is being accessed by other users") {
			t.Fatalf("create database %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse postgres dsn: %v", err)
	}
	u.Path = "/" + name
	st, err := store.Open(context.Background(), "postgres", u.String())
	if err != nil {
		t.Fatalf("open postgres store: %v", err)
	}
	t.Cleanup(func() {
		st.Close()
		// An autovacuum worker in the database can make the drop fail
		// for a moment (without pg_signal_backend, FORCE cannot end it).
		var err error
		for attempt := 0; attempt < 50; attempt++ {
			if err = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)").Error; err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		if db, err := admin.DB(); err == nil {
			db.Close()
		}
	})
	return st
}

// ForEach runs f as subtests on SQLite and on PostgreSQL.
func ForEach(t *testing.T, f func(t *testing.T, st *store.Store)) {
	t.Run("sqlite", func(t *testing.T) { f(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, Postgres(t)) })
}
