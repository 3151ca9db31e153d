package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// ---- list filters shared by users, projects, roles and domains ----

// nameMatches applies Keystone's name filters: name= (exact) and the
// name__contains / __startswith / __endswith operators with their
// case-insensitive i-variants.
func nameMatches(q url.Values, name string) bool {
	if q.Has("name") && q.Get("name") != name {
		return false
	}
	lower := strings.ToLower(name)
	for op, test := range map[string]func(s, sub string) bool{
		"contains": strings.Contains, "startswith": strings.HasPrefix, "endswith": strings.HasSuffix,
	} {
		if q.Has("name__"+op) && !test(name, q.Get("name__"+op)) {
			return false
		}
		if q.Has("name__i"+op) && !test(lower, strings.ToLower(q.Get("name__i"+op))) {
			return false
		}
	}
	return true
}

// ---- tags (projects and domains) ----

// Keystone's tag limits.
const (
	maxTags   = 80
	maxTagLen = 255
)

func decodeTags(s string) []string {
	tags := []string{}
	if s != "" {
		_ = json.Unmarshal([]byte(s), &tags)
	}
	return tags
}

func encodeTags(tags []string) string {
	b, _ := json.Marshal(tags)
	return string(b)
}

// checkTags validates a tag list as Keystone does and drops duplicates.
func checkTags(tags []string) ([]string, error) {
	if len(tags) > maxTags {
		return nil, errdefs.InvalidArgumentf("Invalid input for field 'tags': at most %d tags are allowed.", maxTags)
	}
	out := []string{}
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

func checkTag(t string) error {
	if strings.TrimSpace(t) == "" || len(t) > maxTagLen || strings.ContainsAny(t, "/,") {
		return errdefs.InvalidArgumentf("Invalid input for field 'tags': tag %q must be 1 to %d characters without '/' or ','.", t, maxTagLen)
	}
	return nil
}

// tagsMatch applies the tags, tags-any, not-tags and not-tags-any filters.
func tagsMatch(q url.Values, tags []string) bool {
	split := func(k string) []string { return strings.Split(q.Get(k), ",") }
	has := func(t string) bool { return slices.Contains(tags, t) }
	all := func(ts []string) bool {
		for _, t := range ts {
			if !has(t) {
				return false
			}
		}
		return true
	}
	anyOf := func(ts []string) bool { return slices.ContainsFunc(ts, has) }
	return (!q.Has("tags") || all(split("tags"))) && (!q.Has("tags-any") || anyOf(split("tags-any"))) &&
		(!q.Has("not-tags") || !all(split("not-tags"))) && (!q.Has("not-tags-any") || !anyOf(split("not-tags-any")))
}

// ---- domains ----

func (s *Service) domainView(r *http.Request, d *store.Domain) map[string]any {
	return map[string]any{"id": d.ID, "name": d.Name, "description": d.Description,
		"enabled": d.Enabled, "tags": decodeTags(d.Tags), "options": map[string]any{},
		"links": map[string]string{"self": s.selfURL(r, "domains", d.ID)}}
}

// domainAsProject is a domain seen through /v3/projects (Keystone keeps
// domains as projects with is_domain true).
func (s *Service) domainAsProject(r *http.Request, d *store.Domain) map[string]any {
	return map[string]any{"id": d.ID, "name": d.Name, "domain_id": nil, "description": d.Description,
		"enabled": d.Enabled, "parent_id": nil, "is_domain": true, "tags": decodeTags(d.Tags),
		"options": map[string]any{}, "links": map[string]string{"self": s.selfURL(r, "projects", d.ID)}}
}

func (s *Service) loadDomain(ctx context.Context, id string) (store.Domain, error) {
	var d store.Domain
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&d).Error
	return d, store.NotFound(err, "domain "+id)
}

// findDomain resolves a domain given by id or by name; the default
// domain's name is accepted where an id is expected, as before domains
// could be created.
func (s *Service) findDomain(ctx context.Context, id, name string) (store.Domain, error) {
	var d store.Domain
	db := s.st.WithContext(ctx)
	var err error
	switch {
	case id != "":
		err = db.Where("id = ?", id).Take(&d).Error
		if errors.Is(err, gorm.ErrRecordNotFound) && strings.EqualFold(id, DefaultDomainName) {
			err = db.Where("id = ?", DefaultDomainID).Take(&d).Error
		}
	case name != "":
		err = db.Where("name = ?", name).Take(&d).Error
	default:
		return d, fmt.Errorf("no domain given: %w", store.ErrNotFound)
	}
	return d, store.NotFound(err, "domain "+id+name)
}

// notFoundAs gives a store's not-found error the API's message; other
// errors pass unchanged.
func notFoundAs(err error, msg string) error {
	if errors.Is(err, store.ErrNotFound) {
		return errdefs.Wrap(err, errdefs.ErrNotFound, msg)
	}
	return err
}

// domainNames maps domain ids to names for views that show both.
func (s *Service) domainNames(ctx context.Context) (map[string]string, error) {
	var ds []store.Domain
	if err := s.st.WithContext(ctx).Find(&ds).Error; err != nil {
		return nil, fmt.Errorf("load domains: %w", err)
	}
	out := make(map[string]string, len(ds))
	for _, d := range ds {
		out[d.ID] = d.Name
	}
	return out, nil
}

func (s *Service) listDomains(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var ds []store.Domain
	if err := s.st.WithContext(r.Context()).Order("name").Find(&ds).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list domains: %w", err))
		return
	}
	q := r.URL.Query()
	enabled, hasEnabled := boolFilter(r, "enabled")
	out := []map[string]any{}
	for i := range ds {
		d := &ds[i]
		if !nameMatches(q, d.Name) || (q.Has("id") && q.Get("id") != d.ID) || (hasEnabled && d.Enabled != enabled) ||
			!tagsMatch(q, decodeTags(d.Tags)) {
			continue
		}
		out = append(out, s.domainView(r, d))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domains": out, "links": s.collectionLinks(r)})
}

// getDomain answers admins, and any caller for its own user's domain.
func (s *Service) getDomain(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	id := r.PathValue("id")
	if !cloudAdmin(c) && c.DomainID != id {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return
	}
	d, err := s.loadDomain(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "Could not find domain: "+id+".")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domain": s.domainView(r, &d)})
}

// authDomains is GET /v3/auth/domains: the domains the caller may scope
// to (where it holds a role).
func (s *Service) authDomains(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	var ds []store.Domain
	db := s.st.WithContext(r.Context())
	if err := db.Where("enabled = ?", true).Where(db.Where("id IN (?)", db.Model(&store.DomainRoleAssignment{}).
		Select("domain_id").Where("user_id = ?", c.UserID)).Or("id IN (?)", groupTargets(db, c.UserID, true))).
		Order("name").Find(&ds).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list domains of user %s: %w", c.UserID, err))
		return
	}
	out := []map[string]any{}
	for i := range ds {
		out = append(out, s.domainView(r, &ds[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domains": out, "links": s.collectionLinks(r)})
}

type domainInput struct {
	Name        *string         `json:"name"`
	Description *string         `json:"description"`
	Enabled     *bool           `json:"enabled"`
	Tags        *[]string       `json:"tags"`
	Options     *map[string]any `json:"options"`
	// ExplicitDomainID is Keystone's create-time id choice; refused.
	ExplicitDomainID *string `json:"explicit_domain_id"`
}

func checkDomainName(n string) error {
	if strings.TrimSpace(n) == "" || len(n) > maxProjectName {
		return errdefs.InvalidArgumentf("Invalid input for field 'name': a non-empty name of at most %d characters is required.", maxProjectName)
	}
	return nil
}

func (s *Service) createDomain(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	var in domainInput
	if !s.readEntity(w, r, "domain", &in) {
		return
	}
	if in.Name == nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input: 'name' is a required property."))
		return
	}
	d, err := s.newDomain(r.Context(), *in.Name, in.Description, in.Enabled, in.Tags)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"domain": s.domainView(r, &d)})
}

// newDomain validates and stores a new domain (POST /v3/domains, or a
// project created with is_domain).
func (s *Service) newDomain(ctx context.Context, name string, desc *string, enabled *bool, tags *[]string) (store.Domain, error) {
	d := store.Domain{ID: newID(), Name: name, Enabled: true, Tags: "[]"}
	if err := checkDomainName(name); err != nil {
		return d, err
	}
	if desc != nil {
		d.Description = *desc
	}
	if enabled != nil {
		d.Enabled = *enabled
	}
	if tags != nil {
		ts, err := checkTags(*tags)
		if err != nil {
			return d, err
		}
		d.Tags = encodeTags(ts)
	}
	if err := s.st.WithContext(ctx).Create(&d).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			return d, errdefs.Conflict("Conflict occurred attempting to store domain - Duplicate entry found with name " + name + ".")
		}
		return d, fmt.Errorf("create domain: %w", err)
	}
	return d, nil
}

func (s *Service) updateDomain(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	var in domainInput
	if !s.readEntity(w, r, "domain", &in) {
		return
	}
	d, err := s.changeDomain(r.Context(), id, in.Name, in.Description, in.Enabled, in.Tags)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"domain": s.domainView(r, &d)})
}

// changeDomain updates a domain (PATCH /v3/domains/{id}, or the domain's
// project). The default domain cannot be disabled: every built-in user
// lives there.
func (s *Service) changeDomain(ctx context.Context, id string, name, desc *string, enabled *bool, tags *[]string) (store.Domain, error) {
	d, err := s.loadDomain(ctx, id)
	if err != nil {
		return d, notFoundAs(err, "Could not find domain: "+id+".")
	}
	if name != nil {
		if err := checkDomainName(*name); err != nil {
			return d, err
		}
		d.Name = *name
	}
	if desc != nil {
		d.Description = *desc
	}
	if enabled != nil {
		if d.ID == DefaultDomainID && !*enabled {
			return d, errdefs.Forbidden("The default domain cannot be disabled.")
		}
		d.Enabled = *enabled
	}
	if tags != nil {
		ts, err := checkTags(*tags)
		if err != nil {
			return d, err
		}
		d.Tags = encodeTags(ts)
	}
	if err := s.st.WithContext(ctx).Select("name", "description", "enabled", "tags").Save(&d).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			return d, errdefs.Conflict("Conflict occurred attempting to store domain - Duplicate entry found with name " + d.Name + ".")
		}
		return d, fmt.Errorf("update domain %s: %w", id, err)
	}
	return d, nil
}

func (s *Service) deleteDomain(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	if err := s.removeDomain(r.Context(), r.PathValue("id")); err != nil {
		s.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// removeDomain deletes a disabled domain with its users (and their grants,
// tokens and application credentials), as Keystone does. A domain that
// still owns projects is refused: their servers, networks and images must
// be deleted with the projects first.
func (s *Service) removeDomain(ctx context.Context, id string) error {
	d, err := s.loadDomain(ctx, id)
	if err != nil {
		return notFoundAs(err, "Could not find domain: "+id+".")
	}
	if d.ID == DefaultDomainID {
		return errdefs.Forbidden("The default domain cannot be deleted.")
	}
	if d.Enabled {
		return errdefs.Forbidden("Cannot delete a domain that is enabled, please disable it first.")
	}
	return s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&store.Project{}).Where("domain_id = ?", id).Count(&n).Error; err != nil {
			return fmt.Errorf("count projects of domain %s: %w", id, err)
		}
		if n > 0 {
			return errdefs.Conflictf("Domain %s still owns %d project(s); delete them first.", id, n)
		}
		var users []string
		if err := tx.Model(&store.User{}).Where("domain_id = ?", id).Pluck("id", &users).Error; err != nil {
			return fmt.Errorf("users of domain %s: %w", id, err)
		}
		for _, u := range users {
			if err := deleteUserRows(tx, u); err != nil {
				return err
			}
		}
		if err := tx.Where("domain_id = ?", id).Delete(&store.DomainRoleAssignment{}).Error; err != nil {
			return fmt.Errorf("delete grants on domain %s: %w", id, err)
		}
		var groups []string
		if err := tx.Model(&store.Group{}).Where("domain_id = ?", id).Pluck("id", &groups).Error; err != nil {
			return fmt.Errorf("groups of domain %s: %w", id, err)
		}
		for _, g := range groups {
			if err := deleteGroupRows(tx, g); err != nil {
				return err
			}
		}
		for _, m := range []any{&store.GroupRoleAssignment{}, &store.InheritedRoleAssignment{}} {
			if err := tx.Where("target_id = ? AND on_domain = ?", id, true).Delete(m).Error; err != nil {
				return fmt.Errorf("delete group and inherited grants on domain %s: %w", id, err)
			}
		}
		if err := tx.Where("domain_id = ?", id).Delete(&store.Token{}).Error; err != nil {
			return fmt.Errorf("delete tokens of domain %s: %w", id, err)
		}
		return tx.Where("id = ?", id).Delete(&store.Domain{}).Error
	})
}

// deleteUserRows deletes a user and everything that hangs off it.
func deleteUserRows(tx *gorm.DB, id string) error {
	res := tx.Where("id = ?", id).Delete(&store.User{})
	if res.Error != nil {
		return fmt.Errorf("delete user %s: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("user %s: %w", id, store.ErrNotFound)
	}
	for _, m := range []any{&store.RoleAssignment{}, &store.DomainRoleAssignment{}, &store.Token{}, &store.ApplicationCredential{}, &store.Credential{}, &store.GroupMember{}} {
		if err := tx.Where("user_id = ?", id).Delete(m).Error; err != nil {
			return fmt.Errorf("delete rows of user %s: %w", id, err)
		}
	}
	return deleteActorRows(tx, id, false)
}

// deleteActorRows deletes the inherited and system grants of a user or
// (isGroup) a group.
func deleteActorRows(tx *gorm.DB, id string, isGroup bool) error {
	for _, m := range []any{&store.InheritedRoleAssignment{}, &store.SystemRoleAssignment{}} {
		if err := tx.Where("actor_id = ? AND is_group = ?", id, isGroup).Delete(m).Error; err != nil {
			return fmt.Errorf("delete inherited and system grants of %s: %w", id, err)
		}
	}
	return nil
}
