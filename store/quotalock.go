package store

import (
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Quota scopes: the compute resources (instances, cores, RAM) and the
// network resources (networks, subnets, ports) of a project are checked
// under separate locks, so a server create does not wait for a port create.
const (
	ComputeQuota = "compute"
	NetworkQuota = "network"
)

// Guard runs inside a create's transaction before the insert; an error
// aborts the create. Quota checks are guards: they lock the project's
// quota row (LockQuota) and count what the project holds, so the count and
// the insert commit together.
type Guard func(tx *gorm.DB) error

// runGuards runs guards in tx, stopping at the first error.
func runGuards(tx *gorm.DB, guards []Guard) error {
	for _, g := range guards {
		if g == nil {
			continue
		}
		if err := g(tx); err != nil {
			return err
		}
	}
	return nil
}

// LockQuota takes the project's quota lock of scope for the rest of tx:
// it upserts the project's quota_locks row, which on PostgreSQL holds the
// row's lock until commit (a concurrent upsert of the same row waits, in
// any process on any host); on SQLite every transaction holds the
// database's write lock from BEGIN (see Open), so the upsert only keeps the
// code the same. Take it first in the transaction, before any other lock,
// so two quota-checked creates never wait on each other in opposite order.
func LockQuota(tx *gorm.DB, scope, projectID string) error {
	row := QuotaLock{Scope: scope + ":" + projectID, Generation: 1}
	err := tx.Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "scope"}},
		DoUpdates: clause.Assignments(map[string]any{"generation": gorm.Expr("quota_locks.generation + 1")}),
	}).Create(&row).Error
	if err != nil {
		return fmt.Errorf("lock %s quota of project %s: %w", scope, projectID, err)
	}
	return nil
}

// CountLimit is a guard for a create of one row of model in projectID
// under a limit (< 0: unlimited): it takes the project's quota lock of
// scope and fails with over() when the project already holds limit rows
// of model (rows whose project_id is projectID).
func CountLimit(scope, projectID string, model any, limit int, over func(used int) error) Guard {
	return func(tx *gorm.DB) error {
		if err := LockQuota(tx, scope, projectID); err != nil {
			return err
		}
		if limit < 0 {
			return nil
		}
		var n int64
		if err := tx.Model(model).Where("project_id = ?", projectID).Count(&n).Error; err != nil {
			return fmt.Errorf("count usage of project %s: %w", projectID, err)
		}
		if int(n) >= limit {
			return over(int(n))
		}
		return nil
	}
}
