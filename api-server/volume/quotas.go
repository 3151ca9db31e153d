package volume

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

func (s *Service) typeView(c *auth.Credentials) map[string]any {
	t := map[string]any{"id": defaultTypeID, "name": defaultTypeName, "description": "Default Volume Type",
		"is_public": true, "os-volume-type-access:is_public": true, "qos_specs_id": nil}
	if c.IsAdmin() {
		t["extra_specs"] = map[string]string{}
	}
	return t
}

func (s *Service) listTypes(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"volume_types": []any{s.typeView(creds(r))}})
}

func (s *Service) defaultType(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"volume_type": s.typeView(creds(r))})
}

func (s *Service) getType(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != defaultTypeID && id != defaultTypeName {
		writeError(w, http.StatusNotFound, "Volume type "+id+" could not be found.")
		return
	}
	s.defaultType(w, r)
}

func (s *Service) availabilityZones(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"availabilityZoneInfo": []any{map[string]any{
		"zoneName": s.opts.Config.AvailabilityZone, "zoneState": map[string]bool{"available": true}}}})
}

// effectiveLimits are a project's limits: set rows over the defaults.
func (s *Service) effectiveLimits(r *http.Request, project string) (map[string]int, error) {
	set, err := store.VolumeQuotaLimitsIn(s.st.WithContext(r.Context()), project)
	if err != nil {
		return nil, err
	}
	out := s.quotaDefaults()
	for k, v := range set {
		out[k] = v
	}
	return out, nil
}

func (s *Service) limits(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	lim, err := s.effectiveLimits(r, c.ProjectID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	used, err := store.VolumeUsage(s.st.WithContext(r.Context()), c.ProjectID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": map[string]int{
		"maxTotalVolumes": lim[store.QuotaVolumes], "maxTotalSnapshots": lim[store.QuotaSnapshots],
		"maxTotalVolumeGigabytes": lim[store.QuotaGigabytes], "maxTotalBackups": 0, "maxTotalBackupGigabytes": 0,
		"totalVolumesUsed": used[store.QuotaVolumes], "totalSnapshotsUsed": used[store.QuotaSnapshots],
		"totalGigabytesUsed": used[store.QuotaGigabytes], "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0,
	}}})
}

// quotaTarget checks the caller may read project target's quotas: its
// own project, any for a cloud admin (Cinder's policy answers 403).
func quotaTarget(w http.ResponseWriter, r *http.Request) (string, bool) {
	c, target := creds(r), r.PathValue("target")
	if target != c.ProjectID && !c.IsAdmin() {
		writeError(w, http.StatusForbidden, "Policy doesn't allow volume_extension:quotas:show to be performed.")
		return "", false
	}
	return target, true
}

// quotaSet is Cinder's quota_set view: the three enforced resources and
// the ones Capsule does not have at 0 (backups, groups) or unlimited.
func quotaSet(project string, lim map[string]int, used map[string]int) map[string]any {
	out := map[string]any{"id": project}
	add := func(k string, limit, inUse int) {
		if used == nil {
			out[k] = limit
			return
		}
		out[k] = map[string]int{"limit": limit, "in_use": inUse, "reserved": 0, "allocated": 0}
	}
	for _, k := range []string{store.QuotaVolumes, store.QuotaGigabytes, store.QuotaSnapshots} {
		add(k, lim[k], used[k])
	}
	add("volumes_"+defaultTypeName, -1, used[store.QuotaVolumes])
	add("gigabytes_"+defaultTypeName, -1, used[store.QuotaGigabytes])
	add("snapshots_"+defaultTypeName, -1, used[store.QuotaSnapshots])
	add("backups", 0, 0)
	add("backup_gigabytes", 0, 0)
	add("groups", 0, 0)
	add(store.QuotaPerVolumeGigabytes, lim[store.QuotaPerVolumeGigabytes], 0)
	return out
}

func (s *Service) showQuota(w http.ResponseWriter, r *http.Request) {
	target, ok := quotaTarget(w, r)
	if !ok {
		return
	}
	lim, err := s.effectiveLimits(r, target)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var used map[string]int
	if isTrue(r.URL.Query().Get("usage")) {
		if used, err = store.VolumeUsage(s.st.WithContext(r.Context()), target); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota_set": quotaSet(target, lim, used)})
}

func (s *Service) showQuotaDefaults(w http.ResponseWriter, r *http.Request) {
	target, ok := quotaTarget(w, r)
	if !ok {
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota_set": quotaSet(target, s.quotaDefaults(), nil)})
}

// updateQuota is an admin's PUT os-quota-sets/{project}: the enforced
// resources only (integers >= -1).
func (s *Service) updateQuota(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !c.IsAdmin() {
		writeError(w, http.StatusForbidden, "Policy doesn't allow volume_extension:quotas:update to be performed.")
		return
	}
	var body struct {
		QuotaSet map[string]json.RawMessage `json:"quota_set"`
	}
	if !readBody(w, r, &body) {
		return
	}
	if body.QuotaSet == nil {
		badRequest(w, "Missing required element 'quota_set' in request body.")
		return
	}
	set := map[string]int{}
	for k, raw := range body.QuotaSet {
		fixed, isFixed := fixedQuotas[k]
		switch {
		case k == store.QuotaVolumes || k == store.QuotaGigabytes || k == store.QuotaSnapshots || k == store.QuotaPerVolumeGigabytes:
		case k == "tenant_id" || k == "id":
			continue
		case !isFixed:
			badRequest(w, "Invalid input received: Bad key(s) in quota set: "+k)
			return
		}
		var v any
		_ = json.Unmarshal(raw, &v)
		n, err := quotaValue(v)
		if err != nil {
			badRequest(w, "Invalid input received: Quota "+k+": "+err.Error())
			return
		}
		if isFixed {
			// What Capsule shows for a resource it does not have (or does
			// not limit) may be sent back as it is (clients restore a
			// whole quota set), never changed.
			if n != fixed.value {
				badRequest(w, fmt.Sprintf("Invalid input received: Quota %s cannot be set to %d: %s, so it stays %d.", k, n, fixed.why, fixed.value))
				return
			}
			continue
		}
		set[k] = n
	}
	target := r.PathValue("target")
	if err := s.st.SetVolumeQuotaLimits(r.Context(), target, set); err != nil {
		s.fail(w, r, err)
		return
	}
	lim, err := s.effectiveLimits(r, target)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	qs := quotaSet(target, lim, nil)
	delete(qs, "id")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"quota_set": qs})
}

// fixedQuotas are the quota_set keys Capsule shows but does not enforce:
// their one value and why.
var fixedQuotas = map[string]struct {
	value int
	why   string
}{
	"backups":                      {0, "Capsule has no volume backups"},
	"backup_gigabytes":             {0, "Capsule has no volume backups"},
	"groups":                       {0, "Capsule has no volume groups"},
	"volumes_" + defaultTypeName:   {-1, "Capsule has one volume type, limited by the project's volumes"},
	"gigabytes_" + defaultTypeName: {-1, "Capsule has one volume type, limited by the project's gigabytes"},
	"snapshots_" + defaultTypeName: {-1, "Capsule has one volume type, limited by the project's snapshots"},
}

func quotaValue(v any) (int, error) {
	var n int
	switch t := v.(type) {
	case float64:
		if t != float64(int(t)) {
			return 0, errdefs.InvalidArgument("must be an integer")
		}
		n = int(t)
	case string:
		i, err := strconv.Atoi(t)
		if err != nil {
			return 0, errdefs.InvalidArgument("must be an integer")
		}
		n = i
	default:
		return 0, errdefs.InvalidArgument("must be an integer")
	}
	if n < -1 {
		return 0, errdefs.InvalidArgument("must be -1 or greater")
	}
	return n, nil
}

func (s *Service) deleteQuota(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !c.IsAdmin() {
		writeError(w, http.StatusForbidden, "Policy doesn't allow volume_extension:quotas:delete to be performed.")
		return
	}
	err := s.st.WithContext(r.Context()).Where("project_id = ?", r.PathValue("target")).Delete(&store.VolumeQuotaLimit{}).Error
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
