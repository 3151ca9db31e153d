package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/capsule-cloud/capsule/errdefs"
	"gorm.io/gorm"
)

// Server group policies (Nova's; the soft ones from microversion 2.15).
const (
	PolicyAffinity         = "affinity"
	PolicyAntiAffinity     = "anti-affinity"
	PolicySoftAffinity     = "soft-affinity"
	PolicySoftAntiAffinity = "soft-anti-affinity"
)

var (
	// ErrServerGroupQuota means the project already has as many server
	// groups as allowed.
	ErrServerGroupQuota = errdefs.QuotaExceeded("server group quota exceeded")
	// ErrGroupMemberQuota means the group already has as many members as
	// allowed.
	ErrGroupMemberQuota = errdefs.QuotaExceeded("server group member quota exceeded")
	// ErrGroupPolicy means a claim would break its server group's policy
	// (a FailedPrecondition: not on this host).
	ErrGroupPolicy = errdefs.FailedPrecondition("server group policy violated")
)

// CreateServerGroup inserts g unless its project already has limit groups
// (ErrServerGroupQuota; limit < 0: no limit). Count and insert are one
// transaction serialised per project.
func (s *Store) CreateServerGroup(ctx context.Context, g *ServerGroup, limit int) error {
	err := s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.advisoryLock(tx, "server_groups:"+g.ProjectID); err != nil {
			return err
		}
		if limit >= 0 {
			var n int64
			if err := tx.Model(&ServerGroup{}).Where("project_id = ?", g.ProjectID).Count(&n).Error; err != nil {
				return fmt.Errorf("count server groups: %w", err)
			}
			if n >= int64(limit) {
				return ErrServerGroupQuota
			}
		}
		return tx.Create(g).Error
	})
	if err != nil {
		return fmt.Errorf("create server group %q of project %s: %w", g.Name, g.ProjectID, err)
	}
	return nil
}

// advisoryLock serialises transactions on key. SQLite needs nothing: its
// transactions take the write lock at BEGIN (see Open).
func (s *Store) advisoryLock(tx *gorm.DB, key string) error {
	if s.Driver != "postgres" {
		return nil
	}
	if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtext(?))", key).Error; err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	return nil
}

// GetServerGroup returns group id, or ErrNotFound.
func (s *Store) GetServerGroup(ctx context.Context, id string) (*ServerGroup, error) {
	var g ServerGroup
	err := s.WithContext(ctx).Where("id = ?", id).First(&g).Error
	if err := NotFound(err, "server group "+id); err != nil {
		return nil, err
	}
	return &g, nil
}

// ListServerGroups returns the groups of project ("" = every project),
// oldest first.
func (s *Store) ListServerGroups(ctx context.Context, project string) ([]ServerGroup, error) {
	q := s.WithContext(ctx).Order("created_at, id")
	if project != "" {
		q = q.Where("project_id = ?", project)
	}
	var out []ServerGroup
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list server groups of project %q: %w", project, err)
	}
	return out, nil
}

// DeleteServerGroup removes group id and its memberships (the servers
// stay), or returns ErrNotFound.
func (s *Store) DeleteServerGroup(ctx context.Context, id string) error {
	return s.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("group_id = ?", id).Delete(&ServerGroupMember{}).Error; err != nil {
			return fmt.Errorf("delete members of server group %s: %w", id, err)
		}
		res := tx.Where("id = ?", id).Delete(&ServerGroup{})
		if res.Error != nil {
			return fmt.Errorf("delete server group %s: %w", id, res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("server group %s: %w", id, ErrNotFound)
		}
		return nil
	})
}

// GroupMembers returns the member instance ids of each of groupIDs, in
// the order they joined.
func (s *Store) GroupMembers(ctx context.Context, groupIDs []string) (map[string][]string, error) {
	out := make(map[string][]string, len(groupIDs))
	if len(groupIDs) == 0 {
		return out, nil
	}
	var rows []ServerGroupMember
	if err := s.WithContext(ctx).Where("group_id IN ?", groupIDs).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("members of server groups: %w", err)
	}
	for _, m := range rows {
		out[m.GroupID] = append(out[m.GroupID], m.InstanceID)
	}
	return out, nil
}

// AddGroupMember puts instanceID in group groupID inside tx (the
// transaction creating the instance), unless the group is gone
// (ErrNotFound) or has limit members already (ErrGroupMemberQuota; limit
// < 0: no limit). The group row is locked first, so concurrent joins count
// each other.
func AddGroupMember(tx *gorm.DB, groupID, instanceID string, limit int) error {
	if err := lockGroup(tx, groupID); err != nil {
		return err
	}
	if limit >= 0 {
		var n int64
		if err := tx.Model(&ServerGroupMember{}).Where("group_id = ?", groupID).Count(&n).Error; err != nil {
			return fmt.Errorf("count members of server group %s: %w", groupID, err)
		}
		if n >= int64(limit) {
			return fmt.Errorf("add %s to server group %s: %w", instanceID, groupID, ErrGroupMemberQuota)
		}
	}
	if err := tx.Create(&ServerGroupMember{GroupID: groupID, InstanceID: instanceID}).Error; err != nil {
		return fmt.Errorf("add %s to server group %s: %w", instanceID, groupID, err)
	}
	return nil
}

// RemoveGroupMember takes instanceID out of its group, if any (a deleted
// or never-built server).
func RemoveGroupMember(tx *gorm.DB, instanceID string) error {
	if err := tx.Where("instance_id = ?", instanceID).Delete(&ServerGroupMember{}).Error; err != nil {
		return fmt.Errorf("remove %s from its server group: %w", instanceID, err)
	}
	return nil
}

// GroupOf returns the group instanceID is in, or nil when none.
func (s *Store) GroupOf(ctx context.Context, instanceID string) (*ServerGroup, error) {
	var gs []ServerGroup
	err := s.WithContext(ctx).Where("id IN (?)",
		s.WithContext(ctx).Model(&ServerGroupMember{}).Select("group_id").Where("instance_id = ?", instanceID)).
		Limit(1).Find(&gs).Error
	if err != nil {
		return nil, fmt.Errorf("server group of %s: %w", instanceID, err)
	}
	if len(gs) == 0 {
		return nil, nil
	}
	return &gs[0], nil
}

// lockGroup bumps the group's claim generation: on PostgreSQL the UPDATE
// holds the row lock until commit. A missing group is ErrNotFound.
func lockGroup(tx *gorm.DB, groupID string) error {
	res := tx.Model(&ServerGroup{}).Where("id = ?", groupID).
		UpdateColumn("claim_generation", gorm.Expr("claim_generation + 1"))
	if res.Error != nil {
		return fmt.Errorf("lock server group %s: %w", groupID, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("server group %s: %w", groupID, ErrNotFound)
	}
	return nil
}

// MemberHosts returns, for the members of groupID other than instanceID,
// how many sit on each host: a member counts on every host it holds a
// claim on (a building server, a migration's target) and on the host it
// is recorded on. Deleted members hold neither.
func MemberHosts(tx *gorm.DB, groupID, instanceID string) (map[string]int, error) {
	members := tx.Model(&ServerGroupMember{}).Select("instance_id").
		Where("group_id = ? AND instance_id <> ?", groupID, instanceID)
	var pairs []struct{ InstanceID, Host string }
	if err := tx.Model(&Claim{}).Select("instance_id, host").Where("instance_id IN (?)", members).
		Scan(&pairs).Error; err != nil {
		return nil, fmt.Errorf("claims of server group %s: %w", groupID, err)
	}
	var placed []struct{ InstanceID, Host string }
	if err := tx.Model(&Instance{}).Select("id AS instance_id, host").
		Where("id IN (?) AND deleted_at IS NULL AND host <> ''", members).Scan(&placed).Error; err != nil {
		return nil, fmt.Errorf("hosts of server group %s: %w", groupID, err)
	}
	seen := map[[2]string]bool{}
	out := map[string]int{}
	for _, p := range append(pairs, placed...) {
		k := [2]string{p.InstanceID, p.Host}
		if !seen[k] {
			seen[k] = true
			out[p.Host]++
		}
	}
	return out, nil
}

// PerHost is how many members of g one host may hold under its
// anti-affinity policy: its max_server_per_host rule, 1 by default.
func (g *ServerGroup) PerHost() int { return max(1, g.MaxServerPerHost) }

// Allows reports whether g's hard policy lets a member land on host given
// the other members' hosts; soft policies (preferences, weighed by the
// scheduler) always allow.
func (g *ServerGroup) Allows(memberHosts map[string]int, host string) bool {
	switch g.Policy {
	case PolicyAffinity:
		for h := range memberHosts {
			if h != host {
				return false
			}
		}
		return true
	case PolicyAntiAffinity:
		return memberHosts[host] < g.PerHost()
	}
	return true
}

// GroupClaimGuard is the claim guard of instanceID in group g: under the
// host lock it locks the group row, so the members' claims are read after
// any concurrent member's claim committed, and refuses a host the hard
// policy forbids (ErrGroupPolicy).
func GroupClaimGuard(g *ServerGroup, instanceID string) ClaimGuard {
	return func(tx *gorm.DB, host string) error {
		if err := lockGroup(tx, g.ID); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil // the group was deleted meanwhile: no constraint left
			}
			return err
		}
		hosts, err := MemberHosts(tx, g.ID, instanceID)
		if err != nil {
			return err
		}
		if !g.Allows(hosts, host) {
			return fmt.Errorf("%s on %s: other members on %v: %w", g.Policy, host, sortedKeys(hosts), ErrGroupPolicy)
		}
		return nil
	}
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SchedulerHints is what Instance.SchedulerHints holds: the create
// request's os:scheduler_hints that Capsule acts on.
type SchedulerHints struct {
	Group         string   `json:"group,omitempty"`
	SameHost      []string `json:"same_host,omitempty"`
	DifferentHost []string `json:"different_host,omitempty"`
	// AnyProject says an admin gave the hints: same_host/different_host
	// may then name servers of any project. Otherwise only servers of the
	// instance's own project count (another project's server is as unknown
	// as one that does not exist: same_host finds no host, different_host
	// excludes none), so the hints reveal nothing about other tenants.
	AnyProject bool `json:"any_project,omitempty"`
}

// Hints decodes the instance's scheduler hints; none (or unreadable ones,
// which only an edited database holds) is the zero value.
func (i *Instance) Hints() SchedulerHints {
	var h SchedulerHints
	if i.SchedulerHints != "" {
		_ = json.Unmarshal([]byte(i.SchedulerHints), &h)
	}
	return h
}

// HostsOf returns the hosts the live instances ids of project ("" = of
// any project) are on, sorted, each once.
func HostsOf(tx *gorm.DB, ids []string, project string) ([]string, error) {
	var hosts []string
	if len(ids) == 0 {
		return hosts, nil
	}
	q := tx.Model(&Instance{}).Distinct("host").Where("id IN ? AND deleted_at IS NULL AND host <> ''", ids)
	if project != "" {
		q = q.Where("project_id = ?", project)
	}
	if err := q.Order("host").Pluck("host", &hosts).Error; err != nil {
		return nil, fmt.Errorf("hosts of instances %v: %w", ids, err)
	}
	return hosts, nil
}
