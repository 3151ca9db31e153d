// Package identity is Capsule's Keystone v3: password and token
// authentication, opaque tokens stored hashed, the service catalog, and the
// admin API (domains, projects, users, roles, grants, application
// credentials) that the OpenStack CLI, Terraform and Tempest's dynamic
// credentials use. The domain "default" always exists.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"github.com/google/uuid"
)

// The default domain. Keystone's default domain has id "default" and name
// "Default"; clients send either.
const (
	DefaultDomainID   = "default"
	DefaultDomainName = "Default"
)

// Ports are the TCP ports the catalog advertises for each service.
type Ports struct {
	Identity int
	Compute  int
	Image    int
	Network  int
	Volume   int // 0: no Block Storage API in the catalog
}

// Options configure the identity service.
type Options struct {
	// PublicHost is the host clients reach the APIs on; the catalog's
	// URLs use it. Empty means the host the client used for the token
	// request.
	PublicHost string
	Ports      Ports
	// TLS says the APIs are served over TLS (http.tls_cert_file): the
	// catalog's URLs are then https.
	TLS      bool
	Region   string        // default "RegionOne"
	TokenTTL time.Duration // default 12h
	Logger   *slog.Logger
	// AdminProject is the name of the admin project (Keystone's
	// [resource] admin_project_name): the admin role makes a caller a
	// cloud administrator only in a token scoped to it; elsewhere it is
	// the project's own administrator, no more than a member. Default
	// "admin"; "*" makes every project the admin project (Keystone
	// without admin_project_name).
	AdminProject string
	// Lockout throttles password logins; zero takes DefaultLockout.
	Lockout Lockout
	// PasswordHashRounds is the bcrypt cost of the password and
	// application credential hashes it makes (Keystone's [identity]
	// password_hash_rounds); 0 takes DefaultPasswordHashRounds. Hashes
	// made at another cost keep verifying.
	PasswordHashRounds int
	// CredentialKey encrypts credential blobs at rest (LoadCredentialKey
	// reads one). nil: blobs are stored as given, and New warns, as
	// Keystone does with its null key.
	CredentialKey *CredentialKey
}

// Service is the identity API. It also validates tokens for the other
// API services (it implements auth.Validator).
type Service struct {
	st    *store.Store
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	login *loginGuard
	// tokens caches validated tokens (tokencache.go).
	tokens *tokenCache
	// sealer encrypts credential blobs (nil: no key configured).
	sealer *credentialSealer
}

// New returns the identity service over st, filling unset options with
// the OpenStack defaults.
func New(st *store.Store, opts Options) *Service {
	if opts.Ports.Identity == 0 {
		opts.Ports.Identity = 5000
	}
	if opts.Ports.Compute == 0 {
		opts.Ports.Compute = 8774
	}
	if opts.Ports.Image == 0 {
		opts.Ports.Image = 9292
	}
	if opts.Ports.Network == 0 {
		opts.Ports.Network = 9696
	}
	if opts.Region == "" {
		opts.Region = "RegionOne"
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 12 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AdminProject == "" {
		opts.AdminProject = "admin"
	}
	if opts.Lockout == (Lockout{}) {
		opts.Lockout = DefaultLockout()
	}
	if opts.Lockout.Duration <= 0 {
		opts.Lockout.Duration = DefaultLockout().Duration
	}
	if opts.PasswordHashRounds == 0 {
		opts.PasswordHashRounds = DefaultPasswordHashRounds
	}
	s := &Service{st: st, opts: opts, log: opts.Logger.With("service", "identity"), login: newLoginGuard(opts.Lockout, opts.PasswordHashRounds),
		tokens: newTokenCache(st),
		now:    func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }, sealer: (*credentialSealer)(opts.CredentialKey)}
	if s.sealer == nil {
		s.log.Warn("no credential key (api.credential_key_file): credential blobs are stored unencrypted")
	}
	return s
}

// Handler serves the identity port.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	authed := requireToken(s, s.failErr, true)
	h := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, authed(fn)) }

	// Discovery answers without a token (keystoneauth asks unauthenticated).
	mux.HandleFunc("GET /{$}", s.versions)
	mux.HandleFunc("GET /v3", s.version)

	mux.HandleFunc("POST /v3/auth/tokens", s.issueToken)
	mux.HandleFunc("POST /v3/s3tokens", s.s3Tokens) // no token, as Keystone's
	h("GET /v3/auth/tokens", s.validateToken)       // also HEAD
	h("DELETE /v3/auth/tokens", s.revokeToken)
	h("GET /v3/auth/projects", s.authProjects)
	h("GET /v3/auth/domains", s.authDomains)
	h("GET /v3/auth/catalog", s.authCatalog)

	h("GET /v3/domains", s.listDomains)
	h("GET /v3/domains/{id}", s.getDomain)
	h("POST /v3/domains", s.createDomain)
	h("PATCH /v3/domains/{id}", s.updateDomain)
	h("DELETE /v3/domains/{id}", s.deleteDomain)

	h("GET /v3/projects", s.listProjects)
	h("POST /v3/projects", s.createProject)
	h("GET /v3/projects/{id}", s.getProject)
	h("PATCH /v3/projects/{id}", s.updateProject)
	h("DELETE /v3/projects/{id}", s.deleteProject)
	h("GET /v3/projects/{id}/tags", s.listProjectTags)
	h("PUT /v3/projects/{id}/tags", s.replaceProjectTags)
	h("DELETE /v3/projects/{id}/tags", s.clearProjectTags)
	h("GET /v3/projects/{id}/tags/{tag}", s.checkProjectTag) // also HEAD
	h("PUT /v3/projects/{id}/tags/{tag}", s.addProjectTag)
	h("DELETE /v3/projects/{id}/tags/{tag}", s.deleteProjectTag)

	h("GET /v3/users", s.listUsers)
	h("POST /v3/users", s.createUser)
	h("GET /v3/users/{id}", s.getUser)
	h("PATCH /v3/users/{id}", s.updateUser)
	h("DELETE /v3/users/{id}", s.deleteUser)
	h("POST /v3/users/{id}/password", s.changePassword)
	h("GET /v3/users/{id}/projects", s.userProjects)
	h("GET /v3/users/{id}/groups", s.userGroups)
	h("GET /v3/users/{id}/application_credentials", s.listAppCreds)
	h("POST /v3/users/{id}/application_credentials", s.createAppCred)
	h("GET /v3/users/{id}/application_credentials/{cred}", s.getAppCred)
	h("DELETE /v3/users/{id}/application_credentials/{cred}", s.deleteAppCred)

	h("GET /v3/credentials", s.listCredentials)
	h("POST /v3/credentials", s.createCredential)
	h("GET /v3/credentials/{id}", s.getCredential)
	h("PATCH /v3/credentials/{id}", s.updateCredential)
	h("DELETE /v3/credentials/{id}", s.deleteCredential)

	h("GET /v3/users/{id}/credentials/OS-EC2", s.listEC2)
	h("POST /v3/users/{id}/credentials/OS-EC2", s.createEC2)
	h("GET /v3/users/{id}/credentials/OS-EC2/{access}", s.getEC2)
	h("DELETE /v3/users/{id}/credentials/OS-EC2/{access}", s.deleteEC2)

	h("GET /v3/groups", s.listGroups)
	h("POST /v3/groups", s.createGroup)
	h("GET /v3/groups/{id}", s.getGroup)
	h("PATCH /v3/groups/{id}", s.updateGroup)
	h("DELETE /v3/groups/{id}", s.deleteGroup)
	h("GET /v3/groups/{g}/users", s.listGroupUsers)
	h("GET /v3/groups/{g}/users/{u}", s.checkGroupMember) // also HEAD
	h("PUT /v3/groups/{g}/users/{u}", s.addGroupMember)
	h("DELETE /v3/groups/{g}/users/{u}", s.removeGroupMember)

	h("GET /v3/roles", s.listRoles)
	h("POST /v3/roles", s.createRole)
	h("GET /v3/roles/{id}", s.getRole)
	h("PATCH /v3/roles/{id}", s.updateRole)
	h("DELETE /v3/roles/{id}", s.deleteRole)
	h("GET /v3/role_assignments", s.listAssignments)
	h("GET /v3/roles/{prior}/implies", s.listImpliedRoles)
	h("GET /v3/roles/{prior}/implies/{implied}", s.getImpliedRole) // also HEAD
	h("PUT /v3/roles/{prior}/implies/{implied}", s.putImpliedRole)
	h("DELETE /v3/roles/{prior}/implies/{implied}", s.deleteImpliedRole)
	h("GET /v3/role_inferences", s.listRoleInferences)
	s.handleGrants(h)

	h("GET /v3/services", s.listServices)
	h("GET /v3/services/{id}", s.getService)
	h("GET /v3/endpoints", s.listEndpoints)
	h("GET /v3/endpoints/{id}", s.getEndpoint)
	h("GET /v3/regions", s.listRegions)
	h("GET /v3/regions/{id}", s.getRegion)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.failErr(w, r, errdefs.NotFound("The resource could not be found."))
	})
	return httpapi.WithRequestID(httpapi.AccessLog(s.opts.Logger, "identity", httpapi.TrimSlash(mux)))
}

// fail writes a Keystone error body: {"error":{"code","message","title"}}.
// Tempest reads error.message from 401/403 bodies, so it must be JSON.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Keystone uri="`+httpapi.BaseURL(r)+`"`)
	}
	WriteError(w, status, msg)
}

// WriteError writes a Keystone-style error body with status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	httpapi.WriteJSON(w, status, map[string]any{"error": map[string]any{
		"code": status, "title": errorTitle(status), "message": msg}})
}

func errorTitle(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "Unauthorized"
	case http.StatusNotFound:
		return "Not Found"
	default:
		if t := http.StatusText(status); t != "" {
			return t
		}
		return "Error"
	}
}

// internalError logs err and answers 500 without leaking details; a
// store's refusal of the request's own text (store/pgtext.go) is a 400.
func (s *Service) internalError(w http.ResponseWriter, r *http.Request, err error) {
	if errdefs.IsInvalidArgument(err) {
		s.failErr(w, r, err)
		return
	}
	s.log.ErrorContext(r.Context(), "identity request failed", "error", err,
		"request_id", httpapi.RequestID(r.Context()))
	s.fail(w, r, http.StatusInternalServerError, "An unexpected error prevented the server from fulfilling your request.")
}

// storeError answers a store error: a missing row with notFoundMsg, a
// duplicate with Keystone's conflict message, anything else a 500.
func (s *Service) storeError(w http.ResponseWriter, r *http.Request, err error, notFoundMsg string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = errdefs.Wrap(err, errdefs.ErrNotFound, notFoundMsg)
	case errors.Is(err, store.ErrConflict):
		err = errdefs.Wrap(err, errdefs.ErrConflict, "Conflict occurred attempting to store the resource: duplicate entry.")
	}
	s.failErr(w, r, err)
}

// statusOf maps an error kind to the Identity API's status (the shared
// table; a quota refusal is a 403).
func statusOf(k errdefs.Kind) int { return httpapi.StatusOf(k, http.StatusForbidden) }

// failErr answers err as a Keystone error: a classified error (package
// errdefs) with its kind's status and safe message, anything else logged
// and answered 500 without details.
func (s *Service) failErr(w http.ResponseWriter, r *http.Request, err error) {
	k := errdefs.KindOf(err)
	if k == "" {
		s.internalError(w, r, err)
		return
	}
	if k == errdefs.ErrInternal {
		s.log.ErrorContext(r.Context(), "identity request failed", "error", err, "request_id", httpapi.RequestID(r.Context()))
	}
	s.fail(w, r, statusOf(k), errdefs.Message(err))
}

// newID returns a Keystone-style id: a UUID4 as 32 hex digits.
func newID() string { return strings.ReplaceAll(uuid.NewString(), "-", "") }

// stableID derives a fixed id from parts, so catalog entries keep the same
// ids across token issue and validation (Tempest compares the bodies).
func stableID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}

// isDefaultDomain reports whether ref (an id or a name) names the default
// domain.
func isDefaultDomain(ref string) bool {
	return ref == DefaultDomainID || strings.EqualFold(ref, DefaultDomainName)
}

// keystoneTime formats token timestamps the way Keystone does:
// microseconds and a Z (Tempest compares expires_at strings).
func keystoneTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TooLarge answers a request body over the listener's limit with
// Keystone's 413 (its RequestTooLarge).
func (s *Service) TooLarge(w http.ResponseWriter, _ *http.Request, msg string) {
	WriteError(w, http.StatusRequestEntityTooLarge, msg)
}
