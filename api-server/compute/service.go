// Package compute serves the Compute API (Nova v2.1 subset): servers and
// their actions, flavors, services, hypervisors, limits and availability
// zones. It validates requests, records state in the store and casts work
// onto the bus; it never talks to a host directly.
package compute

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

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/store"
)

// Microversion range served. Each step above 2.60 is implemented (or its
// feature refused with Nova's error) before the maximum is raised past it;
// docs/compatibility.md lists them.
var (
	minVersion = apiVersion{2, 1}
	maxVersion = apiVersion{2, 96}
)

// Options configure the compute service.
type Options struct {
	// FirewallRefreshDelay is how long membership changes of security
	// groups are gathered before the ports whose rules name those
	// groups get their new filters (one refresh per port per window);
	// 0 takes a second.
	FirewallRefreshDelay time.Duration
	PublicHost           string // host clients reach, for links
	ComputePort          int
	ImagePort            int
	CallTimeout          time.Duration // request/reply to agents
	// ForceConfigDrive gives every new server a config drive (Nova's
	// force_config_drive).
	ForceConfigDrive bool
	// NoInstancePassword is Nova's enable_instance_password=false: no
	// adminPass is returned by create, rebuild and rescue, nor set in
	// the server.
	NoInstancePassword bool
	ServiceDownTime    time.Duration // heartbeat age after which a host is "down"
	DefaultQuota       Quota
	// DefaultPortQuota is every project's Neutron port quota (config
	// network.quota.ports; 0: Neutron's 500): the ports a server's create
	// or interface attach makes count against it.
	DefaultPortQuota int
	// VolumeQuota is every project's default Block Storage quota
	// (store.QuotaVolumes, QuotaGigabytes, QuotaSnapshots; config
	// volume.quota): the volumes a create's block-device mappings make
	// count against it. VolumeBackend and VolumeZone are those volumes'
	// (config volume.backend and availability_zone).
	VolumeQuota   map[string]int
	VolumeBackend string
	VolumeZone    string
	Validator     auth.Validator
	// Images deletes images for the image proxy (DELETE /images/{id})
	// as Glance does; package image's Service.
	Images ImageDeleter
	// RegistryAddress (host:port) is where snapshots of servers whose image
	// registry cannot be told from its reference are pushed.
	RegistryAddress string
	// Registry deletes the registry tag of a shelve image when its server
	// is deleted while offloaded (nil: the tag is left, logged).
	Registry ImageReleaser
	// Consoles issues serial and novnc console URLs (nil: no console is
	// enabled, Nova's 400 "Unavailable console type serial.").
	Consoles ConsoleIssuer
	// VolumeTimeouts are the deadlines of the volume attach and detach
	// work it casts (the conductor's sweep ends work past them).
	VolumeTimeouts instance.VolumeTimeouts
	// AfterCommit, when set, runs after a request committed its task and
	// before its message is published (a test's kill point).
	AfterCommit func()
	Log         *slog.Logger
	Now         func() time.Time
}

// Quota is a project's compute quota.
type Quota struct {
	Instances int
	Cores     int
	RAM       int
}

// Service is the compute API.
type Service struct {
	st   *store.Store
	bus  bus.Bus
	opts Options
	log  *slog.Logger
	mig  migrator // package migrate's API (a fake in tests)
	// outbox publishes the messages handlers committed with their state
	// changes; what it cannot, the conductor's relay sends later.
	outbox *outbox.Relay
	// fw sends the firewall refreshes of membership changes, coalesced.
	fw *fwRefresher
	// rows keeps the instance rows the show served (see rowcache.go).
	rows *rowCache
}

// New returns the compute API service.
func New(st *store.Store, b bus.Bus, opts Options) *Service {
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.ServiceDownTime <= 0 {
		opts.ServiceDownTime = 60 * time.Second
	}
	if opts.VolumeQuota == nil {
		opts.VolumeQuota = map[string]int{store.QuotaVolumes: 10, store.QuotaGigabytes: 1000, store.QuotaSnapshots: 10}
	}
	if opts.DefaultPortQuota == 0 {
		opts.DefaultPortQuota = 500
	}
	if opts.DefaultQuota == (Quota{}) {
		opts.DefaultQuota = Quota{Instances: 10, Cores: 20, RAM: 51200}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.Now().UTC() }
	}
	if opts.FirewallRefreshDelay <= 0 {
		opts.FirewallRefreshDelay = time.Second
	}
	host, _ := os.Hostname()
	s := &Service{st: st, bus: b, opts: opts, log: opts.Log.With("api", "compute"), mig: engineMigrator{},
		outbox: outbox.NewRelay(st, b, outbox.Options{Owner: fmt.Sprintf("api@%s:%d", host, os.Getpid()), Log: opts.Log}),
		rows:   newRowCache(rowCacheSize)}
	s.fw = newFWRefresher(s, opts.FirewallRefreshDelay)
	return s
}

// apiVersion is a compute microversion.
type apiVersion struct{ Major, Minor int }

func (v apiVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v >= minor (major 2).
func (v apiVersion) AtLeast(minor int) bool { return v.Major > 2 || (v.Major == 2 && v.Minor >= minor) }

func (v apiVersion) less(o apiVersion) bool {
	return v.Major < o.Major || (v.Major == o.Major && v.Minor < o.Minor)
}

func parseVersion(s string) (apiVersion, bool) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "latest") {
		return maxVersion, true
	}
	maj, min, ok := strings.Cut(s, ".")
	if !ok {
		return apiVersion{}, false
	}
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	if err1 != nil || err2 != nil || a < 0 || b < 0 {
		return apiVersion{}, false
	}
	return apiVersion{a, b}, true
}

// requestVersion reads the new header first, then the legacy one; none
// means 2.1. The raw string is echoed back as clients (Tempest) compare it.
func requestVersion(r *http.Request) (v apiVersion, raw string, ok bool) {
	if h := r.Header.Get("OpenStack-API-Version"); h != "" {
		for _, part := range strings.Split(h, ",") {
			f := strings.Fields(part)
			if len(f) == 2 && strings.EqualFold(f[0], "compute") {
				v, ok = parseVersion(f[1])
				return v, f[1], ok
			}
		}
	}
	if h := r.Header.Get("X-OpenStack-Nova-API-Version"); h != "" {
		v, ok = parseVersion(h)
		return v, strings.TrimSpace(h), ok
	}
	return minVersion, minVersion.String(), true
}

type versionKey struct{}

func versionOf(ctx context.Context) apiVersion {
	if v, ok := ctx.Value(versionKey{}).(apiVersion); ok {
		return v
	}
	return minVersion
}

// Handler returns the compute port's handler.
func (s *Service) Handler() http.Handler { return s.handlerUpTo(maxVersion) }

// handlerUpTo serves microversions up to max: maxVersion, or beyond it in
// tests of a step's behaviour that is implemented before the advertised
// maximum reaches it.
func (s *Service) handlerUpTo(max apiVersion) http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	return s.withVersion(mux, max)
}

// withVersion negotiates the microversion and sets the response headers on
// every response, errors included.
func (s *Service) withVersion(next http.Handler, upTo apiVersion) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Clients join endpoint + "/" + path; accept a trailing slash. Not
		// for a tenant usage with an empty project id: Nova answers 404
		// there rather than list every project (Tempest checks).
		if len(r.URL.Path) > 1 && strings.HasSuffix(r.URL.Path, "/") && !isVersionRoot(r.URL.Path) &&
			!strings.HasSuffix(r.URL.Path, "/os-simple-tenant-usage/") {
			r.URL.Path = strings.TrimRight(r.URL.Path, "/")
		}
		if id := w.Header().Get("x-openstack-request-id"); id != "" {
			w.Header().Set("x-compute-request-id", id)
		} else {
			id = "req-" + newUUID()
			w.Header().Set("x-openstack-request-id", id)
			w.Header().Set("x-compute-request-id", id)
		}
		w.Header().Set("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
		v, raw, ok := requestVersion(r)
		if !ok {
			writeFault(w, errdefs.InvalidArgumentf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", raw))
			return
		}
		if v.less(minVersion) || upTo.less(v) {
			w.Header().Set("X-OpenStack-Nova-API-Version", raw)
			w.Header().Set("OpenStack-API-Version", "compute "+raw)
			writeError(w, http.StatusNotAcceptable, fmt.Sprintf("Version %s is not supported by the API. Minimum is %s and maximum is %s.", raw, minVersion, upTo))
			return
		}
		if strings.EqualFold(raw, "latest") {
			raw = upTo.String()
		}
		w.Header().Set("X-OpenStack-Nova-API-Version", raw)
		w.Header().Set("OpenStack-API-Version", "compute "+raw)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), versionKey{}, v)))
	})
}

func isVersionRoot(p string) bool { return p == "/v2/" || p == "/v2.1/" }

// authed wraps h with token validation.
func (s *Service) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("X-Auth-Token")
		if tok == "" {
			writeFault(w, errdefs.Unauthenticated("The request you have made requires authentication."))
			return
		}
		creds, err := s.opts.Validator.Validate(r.Context(), tok)
		if err != nil || creds == nil {
			writeFault(w, errdefs.Unauthenticated("The request you have made requires authentication."))
			return
		}
		if creds.ProjectID == "" {
			writeFault(w, errdefs.Unauthenticated("The request you have made requires a project-scoped token."))
			return
		}
		h(w, r.WithContext(auth.WithCredentials(r.Context(), creds)))
	}
}

// admin wraps h so only admins reach it.
func (s *Service) admin(h http.HandlerFunc) http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request) {
		if !auth.FromContext(r.Context()).IsAdmin() {
			writeFault(w, errdefs.Forbidden("Policy doesn't allow this operation to be performed."))
			return
		}
		h(w, r)
	})
}

// writer wraps h so reader-only tokens cannot change anything.
func (s *Service) writer(h http.HandlerFunc) http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request) {
		if !auth.FromContext(r.Context()).CanWrite() {
			writeFault(w, errdefs.Forbidden("Policy doesn't allow this operation to be performed."))
			return
		}
		h(w, r)
	})
}

func (s *Service) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.versions)
	for _, p := range []string{"/v2", "/v2/{$}", "/v2.1", "/v2.1/{$}"} {
		mux.HandleFunc("GET "+p, s.version)
	}
	for _, prefix := range []string{"/v2.1", "/v2"} {
		s.apiRoutes(mux, prefix)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
	})
}

func (s *Service) apiRoutes(mux *http.ServeMux, p string) {
	// Servers.
	mux.HandleFunc("POST "+p+"/servers", s.writer(s.createServer))
	mux.HandleFunc("GET "+p+"/servers", s.authed(s.listServers(false)))
	mux.HandleFunc("GET "+p+"/servers/detail", s.authed(s.listServers(true)))
	mux.HandleFunc("GET "+p+"/servers/{id}", s.authed(s.showServer))
	mux.HandleFunc("PUT "+p+"/servers/{id}", s.writer(s.updateServer))
	mux.HandleFunc("DELETE "+p+"/servers/{id}", s.writer(s.deleteServer))
	mux.HandleFunc("POST "+p+"/servers/{id}/action", s.writer(s.serverAction))
	mux.HandleFunc("GET "+p+"/servers/{id}/ips", s.authed(s.serverIPs))
	mux.HandleFunc("GET "+p+"/servers/{id}/ips/{net}", s.authed(s.serverIPsByNetwork))
	mux.HandleFunc("GET "+p+"/servers/{id}/tags", s.authed(s.listTags))
	mux.HandleFunc("PUT "+p+"/servers/{id}/tags", s.writer(s.replaceTags))
	mux.HandleFunc("DELETE "+p+"/servers/{id}/tags", s.writer(s.deleteAllTags))
	mux.HandleFunc("GET "+p+"/servers/{id}/tags/{tag}", s.authed(s.checkTag))
	mux.HandleFunc("PUT "+p+"/servers/{id}/tags/{tag}", s.writer(s.addTag))
	mux.HandleFunc("DELETE "+p+"/servers/{id}/tags/{tag}", s.writer(s.deleteTag))
	mux.HandleFunc("GET "+p+"/servers/{id}/metadata", s.authed(s.getMetadata))
	mux.HandleFunc("POST "+p+"/servers/{id}/metadata", s.writer(s.setMetadata(false)))
	mux.HandleFunc("PUT "+p+"/servers/{id}/metadata", s.writer(s.setMetadata(true)))
	mux.HandleFunc("GET "+p+"/servers/{id}/metadata/{key}", s.authed(s.getMetadataItem))
	mux.HandleFunc("PUT "+p+"/servers/{id}/metadata/{key}", s.writer(s.putMetadataItem))
	mux.HandleFunc("DELETE "+p+"/servers/{id}/metadata/{key}", s.writer(s.deleteMetadataItem))
	mux.HandleFunc("GET "+p+"/servers/{id}/os-instance-actions", s.authed(s.listInstanceActions))
	mux.HandleFunc("GET "+p+"/servers/{id}/capsule-usage", s.authed(s.serverUsageHistory))
	mux.HandleFunc("GET "+p+"/servers/{id}/os-instance-actions/{req}", s.authed(s.showInstanceAction))
	mux.HandleFunc("GET "+p+"/servers/{id}/os-volume_attachments", s.authed(s.listVolumeAttachments))
	mux.HandleFunc("POST "+p+"/servers/{id}/os-volume_attachments", s.writer(s.attachVolume))
	mux.HandleFunc("GET "+p+"/servers/{id}/os-volume_attachments/{volume}", s.authed(s.showVolumeAttachment))
	mux.HandleFunc("PUT "+p+"/servers/{id}/os-volume_attachments/{volume}", s.writer(s.updateVolumeAttachment))
	mux.HandleFunc("DELETE "+p+"/servers/{id}/os-volume_attachments/{volume}", s.writer(s.detachVolume))
	mux.HandleFunc("GET "+p+"/servers/{id}/os-interface", s.authed(s.listInterfaces))
	mux.HandleFunc("POST "+p+"/servers/{id}/os-interface", s.writer(s.attachInterface))
	mux.HandleFunc("GET "+p+"/servers/{id}/os-interface/{port}", s.authed(s.showInterface))
	mux.HandleFunc("DELETE "+p+"/servers/{id}/os-interface/{port}", s.writer(s.detachInterface))
	mux.HandleFunc("POST "+p+"/servers/{id}/remote-consoles", s.writer(s.createRemoteConsole))
	mux.HandleFunc("GET "+p+"/servers/{id}/diagnostics", s.admin(s.serverDiagnostics))
	mux.HandleFunc("GET "+p+"/servers/{id}/topology", s.authed(s.serverTopology))
	mux.HandleFunc("GET "+p+"/servers/{id}/os-server-password", s.authed(s.showServerPassword))
	mux.HandleFunc("DELETE "+p+"/servers/{id}/os-server-password", s.writer(s.clearServerPassword))
	mux.HandleFunc("GET "+p+"/servers/{id}/migrations", s.admin(s.listServerMigrations))
	mux.HandleFunc("GET "+p+"/servers/{id}/migrations/{mid}", s.admin(s.showServerMigration))

	// Flavors.
	mux.HandleFunc("GET "+p+"/flavors", s.authed(s.listFlavors(false)))
	mux.HandleFunc("GET "+p+"/flavors/detail", s.authed(s.listFlavors(true)))
	mux.HandleFunc("GET "+p+"/flavors/{id}", s.authed(s.showFlavor))
	mux.HandleFunc("POST "+p+"/flavors", s.admin(s.createFlavor))
	mux.HandleFunc("DELETE "+p+"/flavors/{id}", s.admin(s.deleteFlavor))
	mux.HandleFunc("PUT "+p+"/flavors/{id}", s.admin(s.updateFlavor))
	mux.HandleFunc("GET "+p+"/flavors/{id}/os-extra_specs", s.authed(s.listExtraSpecs))
	mux.HandleFunc("POST "+p+"/flavors/{id}/os-extra_specs", s.admin(s.setExtraSpecs))
	mux.HandleFunc("GET "+p+"/flavors/{id}/os-extra_specs/{key}", s.authed(s.showExtraSpec))
	mux.HandleFunc("PUT "+p+"/flavors/{id}/os-extra_specs/{key}", s.admin(s.putExtraSpec))
	mux.HandleFunc("DELETE "+p+"/flavors/{id}/os-extra_specs/{key}", s.admin(s.deleteExtraSpec))
	mux.HandleFunc("GET "+p+"/flavors/{id}/os-flavor-access", s.admin(s.listFlavorAccess))
	mux.HandleFunc("POST "+p+"/flavors/{id}/action", s.admin(s.flavorAction))

	// Hosts and the cloud.
	mux.HandleFunc("GET "+p+"/os-services", s.admin(s.listServices))
	mux.HandleFunc("PUT "+p+"/os-services/{action}", s.admin(s.updateService))
	mux.HandleFunc("GET "+p+"/os-hypervisors", s.admin(s.listHypervisors(false)))
	mux.HandleFunc("GET "+p+"/os-hypervisors/detail", s.admin(s.listHypervisors(true)))
	mux.HandleFunc("GET "+p+"/os-hypervisors/statistics", s.admin(gone88(s.hypervisorStatistics)))
	mux.HandleFunc("GET "+p+"/os-hypervisors/{id}", s.admin(s.showHypervisor))
	mux.HandleFunc("GET "+p+"/os-hypervisors/{id}/uptime", s.admin(gone88(s.hypervisorUptime)))
	mux.HandleFunc("GET "+p+"/os-hypervisors/{id}/search", s.admin(s.searchHypervisors(false)))
	mux.HandleFunc("GET "+p+"/os-hypervisors/{id}/servers", s.admin(s.searchHypervisors(true)))
	mux.HandleFunc("GET "+p+"/limits", s.authed(s.limits))
	mux.HandleFunc("GET "+p+"/os-availability-zone", s.authed(s.availabilityZones(false)))
	mux.HandleFunc("GET "+p+"/os-availability-zone/detail", s.admin(s.availabilityZones(true)))
	mux.HandleFunc("GET "+p+"/os-quota-sets/{project}", s.authed(s.showQuotaSet))
	mux.HandleFunc("PUT "+p+"/os-quota-sets/{project}", s.authed(s.updateQuotaSet))
	mux.HandleFunc("DELETE "+p+"/os-quota-sets/{project}", s.authed(s.deleteQuotaSet))
	mux.HandleFunc("GET "+p+"/os-quota-sets/{project}/defaults", s.authed(s.showQuotaDefaults))
	mux.HandleFunc("GET "+p+"/os-quota-sets/{project}/detail", s.authed(s.showQuotaDetail))
	mux.HandleFunc("GET "+p+"/os-simple-tenant-usage", s.admin(s.listTenantUsage))
	mux.HandleFunc("GET "+p+"/os-simple-tenant-usage/{project}", s.authed(s.showTenantUsage))
	mux.HandleFunc("GET "+p+"/os-migrations", s.admin(s.listMigrations))
	mux.HandleFunc("GET "+p+"/os-host-events", s.admin(s.listHostEvents))
	s.aggregateRoutes(mux, p)
	s.serverGroupRoutes(mux, p)
	s.imageRoutes(mux, p)
	s.securityGroupRoutes(mux, p)
	s.keypairRoutes(mux, p)
	mux.HandleFunc("GET "+p+"/extensions", s.authed(s.listExtensions))
	mux.HandleFunc("GET "+p+"/extensions/{alias}", s.authed(s.showExtension))
}

// Version documents.

func (s *Service) baseURL(r *http.Request) string {
	host := r.Host
	if host == "" {
		host = fmt.Sprintf("%s:%d", s.opts.PublicHost, s.opts.ComputePort)
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + host
}

func (s *Service) versionDoc(r *http.Request, id string) map[string]any {
	base := s.baseURL(r)
	if id == "v2.0" {
		return map[string]any{"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
			"updated": "2011-01-21T11:33:21Z", "links": []map[string]string{{"rel": "self", "href": base + "/v2/"}}}
	}
	return map[string]any{"id": "v2.1", "status": "CURRENT", "version": maxVersion.String(), "min_version": minVersion.String(),
		"updated": "2013-07-23T11:33:21Z", "links": []map[string]string{{"rel": "self", "href": base + "/v2.1/"}}}
}

func (s *Service) versions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"versions": []any{s.versionDoc(r, "v2.0"), s.versionDoc(r, "v2.1")}})
}

func (s *Service) version(w http.ResponseWriter, r *http.Request) {
	id := "v2.1"
	if strings.HasPrefix(r.URL.Path, "/v2/") || r.URL.Path == "/v2" {
		id = "v2.0"
	}
	doc := s.versionDoc(r, id)
	links := doc["links"].([]map[string]string)
	doc["links"] = append(links, map[string]string{"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"})
	doc["media-types"] = []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}}
	writeJSON(w, http.StatusOK, map[string]any{"version": doc})
}

// JSON helpers.

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func noContent(w http.ResponseWriter, status int) {
	w.WriteHeader(status)
}

// decodeBody parses a JSON request body into v; a malformed body is a 400
// in Nova's words.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		writeFault(w, errdefs.InvalidArgument("Malformed request body: "+err.Error()))
		return false
	}
	return true
}
