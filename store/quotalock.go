package store

import (
	"fmt"

	"github.com/capsule-cloud/capsule/errdefs"
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

// ErrOverQuota is Neutron's OverQuota: a create that would take the
// project past its network quota (409 from the Networking API, 403 from
// the Compute API creating a server's port).
var ErrOverQuota = errdefs.Class{Kind: errdefs.ErrQuotaExceeded, Reason: "OverQuota"}

// ErrInvalidQuotaValue is Neutron's InvalidQuotaValue (409): a limit set
// with check_limit below what the project already holds.
var ErrInvalidQuotaValue = errdefs.Class{Kind: errdefs.ErrConflict, Reason: "InvalidQuotaValue"}

// networkQuotaModels are the network resources Capsule counts and
// enforces, by Neutron name. A tenant network holds one tenant VLAN, so the
// network quota also caps the VLANs a project takes from the tenant range.
var networkQuotaModels = map[string]func() any{
	"network": func() any { return &Network{} },
	"subnet":  func() any { return &Subnet{} },
	"port":    func() any { return &Port{} },
	// A project's default group and its rules count too, as in Neutron.
	"security_group":      func() any { return &SecurityGroup{} },
	"security_group_rule": func() any { return &SecurityGroupRule{} },
}

// NetworkQuotaGuard is the guard of a create of one resource ("network",
// "subnet" or "port") of projectID: under the project's network quota
// lock it reads the project's limit (its network_quota_limits row, else
// def; < 0 unlimited) and refuses with ErrOverQuota when the project
// already holds that many.
func NetworkQuotaGuard(projectID, resource string, def int) Guard {
	return func(tx *gorm.DB) error {
		model, ok := networkQuotaModels[resource]
		if !ok {
			return fmt.Errorf("network quota: unknown resource %q", resource)
		}
		if err := LockQuota(tx, NetworkQuota, projectID); err != nil {
			return err
		}
		limit := def
		var rows []NetworkQuotaLimit
		if err := tx.Where("project_id = ? AND resource = ?", projectID, resource).Find(&rows).Error; err != nil {
			return fmt.Errorf("network quota of project %s: %w", projectID, err)
		}
		if len(rows) > 0 {
			limit = rows[0].HardLimit
		}
		if limit < 0 {
			return nil
		}
		var n int64
		if err := tx.Model(model()).Where("project_id = ?", projectID).Count(&n).Error; err != nil {
			return fmt.Errorf("count %ss of project %s: %w", resource, projectID, err)
		}
		if int(n) >= limit {
			return ErrOverQuota.Newf("Quota exceeded for resources: ['%s'].", resource)
		}
		return nil
	}
}
