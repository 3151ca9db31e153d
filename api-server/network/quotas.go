package network

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// Neutron quotas (the "quotas" extension's /v2.0/quotas). Every project
// has the configured defaults for networks, subnets and ports
// (network.quota) and Neutron's for the rest; an admin sets one project's
// limits with PUT (`openstack quota set --networks 2 --ports 5 P`) and
// puts them back with DELETE. Networks, subnets and ports are enforced:
// each create counts the project's rows under its network quota lock in
// the create's transaction (store.NetworkQuotaGuard) and refuses with
// Neutron's 409 OverQuota (ports the Compute API makes for a server count
// too: a 403 there). The "quotas" extension is not declared yet, so
// Tempest does not run its network quota tests. Security groups and
// their rules are enforced the same way (a project's default group and
// its four rules count, as in Neutron). The other resources (routers,
// floating IPs, ...) do not exist in Capsule: their limits are stored and
// shown, and nothing counts against them.

// networkQuotaDefaults are the default limits by resource.
func (s *Service) networkQuotaDefaults() map[string]int {
	q := s.cfg.Quota
	return map[string]int{"network": q.Networks, "subnet": q.Subnets, "port": q.Ports, "router": 10,
		"floatingip": 50, "security_group": 10, "security_group_rule": 100, "rbac_policy": 10, "subnetpool": -1}
}

// quotaGuard is the network quota guard of a create of resource in
// project.
func (s *Service) quotaGuard(project, resource string) store.Guard {
	return store.NetworkQuotaGuard(project, resource, s.networkQuotaDefaults()[resource])
}

// quotaRoutes adds the quota resource to mux.
func (s *Service) quotaRoutes(mux *http.ServeMux) {
	authed := identity.RequireToken(s.validator, s.authFailed)
	h := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, authed(fn)) }
	h("GET /v2.0/quotas", s.listQuotas)
	h("GET /v2.0/quotas/{project}", s.showQuota)
	h("GET /v2.0/quotas/{project}/default", s.showQuotaDefault)
	h("GET /v2.0/quotas/{project}/details", s.showQuotaDetails)
	h("GET /v2.0/quotas/{project}/details.json", s.showQuotaDetails)
	h("PUT /v2.0/quotas/{project}", s.updateQuota)
	h("DELETE /v2.0/quotas/{project}", s.deleteQuota)
}

// quotaProject is the {project} the caller may read: their own, or any
// for admins (Neutron's get_quota: 403 otherwise).
func quotaProject(w http.ResponseWriter, r *http.Request) (string, bool) {
	c, project := creds(r), r.PathValue("project")
	if !owns(c, project) {
		forbidden(w, "get_quota")
		return "", false
	}
	return project, true
}

// projectQuota is the project's limits: the defaults under what was set.
func (s *Service) projectQuota(r *http.Request, project string) (map[string]int, error) {
	out := s.networkQuotaDefaults()
	if s.st == nil {
		return out, nil
	}
	set, err := s.st.NetworkQuotaLimits(r.Context(), project)
	if err != nil {
		return nil, err
	}
	for k, n := range set {
		if _, known := out[k]; known {
			out[k] = n
		}
	}
	return out, nil
}

// listQuotas lists the projects with limits set (admin only), each with
// every limit and its project_id/tenant_id.
func (s *Service) listQuotas(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		forbidden(w, "get_quota")
		return
	}
	out := []any{}
	if s.st != nil {
		all, err := s.st.AllNetworkQuotaLimits(r.Context())
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		projects := make([]string, 0, len(all))
		for p := range all {
			projects = append(projects, p)
		}
		sort.Strings(projects)
		for _, p := range projects {
			q := map[string]any{"project_id": p, "tenant_id": p}
			for k, n := range s.networkQuotaDefaults() {
				q[k] = n
				if v, ok := all[p][k]; ok {
					q[k] = v
				}
			}
			out = append(out, q)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quotas": out})
}

func (s *Service) showQuota(w http.ResponseWriter, r *http.Request) {
	project, ok := quotaProject(w, r)
	if !ok {
		return
	}
	q, err := s.projectQuota(r, project)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": q})
}

func (s *Service) showQuotaDefault(w http.ResponseWriter, r *http.Request) {
	if _, ok := quotaProject(w, r); ok {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": s.networkQuotaDefaults()})
	}
}

// showQuotaDetails gives each limit with what the project uses:
// networks, subnets, ports, security groups and their rules counted.
func (s *Service) showQuotaDetails(w http.ResponseWriter, r *http.Request) {
	project, ok := quotaProject(w, r)
	if !ok {
		return
	}
	limits, err := s.projectQuota(r, project)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	used, err := s.networkUsage(r, project)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	q := map[string]any{}
	for k, n := range limits {
		q[k] = map[string]int{"limit": n, "used": used[k], "reserved": 0}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": q})
}

func (s *Service) networkUsage(r *http.Request, project string) (map[string]int, error) {
	used := map[string]int{}
	if s.st == nil {
		return used, nil
	}
	counted, err := store.CountNetworkUsage(s.st.WithContext(r.Context()), project)
	if err != nil {
		return nil, err
	}
	for k, n := range counted {
		used[k] = n
	}
	return used, nil
}

// updateQuota serves PUT /v2.0/quotas/{project} (admin): every value an
// integer from -1 up, every key a quota resource ("force" and
// "check_limit" are flags, as `openstack quota set` sends them). With
// check_limit a limit below what the project holds is refused (409
// InvalidQuotaValue), checked under the project's quota lock so no create
// slips in between.
func (s *Service) updateQuota(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		forbidden(w, "update_quota")
		return
	}
	project := r.PathValue("project")
	var body struct {
		Quota map[string]json.RawMessage `json:"quota"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil || body.Quota == nil {
		badRequest(w, "Malformed request body: a \"quota\" object is required.")
		return
	}
	defaults := s.networkQuotaDefaults()
	limits := map[string]int{}
	checkLimit := false
	var unknown []string
	for k, raw := range body.Quota {
		switch {
		case k == "force":
			continue
		case k == "check_limit":
			checkLimit = bytes.Equal(bytes.TrimSpace(raw), []byte("true")) || strings.EqualFold(strings.Trim(string(raw), `" `), "true")
			continue
		}
		if _, ok := defaults[k]; !ok {
			unknown = append(unknown, "'"+k+"'")
			continue
		}
		n, ok := quotaInt(raw)
		if !ok {
			badRequest(w, fmt.Sprintf("Invalid input for %s. Reason: '%s' is not an integer greater than or equal to -1.", k, strings.Trim(string(raw), `"`)))
			return
		}
		limits[k] = n
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		badRequest(w, "Unrecognized attribute(s) "+strings.Join(unknown, ", "))
		return
	}
	if s.st == nil {
		badRequest(w, "Network quotas cannot be changed without a database.")
		return
	}
	var check store.Guard
	if checkLimit {
		check = func(tx *gorm.DB) error {
			used, err := store.CountNetworkUsage(tx, project)
			if err != nil {
				return err
			}
			var unders []string
			for _, k := range sortedKeys(limits) {
				if n := limits[k]; n >= 0 && n < used[k] {
					unders = append(unders, fmt.Sprintf("%s=%d", k, n-used[k]))
				}
			}
			if len(unders) > 0 {
				return store.ErrInvalidQuotaValue.Newf("Change would make usage less than 0 for the following resources: %s.", strings.Join(unders, ", "))
			}
			return nil
		}
	}
	if err := s.st.SetNetworkQuotaLimits(r.Context(), project, limits, check); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.Info("network quota set", "project", project, "limits", limits)
	q, err := s.projectQuota(r, project)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota": q})
}

// quotaInt parses a limit: a JSON integer or a string of one (OSC sends
// integers, the Neutron client strings), at least -1.
func quotaInt(raw json.RawMessage) (int, bool) {
	text := strings.TrimSpace(string(raw))
	if unq, err := strconv.Unquote(text); err == nil {
		text = strings.TrimSpace(unq)
	}
	n, err := strconv.ParseInt(text, 10, 32)
	if err != nil || n < -1 {
		return 0, false
	}
	return int(n), true
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// deleteQuota puts the project back to the defaults (admin; 204).
func (s *Service) deleteQuota(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		forbidden(w, "delete_quota")
		return
	}
	if s.st != nil {
		if err := s.st.DeleteNetworkQuotaLimits(r.Context(), r.PathValue("project")); err != nil {
			s.storeError(w, r, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
