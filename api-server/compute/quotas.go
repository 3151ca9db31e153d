package compute

import (
	"fmt"
	"net/http"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/store"
)

// os-quota-sets, read only: every project has the configured default
// quota (Options.DefaultQuota for instances/cores/ram, Nova's defaults for
// the rest). Changing quotas needs a per-project store record Capsule does
// not have yet, so PUT and DELETE are not served.

// quotaLimits is the project's quota by Nova key at microversion v:
// 2.36 drops the network proxies' keys, 2.57 the personality ones.
func (s *Service) quotaLimits(v apiVersion) map[string]int {
	q := s.opts.DefaultQuota
	out := map[string]int{"instances": q.Instances, "cores": q.Cores, "ram": q.RAM, "metadata_items": 128,
		"key_pairs": 100, "server_groups": 10, "server_group_members": 10}
	if !v.AtLeast(36) {
		for k, n := range map[string]int{"fixed_ips": -1, "floating_ips": 10, "security_groups": 10, "security_group_rules": 20} {
			out[k] = n
		}
	}
	if !v.AtLeast(57) {
		for k, n := range map[string]int{"injected_files": 5, "injected_file_content_bytes": 10240, "injected_file_path_bytes": 255} {
			out[k] = n
		}
	}
	return out
}

// quotaProject is the {project} the caller may read: their own, or any
// for admins.
func quotaProject(w http.ResponseWriter, r *http.Request) (string, bool) {
	creds := auth.FromContext(r.Context())
	project := r.PathValue("project")
	if project != creds.ProjectID && !creds.IsAdmin() {
		writeError(w, http.StatusForbidden, fmt.Sprintf("Policy doesn't allow os_compute_api:os-quota-sets:show to be performed for project %s.", project))
		return "", false
	}
	return project, true
}

// showQuotaSet serves GET /os-quota-sets/{project} and .../defaults (the
// same values, as nothing can be changed; Tempest compares the two).
func (s *Service) showQuotaSet(w http.ResponseWriter, r *http.Request) {
	project, ok := quotaProject(w, r)
	if !ok {
		return
	}
	out := map[string]any{"id": project}
	for k, n := range s.quotaLimits(versionOf(r.Context())) {
		out[k] = n
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota_set": out})
}

// showQuotaDetail serves GET /os-quota-sets/{project}/detail: each value
// as {limit, in_use, reserved}, in_use counted from the live servers.
func (s *Service) showQuotaDetail(w http.ResponseWriter, r *http.Request) {
	project, ok := quotaProject(w, r)
	if !ok {
		return
	}
	var u struct{ N, C, R int }
	err := s.st.WithContext(r.Context()).Model(&store.Instance{}).Where("project_id = ? AND deleted_at IS NULL", project).
		Select("COUNT(*) AS n, COALESCE(SUM(vcpus),0) AS c, COALESCE(SUM(memory_mb),0) AS r").Scan(&u).Error
	if err != nil {
		s.log.Error("quota usage", "project", project, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	used := map[string]int{"instances": u.N, "cores": u.C, "ram": u.R}
	out := map[string]any{"id": project}
	for k, n := range s.quotaLimits(versionOf(r.Context())) {
		out[k] = map[string]int{"limit": n, "in_use": used[k], "reserved": 0}
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota_set": out})
}
