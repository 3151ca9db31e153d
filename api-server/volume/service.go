// Package volume serves the Block Storage API (Cinder v3 subset, the
// volumev3 / block-storage service of the catalog): volumes, their
// snapshots, one default volume type, limits and quotas. The data lives on
// the compute hosts (see protocol/volumes.go): this API writes the rows
// and casts the work to the host's agent through the outbox; the conductor
// records the agents' reports (statuses creating -> available, ...).
package volume

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/store"
)

// Options configure the Block Storage API.
type Options struct {
	Validator auth.Validator
	Log       *slog.Logger
	Config    config.Volume
	// ServiceDownTime is the heartbeat age after which a compute host is
	// down (no new volume is placed on it).
	ServiceDownTime time.Duration
}

// Service is the Block Storage API.
type Service struct {
	st     *store.Store
	opts   Options
	log    *slog.Logger
	outbox *outbox.Relay
}

// New returns the Block Storage API on st, casting work to the hosts
// through b.
func New(st *store.Store, b bus.Bus, opts Options) *Service {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	def := config.Default().Volume
	if opts.Config.Backend == "" {
		opts.Config.Backend = def.Backend
	}
	if opts.Config.AvailabilityZone == "" {
		opts.Config.AvailabilityZone = def.AvailabilityZone
	}
	if opts.Config.Quota == (config.VolumeQuota{}) {
		opts.Config.Quota = def.Quota
	}
	if opts.ServiceDownTime <= 0 {
		opts.ServiceDownTime = 60 * time.Second
	}
	host, _ := os.Hostname()
	log := opts.Log.With("service", "volume")
	return &Service{st: st, opts: opts, log: log,
		outbox: outbox.NewRelay(st, b, outbox.Options{Owner: fmt.Sprintf("volume-api@%s:%d", host, os.Getpid()), Log: log})}
}

// Microversions: Capsule answers 3.0 to 3.64 (the fields up to 3.64 are
// always in the views; nothing Capsule serves changes behaviour between
// them but the ones noted where they apply).
const (
	minVersion = "3.0"
	maxVersion = "3.64"
	maxMinor   = 64
)

// Handler returns the Block Storage port's handler.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	authed := identity.RequireToken(s.opts.Validator, s.authFailed)
	h := func(pattern string, fn http.HandlerFunc) {
		// /v3/{project_id}/... as the catalog has it (the URLs without
		// one came with 3.67, past Capsule's maximum).
		method, path, _ := strings.Cut(pattern, " ")
		mux.Handle(method+" /v3/{project_id}"+path, authed(s.projectInURL(s.versioned(fn))))
	}
	mux.HandleFunc("GET /{$}", s.versions)
	mux.HandleFunc("GET /v3", s.version)

	h("GET /volumes", s.listVolumes(false))
	h("GET /volumes/detail", s.listVolumes(true))
	h("POST /volumes", s.createVolume)
	h("GET /volumes/{id}", s.getVolume)
	h("PUT /volumes/{id}", s.updateVolume)
	h("DELETE /volumes/{id}", s.deleteVolume)
	h("POST /volumes/{id}/action", s.volumeAction)
	h("GET /volumes/{id}/metadata", s.getVolumeMetadata)
	h("POST /volumes/{id}/metadata", s.setVolumeMetadata(false))
	h("PUT /volumes/{id}/metadata", s.setVolumeMetadata(true))
	h("DELETE /volumes/{id}/metadata/{key}", s.deleteVolumeMetadataKey)

	h("GET /snapshots", s.listSnapshots(false))
	h("GET /snapshots/detail", s.listSnapshots(true))
	h("POST /snapshots", s.createSnapshot)
	h("GET /snapshots/{id}", s.getSnapshot)
	h("PUT /snapshots/{id}", s.updateSnapshot)
	h("DELETE /snapshots/{id}", s.deleteSnapshot)
	h("POST /snapshots/{id}/action", s.snapshotAction)

	h("GET /types", s.listTypes)
	h("GET /types/default", s.defaultType)
	h("GET /types/{id}", s.getType)
	h("GET /limits", s.limits)
	h("GET /os-availability-zone", s.availabilityZones)
	h("GET /os-quota-sets/{target}", s.showQuota)
	h("GET /os-quota-sets/{target}/defaults", s.showQuotaDefaults)
	h("PUT /os-quota-sets/{target}", s.updateQuota)
	h("DELETE /os-quota-sets/{target}", s.deleteQuota)
	h("GET /os-services", s.listServices)
	h("GET /scheduler-stats/get_pools", s.getPools)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "The resource could not be found.")
	})
	return httpapi.TrimSlash(mux)
}

// TooLarge answers a body over the HTTP limit in Cinder's format.
func (s *Service) TooLarge(w http.ResponseWriter, _ *http.Request, msg string) {
	writeError(w, http.StatusRequestEntityTooLarge, msg)
}

// faultNames are Cinder's error body keys by status (its wsgi Fault).
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
	406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
	501: "notImplemented", 503: "serviceUnavailable",
}

// writeError writes a Cinder fault body: {"<faultName>": {"code", "message"}}.
func writeError(w http.ResponseWriter, status int, msg string) {
	name, ok := faultNames[status]
	if !ok {
		name = "computeFault"
	}
	body := map[string]any{"code": status, "message": msg}
	if status == http.StatusRequestEntityTooLarge {
		body["retryAfter"] = "0"
	}
	httpapi.WriteJSON(w, status, map[string]any{name: body})
}

// statusOf maps an error kind to the Block Storage API's status (the
// shared table; Cinder's quota errors are 413 overLimit).
func statusOf(k errdefs.Kind) int { return httpapi.StatusOf(k, http.StatusRequestEntityTooLarge) }

// fail answers err: a classified error with its kind's status and safe
// message, anything else logged and answered 500.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	k := errdefs.KindOf(err)
	if k == "" || k == errdefs.ErrInternal {
		s.log.ErrorContext(r.Context(), "volume request failed", "error", err,
			"request_id", httpapi.RequestID(r.Context()), "method", r.Method, "path", r.URL.Path)
		writeError(w, http.StatusInternalServerError, "The server has either erred or is incapable of performing the requested operation.")
		return
	}
	writeError(w, statusOf(k), errdefs.Message(err))
}

func badRequest(w http.ResponseWriter, msg string) { writeError(w, http.StatusBadRequest, msg) }

// authFailed answers a token RequireToken refused as keystonemiddleware
// does in front of Cinder.
func (s *Service) authFailed(w http.ResponseWriter, _ *http.Request, err error) {
	status := statusOf(errdefs.KindOf(err))
	title := "Unauthorized"
	if status == http.StatusServiceUnavailable {
		title = "Service Unavailable"
	}
	httpapi.WriteJSON(w, status, map[string]any{"error": map[string]any{"code": status, "title": title, "message": errdefs.Message(err)}})
}

// projectInURL refuses a URL naming another project than the token's
// (Cinder's "Malformed request url"), except for cloud admins.
func (s *Service) projectInURL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := creds(r)
		if p := r.PathValue("project_id"); p != c.ProjectID && !c.IsAdmin() {
			badRequest(w, "Malformed request url")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type versionKey struct{}

// versioned reads the request's microversion (OpenStack-API-Version:
// volume 3.x), refuses one outside [minVersion, maxVersion] with 406, and
// echoes it on the response.
func (s *Service) versioned(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		minor := 0
		if v := r.Header.Get("OpenStack-API-Version"); v != "" {
			svc, ver, _ := strings.Cut(strings.TrimSpace(v), " ")
			ver = strings.TrimSpace(ver)
			if !strings.EqualFold(svc, "volume") {
				ver = ""
			}
			switch {
			case ver == "":
			case strings.EqualFold(ver, "latest"):
				minor = maxMinor
			default:
				maj, mi, ok := strings.Cut(ver, ".")
				n, err := strconv.Atoi(mi)
				if !ok || maj != "3" || err != nil || n < 0 {
					badRequest(w, fmt.Sprintf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", ver))
					return
				}
				if n > maxMinor {
					writeError(w, http.StatusNotAcceptable, fmt.Sprintf("Version %s is not supported by the API. Minimum is %s and maximum is %s.", ver, minVersion, maxVersion))
					return
				}
				minor = n
			}
		}
		w.Header().Set("OpenStack-API-Version", fmt.Sprintf("volume 3.%d", minor))
		w.Header().Add("Vary", "OpenStack-API-Version")
		next(w, r.WithContext(context.WithValue(r.Context(), versionKey{}, minor)))
	})
}

// atLeast reports whether the request's microversion is 3.minor or newer.
func atLeast(r *http.Request, minor int) bool {
	v, _ := r.Context().Value(versionKey{}).(int)
	return v >= minor
}

func (s *Service) versionDoc(r *http.Request) map[string]any {
	return map[string]any{
		"id": "v3.0", "status": "CURRENT", "version": maxVersion, "min_version": minVersion,
		"updated": "2023-09-13T00:00:00Z",
		"links": []map[string]string{
			{"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
			{"rel": "self", "href": httpapi.BaseURL(r) + "/v3/"},
		},
		"media-types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}},
	}
}

// versions is Cinder's root: 300 Multiple Choices with the one version.
func (s *Service) versions(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusMultipleChoices, map[string]any{"versions": []any{s.versionDoc(r)}})
}

// version is GET /v3/: the same list (Cinder answers the version list).
func (s *Service) version(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"versions": []any{s.versionDoc(r)}})
}

// creds returns the caller; RequireToken guarantees one.
func creds(r *http.Request) *auth.Credentials {
	if c := auth.FromContext(r.Context()); c != nil {
		return c
	}
	return &auth.Credentials{}
}

// canWrite answers 403 (Cinder's policy refusal) to reader-only tokens.
func canWrite(w http.ResponseWriter, c *auth.Credentials, rule string) bool {
	if !c.CanWrite() {
		writeError(w, http.StatusForbidden, fmt.Sprintf("Policy doesn't allow %s to be performed.", rule))
		return false
	}
	return true
}

// readBody decodes the request body into v, answering 400 when it cannot.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := httpapi.ReadJSON(r, v); err != nil {
		badRequest(w, "Malformed request body: "+err.Error())
		return false
	}
	return true
}

// readAction reads an action request's body, {"<action>": <argument>},
// which names exactly one action (Cinder's rule for POST .../action).
func readAction(w http.ResponseWriter, r *http.Request) (string, json.RawMessage, bool) {
	var body map[string]json.RawMessage
	if !readBody(w, r, &body) {
		return "", nil, false
	}
	if len(body) != 1 {
		badRequest(w, "Invalid request body: exactly one action is required")
		return "", nil, false
	}
	for name, raw := range body {
		return name, raw, true
	}
	return "", nil, false // unreachable: one key
}

// jsonMap decodes a stored JSON object ("" is empty).
func jsonMap(s string) map[string]string {
	out := map[string]string{}
	if s != "" {
		_ = json.Unmarshal([]byte(s), &out)
	}
	return out
}

func encodeMap(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// cast writes one message for host's agent in tx, delivered once tx
// committed (deliver).
func cast(tx *gorm.DB, out *outbox.Batch, host, kind string, body any) error {
	msg, err := bus.NewMessage(kind, body)
	if err != nil {
		return err
	}
	return out.Enqueue(tx, bus.ComputeQueue(host), "", msg)
}

// deliver publishes what a committed transaction cast; what it cannot
// publish now the conductor's outbox relay sends later.
func (s *Service) deliver(ctx context.Context, out *outbox.Batch) {
	if err := s.outbox.Deliver(ctx, out); err != nil {
		s.log.Warn("publish committed volume work; the outbox relay will retry", "error", err)
	}
}

func cinderTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000") }
