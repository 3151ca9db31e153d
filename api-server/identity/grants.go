package identity

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// Role grants by URL. Keystone names a grant by who holds it (a user or a
// group), where (a project, a domain, or the system; on a project or a
// domain also "inherited to projects", OS-INHERIT) and which role:
//
//	/v3/{projects|domains}/{t}/{users|groups}/{a}/roles[/{r}]
//	/v3/OS-INHERIT/{projects|domains}/{t}/{users|groups}/{a}/roles[/{r}]/inherited_to_projects
//	/v3/system/{users|groups}/{a}/roles[/{r}]
//
// Every family answers the same four calls (list the roles, check, put,
// delete one) with the same rules; they differ only in the table that
// holds the grant, so one set of handlers serves them all. Only cloud
// administrators manage grants, as Keystone's default policies say (a
// domain has no administrator of its own in Capsule).

// grantKind is one family of grant URLs.
type grantKind struct {
	system    bool // on the system (no target)
	inherited bool // OS-INHERIT: to every project below the target
	isGroup   bool // held by a group's members, not a user
	onDomain  bool // the target is a domain, not a project
}

// grantKinds are every family Keystone has.
func grantKinds() []grantKind {
	var out []grantKind
	for _, isGroup := range []bool{false, true} {
		out = append(out, grantKind{system: true, isGroup: isGroup})
		for _, inherited := range []bool{false, true} {
			for _, onDomain := range []bool{false, true} {
				out = append(out, grantKind{inherited: inherited, isGroup: isGroup, onDomain: onDomain})
			}
		}
	}
	return out
}

// routes are the family's collection URL (the roles held) and the suffix
// that follows a role id or that collection (inherited_to_projects).
func (k grantKind) routes() (roles, suffix string) {
	actor := "/users/{a}/roles"
	if k.isGroup {
		actor = "/groups/{a}/roles"
	}
	target := "/projects/{t}"
	if k.onDomain {
		target = "/domains/{t}"
	}
	switch {
	case k.system:
		return "/v3/system" + actor, ""
	case k.inherited:
		return "/v3/OS-INHERIT" + target + actor, "/inherited_to_projects"
	default:
		return "/v3" + target + actor, ""
	}
}

// actorNoun names the holder in error messages.
func (k grantKind) actorNoun() string {
	if k.isGroup {
		return "group"
	}
	return "user"
}

// grantRef is the grant (or, with roleID "", the grants) a URL names.
type grantRef struct {
	grantKind
	actorID, targetID, roleID string
}

// model is a row of the table holding the grant.
func (g grantRef) model() any {
	switch {
	case g.system:
		return &store.SystemRoleAssignment{ActorID: g.actorID, IsGroup: g.isGroup, RoleID: g.roleID}
	case g.inherited:
		return &store.InheritedRoleAssignment{ActorID: g.actorID, IsGroup: g.isGroup, TargetID: g.targetID,
			OnDomain: g.onDomain, RoleID: g.roleID}
	case g.isGroup:
		return &store.GroupRoleAssignment{GroupID: g.actorID, TargetID: g.targetID, OnDomain: g.onDomain, RoleID: g.roleID}
	case g.onDomain:
		return &store.DomainRoleAssignment{UserID: g.actorID, DomainID: g.targetID, RoleID: g.roleID}
	default:
		return &store.RoleAssignment{UserID: g.actorID, ProjectID: g.targetID, RoleID: g.roleID}
	}
}

// where selects the grant's rows in its table: every role of the actor
// on the target when roleID is "".
func (g grantRef) where(db *gorm.DB) *gorm.DB {
	switch {
	case g.system:
		db = db.Where("actor_id = ? AND is_group = ?", g.actorID, g.isGroup)
	case g.inherited:
		db = db.Where("actor_id = ? AND is_group = ? AND target_id = ? AND on_domain = ?", g.actorID, g.isGroup,
			g.targetID, g.onDomain)
	case g.isGroup:
		db = db.Where("group_id = ? AND target_id = ? AND on_domain = ?", g.actorID, g.targetID, g.onDomain)
	case g.onDomain:
		db = db.Where("user_id = ? AND domain_id = ?", g.actorID, g.targetID)
	default:
		db = db.Where("user_id = ? AND project_id = ?", g.actorID, g.targetID)
	}
	if g.roleID != "" {
		db = db.Where("role_id = ?", g.roleID)
	}
	return db
}

// grantOf is the grant r names once the caller is an administrator and
// the target, the actor and (withRole) the role exist; otherwise it has
// answered (403, or 404 naming the missing one).
func (s *Service) grantOf(w http.ResponseWriter, r *http.Request, k grantKind, withRole bool) (grantRef, bool) {
	g := grantRef{grantKind: k, actorID: r.PathValue("a"), targetID: r.PathValue("t")}
	if withRole {
		g.roleID = r.PathValue("r")
	}
	if _, ok := s.requireAdmin(w, r); !ok {
		return g, false
	}
	ctx := r.Context()
	switch {
	case k.system:
	case k.onDomain:
		if _, err := s.loadDomain(ctx, g.targetID); err != nil {
			s.storeError(w, r, err, "Could not find domain: "+g.targetID+".")
			return g, false
		}
	default:
		if _, err := s.loadProject(ctx, g.targetID); err != nil {
			s.storeError(w, r, err, "Could not find project: "+g.targetID+".")
			return g, false
		}
	}
	if k.isGroup {
		if _, err := s.loadGroup(ctx, g.actorID); err != nil {
			s.failErr(w, r, err)
			return g, false
		}
	} else if _, err := s.loadUser(ctx, g.actorID); err != nil {
		s.storeError(w, r, err, "Could not find user: "+g.actorID+".")
		return g, false
	}
	if withRole {
		if _, err := s.loadRole(ctx, g.roleID); err != nil {
			s.storeError(w, r, err, "Could not find role: "+g.roleID+".")
			return g, false
		}
	}
	return g, true
}

// listGrants answers the roles the actor holds there, by name.
func (s *Service) listGrants(w http.ResponseWriter, r *http.Request, k grantKind) {
	g, ok := s.grantOf(w, r, k, false)
	if !ok {
		return
	}
	db := s.st.WithContext(r.Context())
	var roles []store.Role
	if err := db.Where("id IN (?)", g.where(db.Model(g.model())).Select("role_id")).Order("name").Find(&roles).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list the roles of %s %s: %w", k.actorNoun(), g.actorID, err))
		return
	}
	s.rolesResponse(w, r, roles)
}

// checkGrant answers 204 when the grant exists, 404 when not (GET and
// HEAD).
func (s *Service) checkGrant(w http.ResponseWriter, r *http.Request, k grantKind) {
	g, ok := s.grantOf(w, r, k, true)
	if !ok {
		return
	}
	var n int64
	if err := g.where(s.st.WithContext(r.Context()).Model(g.model())).Count(&n).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("check grant of role %s to %s %s: %w", g.roleID, k.actorNoun(), g.actorID, err))
		return
	}
	if n == 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find role assignment."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// putGrant grants the role; granting it again is no error.
func (s *Service) putGrant(w http.ResponseWriter, r *http.Request, k grantKind) {
	g, ok := s.grantOf(w, r, k, true)
	if !ok {
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := g.where(tx.Model(g.model())).Count(&n).Error; err != nil || n > 0 {
			return err
		}
		return tx.Create(g.model()).Error
	})
	// A concurrent put of the same grant is the same outcome.
	if err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		s.internalError(w, r, fmt.Errorf("grant role %s to %s %s: %w", g.roleID, k.actorNoun(), g.actorID, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteGrant revokes the role; 404 when it was not granted.
func (s *Service) deleteGrant(w http.ResponseWriter, r *http.Request, k grantKind) {
	g, ok := s.grantOf(w, r, k, true)
	if !ok {
		return
	}
	res := g.where(s.st.WithContext(r.Context())).Delete(g.model())
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("revoke role %s from %s %s: %w", g.roleID, k.actorNoun(), g.actorID, res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find role assignment."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleGrants registers every family's routes.
func (s *Service) handleGrants(h func(string, http.HandlerFunc)) {
	for _, k := range grantKinds() {
		roles, sfx := k.routes()
		h("GET "+roles+sfx, func(w http.ResponseWriter, r *http.Request) { s.listGrants(w, r, k) })
		h("GET "+roles+"/{r}"+sfx, func(w http.ResponseWriter, r *http.Request) { s.checkGrant(w, r, k) }) // also HEAD
		h("PUT "+roles+"/{r}"+sfx, func(w http.ResponseWriter, r *http.Request) { s.putGrant(w, r, k) })
		h("DELETE "+roles+"/{r}"+sfx, func(w http.ResponseWriter, r *http.Request) { s.deleteGrant(w, r, k) })
	}
}
