package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// Application credentials (Keystone's /v3/users/{id}/application_credentials):
// a secret that logs in as its user, in one project, with a subset of the
// user's roles there. The secret is shown once, at creation; only a bcrypt
// hash of its SHA-256 is kept (so a secret of any length hashes whole).

func hashAppCredSecret(secret string, rounds int) (string, error) {
	sum := sha256.Sum256([]byte(secret))
	h, err := bcrypt.GenerateFromPassword([]byte(hex.EncodeToString(sum[:])), rounds)
	if err != nil {
		return "", fmt.Errorf("hash application credential secret: %w", err)
	}
	return string(h), nil
}

// checkAppCredSecret spends bcrypt work even without a hash, like
// password checks, so an unknown credential is not told apart by time.
func (s *Service) checkAppCredSecret(hash, secret string) bool {
	sum := sha256.Sum256([]byte(secret))
	return s.login.checkPassword(hash, hex.EncodeToString(sum[:]))
}

// appCredRoles keeps of roles (the user's on the project) those the
// credential carries.
func appCredRoles(ac *store.ApplicationCredential, roles []store.Role) []store.Role {
	var ids []string
	_ = json.Unmarshal([]byte(ac.Roles), &ids)
	return slices.DeleteFunc(slices.Clone(roles), func(r store.Role) bool { return !slices.Contains(ids, r.ID) })
}

func (s *Service) appCredView(r *http.Request, ac *store.ApplicationCredential, roles []store.Role, secret string) map[string]any {
	rs := []map[string]any{}
	for _, ro := range roles {
		rs = append(rs, map[string]any{"id": ro.ID, "name": ro.Name, "domain_id": nil})
	}
	var exp any
	if ac.ExpiresAt != nil {
		exp = ac.ExpiresAt.UTC().Format("2006-01-02T15:04:05.000000")
	}
	v := map[string]any{"id": ac.ID, "name": ac.Name, "description": ac.Description, "user_id": ac.UserID,
		"project_id": ac.ProjectID, "roles": rs, "expires_at": exp, "unrestricted": ac.Unrestricted,
		"access_rules": []any{}, "links": map[string]string{"self": httpapi.BaseURL(r) + "/v3/users/" + ac.UserID +
			"/application_credentials/" + ac.ID}}
	if secret != "" {
		v["secret"] = secret
	}
	return v
}

// storedRoles are the roles a credential names that still exist.
func (s *Service) storedRoles(ctx context.Context, ac *store.ApplicationCredential) ([]store.Role, error) {
	var ids []string
	_ = json.Unmarshal([]byte(ac.Roles), &ids)
	var roles []store.Role
	if len(ids) == 0 {
		return roles, nil
	}
	if err := s.st.WithContext(ctx).Where("id IN ?", ids).Order("name").Find(&roles).Error; err != nil {
		return nil, fmt.Errorf("load roles of application credential %s: %w", ac.ID, err)
	}
	return roles, nil
}

// appCredOwner checks the caller may act on the credentials of user {id}:
// its owner, or (read and delete) a cloud admin.
func (s *Service) appCredOwner(w http.ResponseWriter, r *http.Request, adminMay bool) (*auth.Credentials, bool) {
	c := auth.FromContext(r.Context())
	if c.UserID != r.PathValue("id") && !(adminMay && cloudAdmin(c)) {
		s.failErr(w, r, errdefs.Forbidden(forbiddenMsg))
		return c, false
	}
	if _, err := s.loadUser(r.Context(), r.PathValue("id")); err != nil {
		s.storeError(w, r, err, "Could not find user: "+r.PathValue("id")+".")
		return c, false
	}
	return c, true
}

type appCredInput struct {
	Name         *string `json:"name"`
	Description  *string `json:"description"`
	Secret       *string `json:"secret"`
	ExpiresAt    *string `json:"expires_at"`
	Unrestricted *bool   `json:"unrestricted"`
	Roles        []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"roles"`
	AccessRules json.RawMessage `json:"access_rules"`
}

// parseExpiry reads Keystone's expires_at (ISO 8601, zone optional: UTC).
func parseExpiry(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errdefs.InvalidArgument("Invalid input for field 'expires_at': not an ISO 8601 time.")
}

func (s *Service) createAppCred(w http.ResponseWriter, r *http.Request) {
	c, ok := s.appCredOwner(w, r, false)
	if !ok {
		return
	}
	if c.AppCredID != "" && c.AppCredRestricted {
		s.failErr(w, r, errdefs.Forbidden("A restricted application credential cannot create application credentials."))
		return
	}
	if c.ProjectID == "" {
		s.failErr(w, r, errdefs.Forbidden("A project-scoped token is required to create an application credential."))
		return
	}
	var in appCredInput
	if !s.readEntity(w, r, "application_credential", &in) {
		return
	}
	if in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > maxName {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'name': a non-empty name of at most 255 characters is required."))
		return
	}
	if t := strings.TrimSpace(string(in.AccessRules)); t != "" && t != "null" && t != "[]" {
		s.failErr(w, r, errdefs.InvalidArgument("Access rules are not supported: Capsule cannot enforce them."))
		return
	}
	ac := store.ApplicationCredential{ID: newID(), Name: *in.Name, UserID: c.UserID, ProjectID: c.ProjectID}
	if in.Description != nil {
		ac.Description = *in.Description
	}
	if in.Unrestricted != nil {
		ac.Unrestricted = *in.Unrestricted
	}
	if in.ExpiresAt != nil && *in.ExpiresAt != "" {
		t, err := parseExpiry(*in.ExpiresAt)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		if !t.After(s.now()) {
			s.failErr(w, r, errdefs.InvalidArgument("Invalid input for field 'expires_at': the time is in the past."))
			return
		}
		ac.ExpiresAt = &t
	}
	// The credential's roles: those named, each one the caller holds on
	// the project; none named means all of the caller's token's roles.
	held, err := userRoles(r.Context(), s.st, c.UserID, c.ProjectID)
	if err != nil {
		s.internalError(w, r, fmt.Errorf("load roles: %w", err))
		return
	}
	if c.AppCredID != "" {
		held = slices.DeleteFunc(held, func(ro store.Role) bool { return !c.HasRole(ro.Name) })
	}
	roles := held
	if len(in.Roles) > 0 {
		roles = nil
		for _, want := range in.Roles {
			i := slices.IndexFunc(held, func(ro store.Role) bool {
				return (want.ID != "" && ro.ID == want.ID) || (want.ID == "" && strings.EqualFold(ro.Name, want.Name))
			})
			if i < 0 {
				s.failErr(w, r, errdefs.NotFound("Could not find role assignment with role: "+want.ID+want.Name+
					", user or group: "+c.UserID+", project, domain, or system: "+c.ProjectID+"."))
				return
			}
			if !slices.ContainsFunc(roles, func(ro store.Role) bool { return ro.ID == held[i].ID }) {
				roles = append(roles, held[i])
			}
		}
	}
	ids := []string{}
	for _, ro := range roles {
		ids = append(ids, ro.ID)
	}
	b, _ := json.Marshal(ids)
	ac.Roles = string(b)
	secret := ""
	if in.Secret != nil && *in.Secret != "" {
		secret = *in.Secret
	} else if secret, err = randomString(64); err != nil {
		s.internalError(w, r, err)
		return
	}
	if ac.SecretHash, err = hashAppCredSecret(secret, s.opts.PasswordHashRounds); err != nil {
		s.internalError(w, r, err)
		return
	}
	if err := s.st.WithContext(r.Context()).Create(&ac).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.failErr(w, r, errdefs.Conflict("Conflict occurred attempting to store application_credential - Duplicate entry found with name "+ac.Name+"."))
			return
		}
		s.internalError(w, r, fmt.Errorf("create application credential: %w", err))
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"application_credential": s.appCredView(r, &ac, roles, secret)})
}

func (s *Service) listAppCreds(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.appCredOwner(w, r, true); !ok {
		return
	}
	db := s.st.WithContext(r.Context()).Where("user_id = ?", r.PathValue("id"))
	if n := r.URL.Query().Get("name"); n != "" {
		db = db.Where("name = ?", n)
	}
	var acs []store.ApplicationCredential
	if err := db.Order("name").Find(&acs).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("list application credentials: %w", err))
		return
	}
	out := []map[string]any{}
	for i := range acs {
		roles, err := s.storedRoles(r.Context(), &acs[i])
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		out = append(out, s.appCredView(r, &acs[i], roles, ""))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"application_credentials": out, "links": s.collectionLinks(r)})
}

func (s *Service) loadAppCred(w http.ResponseWriter, r *http.Request) (store.ApplicationCredential, bool) {
	var ac store.ApplicationCredential
	err := s.st.WithContext(r.Context()).Where("id = ? AND user_id = ?", r.PathValue("cred"), r.PathValue("id")).Take(&ac).Error
	if err != nil {
		s.storeError(w, r, store.NotFound(err, "application credential"), "Could not find Application Credential: "+r.PathValue("cred")+".")
		return ac, false
	}
	return ac, true
}

func (s *Service) getAppCred(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.appCredOwner(w, r, true); !ok {
		return
	}
	ac, ok := s.loadAppCred(w, r)
	if !ok {
		return
	}
	roles, err := s.storedRoles(r.Context(), &ac)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"application_credential": s.appCredView(r, &ac, roles, "")})
}

// deleteAppCred deletes a credential and revokes the tokens issued for it.
func (s *Service) deleteAppCred(w http.ResponseWriter, r *http.Request) {
	c, ok := s.appCredOwner(w, r, true)
	if !ok {
		return
	}
	if c.AppCredID != "" && c.AppCredRestricted {
		s.failErr(w, r, errdefs.Forbidden("A restricted application credential cannot delete application credentials."))
		return
	}
	ac, ok := s.loadAppCred(w, r)
	if !ok {
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("id = ?", ac.ID).Delete(&store.ApplicationCredential{}).Error; err != nil {
			return err
		}
		return tx.Where("app_cred_id = ?", ac.ID).Delete(&store.Token{}).Error
	})
	if err != nil {
		s.internalError(w, r, fmt.Errorf("delete application credential %s: %w", ac.ID, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// appCredAuth is the application_credential identity method: an id and
// secret, or a name, secret and the owning user (id, or name and domain).
type appCredAuth struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Secret string `json:"secret"`
	User   *struct {
		ID     string     `json:"id"`
		Name   string     `json:"name"`
		Domain *domainRef `json:"domain"`
	} `json:"user"`
}

// appCredLogin checks an application_credential method and returns the
// credential and its user. Failures count toward the source's lockout.
func (s *Service) appCredLogin(ctx context.Context, in *appCredAuth, source string) (*store.ApplicationCredential, store.User, error) {
	var user store.User
	if in == nil || in.Secret == "" || (in.ID == "" && (in.Name == "" || in.User == nil)) {
		return nil, user, badAuthRequest("Invalid authentication request: application_credential needs an id, or a name and user, and a secret.")
	}
	if s.login.sources.locked(source, s.now()) {
		s.checkAppCredSecret("", in.Secret)
		return nil, user, unauthorized("too many failed logins from " + source)
	}
	fail := func(why string) (*store.ApplicationCredential, store.User, error) {
		s.checkAppCredSecret("", in.Secret)
		s.login.sources.fail(source, s.now())
		return nil, user, unauthorized(why)
	}
	db := s.st.WithContext(ctx)
	q := db.Model(&store.ApplicationCredential{})
	if in.ID != "" {
		q = q.Where("id = ?", in.ID)
	} else {
		uq := db.Model(&store.User{})
		switch {
		case in.User.ID != "":
			uq = uq.Where("id = ?", in.User.ID)
		case in.User.Name != "":
			domainID := DefaultDomainID
			if in.User.Domain != nil && (in.User.Domain.ID != "" || in.User.Domain.Name != "") {
				d, err := s.findDomain(ctx, in.User.Domain.ID, in.User.Domain.Name)
				if err != nil {
					if !errors.Is(err, store.ErrNotFound) {
						return nil, user, err
					}
					return fail("unknown domain " + in.User.Domain.ref())
				}
				domainID = d.ID
			}
			uq = uq.Where("name = ? AND domain_id = ?", in.User.Name, domainID)
		default:
			return nil, user, badAuthRequest("Invalid authentication request: application_credential.user needs an id or a name.")
		}
		var u store.User
		if err := uq.Take(&u).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fail("unknown user")
			}
			return nil, user, fmt.Errorf("load user: %w", err)
		}
		q = q.Where("name = ? AND user_id = ?", in.Name, u.ID)
	}
	var ac store.ApplicationCredential
	if err := q.Take(&ac).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fail("unknown application credential")
		}
		return nil, user, fmt.Errorf("load application credential: %w", err)
	}
	if !s.checkAppCredSecret(ac.SecretHash, in.Secret) {
		s.login.sources.fail(source, s.now())
		return nil, user, unauthorized("wrong secret for application credential " + ac.ID)
	}
	if ac.ExpiresAt != nil && !s.now().Before(*ac.ExpiresAt) {
		return nil, user, unauthorized("application credential " + ac.ID + " expired")
	}
	if err := db.Where("id = ?", ac.UserID).Take(&user).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, user, unauthorized("user of application credential " + ac.ID + " gone")
		}
		return nil, user, fmt.Errorf("load user: %w", err)
	}
	return &ac, user, nil
}
