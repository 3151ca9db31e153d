package identity

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// assignment is one row of GET /v3/role_assignments: a user's or a
// group's role on a project, a domain, the projects below one
// (inherited) or the system.
type assignment struct {
	userID, groupID, roleID, projectID, domainID string
	system                                       bool
	inherited                                    bool   // OS-INHERIT: granted to the projects below the target
	link                                         string // the grant's URL below /v3 (an effective row: the grant it comes from)
	viaGroup                                     string // effective: the group the user holds it through
	prior                                        string // effective: the role that implies it
}

// allAssignments loads every grant of every kind, as stored.
func (s *Service) allAssignments(ctx context.Context) ([]assignment, error) {
	db := s.st.WithContext(ctx)
	var (
		ras []store.RoleAssignment
		das []store.DomainRoleAssignment
		gas []store.GroupRoleAssignment
		ias []store.InheritedRoleAssignment
		sas []store.SystemRoleAssignment
	)
	for _, q := range []struct {
		what, order string
		into        any
	}{{"project", "project_id, user_id, role_id", &ras}, {"domain", "domain_id, user_id, role_id", &das},
		{"group", "on_domain, target_id, group_id, role_id", &gas}, {"inherited", "on_domain, target_id, is_group, actor_id, role_id", &ias},
		{"system", "is_group, actor_id, role_id", &sas}} {
		if err := db.Order(q.order).Find(q.into).Error; err != nil {
			return nil, fmt.Errorf("list %s role assignments: %w", q.what, err)
		}
	}
	var out []assignment
	for _, x := range ras {
		out = append(out, assignment{userID: x.UserID, roleID: x.RoleID, projectID: x.ProjectID,
			link: "/projects/" + x.ProjectID + "/users/" + x.UserID + "/roles/" + x.RoleID})
	}
	for _, x := range das {
		out = append(out, assignment{userID: x.UserID, roleID: x.RoleID, domainID: x.DomainID,
			link: "/domains/" + x.DomainID + "/users/" + x.UserID + "/roles/" + x.RoleID})
	}
	for _, x := range gas {
		a := assignment{groupID: x.GroupID, roleID: x.RoleID}
		if x.OnDomain {
			a.domainID, a.link = x.TargetID, "/domains/"+x.TargetID+"/groups/"+x.GroupID+"/roles/"+x.RoleID
		} else {
			a.projectID, a.link = x.TargetID, "/projects/"+x.TargetID+"/groups/"+x.GroupID+"/roles/"+x.RoleID
		}
		out = append(out, a)
	}
	actor := func(id string, isGroup bool) (a assignment, path string) {
		if isGroup {
			return assignment{groupID: id}, "/groups/" + id
		}
		return assignment{userID: id}, "/users/" + id
	}
	for _, x := range ias {
		a, path := actor(x.ActorID, x.IsGroup)
		a.roleID, a.inherited = x.RoleID, true
		if x.OnDomain {
			a.domainID, a.link = x.TargetID, "/OS-INHERIT/domains/"+x.TargetID+path+"/roles/"+x.RoleID+"/inherited_to_projects"
		} else {
			a.projectID, a.link = x.TargetID, "/OS-INHERIT/projects/"+x.TargetID+path+"/roles/"+x.RoleID+"/inherited_to_projects"
		}
		out = append(out, a)
	}
	for _, x := range sas {
		a, path := actor(x.ActorID, x.IsGroup)
		a.roleID, a.system, a.link = x.RoleID, true, "/system"+path+"/roles/"+x.RoleID
		out = append(out, a)
	}
	return out, nil
}

// effectiveAssignments turns grants into what each user holds: group
// grants become one row per member, inherited grants one row per project
// below their target, and every row adds the roles its role implies.
func (s *Service) effectiveAssignments(ctx context.Context, in []assignment) ([]assignment, error) {
	db := s.st.WithContext(ctx)
	var ms []store.GroupMember
	if err := db.Order("user_id").Find(&ms).Error; err != nil {
		return nil, fmt.Errorf("list group members: %w", err)
	}
	members := map[string][]string{}
	for _, m := range ms {
		members[m.GroupID] = append(members[m.GroupID], m.UserID)
	}
	var users []assignment
	for _, a := range in {
		if a.groupID == "" {
			users = append(users, a)
			continue
		}
		for _, u := range members[a.groupID] {
			b := a
			b.userID, b.groupID, b.viaGroup = u, "", a.groupID
			users = append(users, b)
		}
	}
	var projects []store.Project
	if slices.ContainsFunc(users, func(a assignment) bool { return a.inherited }) {
		if err := db.Select("id", "parent_id", "domain_id").Order("name").Find(&projects).Error; err != nil {
			return nil, fmt.Errorf("load projects: %w", err)
		}
	}
	var targets []assignment
	for _, a := range users {
		if !a.inherited {
			targets = append(targets, a)
			continue
		}
		below := map[string]bool{}
		if a.domainID != "" {
			for _, p := range projects {
				if p.DomainID == a.domainID {
					below[p.ID] = true
				}
			}
		} else {
			ids, err := s.subtreeIDs(ctx, a.projectID)
			if err != nil {
				return nil, err
			}
			for _, id := range ids[1:] {
				below[id] = true
			}
		}
		for _, p := range projects {
			if below[p.ID] {
				b := a
				b.projectID, b.domainID, b.inherited = p.ID, "", false
				targets = append(targets, b)
			}
		}
	}
	var rules []store.ImpliedRole
	if err := db.Order("prior_role_id, implied_role_id").Find(&rules).Error; err != nil {
		return nil, fmt.Errorf("list implied roles: %w", err)
	}
	if len(rules) == 0 {
		return targets, nil
	}
	var out []assignment
	for _, a := range targets {
		// Each implied role once per row, naming the role that implies it.
		queue, seen := []assignment{a}, map[string]bool{a.roleID: true}
		for i := 0; i < len(queue); i++ {
			for _, ru := range rules {
				if ru.PriorRoleID == queue[i].roleID && !seen[ru.ImpliedRoleID] {
					seen[ru.ImpliedRoleID] = true
					b := queue[i]
					b.roleID, b.prior = ru.ImpliedRoleID, ru.PriorRoleID
					queue = append(queue, b)
				}
			}
		}
		out = append(out, queue...)
	}
	return out, nil
}

// assignmentFilter is the query of GET /v3/role_assignments.
type assignmentFilter struct {
	q         url.Values
	projects  []string // scope.project.id, widened by include_subtree
	inherited bool     // scope.OS-INHERIT:inherited_to=projects
}

func (f *assignmentFilter) match(a *assignment) bool {
	has := func(k string) bool { return f.q.Get(k) != "" }
	get := f.q.Get
	switch {
	case has("user.id") && a.userID != get("user.id"):
	case has("group.id") && a.groupID != get("group.id") && a.viaGroup != get("group.id"):
	case has("role.id") && a.roleID != get("role.id"):
	case has("scope.system") && !a.system:
	case has("scope.domain.id") && (a.domainID != get("scope.domain.id") || a.system):
	case has("scope.project.id") && !slices.Contains(f.projects, a.projectID):
	case f.inherited && !a.inherited:
	default:
		return true
	}
	return false
}

// listAssignments is GET /v3/role_assignments. Admins see all; others
// only their own (user.id must be theirs). Grants are listed as they
// are, or with effective as each user holds them (group, inherited and
// implied roles expanded); include_subtree widens a scope.project.id
// filter to the project's descendants.
func (s *Service) listAssignments(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	q := r.URL.Query()
	if !cloudAdmin(c) && q.Get("user.id") != c.UserID {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	scopes := 0
	for _, k := range []string{"scope.project.id", "scope.domain.id", "scope.system"} {
		if q.Has(k) {
			scopes++
		}
	}
	if scopes > 1 {
		s.failErr(w, r, errdefs.InvalidArgument("Specify one of a domain, a project or the system, not more."))
		return
	}
	ctx := r.Context()
	f := assignmentFilter{q: q, inherited: q.Get("scope.OS-INHERIT:inherited_to") == "projects"}
	if v := q.Get("scope.project.id"); v != "" {
		f.projects = []string{v}
		if sub, _ := boolFilter(r, "include_subtree"); sub {
			var err error
			if f.projects, err = s.subtreeIDs(ctx, v); err != nil {
				s.internalError(w, r, err)
				return
			}
		}
	}
	all, err := s.allAssignments(ctx)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if effective, _ := boolFilter(r, "effective"); effective {
		if all, err = s.effectiveAssignments(ctx, all); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	all = slices.DeleteFunc(all, func(a assignment) bool { return !f.match(&a) })
	names, _ := boolFilter(r, "include_names")
	var n *entityNameIndex
	if names {
		if n, err = s.entityNames(ctx); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	views := make([]map[string]any, 0, len(all))
	base := httpapi.BaseURL(r) + "/v3"
	for _, a := range all {
		views = append(views, assignmentView(base, &a, n))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"role_assignments": views, "links": s.collectionLinks(r)})
}

// assignmentView is one role_assignments entry; n adds names (include_names).
func assignmentView(base string, a *assignment, n *entityNameIndex) map[string]any {
	role := map[string]any{"id": a.roleID}
	actor, actorKind := map[string]any{"id": a.userID}, "user"
	if a.groupID != "" {
		actor, actorKind = map[string]any{"id": a.groupID}, "group"
	}
	scope := map[string]any{}
	switch {
	case a.system:
		scope["system"] = map[string]any{"all": true}
	case a.projectID != "":
		proj := map[string]any{"id": a.projectID}
		if n != nil {
			proj["name"], proj["domain"] = n.projects[a.projectID].Name, n.domainOf(n.projects[a.projectID].DomainID)
		}
		scope["project"] = proj
	default:
		dom := map[string]any{"id": a.domainID}
		if n != nil {
			dom["name"] = n.domains[a.domainID]
		}
		scope["domain"] = dom
	}
	if a.inherited {
		scope["OS-INHERIT:inherited_to"] = "projects"
	}
	if n != nil {
		role["name"] = n.roles[a.roleID]
		if a.groupID != "" {
			actor["name"], actor["domain"] = n.groups[a.groupID].Name, n.domainOf(n.groups[a.groupID].DomainID)
		} else {
			actor["name"], actor["domain"] = n.users[a.userID].Name, n.domainOf(n.users[a.userID].DomainID)
		}
	}
	links := map[string]string{"assignment": base + a.link}
	if a.viaGroup != "" {
		// An effective assignment names the group grant it comes from.
		links["membership"] = base + "/groups/" + a.viaGroup + "/users/" + a.userID
	}
	if a.prior != "" {
		links["prior_role"] = base + "/roles/" + a.prior
	}
	return map[string]any{"role": role, actorKind: actor, "scope": scope, "links": links}
}
