package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// Name limits Keystone enforces (Tempest has negative tests for them).
const (
	maxProjectName = 64
	maxName        = 255
)

const forbiddenMsg = "You are not authorized to perform the requested action."

// requireAdmin answers 403 unless the caller has the admin role.
func (s *Service) requireAdmin(w http.ResponseWriter, r *http.Request) (*auth.Credentials, bool) {
	c := auth.FromContext(r.Context())
	if c == nil || !cloudAdmin(c) {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return c, false
	}
	return c, true
}

func (s *Service) selfURL(r *http.Request, collection, id string) string {
	return httpapi.BaseURL(r) + "/v3/" + collection + "/" + id
}

func (s *Service) collectionLinks(r *http.Request) map[string]any {
	return map[string]any{"self": httpapi.BaseURL(r) + r.URL.RequestURI(), "previous": nil, "next": nil}
}

// readEntity decodes {"<key>": {...}} into v, answering 400 on failure.
func (s *Service) readEntity(w http.ResponseWriter, r *http.Request, key string, v any) bool {
	var body map[string]jsonRaw
	if err := httpapi.ReadJSON(r, &body); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: "+err.Error()))
		return false
	}
	raw, ok := body[key]
	if !ok {
		s.failErr(w, r, errdefs.InvalidArgumentf("Invalid input: '%s' is a required property.", key))
		return false
	}
	if err := raw.decode(v); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for "+key+": "+err.Error()))
		return false
	}
	return true
}

// boolFilter parses a Keystone boolean query value; ok false when absent.
func boolFilter(r *http.Request, key string) (val, ok bool) {
	if !r.URL.Query().Has(key) {
		return false, false
	}
	v := strings.ToLower(r.URL.Query().Get(key))
	return v == "" || v == "1" || v == "true" || v == "yes" || v == "on", true
}

// ---- projects ----

func (s *Service) projectView(r *http.Request, p *store.Project) map[string]any {
	parent := p.ParentID
	if parent == "" {
		parent = p.DomainID
	}
	return map[string]any{"id": p.ID, "name": p.Name, "domain_id": p.DomainID, "description": p.Description,
		"enabled": p.Enabled, "parent_id": parent, "is_domain": false, "tags": decodeTags(p.Tags),
		"options": map[string]any{}, "links": map[string]string{"self": s.selfURL(r, "projects", p.ID)}}
}

func (s *Service) projectsResponse(w http.ResponseWriter, r *http.Request, ps []store.Project) {
	out := make([]map[string]any, 0, len(ps))
	for i := range ps {
		out = append(out, s.projectView(r, &ps[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"projects": out, "links": s.collectionLinks(r)})
}

// projectMatches applies the project list filters Keystone honours.
func projectMatches(q url.Values, p *store.Project) bool {
	parent := p.ParentID
	if parent == "" {
		parent = p.DomainID
	}
	enabled := strings.ToLower(q.Get("enabled"))
	return nameMatches(q, p.Name) && tagsMatch(q, decodeTags(p.Tags)) &&
		(!q.Has("domain_id") || q.Get("domain_id") == p.DomainID) &&
		(!q.Has("parent_id") || q.Get("parent_id") == parent) &&
		(!q.Has("enabled") || p.Enabled == (enabled == "" || enabled == "1" || enabled == "true" || enabled == "yes" || enabled == "on"))
}

func (s *Service) listProjects(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	q := r.URL.Query()
	if isDomain, _ := boolFilter(r, "is_domain"); isDomain {
		// Domains are the projects with is_domain true.
		var ds []store.Domain
		if err := s.st.WithContext(r.Context()).Order("name").Find(&ds).Error; err != nil {
			s.internalError(w, r, fmt.Errorf("list domains: %w", err))
			return
		}
		out := []map[string]any{}
		for i := range ds {
			if nameMatches(q, ds[i].Name) && tagsMatch(q, decodeTags(ds[i].Tags)) {
				out = append(out, s.domainAsProject(r, &ds[i]))
			}
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"projects": out, "links": s.collectionLinks(r)})
		return
	}
	var ps []store.Project
	if err := s.st.WithContext(r.Context()).Order("name").Find(&ps).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list projects: %w", err))
		return
	}
	if d := q.Get("domain_id"); d != "" && strings.EqualFold(d, DefaultDomainName) {
		q.Set("domain_id", DefaultDomainID)
	}
	ps = slices.DeleteFunc(ps, func(p store.Project) bool { return !projectMatches(q, &p) })
	s.projectsResponse(w, r, ps)
}

type projectInput struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	DomainID    *string   `json:"domain_id"`
	ParentID    *string   `json:"parent_id"`
	Enabled     *bool     `json:"enabled"`
	IsDomain    *bool     `json:"is_domain"`
	Tags        *[]string `json:"tags"`
}

// checkProjectInput validates the fields common to create and update.
func checkProjectInput(in *projectInput) string {
	if in.Name != nil {
		n := strings.TrimSpace(*in.Name)
		if n == "" {
			return "Invalid input for field 'name': the name must not be empty."
		}
		if len(*in.Name) > maxProjectName {
			return fmt.Sprintf("Invalid input for field 'name': longer than %d characters.", maxProjectName)
		}
	}
	return ""
}

func (s *Service) createProject(w http.ResponseWriter, r *http.Request) {
	c, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	var in projectInput
	if !s.readEntity(w, r, "project", &in) {
		return
	}
	if in.Name == nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: 'name' is a required property."))
		return
	}
	if msg := checkProjectInput(&in); msg != "" {
		s.failErr(w, r, errdefs.InvalidArgument(msg))
		return
	}
	if in.IsDomain != nil && *in.IsDomain {
		// A project that is a domain is a domain (Keystone's model).
		d, err := s.newDomain(r.Context(), *in.Name, in.Description, in.Enabled, in.Tags)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"project": s.domainAsProject(r, &d)})
		return
	}
	p := store.Project{ID: newID(), Name: *in.Name, Enabled: true, Tags: "[]"}
	if err := s.placeProject(r.Context(), &p, c, in.DomainID, in.ParentID); err != nil {
		s.failErr(w, r, err)
		return
	}
	if in.Description != nil {
		p.Description = *in.Description
	}
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
	}
	if in.Tags != nil {
		tags, err := checkTags(*in.Tags)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		p.Tags = encodeTags(tags)
	}
	if err := s.st.WithContext(r.Context()).Create(&p).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store project - Duplicate entry found with name "+p.Name+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("create project: %w", err))
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"project": s.projectView(r, &p)})
}

// placeProject sets a new project's domain and parent: the domain given,
// else the parent's, else the caller's; a parent must be a project of
// the same domain, or the domain itself.
func (s *Service) placeProject(ctx context.Context, p *store.Project, c *auth.Credentials, domainID, parentID *string) error {
	var domain string
	if domainID != nil && *domainID != "" {
		d, err := s.findDomain(ctx, *domainID, "")
		if err != nil {
			return notFoundAs(err, "Could not find domain: "+*domainID+".")
		}
		domain = d.ID
	}
	if parentID != nil && *parentID != "" {
		parent, err := s.loadProject(ctx, *parentID)
		switch {
		case err == nil:
			if domain != "" && domain != parent.DomainID {
				return errdefs.InvalidArgument("Cannot create project, the parent (" + parent.ID + ") is in a different domain.")
			}
			domain, p.ParentID = parent.DomainID, parent.ID
		case errors.Is(err, store.ErrNotFound):
			d, derr := s.loadDomain(ctx, *parentID)
			if derr != nil {
				return notFoundAs(derr, "Could not find project: "+*parentID+".")
			}
			if domain != "" && domain != d.ID {
				return errdefs.InvalidArgument("Cannot create project, the parent (" + d.ID + ") is in a different domain.")
			}
			domain = d.ID
		default:
			return err
		}
	}
	if domain == "" {
		domain = DefaultDomainID
		if c != nil && c.DomainID != "" {
			domain = c.DomainID
		}
	}
	p.DomainID = domain
	return nil
}

func (s *Service) loadProject(ctx context.Context, id string) (store.Project, error) {
	var p store.Project
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&p).Error
	return p, store.NotFound(err, "project "+id)
}

func (s *Service) getProject(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if !cloudAdmin(c) && c.ProjectID != id {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	p, err := s.loadProject(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		if d, derr := s.loadDomain(r.Context(), id); derr == nil {
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{"project": s.domainAsProject(r, &d)})
			return
		}
	}
	if err != nil {
		s.storeError(w, r, err, "Could not find project: "+id+".")
		return
	}
	view := s.projectView(r, &p)
	q := r.URL.Query()
	if q.Has("subtree_as_list") || q.Has("subtree_as_ids") || q.Has("parents_as_list") || q.Has("parents_as_ids") {
		if err := s.addHierarchy(r, &p, view); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"project": view})
}

// addHierarchy adds the subtree and parents views GET /v3/projects/{id}
// asks for: *_as_list as project bodies, *_as_ids as nested id maps.
func (s *Service) addHierarchy(r *http.Request, p *store.Project, view map[string]any) error {
	var all []store.Project
	if err := s.st.WithContext(r.Context()).Where("domain_id = ?", p.DomainID).Order("name").Find(&all).Error; err != nil {
		return fmt.Errorf("load projects of domain %s: %w", p.DomainID, err)
	}
	byID := map[string]*store.Project{}
	children := map[string][]*store.Project{}
	for i := range all {
		byID[all[i].ID] = &all[i]
		children[all[i].ParentID] = append(children[all[i].ParentID], &all[i])
	}
	q := r.URL.Query()
	if q.Has("subtree_as_list") {
		list := []map[string]any{}
		var walk func(id string, depth int)
		walk = func(id string, depth int) {
			for _, c := range children[id] {
				if depth < 64 {
					list = append(list, map[string]any{"project": s.projectView(r, c)})
					walk(c.ID, depth+1)
				}
			}
		}
		walk(p.ID, 0)
		view["subtree"] = list
	} else if q.Has("subtree_as_ids") {
		var ids func(id string, depth int) any
		ids = func(id string, depth int) any {
			if len(children[id]) == 0 || depth >= 64 {
				return nil
			}
			m := map[string]any{}
			for _, c := range children[id] {
				m[c.ID] = ids(c.ID, depth+1)
			}
			return m
		}
		view["subtree"] = ids(p.ID, 0)
	}
	var parents []*store.Project
	for cur := byID[p.ParentID]; cur != nil && len(parents) < 64; cur = byID[cur.ParentID] {
		parents = append(parents, cur)
	}
	if q.Has("parents_as_list") {
		list := []map[string]any{}
		for _, pp := range parents {
			list = append(list, map[string]any{"project": s.projectView(r, pp)})
		}
		view["parents"] = list
	} else if q.Has("parents_as_ids") {
		var m any = map[string]any{p.DomainID: nil}
		for i := len(parents) - 1; i >= 0; i-- {
			m = map[string]any{parents[i].ID: m}
		}
		view["parents"] = m
	}
	return nil
}

func (s *Service) updateProject(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	var in projectInput
	if !s.readEntity(w, r, "project", &in) {
		return
	}
	if msg := checkProjectInput(&in); msg != "" {
		s.failErr(w, r, errdefs.InvalidArgument(msg))
		return
	}
	p, err := s.loadProject(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		if _, derr := s.loadDomain(r.Context(), id); derr == nil {
			d, err := s.changeDomain(r.Context(), id, in.Name, in.Description, in.Enabled, in.Tags)
			if err != nil {
				s.failErr(w, r, err)
				return
			}
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{"project": s.domainAsProject(r, &d)})
			return
		}
	}
	if err != nil {
		s.storeError(w, r, err, "Could not find project: "+id+".")
		return
	}
	if in.DomainID != nil && *in.DomainID != p.DomainID {
		s.failErr(w, r, errdefs.InvalidArgument("Cannot change the domain of a project."))
		return
	}
	if in.ParentID != nil && *in.ParentID != p.ParentID && !(p.ParentID == "" && *in.ParentID == p.DomainID) {
		s.failErr(w, r, errdefs.Forbidden("Update of `parent_id` is not allowed."))
		return
	}
	if in.Name != nil {
		p.Name = *in.Name
	}
	if in.Description != nil {
		p.Description = *in.Description
	}
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
	}
	if in.Tags != nil {
		tags, err := checkTags(*in.Tags)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		p.Tags = encodeTags(tags)
	}
	if err := s.st.WithContext(r.Context()).Select("name", "description", "enabled", "tags").Save(&p).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store project - Duplicate entry found with name "+p.Name+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("update project %s: %w", id, err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"project": s.projectView(r, &p)})
}

func (s *Service) deleteProject(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	if _, err := s.loadProject(r.Context(), id); errors.Is(err, store.ErrNotFound) {
		if _, derr := s.loadDomain(r.Context(), id); derr == nil {
			if err := s.removeDomain(r.Context(), id); err != nil {
				s.failErr(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		var children int64
		if err := tx.Model(&store.Project{}).Where("parent_id = ?", id).Count(&children).Error; err != nil {
			return err
		}
		if children > 0 {
			return errdefs.Forbidden("Cannot delete the project " + id + " since it is not a leaf in the hierarchy.")
		}
		res := tx.Where("id = ?", id).Delete(&store.Project{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		for _, m := range []any{&store.RoleAssignment{}, &store.Token{}, &store.ApplicationCredential{}, &store.Credential{}} {
			if err := tx.Where("project_id = ?", id).Delete(m).Error; err != nil {
				return err
			}
		}
		for _, m := range []any{&store.GroupRoleAssignment{}, &store.InheritedRoleAssignment{}} {
			if err := tx.Where("target_id = ? AND on_domain = ?", id, false).Delete(m).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.storeError(w, r, err, "Could not find project: "+id+".")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- project tags ----

// projectForTags loads the project of a tags URL; reads are for admins
// and the project's own tokens, writes for admins.
func (s *Service) projectForTags(w http.ResponseWriter, r *http.Request, write bool) (store.Project, bool) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if !cloudAdmin(c) && (write || c.ProjectID != id) {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return store.Project{}, false
	}
	p, err := s.loadProject(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find project: "+id+".")
		return p, false
	}
	return p, true
}

func (s *Service) saveTags(w http.ResponseWriter, r *http.Request, p *store.Project, tags []string) bool {
	tags, err := checkTags(tags)
	if err != nil {
		s.failErr(w, r, err)
		return false
	}
	p.Tags = encodeTags(tags)
	if err := s.st.WithContext(r.Context()).Model(p).Update("tags", p.Tags).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("update tags of project %s: %w", p.ID, err))
		return false
	}
	return true
}

func (s *Service) listProjectTags(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projectForTags(w, r, false)
	if !ok {
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tags": decodeTags(p.Tags)})
}

func (s *Service) replaceProjectTags(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projectForTags(w, r, true)
	if !ok {
		return
	}
	var body struct {
		Tags *[]string `json:"tags"`
	}
	if err := httpapi.ReadJSON(r, &body); err != nil || body.Tags == nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: a 'tags' list is required."))
		return
	}
	if s.saveTags(w, r, &p, *body.Tags) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tags": decodeTags(p.Tags)})
	}
}

func (s *Service) clearProjectTags(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projectForTags(w, r, true)
	if ok && s.saveTags(w, r, &p, nil) {
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Service) checkProjectTag(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projectForTags(w, r, false)
	if !ok {
		return
	}
	if !slices.Contains(decodeTags(p.Tags), r.PathValue("tag")) {
		s.failErr(w, r, errdefs.NotFound("Could not find tag: "+r.PathValue("tag")+"."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) addProjectTag(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projectForTags(w, r, true)
	if !ok {
		return
	}
	tag := r.PathValue("tag")
	if err := checkTag(tag); err != nil {
		s.failErr(w, r, err)
		return
	}
	tags := decodeTags(p.Tags)
	if !slices.Contains(tags, tag) {
		tags = append(tags, tag)
	}
	if s.saveTags(w, r, &p, tags) {
		w.Header().Set("Location", s.selfURL(r, "projects", p.ID)+"/tags/"+url.PathEscape(tag))
		w.WriteHeader(http.StatusCreated)
	}
}

func (s *Service) deleteProjectTag(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projectForTags(w, r, true)
	if !ok {
		return
	}
	tags := decodeTags(p.Tags)
	i := slices.Index(tags, r.PathValue("tag"))
	if i < 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find tag: "+r.PathValue("tag")+"."))
		return
	}
	if s.saveTags(w, r, &p, slices.Delete(tags, i, i+1)) {
		w.WriteHeader(http.StatusNoContent)
	}
}

// authProjects is GET /v3/auth/projects: the projects the caller may
// scope to.
func (s *Service) authProjects(w http.ResponseWriter, r *http.Request) {
	s.userProjectsFor(w, r, auth.FromContext(r.Context()).UserID)
}

func (s *Service) userProjects(w http.ResponseWriter, r *http.Request) {
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
	s.userProjectsFor(w, r, id)
}

func (s *Service) userProjectsFor(w http.ResponseWriter, r *http.Request, userID string) {
	var ps []store.Project
	db := s.st.WithContext(r.Context())
	err := db.Where(db.Where("id IN (?)", db.Model(&store.RoleAssignment{}).Select("project_id").Where("user_id = ?", userID)).
		Or("id IN (?)", groupTargets(db, userID, false))).
		Order("name").Find(&ps).Error
	if err != nil {
		s.internalError(w, r, fmt.Errorf("list projects of user %s: %w", userID, err))
		return
	}
	if ps, err = s.withInheritedProjects(r.Context(), userID, ps); err != nil {
		s.internalError(w, r, err)
		return
	}
	q := r.URL.Query()
	ps = slices.DeleteFunc(ps, func(p store.Project) bool { return !projectMatches(q, &p) })
	s.projectsResponse(w, r, ps)
}

// ---- users ----

func (s *Service) userView(r *http.Request, u *store.User) map[string]any {
	v := map[string]any{}
	// Extra attributes first, so none can shadow a real one.
	if u.Extra != "" {
		_ = json.Unmarshal([]byte(u.Extra), &v)
	}
	opts := map[string]any{}
	if u.Options != "" {
		_ = json.Unmarshal([]byte(u.Options), &opts)
	}
	for k, x := range map[string]any{"id": u.ID, "name": u.Name, "domain_id": u.DomainID, "enabled": u.Enabled,
		"password_expires_at": nil, "options": opts, "description": u.Description,
		"links": map[string]string{"self": s.selfURL(r, "users", u.ID)}} {
		v[k] = x
	}
	delete(v, "default_project_id")
	delete(v, "email")
	if u.DefaultProjectID != "" {
		v["default_project_id"] = u.DefaultProjectID
	}
	if u.Email != "" {
		v["email"] = u.Email
	}
	return v
}

func (s *Service) loadUser(ctx context.Context, id string) (store.User, error) {
	var u store.User
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&u).Error
	return u, store.NotFound(err, "user "+id)
}

func (s *Service) listUsers(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var us []store.User
	if err := s.st.WithContext(r.Context()).Order("name").Find(&us).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list users: %w", err))
		return
	}
	q := r.URL.Query()
	if d := q.Get("domain_id"); d != "" && strings.EqualFold(d, DefaultDomainName) {
		q.Set("domain_id", DefaultDomainID)
	}
	enabled, hasEnabled := boolFilter(r, "enabled")
	us = slices.DeleteFunc(us, func(u store.User) bool {
		return !nameMatches(q, u.Name) || (q.Has("domain_id") && q.Get("domain_id") != u.DomainID) ||
			(hasEnabled && u.Enabled != enabled) ||
			(q.Has("default_project_id") && q.Get("default_project_id") != u.DefaultProjectID)
	})
	out := make([]map[string]any, 0, len(us))
	for i := range us {
		out = append(out, s.userView(r, &us[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"users": out, "links": s.collectionLinks(r)})
}

type userInput struct {
	Name             *string                    `json:"name"`
	Password         *string                    `json:"password"`
	DomainID         *string                    `json:"domain_id"`
	DefaultProjectID *string                    `json:"default_project_id"`
	ProjectID        *string                    `json:"project_id"` // Tempest's identity_utils sends this
	Email            *string                    `json:"email"`
	Enabled          *bool                      `json:"enabled"`
	Description      *string                    `json:"description"`
	Options          map[string]json.RawMessage `json:"options"`
	// extra is every other attribute, kept and shown as Keystone does.
	extra map[string]any
}

// userAttributes are the user body's own keys; any other is extra.
var userAttributes = []string{"id", "name", "password", "domain_id", "default_project_id", "project_id",
	"email", "enabled", "description", "options", "links", "password_expires_at"}

// readUser decodes a user body, collecting the attributes Keystone keeps
// as extras.
func (s *Service) readUser(w http.ResponseWriter, r *http.Request, in *userInput) bool {
	var body map[string]jsonRaw
	if err := httpapi.ReadJSON(r, &body); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: "+err.Error()))
		return false
	}
	raw, ok := body["user"]
	if !ok {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: 'user' is a required property."))
		return false
	}
	var all map[string]any
	if err := raw.decode(in); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for user: "+err.Error()))
		return false
	}
	if err := raw.decode(&all); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for user: "+err.Error()))
		return false
	}
	in.extra = map[string]any{}
	for k, v := range all {
		if !slices.Contains(userAttributes, k) {
			in.extra[k] = v
		}
	}
	return true
}

func checkUserInput(in *userInput) string {
	if in.Name != nil {
		if strings.TrimSpace(*in.Name) == "" {
			return "Invalid input for field 'name': the name must not be empty."
		}
		if len(*in.Name) > maxName {
			return fmt.Sprintf("Invalid input for field 'name': longer than %d characters.", maxName)
		}
	}
	return ""
}

// userOptions are Keystone's user options and whether each is a boolean
// (the other, multi_factor_auth_rules, is a list of lists of methods).
var userOptions = map[string]bool{
	"ignore_change_password_upon_first_use": true, "ignore_password_expiry": true,
	"ignore_lockout_failure_attempts": true, "lock_password": true, "ignore_user_inactivity": true,
	"multi_factor_auth_enabled": true, "multi_factor_auth_rules": false,
}

// mergeOptions applies an options update to stored (JSON): a null value
// removes the option.
func mergeOptions(stored string, in map[string]json.RawMessage) (string, error) {
	opts := map[string]any{}
	if stored != "" {
		_ = json.Unmarshal([]byte(stored), &opts)
	}
	for k, raw := range in {
		isBool, known := userOptions[k]
		if !known {
			return "", errdefs.InvalidArgumentf("Invalid input for field 'options': unknown option %q.", k)
		}
		if string(raw) == "null" {
			delete(opts, k)
			continue
		}
		if isBool {
			var b bool
			if err := json.Unmarshal(raw, &b); err != nil {
				return "", errdefs.InvalidArgumentf("Invalid input for field 'options': %s must be a boolean.", k)
			}
			opts[k] = b
			continue
		}
		var rules [][]string
		if err := json.Unmarshal(raw, &rules); err != nil {
			return "", errdefs.InvalidArgumentf("Invalid input for field 'options': %s must be a list of lists of methods.", k)
		}
		opts[k] = rules
	}
	b, err := json.Marshal(opts)
	return string(b), err
}

// mergeExtra adds a body's extra attributes to the stored ones.
func mergeExtra(stored string, in map[string]any) string {
	extra := map[string]any{}
	if stored != "" {
		_ = json.Unmarshal([]byte(stored), &extra)
	}
	maps.Copy(extra, in)
	b, _ := json.Marshal(extra)
	return string(b)
}

// MaxPasswordBytes is the longest password bcrypt uses whole; a longer
// one is refused when set (400) rather than silently truncated, and can
// never log in.
const MaxPasswordBytes = 72

// errPasswordTooLong is the 400 for a password bcrypt cannot hold.
var errPasswordTooLong = errdefs.InvalidArgument(fmt.Sprintf(
	"Invalid input for field 'password': the password is longer than %d bytes.", MaxPasswordBytes))

// Password hash rounds (Keystone's [identity] password_hash_rounds): the
// bcrypt cost of the hashes made from now on. A hash keeps the cost it was
// made with, so a hash of any cost verifies whatever the setting.
const (
	MinPasswordHashRounds     = bcrypt.MinCost     // 4: for tests only
	MaxPasswordHashRounds     = bcrypt.MaxCost     // 31
	DefaultPasswordHashRounds = bcrypt.DefaultCost // 10
)

// hashPassword hashes pw at rounds (0: DefaultPasswordHashRounds).
func hashPassword(pw string, rounds int) (string, error) {
	if len(pw) > MaxPasswordBytes {
		return "", errPasswordTooLong
	}
	if rounds == 0 {
		rounds = DefaultPasswordHashRounds
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), rounds)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

func (s *Service) createUser(w http.ResponseWriter, r *http.Request) {
	c, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	var in userInput
	if !s.readUser(w, r, &in) {
		return
	}
	if in.Name == nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: 'name' is a required property."))
		return
	}
	if msg := checkUserInput(&in); msg != "" {
		s.failErr(w, r, errdefs.InvalidArgument(msg))
		return
	}
	u := store.User{ID: newID(), Name: *in.Name, DomainID: DefaultDomainID, Enabled: true}
	if c.DomainID != "" {
		u.DomainID = c.DomainID
	}
	if in.DomainID != nil && *in.DomainID != "" {
		d, err := s.findDomain(r.Context(), *in.DomainID, "")
		if err != nil {
			s.failErr(w, r, notFoundAs(err, "Could not find domain: "+*in.DomainID+"."))
			return
		}
		u.DomainID = d.ID
	}
	if in.Enabled != nil {
		u.Enabled = *in.Enabled
	}
	if in.Email != nil {
		u.Email = *in.Email
	}
	if in.Description != nil {
		u.Description = *in.Description
	}
	opts, err := mergeOptions("", in.Options)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	u.Options, u.Extra = opts, mergeExtra("", in.extra)
	switch {
	case in.DefaultProjectID != nil:
		u.DefaultProjectID = *in.DefaultProjectID
	case in.ProjectID != nil:
		u.DefaultProjectID = *in.ProjectID
	}
	if u.DefaultProjectID != "" {
		if _, err := s.loadProject(r.Context(), u.DefaultProjectID); err != nil {
			s.storeError(w, r, err, "Could not find project: "+u.DefaultProjectID+".")
			return
		}
	}
	if in.Password != nil {
		h, err := hashPassword(*in.Password, s.opts.PasswordHashRounds)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		u.PasswordHash = h
	}
	if err := s.st.WithContext(r.Context()).Create(&u).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store user - Duplicate entry found with name "+u.Name+" at domain ID "+u.DomainID+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("create user: %w", err))
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"user": s.userView(r, &u)})
}

func (s *Service) getUser(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if c.UserID != id && !cloudAdmin(c) {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	u, err := s.loadUser(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find user: "+id+".")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user": s.userView(r, &u)})
}

func (s *Service) updateUser(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	var in userInput
	if !s.readUser(w, r, &in) {
		return
	}
	if msg := checkUserInput(&in); msg != "" {
		s.failErr(w, r, errdefs.InvalidArgument(msg))
		return
	}
	u, err := s.loadUser(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find user: "+id+".")
		return
	}
	if in.DomainID != nil && *in.DomainID != u.DomainID && !(u.DomainID == DefaultDomainID && isDefaultDomain(*in.DomainID)) {
		s.failErr(w, r, errdefs.InvalidArgument("Cannot change the domain of a user."))
		return
	}
	revoke := false
	if in.Name != nil {
		u.Name = *in.Name
	}
	if in.Email != nil {
		u.Email = *in.Email
	}
	if in.Description != nil {
		u.Description = *in.Description
	}
	if in.Options != nil {
		if u.Options, err = mergeOptions(u.Options, in.Options); err != nil {
			s.failErr(w, r, err)
			return
		}
	}
	u.Extra = mergeExtra(u.Extra, in.extra)
	if in.Enabled != nil {
		revoke = revoke || (u.Enabled && !*in.Enabled)
		u.Enabled = *in.Enabled
	}
	if in.DefaultProjectID != nil {
		u.DefaultProjectID = *in.DefaultProjectID
	}
	if in.Password != nil {
		h, err := hashPassword(*in.Password, s.opts.PasswordHashRounds)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		u.PasswordHash = h
		revoke = true
	}
	err = s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		if err := tx.Select("name", "email", "enabled", "default_project_id", "password_hash", "description",
			"options", "extra").Save(&u).Error; err != nil {
			return err
		}
		if revoke {
			return revokeUserTokens(r.Context(), tx, u.ID)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store user - Duplicate entry found with name "+u.Name+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("update user %s: %w", id, err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user": s.userView(r, &u)})
}

func (s *Service) deleteUser(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error { return deleteUserRows(tx, id) })
	if err != nil {
		s.storeError(w, r, err, "Could not find user: "+id+".")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// changePassword is POST /v3/users/{id}/password: a change by the user,
// or by a cloud admin (Keystone's admin_or_owner), that needs the original
// password either way and revokes the user's tokens.
func (s *Service) changePassword(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if c.UserID != id && !cloudAdmin(c) {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	var in struct {
		Password         *string `json:"password"`
		OriginalPassword *string `json:"original_password"`
	}
	if !s.readEntity(w, r, "user", &in) {
		return
	}
	if in.Password == nil || in.OriginalPassword == nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: 'password' and 'original_password' are required."))
		return
	}
	u, err := s.loadUser(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find user: "+id+".")
		return
	}
	// A stolen token must not make the password guessable: the original
	// password's failures count toward the user's lockout like logins.
	if s.login.users.locked(u.ID, s.now()) || !s.login.checkPassword(u.PasswordHash, *in.OriginalPassword) {
		s.login.users.fail(u.ID, s.now())
		s.failErr(w, r, errdefs.Unauthenticated(authFailMsg))
		return
	}
	h, err := hashPassword(*in.Password, s.opts.PasswordHashRounds)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	err = s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&store.User{}).Where("id = ?", id).Update("password_hash", h).Error; err != nil {
			return err
		}
		return revokeUserTokens(r.Context(), tx, id)
	})
	if err != nil {
		s.internalError(w, r, fmt.Errorf("change password of %s: %w", id, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- roles ----

func (s *Service) roleView(r *http.Request, ro *store.Role) map[string]any {
	v := map[string]any{}
	if ro.Extra != "" {
		_ = json.Unmarshal([]byte(ro.Extra), &v)
	}
	opts := map[string]any{}
	if ro.Options != "" {
		_ = json.Unmarshal([]byte(ro.Options), &opts)
	}
	var domain any
	if ro.DomainID != "" {
		domain = ro.DomainID
	}
	maps.Copy(v, map[string]any{"id": ro.ID, "name": ro.Name, "domain_id": domain, "description": ro.Description,
		"options": opts, "links": map[string]string{"self": s.selfURL(r, "roles", ro.ID)}})
	return v
}

func (s *Service) rolesResponse(w http.ResponseWriter, r *http.Request, roles []store.Role) {
	out := make([]map[string]any, 0, len(roles))
	for i := range roles {
		out = append(out, s.roleView(r, &roles[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"roles": out, "links": s.collectionLinks(r)})
}

func (s *Service) loadRole(ctx context.Context, id string) (store.Role, error) {
	var ro store.Role
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&ro).Error
	return ro, store.NotFound(err, "role "+id)
}

// listRoles lists the global roles, or with domain_id a domain's roles,
// as Keystone does.
func (s *Service) listRoles(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	q := r.URL.Query()
	domain := q.Get("domain_id")
	if strings.EqualFold(domain, DefaultDomainName) {
		domain = DefaultDomainID
	}
	var roles []store.Role
	if err := s.st.WithContext(r.Context()).Where("domain_id = ?", domain).Order("name").Find(&roles).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list roles: %w", err))
		return
	}
	roles = slices.DeleteFunc(roles, func(ro store.Role) bool {
		if q.Has("name") && !strings.EqualFold(ro.Name, q.Get("name")) {
			return true
		}
		n := url.Values{}
		for k, v := range q {
			if k != "name" {
				n[k] = v
			}
		}
		return !nameMatches(n, ro.Name)
	})
	s.rolesResponse(w, r, roles)
}

type roleInput struct {
	Name        *string                    `json:"name"`
	Description *string                    `json:"description"`
	DomainID    *string                    `json:"domain_id"`
	Options     map[string]json.RawMessage `json:"options"`
	extra       map[string]any
}

// roleAttributes are the role body's own keys; any other is extra.
var roleAttributes = []string{"id", "name", "description", "domain_id", "options", "links"}

// roleOptions merges a role options update: "immutable" (a boolean) is
// the only option Keystone has; null removes it.
func roleOptions(stored string, in map[string]json.RawMessage) (string, error) {
	opts := map[string]any{}
	if stored != "" {
		_ = json.Unmarshal([]byte(stored), &opts)
	}
	for k, raw := range in {
		if k != "immutable" {
			return "", errdefs.InvalidArgumentf("Invalid input for field 'options': unknown option %q.", k)
		}
		if string(raw) == "null" {
			delete(opts, k)
			continue
		}
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", errdefs.InvalidArgument("Invalid input for field 'options': immutable must be a boolean.")
		}
		opts[k] = b
	}
	b, err := json.Marshal(opts)
	return string(b), err
}

func (s *Service) createRole(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var in roleInput
	if !s.readRoleBody(w, r, &in) {
		return
	}
	if in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > maxName {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'name': a non-empty name of at most 255 characters is required."))
		return
	}
	ro := store.Role{ID: newID(), Name: *in.Name}
	if in.DomainID != nil && *in.DomainID != "" {
		d, err := s.findDomain(r.Context(), *in.DomainID, "")
		if err != nil {
			s.failErr(w, r, notFoundAs(err, "Could not find domain: "+*in.DomainID+"."))
			return
		}
		ro.DomainID = d.ID
	}
	if in.Description != nil {
		ro.Description = *in.Description
	}
	var err error
	if ro.Options, err = roleOptions("", in.Options); err != nil {
		s.failErr(w, r, err)
		return
	}
	ro.Extra = mergeExtra("", in.extra)
	if err := s.createRoleRow(r.Context(), &ro); err != nil {
		if errors.Is(err, store.ErrConflict) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store role - Duplicate entry found with name "+ro.Name+"."))
			return
		}
		s.internalError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"role": s.roleView(r, &ro)})
}

// readRoleBody decodes a role body with its extra attributes.
func (s *Service) readRoleBody(w http.ResponseWriter, r *http.Request, in *roleInput) bool {
	var body map[string]jsonRaw
	if err := httpapi.ReadJSON(r, &body); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: "+err.Error()))
		return false
	}
	raw, ok := body["role"]
	if !ok {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: 'role' is a required property."))
		return false
	}
	var all map[string]any
	if err := raw.decode(in); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for role: "+err.Error()))
		return false
	}
	if err := raw.decode(&all); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for role: "+err.Error()))
		return false
	}
	in.extra = map[string]any{}
	for k, v := range all {
		if !slices.Contains(roleAttributes, k) {
			in.extra[k] = v
		}
	}
	return true
}

// createRoleRow inserts ro; role names are unique in their domain (or
// among global roles) regardless of case, as Tempest and Keystone (on
// MySQL) treat them.
func (s *Service) createRoleRow(ctx context.Context, ro *store.Role) error {
	return s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&store.Role{}).Where("LOWER(name) = ? AND domain_id = ?", strings.ToLower(ro.Name), ro.DomainID).
			Count(&n).Error; err != nil {
			return fmt.Errorf("check role name: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("role %s: %w", ro.Name, store.ErrConflict)
		}
		return store.NotFound(tx.Create(ro).Error, "create role "+ro.Name)
	})
}

func (s *Service) getRole(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	ro, err := s.loadRole(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find role: "+id+".")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"role": s.roleView(r, &ro)})
}

func (s *Service) updateRole(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	var in roleInput
	if !s.readRoleBody(w, r, &in) {
		return
	}
	ro, err := s.loadRole(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find role: "+id+".")
		return
	}
	if in.Name != nil {
		if strings.TrimSpace(*in.Name) == "" || len(*in.Name) > maxName {
			s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'name'."))
			return
		}
		ro.Name = *in.Name
	}
	if in.Description != nil {
		ro.Description = *in.Description
	}
	if in.DomainID != nil && *in.DomainID != ro.DomainID {
		s.failErr(w, r, errdefs.InvalidArgument("Cannot change the domain of a role."))
		return
	}
	if roleImmutable(&ro) && !(len(in.Options) == 1 && in.Options["immutable"] != nil && string(in.Options["immutable"]) != "true") {
		s.failErr(w, r, errdefs.Forbidden("Role "+ro.ID+" is immutable; set the option immutable to false first."))
		return
	}
	if in.Options != nil {
		if ro.Options, err = roleOptions(ro.Options, in.Options); err != nil {
			s.failErr(w, r, err)
			return
		}
	}
	ro.Extra = mergeExtra(ro.Extra, in.extra)
	if err := s.st.WithContext(r.Context()).Select("name", "description", "options", "extra").Save(&ro).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store role - Duplicate entry found with name "+ro.Name+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("update role %s: %w", id, err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"role": s.roleView(r, &ro)})
}

// roleImmutable reports Keystone's immutable option: such a role can be
// neither changed (but for the option itself) nor deleted.
func roleImmutable(ro *store.Role) bool {
	var opts map[string]any
	_ = json.Unmarshal([]byte(ro.Options), &opts)
	return opts["immutable"] == true
}

func (s *Service) deleteRole(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	if ro, err := s.loadRole(r.Context(), id); err == nil && roleImmutable(&ro) {
		s.failErr(w, r, errdefs.Forbidden("Role "+ro.ID+" is immutable; set the option immutable to false first."))
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("id = ?", id).Delete(&store.Role{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		for _, m := range []any{&store.RoleAssignment{}, &store.DomainRoleAssignment{}, &store.GroupRoleAssignment{},
			&store.InheritedRoleAssignment{}, &store.SystemRoleAssignment{}} {
			if err := tx.Where("role_id = ?", id).Delete(m).Error; err != nil {
				return err
			}
		}
		return tx.Where("prior_role_id = ? OR implied_role_id = ?", id, id).Delete(&store.ImpliedRole{}).Error
	})
	if err != nil {
		s.storeError(w, r, err, "Could not find role: "+id+".")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// grant assigns a role by ids, doing nothing when it already exists.
func grant(ctx context.Context, st *store.Store, userID, projectID, roleID string) error {
	ra := store.RoleAssignment{UserID: userID, ProjectID: projectID, RoleID: roleID}
	var n int64
	db := st.WithContext(ctx)
	if err := db.Model(&store.RoleAssignment{}).Where(&ra).Count(&n).Error; err != nil {
		return fmt.Errorf("check grant: %w", err)
	}
	if n > 0 {
		return nil
	}
	if err := db.Create(&ra).Error; err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("grant role %s to user %s on project %s: %w", roleID, userID, projectID, err)
	}
	return nil
}

// subtreeIDs returns id and the ids of all projects below it (id may be
// a domain's).
func (s *Service) subtreeIDs(ctx context.Context, id string) ([]string, error) {
	var all []store.Project
	if err := s.st.WithContext(ctx).Select("id", "parent_id", "domain_id").Find(&all).Error; err != nil {
		return nil, fmt.Errorf("load project tree: %w", err)
	}
	// A top project's parent is its domain (Keystone's is_domain
	// project), so a domain's subtree is all its projects.
	children := map[string][]string{}
	for _, p := range all {
		parent := p.ParentID
		if parent == "" {
			parent = p.DomainID
		}
		children[parent] = append(children[parent], p.ID)
	}
	out := []string{id}
	for i := 0; i < len(out) && i < 10000; i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

type entityNameIndex struct {
	roles    map[string]string
	users    map[string]store.User
	groups   map[string]store.Group
	projects map[string]store.Project
	domains  map[string]string
}

func (n *entityNameIndex) domainOf(id string) idName { return idName{ID: id, Name: n.domains[id]} }

func (s *Service) entityNames(ctx context.Context) (*entityNameIndex, error) {
	db := s.st.WithContext(ctx)
	var rs []store.Role
	var us []store.User
	var ps []store.Project
	var err error
	if err = db.Find(&rs).Error; err == nil {
		if err = db.Select("id", "name", "domain_id").Find(&us).Error; err == nil {
			err = db.Select("id", "name", "domain_id").Find(&ps).Error
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load entity names: %w", err)
	}
	var gs []store.Group
	if err := db.Select("id", "name", "domain_id").Find(&gs).Error; err != nil {
		return nil, fmt.Errorf("load group names: %w", err)
	}
	n := &entityNameIndex{roles: map[string]string{}, users: map[string]store.User{}, projects: map[string]store.Project{},
		groups: map[string]store.Group{}}
	for _, x := range gs {
		n.groups[x.ID] = x
	}
	if n.domains, err = s.domainNames(ctx); err != nil {
		return nil, err
	}
	for _, x := range rs {
		n.roles[x.ID] = x.Name
	}
	for _, x := range us {
		n.users[x.ID] = x
	}
	for _, x := range ps {
		n.projects[x.ID] = x
	}
	return n, nil
}

// jsonRaw defers decoding of one entity body.
type jsonRaw []byte

func (j *jsonRaw) UnmarshalJSON(b []byte) error { *j = append((*j)[:0], b...); return nil }

func (j jsonRaw) decode(v any) error {
	if string(j) == "null" {
		return errors.New("must be an object")
	}
	return jsonUnmarshal(j, v)
}
