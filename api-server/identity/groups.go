package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// Groups: users of a domain that role grants name together. A member's
// tokens carry the roles granted to its groups; only admins manage them.

type groupInput struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	DomainID    *string `json:"domain_id"`
	extra       map[string]any
}

// groupAttributes are the group body's own keys; any other is extra.
var groupAttributes = []string{"id", "name", "description", "domain_id", "links"}

func (s *Service) groupView(r *http.Request, g *store.Group) map[string]any {
	v := map[string]any{}
	if g.Extra != "" {
		_ = json.Unmarshal([]byte(g.Extra), &v)
	}
	for k, x := range map[string]any{"id": g.ID, "name": g.Name, "description": g.Description,
		"domain_id": g.DomainID, "links": map[string]string{"self": s.selfURL(r, "groups", g.ID)}} {
		v[k] = x
	}
	return v
}

func (s *Service) groupsResponse(w http.ResponseWriter, r *http.Request, gs []store.Group) {
	out := make([]map[string]any, 0, len(gs))
	for i := range gs {
		out = append(out, s.groupView(r, &gs[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"groups": out, "links": s.collectionLinks(r)})
}

func (s *Service) loadGroup(ctx context.Context, id string) (store.Group, error) {
	var g store.Group
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&g).Error
	return g, notFoundAs(store.NotFound(err, "group "+id), "Could not find group: "+id+".")
}

// readGroup decodes a group body, collecting the extra attributes.
func (s *Service) readGroup(w http.ResponseWriter, r *http.Request, in *groupInput) bool {
	var raw jsonRaw
	if !s.readEntity(w, r, "group", &raw) {
		return false
	}
	var all map[string]any
	if err := raw.decode(in); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for group: "+err.Error()))
		return false
	}
	if err := raw.decode(&all); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for group: "+err.Error()))
		return false
	}
	in.extra = map[string]any{}
	for k, v := range all {
		if !slices.Contains(groupAttributes, k) {
			in.extra[k] = v
		}
	}
	if in.Name != nil && (strings.TrimSpace(*in.Name) == "" || len(*in.Name) > maxName) {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'name': a non-empty name of at most 255 characters is required."))
		return false
	}
	return true
}

func groupConflict(name string) error {
	return errdefs.Conflict("Conflict occurred attempting to store group - Duplicate entry found with name " + name + ".")
}

// saveGroup inserts or updates g, keeping names unique per domain.
func (s *Service) saveGroup(ctx context.Context, g *store.Group, create bool) error {
	return s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&store.Group{}).Where("name = ? AND domain_id = ? AND id <> ?", g.Name, g.DomainID, g.ID).
			Count(&n).Error; err != nil {
			return fmt.Errorf("check group name: %w", err)
		}
		if n > 0 {
			return groupConflict(g.Name)
		}
		var err error
		if create {
			err = tx.Create(g).Error
		} else {
			err = tx.Select("name", "description", "extra").Save(g).Error
		}
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			return groupConflict(g.Name)
		}
		if err != nil {
			return fmt.Errorf("save group %s: %w", g.ID, err)
		}
		return nil
	})
}

func (s *Service) listGroups(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var gs []store.Group
	if err := s.st.WithContext(r.Context()).Order("name").Find(&gs).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list groups: %w", err))
		return
	}
	q := r.URL.Query()
	if d := q.Get("domain_id"); strings.EqualFold(d, DefaultDomainName) {
		q.Set("domain_id", DefaultDomainID)
	}
	gs = slices.DeleteFunc(gs, func(g store.Group) bool {
		return !nameMatches(q, g.Name) || (q.Has("domain_id") && q.Get("domain_id") != g.DomainID)
	})
	s.groupsResponse(w, r, gs)
}

func (s *Service) createGroup(w http.ResponseWriter, r *http.Request) {
	c, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	var in groupInput
	if !s.readGroup(w, r, &in) {
		return
	}
	if in.Name == nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'name': a non-empty name of at most 255 characters is required."))
		return
	}
	domain := c.DomainID
	if in.DomainID != nil && *in.DomainID != "" {
		domain = *in.DomainID
	}
	if domain == "" {
		domain = DefaultDomainID
	}
	d, err := s.findDomain(r.Context(), domain, "")
	if err != nil {
		s.failErr(w, r, notFoundAs(err, "Could not find domain: "+domain+"."))
		return
	}
	g := store.Group{ID: newID(), Name: *in.Name, DomainID: d.ID, Extra: mergeExtra("", in.extra), CreatedAt: s.now()}
	if in.Description != nil {
		g.Description = *in.Description
	}
	if err := s.saveGroup(r.Context(), &g, true); err != nil {
		s.failErr(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"group": s.groupView(r, &g)})
}

func (s *Service) getGroup(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	g, err := s.loadGroup(r.Context(), r.PathValue("id"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"group": s.groupView(r, &g)})
}

func (s *Service) updateGroup(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var in groupInput
	if !s.readGroup(w, r, &in) {
		return
	}
	g, err := s.loadGroup(r.Context(), r.PathValue("id"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if in.DomainID != nil && *in.DomainID != g.DomainID {
		s.failErr(w, r, errdefs.InvalidArgument("Cannot change the domain of a group."))
		return
	}
	if in.Name != nil {
		g.Name = *in.Name
	}
	if in.Description != nil {
		g.Description = *in.Description
	}
	g.Extra = mergeExtra(g.Extra, in.extra)
	if err := s.saveGroup(r.Context(), &g, false); err != nil {
		s.failErr(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"group": s.groupView(r, &g)})
}

func (s *Service) deleteGroup(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error { return deleteGroupRows(tx, id) })
	if err != nil {
		s.failErr(w, r, notFoundAs(err, "Could not find group: "+id+"."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteGroupRows deletes a group, its memberships and its grants.
func deleteGroupRows(tx *gorm.DB, id string) error {
	res := tx.Where("id = ?", id).Delete(&store.Group{})
	if res.Error != nil {
		return fmt.Errorf("delete group %s: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("group %s: %w", id, store.ErrNotFound)
	}
	for _, m := range []any{&store.GroupMember{}, &store.GroupRoleAssignment{}} {
		if err := tx.Where("group_id = ?", id).Delete(m).Error; err != nil {
			return fmt.Errorf("delete rows of group %s: %w", id, err)
		}
	}
	return deleteActorRows(tx, id, true)
}

// ---- membership ----

// memberTargets loads the group and (when present) the user of a
// membership URL, answering 404 naming the missing one.
func (s *Service) memberTargets(w http.ResponseWriter, r *http.Request, withUser bool) bool {
	if _, ok := s.requireAdmin(w, r); !ok {
		return false
	}
	if _, err := s.loadGroup(r.Context(), r.PathValue("g")); err != nil {
		s.failErr(w, r, err)
		return false
	}
	if withUser {
		if _, err := s.loadUser(r.Context(), r.PathValue("u")); err != nil {
			s.storeError(w, r, err, "Could not find user: "+r.PathValue("u")+".")
			return false
		}
	}
	return true
}

func (s *Service) listGroupUsers(w http.ResponseWriter, r *http.Request) {
	if !s.memberTargets(w, r, false) {
		return
	}
	db := s.st.WithContext(r.Context())
	var us []store.User
	if err := db.Where("id IN (?)", db.Model(&store.GroupMember{}).Select("user_id").Where("group_id = ?", r.PathValue("g"))).
		Order("name").Find(&us).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list users of group: %w", err))
		return
	}
	q := r.URL.Query()
	us = slices.DeleteFunc(us, func(u store.User) bool { return !nameMatches(q, u.Name) })
	out := make([]map[string]any, 0, len(us))
	for i := range us {
		out = append(out, s.userView(r, &us[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"users": out, "links": s.collectionLinks(r)})
}

func (s *Service) checkGroupMember(w http.ResponseWriter, r *http.Request) {
	if !s.memberTargets(w, r, true) {
		return
	}
	var n int64
	if err := s.st.WithContext(r.Context()).Model(&store.GroupMember{}).
		Where("group_id = ? AND user_id = ?", r.PathValue("g"), r.PathValue("u")).Count(&n).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("check group member: %w", err))
		return
	}
	if n == 0 {
		s.failErr(w, r, errdefs.NotFound("User '"+r.PathValue("u")+"' not found in group '"+r.PathValue("g")+"'."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) addGroupMember(w http.ResponseWriter, r *http.Request) {
	if !s.memberTargets(w, r, true) {
		return
	}
	m := store.GroupMember{GroupID: r.PathValue("g"), UserID: r.PathValue("u")}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&store.GroupMember{}).Where(&m).Count(&n).Error; err != nil || n > 0 {
			return err
		}
		return tx.Create(&m).Error
	})
	if err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		s.internalError(w, r, fmt.Errorf("add user %s to group %s: %w", m.UserID, m.GroupID, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) removeGroupMember(w http.ResponseWriter, r *http.Request) {
	if !s.memberTargets(w, r, true) {
		return
	}
	res := s.st.WithContext(r.Context()).Where("group_id = ? AND user_id = ?", r.PathValue("g"), r.PathValue("u")).
		Delete(&store.GroupMember{})
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("remove group member: %w", res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.failErr(w, r, errdefs.NotFound("User '"+r.PathValue("u")+"' not found in group '"+r.PathValue("g")+"'."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// userGroups lists the groups a user is in: for admins and the user.
func (s *Service) userGroups(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if c.UserID != id && !cloudAdmin(c) {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	if _, err := s.loadUser(r.Context(), id); err != nil {
		s.storeError(w, r, err, "Could not find user: "+id+".")
		return
	}
	db := s.st.WithContext(r.Context())
	var gs []store.Group
	if err := db.Where("id IN (?)", db.Model(&store.GroupMember{}).Select("group_id").Where("user_id = ?", id)).
		Order("name").Find(&gs).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list groups of user %s: %w", id, err))
		return
	}
	q := r.URL.Query()
	gs = slices.DeleteFunc(gs, func(g store.Group) bool { return !nameMatches(q, g.Name) })
	s.groupsResponse(w, r, gs)
}

// groupRoleIDs is the subquery of role ids userID holds on targetID
// through its groups.
func groupRoleIDs(db *gorm.DB, userID, targetID string, onDomain bool) *gorm.DB {
	return db.Model(&store.GroupRoleAssignment{}).Select("group_role_assignments.role_id").
		Joins("JOIN group_members gm ON gm.group_id = group_role_assignments.group_id").
		Where("gm.user_id = ? AND group_role_assignments.target_id = ? AND group_role_assignments.on_domain = ?",
			userID, targetID, onDomain)
}

// groupTargets is the subquery of the project (or domain) ids userID has
// a role on through its groups.
func groupTargets(db *gorm.DB, userID string, onDomain bool) *gorm.DB {
	return db.Model(&store.GroupRoleAssignment{}).Select("group_role_assignments.target_id").
		Joins("JOIN group_members gm ON gm.group_id = group_role_assignments.group_id").
		Where("gm.user_id = ? AND group_role_assignments.on_domain = ?", userID, onDomain)
}
