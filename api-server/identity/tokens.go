package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	"gorm.io/gorm"
)

// Errors Validate returns. ErrInvalidToken covers unknown, expired and
// revoked tokens and tokens whose user or scope is gone; ErrUnavailable
// means the check itself could not run (the database failed).
var (
	ErrInvalidToken = errdefs.Unauthenticated("invalid token")
	ErrUnavailable  = errdefs.Unavailable("token validation unavailable")
)

// authFailMsg is Keystone's 401 message.
const authFailMsg = "The request you have made requires authentication."

// RequireToken returns middleware that validates the X-Auth-Token header
// with v and puts the caller's credentials in the request context. Each
// service renders failures in its own error format through onFail, which
// maps the error's kind (Unauthenticated for a missing or invalid token,
// Unavailable when validation cannot run).
//
// A system-scoped token is refused (Forbidden): the services that use
// this middleware (Neutron, Glance, Cinder) have project-scoped policies,
// as upstream's have since 2023.2, and a caller without a project must not
// create resources that no project owns. Only the identity API takes one.
func RequireToken(v auth.Validator, onFail func(w http.ResponseWriter, r *http.Request, err error)) func(http.Handler) http.Handler {
	return requireToken(v, onFail, false)
}

// requireToken is RequireToken; withSystem lets system-scoped tokens in.
func requireToken(v auth.Validator, onFail func(w http.ResponseWriter, r *http.Request, err error), withSystem bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok := r.Header.Get("X-Auth-Token")
			if tok == "" {
				onFail(w, r, errdefs.Unauthenticated(authFailMsg))
				return
			}
			c, err := v.Validate(r.Context(), tok)
			if err != nil {
				if errors.Is(err, ErrUnavailable) {
					onFail(w, r, errdefs.Unavailable("Token validation is temporarily unavailable.").WithCause(err))
					return
				}
				onFail(w, r, errdefs.Unauthenticated(authFailMsg).WithCause(err))
				return
			}
			if c.System && !withSystem {
				onFail(w, r, errdefs.Forbidden("A system-scoped token cannot be used here: this service needs a project-scoped token."))
				return
			}
			next.ServeHTTP(w, r.WithContext(auth.WithCredentials(r.Context(), c)))
		})
	}
}

// hashToken is what the database keeps instead of the token.
func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenInfo is a live token with everything its body shows.
type tokenInfo struct {
	id      string
	row     store.Token
	user    store.User
	project *store.Project
	// domain is the scope of a domain-scoped token.
	domain *store.Domain
	// userDomain and projectDomain are the domains the body names.
	userDomain, projectDomain store.Domain
	appCred                   *store.ApplicationCredential
	roles                     []store.Role
	// system says the token is system-scoped.
	system bool
}

// loadToken looks tok up and checks it is live: not expired, not revoked,
// its user enabled, and (when scoped) its project enabled with at least
// one role for the user.
func (s *Service) loadToken(ctx context.Context, tok string) (*tokenInfo, error) {
	if tok == "" {
		return nil, fmt.Errorf("empty token: %w", ErrInvalidToken)
	}
	db := s.st.WithContext(ctx)
	var row store.Token
	if err := db.Where("hash = ?", hashToken(tok)).Take(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, fmt.Errorf("unknown token: %w", ErrInvalidToken)
		}
		return nil, fmt.Errorf("load token: %w: %w", ErrUnavailable, err)
	}
	if row.Revoked {
		return nil, fmt.Errorf("token revoked: %w", ErrInvalidToken)
	}
	if !s.now().Before(row.ExpiresAt) {
		return nil, fmt.Errorf("token expired at %s: %w", row.ExpiresAt.UTC().Format(time.RFC3339), ErrInvalidToken)
	}
	if row.AppCredID != "" && row.ProjectID == "" {
		return nil, fmt.Errorf("application credential token without a project: %w", ErrInvalidToken)
	}
	ti := &tokenInfo{id: tok, row: row}
	var err error
	if err := db.Where("id = ?", row.UserID).Take(&ti.user).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, fmt.Errorf("token user %s gone: %w", row.UserID, ErrInvalidToken)
		}
		return nil, fmt.Errorf("load token user: %w: %w", ErrUnavailable, err)
	}
	if !ti.user.Enabled {
		return nil, fmt.Errorf("user %s disabled: %w", row.UserID, ErrInvalidToken)
	}
	if ti.userDomain, err = s.liveDomain(ctx, ti.user.DomainID); err != nil {
		return nil, err
	}
	if row.AppCredID != "" {
		var ac store.ApplicationCredential
		if err := db.Where("id = ?", row.AppCredID).Take(&ac).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return nil, fmt.Errorf("application credential %s gone: %w", row.AppCredID, ErrInvalidToken)
			}
			return nil, fmt.Errorf("load application credential: %w: %w", ErrUnavailable, err)
		}
		ti.appCred = &ac
	}
	switch {
	case row.ProjectID != "":
		var p store.Project
		if err := db.Where("id = ?", row.ProjectID).Take(&p).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return nil, fmt.Errorf("token project %s gone: %w", row.ProjectID, ErrInvalidToken)
			}
			return nil, fmt.Errorf("load token project: %w: %w", ErrUnavailable, err)
		}
		if !p.Enabled {
			return nil, fmt.Errorf("project %s disabled: %w", p.ID, ErrInvalidToken)
		}
		if ti.projectDomain, err = s.liveDomain(ctx, p.DomainID); err != nil {
			return nil, err
		}
		ti.project = &p
		roles, err := userRoles(ctx, s.st, row.UserID, p.ID)
		if err != nil {
			return nil, fmt.Errorf("load token roles: %w: %w", ErrUnavailable, err)
		}
		if ti.appCred != nil {
			roles = appCredRoles(ti.appCred, roles)
		}
		if len(roles) == 0 {
			return nil, fmt.Errorf("user %s has no role on project %s any more: %w", row.UserID, p.ID, ErrInvalidToken)
		}
		ti.roles = roles
	case row.System:
		roles, err := userSystemRoles(ctx, s.st, row.UserID)
		if err != nil {
			return nil, fmt.Errorf("load token roles: %w: %w", ErrUnavailable, err)
		}
		if len(roles) == 0 {
			return nil, fmt.Errorf("user %s has no role on the system any more: %w", row.UserID, ErrInvalidToken)
		}
		ti.roles, ti.system = roles, true
	case row.DomainID != "":
		d, err := s.liveDomain(ctx, row.DomainID)
		if err != nil {
			return nil, err
		}
		ti.domain = &d
		roles, err := userDomainRoles(ctx, s.st, row.UserID, d.ID)
		if err != nil {
			return nil, fmt.Errorf("load token roles: %w: %w", ErrUnavailable, err)
		}
		if len(roles) == 0 {
			return nil, fmt.Errorf("user %s has no role on domain %s any more: %w", row.UserID, d.ID, ErrInvalidToken)
		}
		ti.roles = roles
	}
	return ti, nil
}

// liveDomain loads a domain a token depends on; a missing or disabled
// domain invalidates the token.
func (s *Service) liveDomain(ctx context.Context, id string) (store.Domain, error) {
	var d store.Domain
	if err := s.st.WithContext(ctx).Where("id = ?", id).Take(&d).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return d, fmt.Errorf("domain %s gone: %w", id, ErrInvalidToken)
		}
		return d, fmt.Errorf("load domain %s: %w: %w", id, ErrUnavailable, err)
	}
	if !d.Enabled {
		return d, fmt.Errorf("domain %s disabled: %w", id, ErrInvalidToken)
	}
	return d, nil
}

// Validate implements auth.Validator for every API service.
// A token validated in the last TokenCacheTTL, with no write to the
// store since, is not read again (tokencache.go).
func (s *Service) Validate(ctx context.Context, tok string) (*auth.Credentials, error) {
	hash := hashToken(tok)
	c, gen, ok := s.tokens.get(hash, s.now())
	if ok {
		return c, nil
	}
	ti, err := s.loadToken(ctx, tok)
	if err != nil {
		return nil, err
	}
	c = ti.credentials(s.opts.AdminProject)
	s.tokens.put(hash, c, gen, s.now())
	return c, nil
}

// credentials are what the token says of its caller; adminProject is the
// name of the admin project ("*": every project).
func (ti *tokenInfo) credentials(adminProject string) *auth.Credentials {
	c := &auth.Credentials{TokenID: ti.id, UserID: ti.user.ID, UserName: ti.user.Name,
		DomainID: ti.user.DomainID, ExpiresAt: ti.row.ExpiresAt}
	if ti.project != nil {
		c.ProjectID, c.ProjectName = ti.project.ID, ti.project.Name
		c.IsAdminProject = adminProject == "*" || (ti.project.Name == adminProject && ti.project.DomainID == DefaultDomainID)
	}
	c.System = ti.system
	if ti.appCred != nil {
		c.AppCredID, c.AppCredRestricted = ti.appCred.ID, !ti.appCred.Unrestricted
	}
	for _, r := range ti.roles {
		c.Roles = append(c.Roles, strings.ToLower(r.Name))
	}
	return c
}

// Token request body (POST /v3/auth/tokens).
type authRequest struct {
	Auth struct {
		Identity struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User struct {
					ID       string     `json:"id"`
					Name     string     `json:"name"`
					Password string     `json:"password"`
					Domain   *domainRef `json:"domain"`
				} `json:"user"`
			} `json:"password"`
			Token *struct {
				ID string `json:"id"`
			} `json:"token"`
			ApplicationCredential *appCredAuth `json:"application_credential"`
		} `json:"identity"`
		Scope json.RawMessage `json:"scope"`
	} `json:"auth"`
}

type domainRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// ref returns the id or name given; "" when neither.
func (d *domainRef) ref() string {
	if d == nil {
		return ""
	}
	if d.ID != "" {
		return d.ID
	}
	return d.Name
}

type scopeRequest struct {
	Project *struct {
		ID     string     `json:"id"`
		Name   string     `json:"name"`
		Domain *domainRef `json:"domain"`
	} `json:"project"`
	Domain *domainRef      `json:"domain"`
	System json.RawMessage `json:"system"`
	Trust  json.RawMessage `json:"OS-TRUST:trust"`
}

// unauthorized is a refused authentication; msg is logged, the client
// only hears Keystone's generic 401 (issueToken).
func unauthorized(msg string) error { return errdefs.Unauthenticated(msg) }

// badAuthRequest is a malformed token request (400, msg shown).
func badAuthRequest(msg string) error { return errdefs.InvalidArgument(msg) }

func (s *Service) issueToken(w http.ResponseWriter, r *http.Request) {
	var req authRequest
	if err := httpapi.ReadJSON(r, &req); err != nil {
		s.failErr(w, r, errdefs.InvalidArgument("Invalid authentication request: "+err.Error()))
		return
	}
	row, err := s.authenticate(r.Context(), &req, sourceAddress(r))
	if err != nil {
		// Only the request's own faults are answered as such; anything
		// else (the database, token validation) is a 500.
		switch errdefs.KindOf(err) {
		case errdefs.ErrUnauthenticated:
			s.log.InfoContext(r.Context(), "authentication refused", "reason", errdefs.Message(err),
				"request_id", httpapi.RequestID(r.Context()))
			s.failErr(w, r, errdefs.Unauthenticated(authFailMsg)) // do not tell a guesser which part was wrong
		case errdefs.ErrInvalidArgument:
			s.log.InfoContext(r.Context(), "authentication refused", "reason", errdefs.Message(err),
				"request_id", httpapi.RequestID(r.Context()))
			s.failErr(w, r, err)
		default:
			s.internalError(w, r, err)
		}
		return
	}
	s.writeNewToken(w, r, row, http.StatusCreated)
}

// writeNewToken stores row as a new token and answers it with status.
func (s *Service) writeNewToken(w http.ResponseWriter, r *http.Request, row *store.Token, status int) {
	tok, err := randomString(32)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	row.Hash = hashToken(tok)
	if err := s.st.WithContext(r.Context()).Create(row).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("store token: %w", err))
		return
	}
	ti, err := s.loadToken(r.Context(), tok)
	if err != nil {
		s.internalError(w, r, fmt.Errorf("reload issued token: %w", err))
		return
	}
	w.Header().Set("X-Subject-Token", tok)
	httpapi.WriteJSON(w, status, s.tokenBody(r, ti, !r.URL.Query().Has("nocatalog")))
}

// authenticate checks the identity methods and the requested scope and
// returns the token row to store (without its hash).
func (s *Service) authenticate(ctx context.Context, req *authRequest, source string) (*store.Token, error) {
	id := &req.Auth.Identity
	if len(id.Methods) == 0 {
		return nil, badAuthRequest("Invalid authentication request: identity.methods is required.")
	}
	var (
		user     store.User
		methods  []string
		auditIDs []string
		prevExp  time.Time
		appCred  *store.ApplicationCredential
	)
	db := s.st.WithContext(ctx)
	switch {
	case slices.Contains(id.Methods, "password"):
		if id.Password == nil {
			return nil, badAuthRequest("Invalid authentication request: identity.password is required.")
		}
		pu := id.Password.User
		q := db.Model(&store.User{})
		switch {
		case pu.ID != "":
			q = q.Where("id = ?", pu.ID)
		case pu.Name != "":
			// Keystone requires the user's domain with a name; a missing
			// one means the default domain.
			domainID := DefaultDomainID
			if pu.Domain != nil && (pu.Domain.ID != "" || pu.Domain.Name != "") {
				d, err := s.findDomain(ctx, pu.Domain.ID, pu.Domain.Name)
				if err != nil {
					if !errors.Is(err, store.ErrNotFound) {
						return nil, err
					}
					s.login.checkPassword("", pu.Password)
					s.login.sources.fail(source, s.now())
					return nil, unauthorized("unknown domain " + pu.Domain.ref())
				}
				domainID = d.ID
			}
			q = q.Where("name = ? AND domain_id = ?", pu.Name, domainID)
		default:
			return nil, badAuthRequest("Invalid authentication request: user id or name is required.")
		}
		if s.login.sources.locked(source, s.now()) {
			s.login.checkPassword("", pu.Password)
			return nil, unauthorized("too many failed logins from " + source)
		}
		if err := q.Take(&user).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				// The same bcrypt work as a known user's wrong password.
				s.login.checkPassword("", pu.Password)
				s.login.sources.fail(source, s.now())
				return nil, unauthorized("unknown user")
			}
			return nil, fmt.Errorf("load user: %w", err)
		}
		if s.login.users.locked(user.ID, s.now()) {
			s.login.checkPassword("", pu.Password)
			s.login.sources.fail(source, s.now())
			return nil, unauthorized("user " + user.ID + " is locked out after too many failed logins")
		}
		if !s.login.checkPassword(user.PasswordHash, pu.Password) {
			s.login.users.fail(user.ID, s.now())
			s.login.sources.fail(source, s.now())
			return nil, unauthorized("wrong password for user " + user.ID)
		}
		s.login.users.clear(user.ID)
		methods = []string{"password"}
	case slices.Contains(id.Methods, "token"):
		if id.Token == nil || id.Token.ID == "" {
			return nil, badAuthRequest("Invalid authentication request: identity.token.id is required.")
		}
		prev, err := s.loadToken(ctx, id.Token.ID)
		if err != nil {
			if errors.Is(err, ErrInvalidToken) {
				return nil, unauthorized("token method: " + err.Error())
			}
			return nil, err
		}
		user = prev.user
		// A rescoped token keeps the original's expiry and audit chain,
		// as Keystone's does.
		methods = append([]string{"token"}, strings.Split(prev.row.Methods, ",")...)
		methods = slices.Compact(methods)
		auditIDs = append(auditIDs, strings.Split(prev.row.AuditID, ",")[0])
		prevExp = prev.row.ExpiresAt
		appCred = prev.appCred
	case slices.Contains(id.Methods, "application_credential"):
		ac, u, err := s.appCredLogin(ctx, id.ApplicationCredential, source)
		if err != nil {
			return nil, err
		}
		user, appCred = u, ac
		methods = []string{"application_credential"}
		if ac.ExpiresAt != nil {
			prevExp = *ac.ExpiresAt
		}
	default:
		return nil, unauthorized("unsupported authentication methods " + strings.Join(id.Methods, ","))
	}
	if !user.Enabled {
		return nil, unauthorized("user " + user.ID + " is disabled")
	}
	if _, err := s.liveDomain(ctx, user.DomainID); err != nil {
		if errors.Is(err, ErrInvalidToken) {
			return nil, unauthorized("domain of user " + user.ID + ": " + err.Error())
		}
		return nil, err
	}

	var (
		projectID, domainID string
		system              bool
	)
	if appCred != nil {
		// A token from an application credential is scoped to its project
		// and nothing else.
		if t := strings.TrimSpace(string(req.Auth.Scope)); t != "" && t != "null" {
			p, d, sys, err := s.resolveScope(ctx, req.Auth.Scope, &user)
			if err != nil {
				return nil, err
			}
			if p != appCred.ProjectID || d != "" || sys {
				return nil, unauthorized("application credential " + appCred.ID + " is limited to project " + appCred.ProjectID)
			}
		}
		projectID = appCred.ProjectID
	} else {
		var err error
		if projectID, domainID, system, err = s.resolveScope(ctx, req.Auth.Scope, &user); err != nil {
			return nil, err
		}
	}

	audit, err := randomString(16)
	if err != nil {
		return nil, err
	}
	now := s.now()
	exp := now.Add(s.opts.TokenTTL)
	if !prevExp.IsZero() && prevExp.Before(exp) {
		exp = prevExp
	}
	row := &store.Token{UserID: user.ID, ProjectID: projectID, DomainID: domainID, Methods: strings.Join(methods, ","),
		AuditID: strings.Join(append([]string{audit}, auditIDs...), ","), IssuedAt: now, ExpiresAt: exp, System: system}
	if appCred != nil {
		row.AppCredID = appCred.ID
	}
	return row, nil
}

// resolveScope returns the project or domain the token is scoped to (both
// "" unscoped). With no scope at all, Keystone scopes to the user's
// default project when the user has a role there.
func (s *Service) resolveScope(ctx context.Context, raw json.RawMessage, user *store.User) (projectID, domainID string, system bool, err error) {
	db := s.st.WithContext(ctx)
	trimmed := strings.TrimSpace(string(raw))
	if trimmed == "" || trimmed == "null" {
		if user.DefaultProjectID == "" {
			return "", "", false, nil
		}
		var p store.Project
		if err := db.Where("id = ?", user.DefaultProjectID).Take(&p).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return "", "", false, nil
			}
			return "", "", false, fmt.Errorf("load default project: %w", err)
		}
		roles, err := userRoles(ctx, s.st, user.ID, p.ID)
		if err != nil {
			return "", "", false, fmt.Errorf("load roles: %w", err)
		}
		if !p.Enabled || len(roles) == 0 {
			return "", "", false, nil
		}
		if _, err := s.liveDomain(ctx, p.DomainID); err != nil {
			return "", "", false, nil
		}
		return p.ID, "", false, nil
	}
	if trimmed == `"unscoped"` {
		return "", "", false, nil
	}
	var sc scopeRequest
	if err := json.Unmarshal(raw, &sc); err != nil {
		return "", "", false, badAuthRequest("Invalid authentication request: malformed scope.")
	}
	switch {
	case sc.Project != nil:
	case sc.Domain != nil:
		d, err := s.scopeDomain(ctx, sc.Domain.ID, sc.Domain.Name)
		if err != nil {
			return "", "", false, err
		}
		roles, err := userDomainRoles(ctx, s.st, user.ID, d.ID)
		if err != nil {
			return "", "", false, fmt.Errorf("load domain roles: %w", err)
		}
		if len(roles) == 0 {
			return "", "", false, unauthorized("user " + user.ID + " has no role on domain " + d.ID)
		}
		return "", d.ID, false, nil
	case len(sc.System) > 0:
		var sys struct {
			All bool `json:"all"`
		}
		if err := json.Unmarshal(sc.System, &sys); err != nil || !sys.All {
			return "", "", false, badAuthRequest("Invalid authentication request: the system scope is {\"all\": true}.")
		}
		roles, err := userSystemRoles(ctx, s.st, user.ID)
		if err != nil {
			return "", "", false, fmt.Errorf("load system roles: %w", err)
		}
		if len(roles) == 0 {
			return "", "", false, unauthorized("user " + user.ID + " has no role on the system")
		}
		return "", "", true, nil
	case len(sc.Trust) > 0:
		return "", "", false, unauthorized("trusts are not supported")
	default:
		return "", "", false, badAuthRequest("Invalid authentication request: unknown scope.")
	}
	q := db.Model(&store.Project{})
	switch {
	case sc.Project.ID != "":
		q = q.Where("id = ?", sc.Project.ID)
	case sc.Project.Name != "":
		domainID := DefaultDomainID
		if dr := sc.Project.Domain; dr != nil && (dr.ID != "" || dr.Name != "") {
			d, err := s.scopeDomain(ctx, dr.ID, dr.Name)
			if err != nil {
				return "", "", false, err
			}
			domainID = d.ID
		}
		q = q.Where("name = ? AND domain_id = ?", sc.Project.Name, domainID)
	default:
		return "", "", false, badAuthRequest("Invalid authentication request: project id or name is required.")
	}
	var p store.Project
	if err := q.Take(&p).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return "", "", false, unauthorized("unknown project")
		}
		return "", "", false, fmt.Errorf("load project: %w", err)
	}
	if !p.Enabled {
		return "", "", false, unauthorized("project " + p.ID + " is disabled")
	}
	if _, err := s.scopeDomain(ctx, p.DomainID, ""); err != nil {
		return "", "", false, err
	}
	roles, err := userRoles(ctx, s.st, user.ID, p.ID)
	if err != nil {
		return "", "", false, fmt.Errorf("load roles: %w", err)
	}
	if len(roles) == 0 {
		return "", "", false, unauthorized("user " + user.ID + " has no role on project " + p.ID)
	}
	return p.ID, "", false, nil
}

// scopeDomain resolves a domain named in a scope: it must exist and be
// enabled (401 otherwise, as Keystone answers).
func (s *Service) scopeDomain(ctx context.Context, id, name string) (store.Domain, error) {
	d, err := s.findDomain(ctx, id, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return d, unauthorized("unknown domain " + id + name)
		}
		return d, err
	}
	if !d.Enabled {
		return d, unauthorized("domain " + d.ID + " is disabled")
	}
	return d, nil
}

// Token response body. Field order and presence follow Keystone: an
// unscoped token has no project, roles or catalog.
type tokenView struct {
	Methods   []string      `json:"methods"`
	AuditIDs  []string      `json:"audit_ids"`
	ExpiresAt string        `json:"expires_at"`
	IssuedAt  string        `json:"issued_at"`
	User      tokenUser     `json:"user"`
	Project   *tokenProject `json:"project,omitempty"`
	Domain    *idName       `json:"domain,omitempty"`
	// System is a system-scoped token's scope, {"all": true}.
	System   map[string]bool `json:"system,omitempty"`
	IsDomain *bool           `json:"is_domain,omitempty"`
	// IsAdminProject is Keystone's is_admin_project of a project-scoped
	// token: whether the project is the admin project (Options.
	// AdminProject), which services' is_admin_project:True rules read.
	IsAdminProject *bool           `json:"is_admin_project,omitempty"`
	Roles          []idName        `json:"roles,omitempty"`
	Catalog        *[]catalogEntry `json:"catalog,omitempty"`
	// AppCred names the application credential of a token issued for
	// one, as Keystone shows it.
	AppCred *tokenAppCred `json:"application_credential,omitempty"`
}

type tokenAppCred struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Restricted bool   `json:"restricted"`
}

type idName struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type tokenUser struct {
	ID                string  `json:"id"`
	Name              string  `json:"name"`
	Domain            idName  `json:"domain"`
	PasswordExpiresAt *string `json:"password_expires_at"`
}

type tokenProject struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Domain idName `json:"domain"`
}

func (s *Service) tokenBody(r *http.Request, ti *tokenInfo, withCatalog bool) map[string]any {
	v := tokenView{
		Methods:   strings.Split(ti.row.Methods, ","),
		AuditIDs:  strings.Split(ti.row.AuditID, ","),
		ExpiresAt: keystoneTime(ti.row.ExpiresAt),
		IssuedAt:  keystoneTime(ti.row.IssuedAt),
		User: tokenUser{ID: ti.user.ID, Name: ti.user.Name,
			Domain: idName{ID: ti.userDomain.ID, Name: ti.userDomain.Name}},
	}
	scoped := ti.project != nil || ti.domain != nil || ti.system
	if ti.system {
		v.System = map[string]bool{"all": true}
	}
	if ti.project != nil {
		isDomain := false
		v.Project = &tokenProject{ID: ti.project.ID, Name: ti.project.Name,
			Domain: idName{ID: ti.projectDomain.ID, Name: ti.projectDomain.Name}}
		v.IsDomain = &isDomain
		admin := ti.credentials(s.opts.AdminProject).IsAdminProject
		v.IsAdminProject = &admin
	}
	if ti.domain != nil {
		v.Domain = &idName{ID: ti.domain.ID, Name: ti.domain.Name}
	}
	if scoped {
		v.Roles = []idName{}
		for _, role := range ti.roles {
			v.Roles = append(v.Roles, idName{ID: role.ID, Name: role.Name})
		}
		if withCatalog {
			projectID := ""
			if ti.project != nil {
				projectID = ti.project.ID
			}
			cat := s.catalog(r, projectID)
			v.Catalog = &cat
		}
	}
	if ti.appCred != nil {
		v.AppCred = &tokenAppCred{ID: ti.appCred.ID, Name: ti.appCred.Name, Restricted: !ti.appCred.Unrestricted}
	}
	return map[string]any{"token": v}
}

// subjectToken loads X-Subject-Token for the token API and checks the
// caller may see it: its own tokens, or any token for an admin.
func (s *Service) subjectToken(w http.ResponseWriter, r *http.Request) (*tokenInfo, bool) {
	caller := auth.FromContext(r.Context())
	subj := r.Header.Get("X-Subject-Token")
	if subj == "" {
		s.failErr(w, r, errdefs.InvalidArgument("X-Subject-Token header is required."))
		return nil, false
	}
	ti, err := s.loadToken(r.Context(), subj)
	if err != nil {
		if errors.Is(err, ErrInvalidToken) {
			s.failErr(w, r, errdefs.NotFound("Could not find token: "+truncate(subj, 8)+"..."))
			return nil, false
		}
		s.internalError(w, r, err)
		return nil, false
	}
	if ti.user.ID != caller.UserID && !cloudAdmin(caller) {
		s.failErr(w, r, errdefs.Forbidden("You are not authorized to perform the requested action: identity:validate_token."))
		return nil, false
	}
	return ti, true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *Service) validateToken(w http.ResponseWriter, r *http.Request) {
	ti, ok := s.subjectToken(w, r)
	if !ok {
		return
	}
	w.Header().Set("X-Subject-Token", ti.id)
	httpapi.WriteJSON(w, http.StatusOK, s.tokenBody(r, ti, !r.URL.Query().Has("nocatalog")))
}

func (s *Service) revokeToken(w http.ResponseWriter, r *http.Request) {
	ti, ok := s.subjectToken(w, r)
	if !ok {
		return
	}
	if err := s.st.WithContext(r.Context()).Model(&store.Token{}).Where("hash = ?", ti.row.Hash).
		Update("revoked", true).Error; err != nil {
		s.internalError(w, r, fmt.Errorf("revoke token: %w", err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// revokeUserTokens revokes every token of userID (password change,
// disable, delete), as Keystone's revocation events do.
func revokeUserTokens(ctx context.Context, db *gorm.DB, userID string) error {
	if err := db.WithContext(ctx).Model(&store.Token{}).Where("user_id = ? AND revoked = ?", userID, false).
		Update("revoked", true).Error; err != nil {
		return fmt.Errorf("revoke tokens of user %s: %w", userID, err)
	}
	return nil
}

// PurgeExpiredTokens deletes tokens that expired before now-grace; the
// API server may call it periodically.
func (s *Service) PurgeExpiredTokens(ctx context.Context, grace time.Duration) (int64, error) {
	res := s.st.WithContext(ctx).Where("expires_at < ?", s.now().Add(-grace)).Delete(&store.Token{})
	if res.Error != nil {
		return 0, fmt.Errorf("purge expired tokens: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// PurgeTokensEvery deletes expired tokens every interval until ctx ends:
// the table would otherwise grow with every login forever.
func (s *Service) PurgeTokensEvery(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.PurgeExpiredTokens(ctx, 0)
			if err != nil {
				s.log.Warn("token purge failed", "err", err)
				continue
			}
			if n > 0 {
				s.log.Info("expired tokens purged", "count", n)
			}
		}
	}
}
