package volume

import (
	"fmt"
	"net/http"
	"time"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/store"
)

// Cinder's os-services and scheduler-stats, read-only and for admins:
// Capsule's volume service is each compute host's agent (it holds the
// volumes' data), shown as Cinder's cinder-volume on <host>@<backend>;
// the placement the API makes itself (pickHost) has no service of its own.

// volumeBinary is the Cinder binary a compute host's agent stands for.
const volumeBinary = "cinder-volume"

func (s *Service) computeHosts(r *http.Request) ([]store.Service, error) {
	var svcs []store.Service
	if err := s.st.WithContext(r.Context()).Where("binary_name = ?", store.ComputeBinary).Order("host").Find(&svcs).Error; err != nil {
		return nil, fmt.Errorf("compute hosts: %w", err)
	}
	return svcs, nil
}

func (s *Service) hostUp(svc *store.Service, now time.Time) bool {
	return !svc.ForcedDown && svc.LastHeartbeat != nil && svc.LastHeartbeat.After(now.Add(-s.opts.ServiceDownTime))
}

// listServices is GET /os-services (filters host, binary).
func (s *Service) listServices(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		writeError(w, http.StatusForbidden, "Policy doesn't allow volume_extension:services:index to be performed.")
		return
	}
	svcs, err := s.computeHosts(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	now := time.Now().UTC()
	out := []any{}
	for i := range svcs {
		svc := &svcs[i]
		host := svc.Host + "@" + s.opts.Config.Backend
		if b := q.Get("binary"); b != "" && b != volumeBinary {
			continue
		}
		if h := q.Get("host"); h != "" && h != host && h != svc.Host {
			continue
		}
		status, state := "enabled", "down"
		if svc.Disabled {
			status = "disabled"
		}
		if s.hostUp(svc, now) {
			state = "up"
		}
		var updated, reason any
		if svc.LastHeartbeat != nil {
			updated = cinderTime(*svc.LastHeartbeat)
		}
		if svc.DisabledReason != nil {
			reason = *svc.DisabledReason
		}
		view := map[string]any{"binary": volumeBinary, "host": host, "zone": s.opts.Config.AvailabilityZone,
			"status": status, "state": state, "updated_at": updated, "disabled_reason": reason,
			"frozen": false, "replication_status": "disabled", "active_backend_id": nil}
		if atLeast(r, 7) {
			view["cluster"] = nil
		}
		if atLeast(r, 49) {
			view["backend_state"] = state
		}
		out = append(out, view)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"services": out})
}

// getPools is GET /scheduler-stats/get_pools: one pool per compute host,
// its capacity the host's disk as its agent reports it and what its
// volumes were given (their images are sparse files beside the servers'
// data, so what is free is not known: "unknown", as Cinder says then).
func (s *Service) getPools(w http.ResponseWriter, r *http.Request) {
	if !creds(r).IsAdmin() {
		writeError(w, http.StatusForbidden, "Policy doesn't allow scheduler_extension:scheduler_stats:get_pools to be performed.")
		return
	}
	svcs, err := s.computeHosts(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	detail := isTrue(r.URL.Query().Get("detail"))
	backend := s.opts.Config.Backend
	db := s.st.WithContext(r.Context())
	out := []any{}
	for i := range svcs {
		svc := &svcs[i]
		name := svc.Host + "@" + backend + "#" + backend
		if want := r.URL.Query().Get("name"); want != "" && want != name {
			continue
		}
		pool := map[string]any{"name": name}
		if detail {
			var used struct{ GB, N int64 }
			if err := db.Model(&store.Volume{}).Select("COALESCE(SUM(size_gb), 0) AS gb, COUNT(*) AS n").
				Where("host = ?", svc.Host).Scan(&used).Error; err != nil {
				s.fail(w, r, fmt.Errorf("volumes of host %s: %w", svc.Host, err))
				return
			}
			var updated any
			if svc.LastHeartbeat != nil {
				updated = cinderTime(*svc.LastHeartbeat)
			}
			pool["capabilities"] = map[string]any{
				"volume_backend_name": backend, "vendor_name": "Capsule", "driver_version": "1.0",
				"storage_protocol": backend, "total_capacity_gb": svc.DiskGB, "free_capacity_gb": "unknown",
				"allocated_capacity_gb": used.GB, "provisioned_capacity_gb": used.GB, "total_volumes": used.N,
				"reserved_percentage": 0, "thin_provisioning_support": true, "thick_provisioning_support": false,
				"multiattach": false, "QoS_support": false, "timestamp": updated,
			}
		}
		out = append(out, pool)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pools": out})
}
