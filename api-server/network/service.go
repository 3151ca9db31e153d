// Package network serves the Network API (Neutron v2.0 subset): networks
// on VLAN or flat segments of the data-centre's physical networks, IPv4
// subnets with allocation pools, and ports with static fixed IPs. IPAM
// lives in the store (store.AllocatePort), so the Compute API creates
// servers' ports through the same code and the same database guarantees.
package network

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// Service is the network API.
type Service struct {
	validator auth.Validator
	st        *store.Store
	cfg       config.Network
	log       *slog.Logger
	detacher  PortDetacher
	updater   PortUpdater
	// sgNotifier gets the ports a security group change affects.
	sgNotifier SecurityGroupNotifier
}

// PortDetacher unplugs a port from the server the Compute API bound it to
// (the Compute API's interface detach), so that deleting the port never
// leaves its NIC plugged with an address that is free again.
type PortDetacher interface {
	DetachPort(ctx context.Context, port *store.Port) error
}

// WithPortDetacher lets admins delete ports bound to servers: d unplugs
// them first. Without one such a delete is refused like a member's.
func WithPortDetacher(d PortDetacher) Option { return func(s *Service) { s.detacher = d } }

// PortUpdater applies a change of a port's addresses, MAC or port
// security to the NIC of the server the Compute API bound it to, through
// the agent, before the update answers.
type PortUpdater interface {
	// PortPlugReady is nil when the change can be applied now (or nothing
	// is plugged for the port), a Conflict when its server is busy.
	PortPlugReady(ctx context.Context, port *store.Port) error
	// ReplugPort plugs port as stored, less the addresses in drop, and
	// returns once the host has it.
	ReplugPort(ctx context.Context, port *store.Port, drop []string) error
}

// WithPortUpdater makes updates of a server's port take effect on its
// host before they answer (u re-plugs it). Without one such an update is
// only stored, and the agent's drift repair applies it later.
func WithPortUpdater(u PortUpdater) Option { return func(s *Service) { s.updater = u } }

// Option configures the network API.
type Option func(*Service)

// WithStore gives the API its database. Without one the API only answers
// discovery and empty lists (the pre-networking stub).
func WithStore(st *store.Store) Option { return func(s *Service) { s.st = st } }

// WithConfig sets the control plane's view of the physical networks: the
// tenant VLAN range, the known physical networks and the MTU.
func WithConfig(c config.Network) Option { return func(s *Service) { s.cfg = c } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// New returns the network API; v (the identity service) checks tokens.
func New(v auth.Validator, opts ...Option) *Service {
	s := &Service{validator: v, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	if s.cfg.MTU <= 0 {
		s.cfg.MTU = 1500
	}
	if s.cfg.Quota == (config.NetworkQuota{}) {
		s.cfg.Quota = config.Default().Network.Quota
	}
	s.log = s.log.With("service", "network")
	return s
}

// Handler returns the network port's handler.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	authed := identity.RequireToken(s.validator, s.authFailed)
	h := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, authed(fn)) }

	// Version discovery answers without a token (keystoneauth and
	// gophercloud probe it unauthenticated).
	mux.HandleFunc("GET /{$}", s.versions)
	h("GET /v2.0", s.resources)
	h("GET /v2.0/extensions", s.listExtensions)
	h("GET /v2.0/extensions/{alias}", s.getExtension)

	if s.st == nil {
		for _, coll := range []string{"networks", "subnets", "ports"} {
			h("GET /v2.0/"+coll, func(w http.ResponseWriter, r *http.Request) {
				httpapi.WriteJSON(w, http.StatusOK, map[string]any{coll: []any{}})
			})
		}
		return s.finish(mux)
	}
	h("GET /v2.0/networks", s.listNetworks)
	h("POST /v2.0/networks", s.createNetworks)
	h("GET /v2.0/networks/{id}", s.getNetwork)
	h("PUT /v2.0/networks/{id}", s.updateNetwork)
	h("DELETE /v2.0/networks/{id}", s.deleteNetwork)

	h("GET /v2.0/subnets", s.listSubnets)
	h("POST /v2.0/subnets", s.createSubnets)
	h("GET /v2.0/subnets/{id}", s.getSubnet)
	h("PUT /v2.0/subnets/{id}", s.updateSubnet)
	h("DELETE /v2.0/subnets/{id}", s.deleteSubnet)

	h("GET /v2.0/ports", s.listPorts)
	h("POST /v2.0/ports", s.createPorts)
	h("GET /v2.0/ports/{id}", s.getPort)
	h("PUT /v2.0/ports/{id}", s.updatePort)
	h("DELETE /v2.0/ports/{id}", s.deletePort)

	h("GET /v2.0/security-groups", s.listSecurityGroups)
	h("POST /v2.0/security-groups", s.createSecurityGroups)
	h("GET /v2.0/security-groups/{id}", s.getSecurityGroup)
	h("PUT /v2.0/security-groups/{id}", s.updateSecurityGroup)
	h("DELETE /v2.0/security-groups/{id}", s.deleteSecurityGroup)
	h("GET /v2.0/security-group-rules", s.listSecurityGroupRules)
	h("POST /v2.0/security-group-rules", s.createSecurityGroupRules)
	h("GET /v2.0/security-group-rules/{id}", s.getSecurityGroupRule)
	h("DELETE /v2.0/security-group-rules/{id}", s.deleteSecurityGroupRule)
	s.tagRoutes(h)
	return s.finish(mux)
}

// finish adds what every variant of the API serves: empty lists of the
// resources Capsule does not implement (so clients that look, like OSC and
// openstacksdk, do not break) and Neutron's 404.
func (s *Service) finish(mux *http.ServeMux) http.Handler {
	authed := identity.RequireToken(s.validator, s.authFailed)
	for _, coll := range []string{"floatingips", "routers"} {
		mux.Handle("GET /v2.0/"+coll, authed(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{coll: []any{}})
		})))
	}
	s.quotaRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeFault(w, errdefs.NotFound("The resource could not be found.").WithReason("HTTPNotFound"))
	})
	return httpapi.TrimSlash(mux)
}

// authFailed answers a token RequireToken refused: Unauthenticated (401,
// HTTPUnauthorized) or Unavailable (503, ServiceUnavailable).
func (s *Service) authFailed(w http.ResponseWriter, r *http.Request, err error) {
	typ := "HTTPUnauthorized"
	if errdefs.IsUnavailable(err) {
		typ = "ServiceUnavailable"
	}
	writeError(w, statusOf(errdefs.KindOf(err)), typ, errdefs.Message(err))
}

// writeError writes a Neutron error body.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	httpapi.WriteJSON(w, status, map[string]any{"NeutronError": map[string]string{"type": typ, "message": msg, "detail": ""}})
}

func badRequest(w http.ResponseWriter, msg string) {
	writeFault(w, errdefs.InvalidArgument(msg).WithReason("HTTPBadRequest"))
}

func invalidInput(w http.ResponseWriter, msg string) {
	writeFault(w, store.ErrInvalidInput.New("Invalid input for operation: "+msg+"."))
}

// policyRefused is Neutron's PolicyNotAuthorized for rule.
func policyRefused(rule string) error {
	return errdefs.Forbidden("(" + rule + ") is disallowed by policy").WithReason("PolicyNotAuthorized")
}

func forbidden(w http.ResponseWriter, rule string) { writeFault(w, policyRefused(rule)) }

// statusOf maps an error kind to the Networking API's status (the shared
// table; Neutron's OverQuota is a 409); the NeutronError's type is the
// error's reason (the store's network error classes carry Neutron's type
// names).
func statusOf(k errdefs.Kind) int { return httpapi.StatusOf(k, http.StatusConflict) }

// writeFault writes a classified error whose reason is a Neutron type
// as that NeutronError, with its kind's status.
func writeFault(w http.ResponseWriter, err error) {
	status := statusOf(errdefs.KindOf(err))
	if errors.Is(err, store.ErrRevisionConstraint) {
		status = http.StatusPreconditionFailed // the one 412 of Neutron's
	}
	writeError(w, status, errdefs.Reason(err), errdefs.Message(err))
}

// storeError answers a failure: a classified error with a Neutron type
// (its reason) as that NeutronError, anything else a logged 500.
func (s *Service) storeError(w http.ResponseWriter, r *http.Request, err error) {
	if errdefs.Reason(err) != "" {
		writeFault(w, err)
		return
	}
	s.log.ErrorContext(r.Context(), "network request failed", "error", err,
		"request_id", httpapi.RequestID(r.Context()), "method", r.Method, "path", r.URL.Path)
	writeError(w, http.StatusInternalServerError, "HTTPInternalServerError", "Request Failed: internal server error while processing your request.")
}

// creds returns the caller; RequireToken guarantees one.
func creds(r *http.Request) *auth.Credentials {
	if c := auth.FromContext(r.Context()); c != nil {
		return c
	}
	return &auth.Credentials{}
}

// canWrite answers 403 to reader-only tokens.
func canWrite(w http.ResponseWriter, c *auth.Credentials, rule string) bool {
	if !c.CanWrite() {
		forbidden(w, rule)
		return false
	}
	return true
}

// owns reports whether c may change a resource of project.
func owns(c *auth.Credentials, project string) bool { return c.IsAdmin() || project == c.ProjectID }

func (s *Service) versions(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"versions": []any{map[string]any{
		"id": "v2.0", "status": "CURRENT",
		"links": []map[string]string{{"rel": "self", "href": httpapi.BaseURL(r) + "/v2.0/"}}}}})
}

func (s *Service) resources(w http.ResponseWriter, r *http.Request) {
	var res []any
	for _, p := range [][2]string{{"network", "networks"}, {"subnet", "subnets"}, {"port", "ports"}} {
		res = append(res, map[string]any{"name": p[0], "collection": p[1],
			"links": []map[string]string{{"rel": "self", "href": httpapi.BaseURL(r) + "/v2.0/" + p[1]}}})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"resources": res})
}

// TooLarge answers a request body over the listener's limit with
// Neutron's 413 (HTTPRequestEntityTooLarge).
func (s *Service) TooLarge(w http.ResponseWriter, _ *http.Request, msg string) {
	writeError(w, http.StatusRequestEntityTooLarge, "HTTPRequestEntityTooLarge", msg)
}
