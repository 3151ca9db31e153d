// Package ctlbench measures the control plane without hosts: the
// scheduler placing servers over thousands of simulated compute hosts
// (claims against a real store) and the Compute API listing thousands of
// servers (the real HTTP handlers over a real store). `capsule bench
// sched` and `capsule bench list` run it, and so do the Go benchmarks
// beside it; the numbers live in docs/benchmarks.md.
package ctlbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/capsule-cloud/capsule/store"
)

// Scratch opens a throw-away store: SQLite in a temporary directory
// (postgresDSN ""), or a database of its own created on the PostgreSQL
// server of postgresDSN. The returned cleanup closes it and removes the
// file or drops the database.
func Scratch(ctx context.Context, postgresDSN string) (*store.Store, func(), error) {
	if postgresDSN == "" {
		dir, err := os.MkdirTemp("", "capsule-bench-")
		if err != nil {
			return nil, nil, fmt.Errorf("bench: temporary directory: %w", err)
		}
		st, err := store.Open(ctx, "sqlite", filepath.Join(dir, "capsule.db"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return st, func() { st.Close(); os.RemoveAll(dir) }, nil
	}
	admin, err := gorm.Open(postgres.Open(postgresDSN), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: connect to postgres: %w", err)
	}
	closeAdmin := func() {
		if db, err := admin.DB(); err == nil {
			db.Close()
		}
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "capsule_bench_" + hex.EncodeToString(b)
	for attempt := 1; ; attempt++ {
		err := admin.WithContext(ctx).Exec("CREATE DATABASE " + name).Error
		if err == nil {
			break
		}
		// CREATE DATABASE copies template1 and fails while another
		// session copies it too.
		if attempt == 20 || !strings.Contains(err.Error(), "is being accessed by other users") {
			closeAdmin()
			return nil, nil, fmt.Errorf("bench: create database %s: %w", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	drop := func() {
		for attempt := 0; attempt < 50; attempt++ {
			if admin.Exec("DROP DATABASE IF EXISTS "+name+" WITH (FORCE)").Error == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		closeAdmin()
	}
	u, err := url.Parse(postgresDSN)
	if err != nil {
		drop()
		return nil, nil, fmt.Errorf("bench: parse postgres dsn: %w", err)
	}
	u.Path = "/" + name
	st, err := store.Open(ctx, "postgres", u.String())
	if err != nil {
		drop()
		return nil, nil, err
	}
	return st, func() { st.Close(); drop() }, nil
}
