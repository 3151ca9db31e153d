package compute

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// os-simple-tenant-usage: per-project server hours over a period, computed
// from the instances' launched_at/terminated_at as Nova does
// (nova/api/openstack/compute/simple_tenant_usage.py).

// usagePeriodFormats are the start/end forms Nova accepts.
var usagePeriodFormats = []string{"2006-01-02T15:04:05", "2006-01-02T15:04:05.999999", "2006-01-02 15:04:05.999999"}

// isoFmt is Python's datetime.isoformat() for a naive UTC time with
// microseconds, which Nova uses for start/stop/started_at/ended_at.
const isoFmt = "2006-01-02T15:04:05.000000"

func parseUsageTime(v string) (time.Time, bool) {
	for _, f := range usagePeriodFormats {
		if t, err := time.Parse(f, v); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// usagePeriod reads ?start= and ?end= (both default to now); an
// unparseable or inverted period is a 400.
func (s *Service) usagePeriod(w http.ResponseWriter, r *http.Request) (start, stop time.Time, ok bool) {
	now := s.opts.Now().UTC()
	start, stop = now, now
	q := r.URL.Query()
	for _, p := range []struct {
		key string
		dst *time.Time
	}{{"start", &start}, {"end", &stop}} {
		if v := q.Get(p.key); v != "" {
			t, parsed := parseUsageTime(v)
			if !parsed {
				writeFault(w, errdefs.InvalidArgumentf("Invalid %s time. The time must be in the format %%Y-%%m-%%dT%%H:%%M:%%S[.%%f].", p.key))
				return start, stop, false
			}
			*p.dst = t
		}
	}
	if !start.Before(stop) {
		writeFault(w, errdefs.InvalidArgument("Invalid start time. The start time cannot occur after the end time."))
		return start, stop, false
	}
	return start, stop, true
}

// usageInstances are the instances (deleted ones included) alive at some
// point of the period, optionally of one project.
func (s *Service) usageInstances(r *http.Request, start, stop time.Time, project string) ([]store.Instance, error) {
	db := s.st.WithContext(r.Context()).
		Where("(terminated_at IS NULL OR terminated_at > ?) AND (launched_at IS NULL OR launched_at < ?)", start, stop)
	if project != "" {
		db = db.Where("project_id = ?", project)
	}
	var insts []store.Instance
	if err := db.Order("created_at").Find(&insts).Error; err != nil {
		return nil, fmt.Errorf("list instances for usage: %w", err)
	}
	return insts, nil
}

// usageHours is the part of the period the instance ran, in hours;
// instances never launched cost nothing.
func usageHours(inst *store.Instance, start, stop time.Time) float64 {
	if inst.LaunchedAt == nil {
		return 0
	}
	from := inst.LaunchedAt.UTC()
	if from.Before(start) {
		from = start
	}
	to := stop
	if inst.TerminatedAt != nil && inst.TerminatedAt.Before(stop) {
		to = inst.TerminatedAt.UTC()
	}
	if !to.After(from) {
		return 0
	}
	return to.Sub(from).Hours()
}

func (s *Service) serverUsage(inst *store.Instance, hours float64) map[string]any {
	state := inst.VMState
	var ended any
	end := s.opts.Now().UTC()
	if inst.TerminatedAt != nil {
		state, ended, end = "terminated", inst.TerminatedAt.UTC().Format(isoFmt), inst.TerminatedAt.UTC()
	}
	started := inst.CreatedAt.UTC()
	if inst.LaunchedAt != nil {
		started = inst.LaunchedAt.UTC()
	}
	return map[string]any{"instance_id": inst.ID, "name": inst.Name, "hours": hours, "memory_mb": inst.MemoryMB,
		"local_gb": inst.RootGB, "vcpus": inst.VCPUs, "tenant_id": inst.ProjectID, "flavor": inst.FlavorName,
		"started_at": started.Format(isoFmt), "ended_at": ended, "state": state, "uptime": int(end.Sub(started).Seconds())}
}

// tenantUsages sums the instances' usage per project, in first-seen order.
func (s *Service) tenantUsages(insts []store.Instance, start, stop time.Time, detailed bool) []map[string]any {
	byProject := map[string]map[string]any{}
	var order []string
	for i := range insts {
		inst := &insts[i]
		u, ok := byProject[inst.ProjectID]
		if !ok {
			u = map[string]any{"tenant_id": inst.ProjectID, "start": start.Format(isoFmt), "stop": stop.Format(isoFmt),
				"total_hours": 0.0, "total_local_gb_usage": 0.0, "total_memory_mb_usage": 0.0, "total_vcpus_usage": 0.0}
			if detailed {
				u["server_usages"] = []map[string]any{}
			}
			byProject[inst.ProjectID] = u
			order = append(order, inst.ProjectID)
		}
		h := usageHours(inst, start, stop)
		u["total_hours"] = u["total_hours"].(float64) + h
		u["total_local_gb_usage"] = u["total_local_gb_usage"].(float64) + float64(inst.RootGB)*h
		u["total_memory_mb_usage"] = u["total_memory_mb_usage"].(float64) + float64(inst.MemoryMB)*h
		u["total_vcpus_usage"] = u["total_vcpus_usage"].(float64) + float64(inst.VCPUs)*h
		if detailed {
			u["server_usages"] = append(u["server_usages"].([]map[string]any), s.serverUsage(inst, h))
		}
	}
	out := make([]map[string]any, 0, len(order))
	for _, p := range order {
		out = append(out, byProject[p])
	}
	return out
}

// listTenantUsage is GET /os-simple-tenant-usage (admin): every project.
func (s *Service) listTenantUsage(w http.ResponseWriter, r *http.Request) {
	start, stop, ok := s.usagePeriod(w, r)
	if !ok {
		return
	}
	detailed := false
	if d := r.URL.Query().Get("detailed"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil {
			writeFault(w, errdefs.InvalidArgument("Invalid input for query parameters detailed."))
			return
		}
		detailed = n != 0
	}
	insts, err := s.usageInstances(r, start, stop, "")
	if err != nil {
		s.log.Error("tenant usage", "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant_usages": s.tenantUsages(insts, start, stop, detailed)})
}

// showTenantUsage is GET /os-simple-tenant-usage/{project}: admins may
// ask for any project, others only for their own. A project without
// usage gets an empty object, as in Nova.
func (s *Service) showTenantUsage(w http.ResponseWriter, r *http.Request) {
	creds := auth.FromContext(r.Context())
	project := r.PathValue("project")
	if project == "" {
		writeFault(w, errdefs.NotFound("The resource could not be found."))
		return
	}
	if project != creds.ProjectID && !creds.IsAdmin() {
		writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed."))
		return
	}
	start, stop, ok := s.usagePeriod(w, r)
	if !ok {
		return
	}
	insts, err := s.usageInstances(r, start, stop, project)
	if err != nil {
		s.log.Error("tenant usage", "project", project, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	usage := map[string]any{}
	if all := s.tenantUsages(insts, start, stop, true); len(all) > 0 {
		usage = all[0]
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant_usage": usage})
}
