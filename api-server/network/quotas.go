package network

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/store"
)

// Neutron quotas, read only: every project has Neutron's default limits
// (Capsule enforces none of them). They are served because
// `openstack quota show` asks Neutron for them whenever the catalog has a
// network endpoint, and fails if the call fails. The "quotas" extension is
// not declared, so Tempest does not try to change them.

// networkQuotaDefaults are Neutron's default limits by resource.
func networkQuotaDefaults() map[string]int {
	return map[string]int{"network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50,
		"security_group": 10, "security_group_rule": 100, "rbac_policy": 10, "subnetpool": -1}
}

// quotaRoutes adds the quota resource to mux.
func (s *Service) quotaRoutes(mux *http.ServeMux) {
	authed := identity.RequireToken(s.validator, s.authFailed)
	h := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, authed(fn)) }
	h("GET /v2.0/quotas", s.listQuotas)
	h("GET /v2.0/quotas/{project}", s.showQuota)
	h("GET /v2.0/quotas/{project}/default", s.showQuotaDefault)
	h("GET /v2.0/quotas/{project}/details", s.showQuotaDetails)
	h("PUT /v2.0/quotas/{project}", s.updateQuota)
	h("DELETE /v2.0/quotas/{project}", s.deleteQuota)
}

// quotaProject is the {project} the caller may see: their own, or any for
// admins.
func quotaProject(w http.ResponseWriter, r *http.Request) (string, bool) {
	c, project := creds(r), r.PathValue("project")
	if !owns(c, project) {
		forbidden(w, "get_quota")
		return "", false
	}
	return project, true
}

// listQuotas lists the projects with non-default quotas: none.
func (s *Service) listQuotas(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		forbidden(w, "get_quota")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quotas": []any{}})
}

func (s *Service) showQuota(w http.ResponseWriter, r *http.Request) {
	if _, ok := quotaProject(w, r); ok {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": networkQuotaDefaults()})
	}
}

func (s *Service) showQuotaDefault(w http.ResponseWriter, r *http.Request) {
	if _, ok := quotaProject(w, r); ok {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": networkQuotaDefaults()})
	}
}

// showQuotaDetails gives each limit with what the project uses:
// networks, subnets and ports counted, plus the default security group
// and its four rules every project has.
func (s *Service) showQuotaDetails(w http.ResponseWriter, r *http.Request) {
	project, ok := quotaProject(w, r)
	if !ok {
		return
	}
	used, err := s.networkUsage(r, project)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	q := map[string]any{}
	for k, n := range networkQuotaDefaults() {
		q[k] = map[string]int{"limit": n, "used": used[k], "reserved": 0}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": q})
}

func (s *Service) networkUsage(r *http.Request, project string) (map[string]int, error) {
	used := map[string]int{"security_group": 1, "security_group_rule": 4}
	if s.st == nil {
		return used, nil
	}
	for key, model := range map[string]any{"network": &store.Network{}, "subnet": &store.Subnet{}, "port": &store.Port{}} {
		var n int64
		if err := s.st.WithContext(r.Context()).Model(model).Where("project_id = ?", project).Count(&n).Error; err != nil {
			return nil, fmt.Errorf("count %ss of project %s: %w", key, project, err)
		}
		used[key] = int(n)
	}
	return used, nil
}

// updateQuota accepts only a body that changes nothing: `openstack quota
// set --force` sends {"quota": {"force": true}} to Neutron after setting
// the compute quota, and must not fail for it. Any limit is refused.
func (s *Service) updateQuota(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		forbidden(w, "update_quota")
		return
	}
	var body struct {
		Quota map[string]json.RawMessage `json:"quota"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil || body.Quota == nil {
		badRequest(w, "Malformed request body: a \"quota\" object is required.")
		return
	}
	var limits []string
	for k := range body.Quota {
		if k != "force" && k != "check_limit" {
			limits = append(limits, k)
		}
	}
	if len(limits) > 0 {
		sort.Strings(limits)
		badRequest(w, "Network quotas are fixed at Neutron's defaults in Capsule and cannot be changed: "+strings.Join(limits, ", "))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": networkQuotaDefaults()})
}

// deleteQuota resets to defaults, which is where every project already is.
func (s *Service) deleteQuota(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		forbidden(w, "delete_quota")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
