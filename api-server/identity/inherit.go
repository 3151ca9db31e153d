package identity

import (
	"context"
	"errors"
	"fmt"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// The roles a user holds beyond its direct grants: OS-INHERIT grants (a
// role on every project below a domain or a project), system grants (the
// role in a system-scoped token), grants to its groups, and the role
// inference rules that add implied roles wherever a prior role is held.
// The grant routes themselves are in grants.go.

// ---- the roles a user holds ----

// userGroupIDs are the groups userID is a member of.
func userGroupIDs(db *gorm.DB, userID string) ([]string, error) {
	var ids []string
	err := db.Model(&store.GroupMember{}).Where("user_id = ?", userID).Pluck("group_id", &ids).Error
	if err != nil {
		return nil, fmt.Errorf("load groups of user %s: %w", userID, err)
	}
	return ids, nil
}

// actorsWhere selects rows of an actor table granted to userID itself or
// to one of its groups.
func actorsWhere(db *gorm.DB, userID string, groups []string) *gorm.DB {
	if len(groups) == 0 {
		return db.Where("actor_id = ? AND is_group = ?", userID, false)
	}
	return db.Where(db.Where("actor_id = ? AND is_group = ?", userID, false).
		Or("actor_id IN ? AND is_group = ?", groups, true))
}

// projectAncestry returns a project's domain and the ids of the projects
// above it (its parent first).
func projectAncestry(db *gorm.DB, projectID string) (domainID string, above []string, err error) {
	var p store.Project
	if err := db.Select("id", "domain_id", "parent_id").Where("id = ?", projectID).Take(&p).Error; err != nil {
		return "", nil, fmt.Errorf("load project %s: %w", projectID, err)
	}
	domainID = p.DomainID
	// Depth is bounded by Keystone's max_project_tree_depth (and a cycle
	// cannot be made through the API); the bound only stops a loop.
	for id := p.ParentID; id != "" && len(above) < 100; {
		above = append(above, id)
		var parent store.Project
		if err := db.Select("id", "parent_id").Where("id = ?", id).Take(&parent).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				break
			}
			return "", nil, fmt.Errorf("load project %s: %w", id, err)
		}
		id = parent.ParentID
	}
	return domainID, above, nil
}

// inheritedRoleIDs are the roles userID (or its groups) inherits on
// projectID from grants on its domain or on the projects above it.
func inheritedRoleIDs(db *gorm.DB, userID, projectID string, groups []string) ([]string, error) {
	var rows []store.InheritedRoleAssignment
	if err := actorsWhere(db.Model(&store.InheritedRoleAssignment{}), userID, groups).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load inherited grants: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	domainID, above, err := projectAncestry(db, projectID)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ra := range rows {
		if (ra.OnDomain && ra.TargetID == domainID) || (!ra.OnDomain && containsString(above, ra.TargetID)) {
			ids = append(ids, ra.RoleID)
		}
	}
	return ids, nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// impliedClosure adds to ids every role they imply, transitively.
func impliedClosure(db *gorm.DB, ids []string) ([]string, error) {
	var rules []store.ImpliedRole
	if err := db.Find(&rules).Error; err != nil {
		return nil, fmt.Errorf("load implied roles: %w", err)
	}
	if len(rules) == 0 {
		return ids, nil
	}
	implies := map[string][]string{}
	for _, ru := range rules {
		implies[ru.PriorRoleID] = append(implies[ru.PriorRoleID], ru.ImpliedRoleID)
	}
	seen := map[string]bool{}
	out := []string{}
	for i := 0; i < len(ids); i++ {
		if seen[ids[i]] {
			continue
		}
		seen[ids[i]] = true
		out = append(out, ids[i])
		ids = append(ids, implies[ids[i]]...)
	}
	return out, nil
}

// tokenRoles loads the global roles of ids and of the roles they imply,
// by name: what a token carries (a domain-specific role never appears in
// a token, but the global roles it implies do, as in Keystone).
func tokenRoles(db *gorm.DB, ids []string) ([]store.Role, error) {
	ids, err := impliedClosure(db, ids)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var roles []store.Role
	if err := db.Where("id IN ? AND domain_id = ?", ids, "").Order("name").Find(&roles).Error; err != nil {
		return nil, fmt.Errorf("load roles: %w", err)
	}
	return roles, nil
}

// userRoles returns the roles userID holds on projectID, by name: granted
// to the user or one of its groups on the project, inherited from its
// domain or a project above it, and the roles those imply.
func userRoles(ctx context.Context, st *store.Store, userID, projectID string) ([]store.Role, error) {
	db := st.WithContext(ctx)
	var ids []string
	if err := db.Model(&store.RoleAssignment{}).Where("user_id = ? AND project_id = ?", userID, projectID).
		Pluck("role_id", &ids).Error; err != nil {
		return nil, fmt.Errorf("load grants: %w", err)
	}
	var viaGroups []string
	if err := groupRoleIDs(db, userID, projectID, false).Pluck("group_role_assignments.role_id", &viaGroups).Error; err != nil {
		return nil, fmt.Errorf("load group grants: %w", err)
	}
	groups, err := userGroupIDs(db, userID)
	if err != nil {
		return nil, err
	}
	inherited, err := inheritedRoleIDs(db, userID, projectID, groups)
	if err != nil {
		return nil, err
	}
	return tokenRoles(db, append(append(ids, viaGroups...), inherited...))
}

// userDomainRoles returns the roles userID holds on domainID (itself or
// through its groups, and the roles those imply), by name.
func userDomainRoles(ctx context.Context, st *store.Store, userID, domainID string) ([]store.Role, error) {
	db := st.WithContext(ctx)
	var ids, viaGroups []string
	if err := db.Model(&store.DomainRoleAssignment{}).Where("user_id = ? AND domain_id = ?", userID, domainID).
		Pluck("role_id", &ids).Error; err != nil {
		return nil, fmt.Errorf("load domain grants: %w", err)
	}
	if err := groupRoleIDs(db, userID, domainID, true).Pluck("group_role_assignments.role_id", &viaGroups).Error; err != nil {
		return nil, fmt.Errorf("load group domain grants: %w", err)
	}
	return tokenRoles(db, append(ids, viaGroups...))
}

// userSystemRoles returns the roles userID holds on the system (itself
// or through its groups, and the roles those imply), by name.
func userSystemRoles(ctx context.Context, st *store.Store, userID string) ([]store.Role, error) {
	db := st.WithContext(ctx)
	groups, err := userGroupIDs(db, userID)
	if err != nil {
		return nil, err
	}
	var ids []string
	if err := actorsWhere(db.Model(&store.SystemRoleAssignment{}), userID, groups).Pluck("role_id", &ids).Error; err != nil {
		return nil, fmt.Errorf("load system grants: %w", err)
	}
	return tokenRoles(db, ids)
}

// cloudAdmin reports whether the identity API takes c as a cloud
// administrator: the admin role in the admin project, or on the system.
func cloudAdmin(c *auth.Credentials) bool {
	return c != nil && (c.IsAdmin() || c.IsSystemAdmin())
}

// withInheritedProjects adds to ps (sorted by name) the projects userID
// holds a role on only through an inherited grant.
func (s *Service) withInheritedProjects(ctx context.Context, userID string, ps []store.Project) ([]store.Project, error) {
	db := s.st.WithContext(ctx)
	groups, err := userGroupIDs(db, userID)
	if err != nil {
		return nil, err
	}
	var rows []store.InheritedRoleAssignment
	if err := actorsWhere(db.Model(&store.InheritedRoleAssignment{}), userID, groups).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load inherited grants: %w", err)
	}
	if len(rows) == 0 {
		return ps, nil
	}
	have := map[string]bool{}
	for _, p := range ps {
		have[p.ID] = true
	}
	var all []store.Project
	if err := db.Order("name").Find(&all).Error; err != nil {
		return nil, fmt.Errorf("load projects: %w", err)
	}
	reach := map[string]bool{}
	for _, ra := range rows {
		if ra.OnDomain {
			for _, p := range all {
				if p.DomainID == ra.TargetID {
					reach[p.ID] = true
				}
			}
			continue
		}
		ids, err := s.subtreeIDs(ctx, ra.TargetID)
		if err != nil {
			return nil, err
		}
		for _, id := range ids[1:] {
			reach[id] = true
		}
	}
	out := ps[:0:0]
	for _, p := range all {
		if have[p.ID] || reach[p.ID] {
			out = append(out, p)
		}
	}
	return out, nil
}
