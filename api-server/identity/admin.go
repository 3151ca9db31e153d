package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	if c == nil || !c.IsAdmin() {
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

// domainFilterMatches reports whether ?domain_id= (if any) names the
// default domain; any other domain has no entities.
func domainFilterMatches(r *http.Request) bool {
	d := r.URL.Query().Get("domain_id")
	return d == "" || isDefaultDomain(d)
}

// ---- domains ----

func (s *Service) domainView(r *http.Request) map[string]any {
	return map[string]any{"id": DefaultDomainID, "name": DefaultDomainName, "description": "The default domain",
		"enabled": true, "tags": []string{}, "options": map[string]any{},
		"links": map[string]string{"self": s.selfURL(r, "domains", DefaultDomainID)}}
}

func (s *Service) listDomains(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	out := []map[string]any{}
	q := r.URL.Query()
	enabled, hasEnabled := boolFilter(r, "enabled")
	if (!q.Has("name") || q.Get("name") == DefaultDomainName) && (!q.Has("id") || q.Get("id") == DefaultDomainID) &&
		(!hasEnabled || enabled) {
		out = append(out, s.domainView(r))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domains": out, "links": s.collectionLinks(r)})
}

func (s *Service) getDomain(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") != DefaultDomainID {
		s.failErr(w, r, errdefs.NotFound("Could not find domain: "+r.PathValue("id")+"."))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domain": s.domainView(r)})
}

func (s *Service) authDomains(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domains": []any{s.domainView(r)}, "links": s.collectionLinks(r)})
}

// ---- projects ----

func (s *Service) projectView(r *http.Request, p *store.Project) map[string]any {
	return map[string]any{"id": p.ID, "name": p.Name, "domain_id": p.DomainID, "description": p.Description,
		"enabled": p.Enabled, "parent_id": p.DomainID, "is_domain": false, "tags": []string{},
		"options": map[string]any{}, "links": map[string]string{"self": s.selfURL(r, "projects", p.ID)}}
}

func (s *Service) projectsResponse(w http.ResponseWriter, r *http.Request, ps []store.Project) {
	out := make([]map[string]any, 0, len(ps))
	for i := range ps {
		out = append(out, s.projectView(r, &ps[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"projects": out, "links": s.collectionLinks(r)})
}

func (s *Service) listProjects(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var ps []store.Project
	if err := s.st.WithContext(r.Context()).Order("name").Find(&ps).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list projects: %w", err))
		return
	}
	q := r.URL.Query()
	enabled, hasEnabled := boolFilter(r, "enabled")
	isDomain, _ := boolFilter(r, "is_domain")
	ps = slices.DeleteFunc(ps, func(p store.Project) bool {
		return !domainFilterMatches(r) || isDomain ||
			(q.Has("name") && p.Name != q.Get("name")) ||
			(q.Has("parent_id") && q.Get("parent_id") != p.DomainID) ||
			(hasEnabled && p.Enabled != enabled)
	})
	s.projectsResponse(w, r, ps)
}

type projectInput struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	DomainID    *string `json:"domain_id"`
	ParentID    *string `json:"parent_id"`
	Enabled     *bool   `json:"enabled"`
	IsDomain    *bool   `json:"is_domain"`
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
	if in.DomainID != nil && *in.DomainID != "" && !isDefaultDomain(*in.DomainID) {
		return "Could not find domain: " + *in.DomainID + "."
	}
	if in.ParentID != nil && *in.ParentID != "" && *in.ParentID != DefaultDomainID {
		return "Capsule projects cannot be nested."
	}
	if in.IsDomain != nil && *in.IsDomain {
		return "Capsule has a single domain; is_domain projects are not supported."
	}
	return ""
}

func (s *Service) createProject(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
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
	p := store.Project{ID: newID(), Name: *in.Name, DomainID: DefaultDomainID, Enabled: true}
	if in.Description != nil {
		p.Description = *in.Description
	}
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
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

func (s *Service) loadProject(ctx context.Context, id string) (store.Project, error) {
	var p store.Project
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&p).Error
	return p, store.NotFound(err, "project "+id)
}

func (s *Service) getProject(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if !c.IsAdmin() && c.ProjectID != id {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	p, err := s.loadProject(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find project: "+id+".")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"project": s.projectView(r, &p)})
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
	if err != nil {
		s.storeError(w, r, err, "Could not find project: "+id+".")
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
	if err := s.st.WithContext(r.Context()).Select("name", "description", "enabled").Save(&p).Error; err != nil {
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
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("id = ?", id).Delete(&store.Project{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		if err := tx.Where("project_id = ?", id).Delete(&store.RoleAssignment{}).Error; err != nil {
			return err
		}
		return tx.Where("project_id = ?", id).Delete(&store.Token{}).Error
	})
	if err != nil {
		s.storeError(w, r, err, "Could not find project: "+id+".")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// authProjects is GET /v3/auth/projects: the projects the caller may
// scope to.
func (s *Service) authProjects(w http.ResponseWriter, r *http.Request) {
	s.userProjectsFor(w, r, auth.FromContext(r.Context()).UserID)
}

func (s *Service) userProjects(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if c.UserID != id && !c.IsAdmin() {
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
	err := s.st.WithContext(r.Context()).
		Where("id IN (?)", s.st.WithContext(r.Context()).Model(&store.RoleAssignment{}).
			Select("project_id").Where("user_id = ?", userID)).
		Order("name").Find(&ps).Error
	if err != nil {
		s.internalError(w, r, fmt.Errorf("list projects of user %s: %w", userID, err))
		return
	}
	enabled, hasEnabled := boolFilter(r, "enabled")
	q := r.URL.Query()
	ps = slices.DeleteFunc(ps, func(p store.Project) bool {
		return (hasEnabled && p.Enabled != enabled) || (q.Has("name") && q.Get("name") != p.Name)
	})
	s.projectsResponse(w, r, ps)
}

// ---- users ----

func (s *Service) userView(r *http.Request, u *store.User) map[string]any {
	v := map[string]any{"id": u.ID, "name": u.Name, "domain_id": u.DomainID, "enabled": u.Enabled,
		"password_expires_at": nil, "options": map[string]any{},
		"links": map[string]string{"self": s.selfURL(r, "users", u.ID)}}
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
	enabled, hasEnabled := boolFilter(r, "enabled")
	us = slices.DeleteFunc(us, func(u store.User) bool {
		return !domainFilterMatches(r) || (q.Has("name") && u.Name != q.Get("name")) ||
			(hasEnabled && u.Enabled != enabled)
	})
	out := make([]map[string]any, 0, len(us))
	for i := range us {
		out = append(out, s.userView(r, &us[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"users": out, "links": s.collectionLinks(r)})
}

type userInput struct {
	Name             *string `json:"name"`
	Password         *string `json:"password"`
	DomainID         *string `json:"domain_id"`
	DefaultProjectID *string `json:"default_project_id"`
	ProjectID        *string `json:"project_id"` // Tempest's identity_utils sends this
	Email            *string `json:"email"`
	Enabled          *bool   `json:"enabled"`
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
	if in.DomainID != nil && *in.DomainID != "" && !isDefaultDomain(*in.DomainID) {
		return "Could not find domain: " + *in.DomainID + "."
	}
	return ""
}

// MaxPasswordBytes is the longest password bcrypt uses whole; a longer
// one is refused when set (400) rather than silently truncated, and can
// never log in.
const MaxPasswordBytes = 72

// errPasswordTooLong is the 400 for a password bcrypt cannot hold.
var errPasswordTooLong = errdefs.InvalidArgument(fmt.Sprintf(
	"Invalid input for field 'password': the password is longer than %d bytes.", MaxPasswordBytes))

func hashPassword(pw string) (string, error) {
	if len(pw) > MaxPasswordBytes {
		return "", errPasswordTooLong
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

func (s *Service) createUser(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var in userInput
	if !s.readEntity(w, r, "user", &in) {
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
	if in.Enabled != nil {
		u.Enabled = *in.Enabled
	}
	if in.Email != nil {
		u.Email = *in.Email
	}
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
		h, err := hashPassword(*in.Password)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		u.PasswordHash = h
	}
	if err := s.st.WithContext(r.Context()).Create(&u).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store user - Duplicate entry found with name "+u.Name+" at domain ID default."))
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
	if c.UserID != id && !c.IsAdmin() {
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
	if !s.readEntity(w, r, "user", &in) {
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
	revoke := false
	if in.Name != nil {
		u.Name = *in.Name
	}
	if in.Email != nil {
		u.Email = *in.Email
	}
	if in.Enabled != nil {
		revoke = revoke || (u.Enabled && !*in.Enabled)
		u.Enabled = *in.Enabled
	}
	if in.DefaultProjectID != nil {
		u.DefaultProjectID = *in.DefaultProjectID
	}
	if in.Password != nil {
		h, err := hashPassword(*in.Password)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		u.PasswordHash = h
		revoke = true
	}
	err = s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		if err := tx.Select("name", "email", "enabled", "default_project_id", "password_hash").Save(&u).Error; err != nil {
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
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("id = ?", id).Delete(&store.User{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		if err := tx.Where("user_id = ?", id).Delete(&store.RoleAssignment{}).Error; err != nil {
			return err
		}
		return tx.Where("user_id = ?", id).Delete(&store.Token{}).Error
	})
	if err != nil {
		s.storeError(w, r, err, "Could not find user: "+id+".")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// changePassword is POST /v3/users/{id}/password: the user's own change,
// which needs the original password and revokes the user's tokens.
func (s *Service) changePassword(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if c.UserID != id {
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
	h, err := hashPassword(*in.Password)
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

// userGroups: Capsule has no groups; OSC asks when showing a user.
func (s *Service) userGroups(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	if c.UserID != r.PathValue("id") && !c.IsAdmin() {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"groups": []any{}, "links": s.collectionLinks(r)})
}

// ---- roles ----

func (s *Service) roleView(r *http.Request, ro *store.Role) map[string]any {
	return map[string]any{"id": ro.ID, "name": ro.Name, "domain_id": nil, "description": ro.Description,
		"options": map[string]any{}, "links": map[string]string{"self": s.selfURL(r, "roles", ro.ID)}}
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

func (s *Service) listRoles(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var roles []store.Role
	if err := s.st.WithContext(r.Context()).Order("name").Find(&roles).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list roles: %w", err))
		return
	}
	q := r.URL.Query()
	// Domain-specific roles do not exist: a domain_id filter finds none.
	roles = slices.DeleteFunc(roles, func(ro store.Role) bool {
		return (q.Has("name") && !strings.EqualFold(ro.Name, q.Get("name"))) || q.Get("domain_id") != ""
	})
	s.rolesResponse(w, r, roles)
}

type roleInput struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	DomainID    *string `json:"domain_id"`
}

func (s *Service) createRole(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var in roleInput
	if !s.readEntity(w, r, "role", &in) {
		return
	}
	if in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > maxName {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'name': a non-empty name of at most 255 characters is required."))
		return
	}
	if in.DomainID != nil && *in.DomainID != "" {
		s.failErr(w, r, errdefs.InvalidArgument("Domain-specific roles are not supported."))
		return
	}
	ro := store.Role{ID: newID(), Name: *in.Name}
	if in.Description != nil {
		ro.Description = *in.Description
	}
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

// createRoleRow inserts ro; role names are unique regardless of case, as
// Tempest and Keystone (on MySQL) treat them.
func (s *Service) createRoleRow(ctx context.Context, ro *store.Role) error {
	return s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&store.Role{}).Where("LOWER(name) = ?", strings.ToLower(ro.Name)).Count(&n).Error; err != nil {
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
	if !s.readEntity(w, r, "role", &in) {
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
	if err := s.st.WithContext(r.Context()).Select("name", "description").Save(&ro).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store role - Duplicate entry found with name "+ro.Name+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("update role %s: %w", id, err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"role": s.roleView(r, &ro)})
}

func (s *Service) deleteRole(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("id = ?", id).Delete(&store.Role{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		return tx.Where("role_id = ?", id).Delete(&store.RoleAssignment{}).Error
	})
	if err != nil {
		s.storeError(w, r, err, "Could not find role: "+id+".")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- grants ----

// grantTargets checks the project, user and (when present) role of a
// grant URL exist, answering 404 naming the missing one.
func (s *Service) grantTargets(w http.ResponseWriter, r *http.Request, withRole bool) bool {
	ctx := r.Context()
	if _, err := s.loadProject(ctx, r.PathValue("p")); err != nil {
		s.storeError(w, r, err, "Could not find project: "+r.PathValue("p")+".")
		return false
	}
	if _, err := s.loadUser(ctx, r.PathValue("u")); err != nil {
		s.storeError(w, r, err, "Could not find user: "+r.PathValue("u")+".")
		return false
	}
	if withRole {
		if _, err := s.loadRole(ctx, r.PathValue("r")); err != nil {
			s.storeError(w, r, err, "Could not find role: "+r.PathValue("r")+".")
			return false
		}
	}
	return true
}

func (s *Service) listGrants(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	if !s.grantTargets(w, r, false) {
		return
	}
	roles, err := userRoles(r.Context(), s.st, r.PathValue("u"), r.PathValue("p"))
	if err != nil {
		s.internalError(w, r, fmt.Errorf("list grants: %w", err))
		return
	}
	s.rolesResponse(w, r, roles)
}

func (s *Service) checkGrant(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	if !s.grantTargets(w, r, true) {
		return
	}
	var n int64
	if err := s.st.WithContext(r.Context()).Model(&store.RoleAssignment{}).
		Where("user_id = ? AND project_id = ? AND role_id = ?", r.PathValue("u"), r.PathValue("p"), r.PathValue("r")).
		Count(&n).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("check grant: %w", err))
		return
	}
	if n == 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find role assignment."))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) putGrant(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	if !s.grantTargets(w, r, true) {
		return
	}
	if err := grant(r.Context(), s.st, r.PathValue("u"), r.PathValue("p"), r.PathValue("r")); err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) deleteGrant(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	if !s.grantTargets(w, r, true) {
		return
	}
	res := s.st.WithContext(r.Context()).
		Where("user_id = ? AND project_id = ? AND role_id = ?", r.PathValue("u"), r.PathValue("p"), r.PathValue("r")).
		Delete(&store.RoleAssignment{})
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("delete grant: %w", res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.failErr(w, r, errdefs.NotFound("Could not find role assignment."))
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

// listAssignments is GET /v3/role_assignments. Admins see all; others
// only their own (user.id must be theirs).
func (s *Service) listAssignments(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	q := r.URL.Query()
	if !c.IsAdmin() && q.Get("user.id") != c.UserID {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	db := s.st.WithContext(r.Context()).Model(&store.RoleAssignment{})
	if v := q.Get("user.id"); v != "" {
		db = db.Where("user_id = ?", v)
	}
	if v := q.Get("scope.project.id"); v != "" {
		db = db.Where("project_id = ?", v)
	}
	if v := q.Get("role.id"); v != "" {
		db = db.Where("role_id = ?", v)
	}
	var ras []store.RoleAssignment
	// No groups, domain-scoped or system assignments exist.
	if q.Get("group.id") == "" && q.Get("scope.domain.id") == "" && q.Get("scope.system") == "" {
		if err := db.Order("project_id, user_id, role_id").Find(&ras).Error; err != nil {
			s.internalError(w, r, fmt.Errorf("list role assignments: %w", err))
			return
		}
	}
	names, _ := boolFilter(r, "include_names")
	var (
		roleNames, userNames, projNames map[string]string
		err                             error
	)
	if names {
		if roleNames, userNames, projNames, err = s.entityNames(r.Context()); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	out := make([]map[string]any, 0, len(ras))
	base := httpapi.BaseURL(r)
	for _, ra := range ras {
		role := map[string]any{"id": ra.RoleID}
		user := map[string]any{"id": ra.UserID}
		proj := map[string]any{"id": ra.ProjectID}
		if names {
			role["name"] = roleNames[ra.RoleID]
			user["name"], user["domain"] = userNames[ra.UserID], defaultDomain
			proj["name"], proj["domain"] = projNames[ra.ProjectID], defaultDomain
		}
		out = append(out, map[string]any{"role": role, "user": user, "scope": map[string]any{"project": proj},
			"links": map[string]string{"assignment": base + "/v3/projects/" + ra.ProjectID + "/users/" +
				ra.UserID + "/roles/" + ra.RoleID}})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"role_assignments": out, "links": s.collectionLinks(r)})
}

func (s *Service) entityNames(ctx context.Context) (roles, users, projects map[string]string, err error) {
	db := s.st.WithContext(ctx)
	var rs []store.Role
	var us []store.User
	var ps []store.Project
	if err = db.Find(&rs).Error; err == nil {
		if err = db.Find(&us).Error; err == nil {
			err = db.Find(&ps).Error
		}
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load entity names: %w", err)
	}
	roles, users, projects = map[string]string{}, map[string]string{}, map[string]string{}
	for _, x := range rs {
		roles[x.ID] = x.Name
	}
	for _, x := range us {
		users[x.ID] = x.Name
	}
	for _, x := range ps {
		projects[x.ID] = x.Name
	}
	return roles, users, projects, nil
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
