package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/capsule-cloud/capsule/lifecycle"
)

// Quota limits set by an operator (Nova's quotas table). A project's limit
// on a resource is its row with UserID "", else the configured default; a
// user's limit inside the project is their own row, else the project's.
// -1 means unlimited. Usage is never stored: it is counted from the live
// instances, as Nova does since Pike, so it cannot drift.

// QuotaLimits returns the limits set at one level: the project's
// (userID "") or one user's within the project, by resource.
func (s *Store) QuotaLimits(ctx context.Context, projectID, userID string) (map[string]int, error) {
	return QuotaLimitsIn(s.WithContext(ctx), projectID, userID)
}

// QuotaLimitsIn is QuotaLimits read in tx (a quota check holding the
// project's quota lock).
func QuotaLimitsIn(tx *gorm.DB, projectID, userID string) (map[string]int, error) {
	var rows []QuotaLimit
	err := tx.Where("project_id = ? AND user_id = ?", projectID, userID).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("quota limits of project %s user %q: %w", projectID, userID, err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.Resource] = r.HardLimit
	}
	return out, nil
}

// UserQuotaLimits returns every user-level limit set in the project.
func (s *Store) UserQuotaLimits(ctx context.Context, projectID string) ([]QuotaLimit, error) {
	var rows []QuotaLimit
	err := s.WithContext(ctx).Where("project_id = ? AND user_id <> ''", projectID).
		Order("user_id, resource").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("user quota limits of project %s: %w", projectID, err)
	}
	return rows, nil
}

// SetQuotaLimits creates or replaces the limits at one level, all of them
// or none.
func (s *Store) SetQuotaLimits(ctx context.Context, projectID, userID string, limits map[string]int) error {
	if projectID == "" {
		return fmt.Errorf("set quota limits: no project: %w", ErrNotFound)
	}
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for res, n := range limits {
			row := QuotaLimit{ProjectID: projectID, UserID: userID, Resource: res, HardLimit: n}
			err := tx.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "project_id"}, {Name: "user_id"}, {Name: "resource"}},
				DoUpdates: clause.AssignmentColumns([]string{"hard_limit", "updated_at"}),
			}).Create(&row).Error
			if err != nil {
				return fmt.Errorf("%s: %w", res, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set quota limits of project %s user %q: %w", projectID, userID, err)
	}
	return nil
}

// DeleteQuotaLimits puts a level back to its defaults. For the project
// level (userID "") the users' limits go too, as Nova's
// destroy_all_by_project: what is left is the configured default.
func (s *Store) DeleteQuotaLimits(ctx context.Context, projectID, userID string) error {
	q := s.WithContext(ctx).Where("project_id = ?", projectID)
	if userID != "" {
		q = q.Where("user_id = ?", userID)
	}
	if err := q.Delete(&QuotaLimit{}).Error; err != nil {
		return fmt.Errorf("delete quota limits of project %s user %q: %w", projectID, userID, err)
	}
	return nil
}

// QuotaUsage is what a project (or one user in it) holds of the counted
// resources.
type QuotaUsage struct {
	Instances int
	Cores     int
	RAM       int
}

// CountQuotaUsage counts the live (not deleted) instances of the project,
// or only the user's when userID is not "", with their vCPUs and RAM.
// A server awaiting resize confirmation counts at its new flavor. A
// shelved-offloaded server holds no host: it counts as an instance but not
// its cores and RAM (Nova's count with [quota]count_usage_from_placement,
// where nothing is allocated to it), until an unshelve, which checks them
// against the quota, starts (its task then counts them again).
func (s *Store) CountQuotaUsage(ctx context.Context, projectID, userID string) (QuotaUsage, error) {
	return CountQuotaUsageIn(s.WithContext(ctx), projectID, userID)
}

// CountQuotaUsageIn is CountQuotaUsage counted in tx (a quota check
// holding the project's quota lock).
func CountQuotaUsageIn(tx *gorm.DB, projectID, userID string) (QuotaUsage, error) {
	var u struct{ N, C, R int }
	q := tx.Model(&Instance{}).Where("project_id = ? AND deleted_at IS NULL", projectID)
	if userID != "" {
		q = q.Where("user_id = ?", userID)
	}
	err := q.Select("COUNT(*) AS n, COALESCE(SUM(CASE WHEN "+offloadedIdle+" THEN 0 ELSE vcpus END),0) AS c, "+
		"COALESCE(SUM(CASE WHEN "+offloadedIdle+" THEN 0 ELSE memory_mb END),0) AS r", lifecycle.ShelvedOffloaded,
		lifecycle.NoTask, lifecycle.ShelvedOffloaded, lifecycle.NoTask).Scan(&u).Error
	if err != nil {
		return QuotaUsage{}, fmt.Errorf("count quota usage of project %s user %q: %w", projectID, userID, err)
	}
	return QuotaUsage{Instances: u.N, Cores: u.C, RAM: u.R}, nil
}

// offloadedIdle matches a shelved-offloaded server with no task (its two
// placeholders: the vm_state and the empty task): it takes no cores or
// RAM of its project's quota.
const offloadedIdle = "(vm_state = ? AND task_state = ?)"

// Network quotas (Neutron's quotas table).

// NetworkQuotaLimits returns the network limits set for the project, by
// resource.
func (s *Store) NetworkQuotaLimits(ctx context.Context, projectID string) (map[string]int, error) {
	var rows []NetworkQuotaLimit
	if err := s.WithContext(ctx).Where("project_id = ?", projectID).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("network quota limits of project %s: %w", projectID, err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.Resource] = r.HardLimit
	}
	return out, nil
}

// AllNetworkQuotaLimits returns the limits set for every project that has
// any, by project and resource.
func (s *Store) AllNetworkQuotaLimits(ctx context.Context) (map[string]map[string]int, error) {
	var rows []NetworkQuotaLimit
	if err := s.WithContext(ctx).Order("project_id, resource").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("network quota limits: %w", err)
	}
	out := map[string]map[string]int{}
	for _, r := range rows {
		if out[r.ProjectID] == nil {
			out[r.ProjectID] = map[string]int{}
		}
		out[r.ProjectID][r.Resource] = r.HardLimit
	}
	return out, nil
}

// SetNetworkQuotaLimits creates or replaces the project's network limits,
// all of them or none. check, when not nil, runs first in the same
// transaction under the project's network quota lock (a check_limit
// update: the new limits must cover what the project holds, and no
// create may slip in between the count and the write).
func (s *Store) SetNetworkQuotaLimits(ctx context.Context, projectID string, limits map[string]int, check Guard) error {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := LockQuota(tx, NetworkQuota, projectID); err != nil {
			return err
		}
		if err := runGuards(tx, []Guard{check}); err != nil {
			return err
		}
		for res, n := range limits {
			row := NetworkQuotaLimit{ProjectID: projectID, Resource: res, HardLimit: n}
			err := tx.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "project_id"}, {Name: "resource"}},
				DoUpdates: clause.AssignmentColumns([]string{"hard_limit", "updated_at"}),
			}).Create(&row).Error
			if err != nil {
				return fmt.Errorf("%s: %w", res, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set network quota limits of project %s: %w", projectID, err)
	}
	return nil
}

// DeleteNetworkQuotaLimits puts the project's network limits back to the
// defaults.
func (s *Store) DeleteNetworkQuotaLimits(ctx context.Context, projectID string) error {
	if err := s.WithContext(ctx).Where("project_id = ?", projectID).Delete(&NetworkQuotaLimit{}).Error; err != nil {
		return fmt.Errorf("delete network quota limits of project %s: %w", projectID, err)
	}
	return nil
}

// CountNetworkUsage counts the project's networks, subnets and ports, by
// Neutron resource name, in tx.
func CountNetworkUsage(tx *gorm.DB, projectID string) (map[string]int, error) {
	used := map[string]int{}
	for _, m := range []struct {
		key   string
		model any
	}{{"network", &Network{}}, {"subnet", &Subnet{}}, {"port", &Port{}}} {
		var n int64
		if err := tx.Model(m.model).Where("project_id = ?", projectID).Count(&n).Error; err != nil {
			return nil, fmt.Errorf("count %ss of project %s: %w", m.key, projectID, err)
		}
		used[m.key] = int(n)
	}
	if err := countSecurityGroupUsage(tx, projectID, used); err != nil {
		return nil, err
	}
	return used, nil
}
