package identity

import (
	"net/http"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
)

type catalogEndpoint struct {
	ID        string `json:"id"`
	Interface string `json:"interface"`
	Region    string `json:"region"`
	RegionID  string `json:"region_id"`
	URL       string `json:"url"`
}

type catalogEntry struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Type      string            `json:"type"`
	Endpoints []catalogEndpoint `json:"endpoints"`
}

// catalogService is one service Capsule advertises.
type catalogService struct {
	name, typ, url string
}

// services lists the catalog's services with their URLs in the shapes
// clients need: identity and compute versioned, image and network not
// (gophercloud appends v2/ and v2.0/ itself).
func (s *Service) services(r *http.Request) []catalogService {
	host, scheme := s.opts.PublicHost, "http"
	if host == "" {
		host, scheme = httpapi.HostName(r), httpapi.Scheme(r)
	}
	if s.opts.TLS {
		scheme = "https"
	}
	p := s.opts.Ports
	out := []catalogService{
		{"keystone", "identity", httpapi.HostURL(scheme, host, p.Identity) + "/v3"},
		{"nova", "compute", httpapi.HostURL(scheme, host, p.Compute) + "/v2.1"},
		{"glance", "image", httpapi.HostURL(scheme, host, p.Image)},
		{"neutron", "network", httpapi.HostURL(scheme, host, p.Network)},
	}
	if p.Volume > 0 {
		// Cinder's endpoints carry the project (Keystone's URL template,
		// substituted in a token's catalog); both service types as a
		// current Cinder registers them.
		vol := httpapi.HostURL(scheme, host, p.Volume) + "/v3/" + projectTemplate
		out = append(out, catalogService{"cinderv3", "volumev3", vol}, catalogService{"cinder", "block-storage", vol})
	}
	return out
}

// projectTemplate is Keystone's endpoint URL placeholder for the token's
// project.
const projectTemplate = "%(project_id)s"

var interfaces = []string{"public", "internal", "admin"}

// catalog builds the token's service catalog. Ids are derived from the
// service type so issue and validation return identical bodies.
func (s *Service) catalog(r *http.Request, projectID string) []catalogEntry {
	var out []catalogEntry
	for _, svc := range s.services(r) {
		svc.url = strings.ReplaceAll(svc.url, projectTemplate, projectID)
		e := catalogEntry{ID: stableID("service", svc.typ), Name: svc.name, Type: svc.typ}
		for _, itf := range interfaces {
			e.Endpoints = append(e.Endpoints, catalogEndpoint{ID: stableID("endpoint", svc.typ, itf),
				Interface: itf, Region: s.opts.Region, RegionID: s.opts.Region, URL: svc.url})
		}
		out = append(out, e)
	}
	return out
}

const identityVersionID = "v3.14"

func (s *Service) versionObject(r *http.Request) map[string]any {
	return map[string]any{
		"id":      identityVersionID,
		"status":  "stable",
		"updated": "2020-04-07T00:00:00Z",
		"links":   []map[string]string{{"rel": "self", "href": httpapi.BaseURL(r) + "/v3/"}},
		"media-types": []map[string]string{{"base": "application/json",
			"type": "application/vnd.openstack.identity-v3+json"}},
	}
}

// versions is GET /: 300 Multiple Choices, as Keystone (and Tempest) have it.
func (s *Service) versions(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusMultipleChoices, map[string]any{
		"versions": map[string]any{"values": []any{s.versionObject(r)}}})
}

func (s *Service) version(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"version": s.versionObject(r)})
}

func (s *Service) authCatalog(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	// Every scoped token (project, domain or system) carries a catalog,
	// as the token's own body does; only an unscoped one, which holds no
	// role, has none.
	if c.ProjectID == "" && !c.System && len(c.Roles) == 0 {
		s.failErr(w, r, errdefs.Forbidden("A scoped token is required to produce a service catalog."))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"catalog": s.catalog(r, c.ProjectID), "links": s.collectionLinks(r)})
}

// serviceViews are the catalog's services as /v3/services shows them.
func (s *Service) serviceViews(r *http.Request) []map[string]any {
	var out []map[string]any
	for _, svc := range s.services(r) {
		id := stableID("service", svc.typ)
		out = append(out, map[string]any{"id": id, "name": svc.name, "type": svc.typ, "enabled": true,
			"description": "", "links": map[string]string{"self": s.selfURL(r, "services", id)}})
	}
	return out
}

func (s *Service) listServices(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	out := s.serviceViews(r)
	if n := r.URL.Query().Get("type"); n != "" {
		out = filterMaps(out, "type", n)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"services": out, "links": s.collectionLinks(r)})
}

func (s *Service) getService(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	for _, v := range s.serviceViews(r) {
		if v["id"] == r.PathValue("id") {
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{"service": v})
			return
		}
	}
	s.failErr(w, r, errdefs.NotFound("Could not find service: "+r.PathValue("id")+"."))
}

// endpointViews are the catalog's endpoints as /v3/endpoints shows them.
func (s *Service) endpointViews(r *http.Request) []map[string]any {
	var out []map[string]any
	for _, svc := range s.services(r) {
		sid := stableID("service", svc.typ)
		for _, itf := range interfaces {
			id := stableID("endpoint", svc.typ, itf)
			out = append(out, map[string]any{"id": id, "interface": itf, "region": s.opts.Region,
				"region_id": s.opts.Region, "url": svc.url, "service_id": sid, "enabled": true,
				"links": map[string]string{"self": s.selfURL(r, "endpoints", id)}})
		}
	}
	return out
}

func (s *Service) listEndpoints(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	q := r.URL.Query()
	out := []map[string]any{}
	for _, e := range s.endpointViews(r) {
		if (q.Get("service_id") != "" && q.Get("service_id") != e["service_id"]) ||
			(q.Get("interface") != "" && q.Get("interface") != e["interface"]) ||
			(q.Get("region_id") != "" && q.Get("region_id") != e["region_id"]) {
			continue
		}
		out = append(out, e)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"endpoints": out, "links": s.collectionLinks(r)})
}

func (s *Service) getEndpoint(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	for _, e := range s.endpointViews(r) {
		if e["id"] == r.PathValue("id") {
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{"endpoint": e})
			return
		}
	}
	s.failErr(w, r, errdefs.NotFound("Could not find endpoint: "+r.PathValue("id")+"."))
}

func (s *Service) regionView(r *http.Request) map[string]any {
	return map[string]any{"id": s.opts.Region, "description": "", "parent_region_id": nil,
		"links": map[string]string{"self": s.selfURL(r, "regions", s.opts.Region)}}
}

func (s *Service) listRegions(w http.ResponseWriter, r *http.Request) {
	out := []map[string]any{}
	if p := r.URL.Query().Get("parent_region_id"); p == "" {
		out = append(out, s.regionView(r))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"regions": out, "links": s.collectionLinks(r)})
}

// getRegion is GET /v3/regions/{id}; any token may read regions, as in
// Keystone.
func (s *Service) getRegion(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") != s.opts.Region {
		s.failErr(w, r, errdefs.NotFound("Could not find region: "+r.PathValue("id")+"."))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"region": s.regionView(r)})
}

func filterMaps(in []map[string]any, key, want string) []map[string]any {
	out := []map[string]any{}
	for _, m := range in {
		if m[key] == want {
			out = append(out, m)
		}
	}
	return out
}
