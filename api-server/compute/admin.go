package compute

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

func (s *Service) computeServices(r *http.Request) ([]store.Service, error) {
	var svcs []store.Service
	err := s.st.WithContext(r.Context()).Where("binary_name = ?", store.ComputeBinary).Order("id").Find(&svcs).Error
	return svcs, err
}

func (s *Service) serviceView(r *http.Request, svc *store.Service) map[string]any {
	v := versionOf(r.Context())
	state, status := "down", "enabled"
	if s.serviceUp(svc) {
		state = "up"
	}
	if svc.Disabled {
		status = "disabled"
	}
	out := map[string]any{"binary": svc.Binary, "host": svc.Host, "zone": serviceZone(svc), "status": status, "state": state,
		"updated_at": serviceUpdated(svc), "disabled_reason": svc.DisabledReason}
	if v.AtLeast(53) {
		out["id"] = svc.UUID
	} else {
		out["id"] = svc.ID
	}
	if v.AtLeast(11) {
		out["forced_down"] = svc.ForcedDown
	}
	return out
}

// serviceZone is the zone Nova shows for a service: its availability zone
// (default "nova") for computes, "internal" for the control services.
func serviceZone(svc *store.Service) string {
	if svc.Binary != store.ComputeBinary {
		return "internal"
	}
	if svc.Zone == "" {
		return "nova"
	}
	return svc.Zone
}

// serviceUpdated is the service's last report; a service that never
// reported shows when its record last changed (Tempest's 2.53 update
// schema does not allow null).
func serviceUpdated(svc *store.Service) any {
	t := svc.UpdatedAt
	if svc.LastHeartbeat != nil {
		t = *svc.LastHeartbeat
	}
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(serviceFmt)
}

func (s *Service) listServices(w http.ResponseWriter, r *http.Request) {
	var svcs []store.Service
	db := s.st.WithContext(r.Context()).Order("id")
	if b := r.URL.Query().Get("binary"); b != "" {
		db = db.Where("binary_name = ?", b)
	}
	if h := r.URL.Query().Get("host"); h != "" {
		db = db.Where("host = ?", h)
	}
	if err := db.Find(&svcs).Error; err != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	items := make([]any, 0, len(svcs))
	for i := range svcs {
		items = append(items, s.serviceView(r, &svcs[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"services": items})
}

// updateService handles PUT /os-services/{enable|disable|disable-log-reason|force-down}
// below 2.53 and PUT /os-services/{uuid} from 2.53.
func (s *Service) updateService(w http.ResponseWriter, r *http.Request) {
	v := versionOf(r.Context())
	action := r.PathValue("action")
	var body map[string]any
	if !decodeBody(w, r, &body) {
		return
	}
	db := s.st.WithContext(r.Context())
	var svc store.Service
	if v.AtLeast(53) {
		if err := db.Where("uuid = ?", action).First(&svc).Error; err != nil {
			writeFault(w, errdefs.NotFoundf("Service %s not found.", action))
			return
		}
		upd := map[string]any{}
		if st, ok := body["status"].(string); ok {
			if st != "enabled" && st != "disabled" {
				writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute status."))
				return
			}
			upd["disabled"] = st == "disabled"
			if st == "enabled" {
				upd["disabled_reason"] = nil
			}
		}
		if reason, ok := body["disabled_reason"].(string); ok {
			upd["disabled_reason"] = reason
		}
		if fd, ok := body["forced_down"].(bool); ok {
			upd["forced_down"] = fd
		}
		if len(upd) == 0 {
			writeFault(w, errdefs.InvalidArgument("No updates were requested."))
			return
		}
		db.Model(&store.Service{}).Where("id = ?", svc.ID).Updates(upd)
		db.First(&svc, svc.ID)
		writeJSON(w, http.StatusOK, map[string]any{"service": s.serviceView(r, &svc)})
		return
	}
	host, _ := body["host"].(string)
	binary, _ := body["binary"].(string)
	if host == "" || binary == "" {
		writeFault(w, errdefs.InvalidArgument("Invalid input: 'host' and 'binary' are required."))
		return
	}
	if err := db.Where("host = ? AND binary_name = ?", host, binary).First(&svc).Error; err != nil {
		writeFault(w, errdefs.NotFoundf("Host '%s' is not mapped to any cell", host))
		return
	}
	out := map[string]any{"host": host, "binary": binary}
	switch action {
	case "enable":
		db.Model(&store.Service{}).Where("id = ?", svc.ID).Updates(map[string]any{"disabled": false, "disabled_reason": nil})
		out["status"] = "enabled"
	case "disable":
		db.Model(&store.Service{}).Where("id = ?", svc.ID).Update("disabled", true)
		out["status"] = "disabled"
	case "disable-log-reason":
		reason, _ := body["disabled_reason"].(string)
		db.Model(&store.Service{}).Where("id = ?", svc.ID).Updates(map[string]any{"disabled": true, "disabled_reason": reason})
		out["status"], out["disabled_reason"] = "disabled", reason
	case "force-down":
		if !v.AtLeast(11) {
			writeFault(w, errdefs.NotFound("The resource could not be found."))
			return
		}
		fd, ok := body["forced_down"].(bool)
		if !ok {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute forced_down."))
			return
		}
		db.Model(&store.Service{}).Where("id = ?", svc.ID).Update("forced_down", fd)
		out["forced_down"] = fd
	default:
		writeFault(w, errdefs.NotFound("Unknown action"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"service": out})
}

// Hypervisors: one per compute host.

func (s *Service) hypervisorView(r *http.Request, svc *store.Service, usage store.Resources, detail bool) map[string]any {
	v := versionOf(r.Context())
	state, status := "down", "enabled"
	if s.serviceUp(svc) {
		state = "up"
	}
	if svc.Disabled {
		status = "disabled"
	}
	out := map[string]any{"hypervisor_hostname": svc.Host, "state": state, "status": status}
	if v.AtLeast(53) {
		out["id"] = svc.UUID
	} else {
		out["id"] = svc.ID
	}
	if !detail {
		return out
	}
	svcID := any(svc.ID)
	if v.AtLeast(53) {
		svcID = svc.UUID
	}
	hvType := svc.HypervisorType
	if hvType == "" {
		hvType = "docker"
	}
	out["hypervisor_type"] = hvType
	out["hypervisor_version"] = svc.HypervisorVersion
	out["host_ip"] = hostIP(svc)
	out["service"] = map[string]any{"id": svcID, "host": svc.Host, "disabled_reason": svc.DisabledReason}
	if v.AtLeast(88) {
		// 2.88 drops the resource figures (placement's to tell) and
		// shows the uptime here, which Capsule's hosts do not report
		// (Nova's null for a driver without one).
		out["uptime"] = nil
		return out
	}
	out["cpu_info"] = cpuInfo(svc, v)
	out["vcpus"] = svc.VCPUs
	out["vcpus_used"] = usage.VCPUs
	out["memory_mb"] = svc.MemoryMB
	out["memory_mb_used"] = usage.MemoryMB + svc.ReservedMemoryMB
	out["local_gb"] = svc.DiskGB
	out["local_gb_used"] = usage.DiskGB
	out["free_ram_mb"] = svc.MemoryMB - svc.ReservedMemoryMB - usage.MemoryMB
	out["free_disk_gb"] = svc.DiskGB - usage.DiskGB
	out["disk_available_least"] = svc.DiskGB - usage.DiskGB
	out["current_workload"] = 0
	out["running_vms"] = svc.RunningVMs
	return out
}

// cpuInfo is the host's CPU description: a JSON-encoded string below 2.28
// (OSC and gophercloud parse it, so it must be JSON), an object from 2.28.
func cpuInfo(svc *store.Service, v apiVersion) any {
	m := map[string]any{}
	if err := json.Unmarshal([]byte(svc.CPUInfo), &m); err != nil || m == nil {
		m = map[string]any{}
	}
	if v.AtLeast(28) {
		return m
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// hostIP is the host's address, null when the agent did not report a valid
// one (the schema takes an IP or null, nothing else).
func hostIP(svc *store.Service) any {
	a, err := netip.ParseAddr(svc.HostIP)
	if err != nil {
		return nil
	}
	return a.String()
}

// withServers reads 2.53's ?with_servers= (a boolean; bad values are 400).
func withServers(w http.ResponseWriter, r *http.Request) (bool, bool) {
	raw, present := r.URL.Query()["with_servers"]
	if !present || !versionOf(r.Context()).AtLeast(53) {
		return false, true
	}
	b, none, ok := parseBoolish(raw[0])
	if !ok || none {
		writeFault(w, errdefs.InvalidArgument("Invalid input for query parameters with_servers. Value: "+raw[0]+". Not a valid boolean."))
		return false, false
	}
	return b, true
}

// addServers lists the host's live servers under "servers"; below 2.75
// Nova leaves the key out when there are none, from 2.75 it is [].
func (s *Service) addServers(r *http.Request, out map[string]any, host string) error {
	var insts []store.Instance
	err := s.st.WithContext(r.Context()).Select("id", "name").Where("host = ? AND deleted_at IS NULL", host).Order("created_at").Find(&insts).Error
	if err != nil {
		return fmt.Errorf("list servers on %s: %w", host, err)
	}
	if len(insts) == 0 && !versionOf(r.Context()).AtLeast(75) {
		return nil
	}
	servers := make([]map[string]string, 0, len(insts))
	for _, in := range insts {
		servers = append(servers, map[string]string{"uuid": in.ID, "name": in.Name})
	}
	out["servers"] = servers
	return nil
}

func (s *Service) listHypervisors(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		with, ok := withServers(w, r)
		if !ok {
			return
		}
		v := versionOf(r.Context())
		q := r.URL.Query()
		pattern := ""
		if v.AtLeast(53) {
			pattern = q.Get("hypervisor_hostname_pattern")
		}
		paged := v.AtLeast(33) // limit and marker (hypervisors_links)
		if paged && pattern != "" && (q.Has("limit") || q.Get("marker") != "") {
			writeFault(w, errdefs.InvalidArgument(
				"Paging over hypervisors with the hypervisor_hostname_pattern query parameter is not supported."))
			return
		}
		s.writeHypervisorsPaged(w, r, pattern, detail, with, paged && pattern == "")
	}
}

// writeHypervisors lists the hypervisors whose hostname contains pattern
// (all for ""); a pattern matching none is a 404, as in Nova.
func (s *Service) writeHypervisors(w http.ResponseWriter, r *http.Request, pattern string, detail, with bool) {
	s.writeHypervisorsPaged(w, r, pattern, detail, with, false)
}

// writeHypervisorsPaged is writeHypervisors; paged applies limit and
// marker (a hypervisor id as this microversion shows it, in id order) and
// adds hypervisors_links when more follow.
func (s *Service) writeHypervisorsPaged(w http.ResponseWriter, r *http.Request, pattern string, detail, with, paged bool) {
	svcs, err := s.computeServices(r)
	if err != nil {
		s.log.Error("list hypervisors", "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	var next []map[string]string
	if paged {
		uuids := versionOf(r.Context()).AtLeast(53)
		id := func(svc *store.Service) string {
			if uuids {
				return svc.UUID
			}
			return strconv.FormatUint(uint64(svc.ID), 10)
		}
		if m := r.URL.Query().Get("marker"); m != "" {
			found := false
			for i := range svcs {
				found = found || id(&svcs[i]) == m
			}
			if !found {
				writeFault(w, errdefs.InvalidArgumentf("Marker %s could not be found.", m))
				return
			}
		}
		page, limit, more, ok := pageOf(w, r, svcs, id)
		if !ok {
			return
		}
		svcs = page
		if more && limit > 0 {
			next = s.nextLinks(r, "os-hypervisors", detail, limit, id(&svcs[len(svcs)-1]))
		}
	}
	usage, err := s.st.Usage(r.Context())
	if err != nil {
		s.log.Error("list hypervisors", "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	items := []any{}
	for i := range svcs {
		if pattern != "" && !strings.Contains(svcs[i].Host, pattern) {
			continue
		}
		h := s.hypervisorView(r, &svcs[i], usage[svcs[i].Host], detail)
		if with {
			if err := s.addServers(r, h, svcs[i].Host); err != nil {
				s.log.Error("list hypervisors", "error", err)
				writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
				return
			}
		}
		items = append(items, h)
	}
	if pattern != "" && len(items) == 0 {
		writeFault(w, errdefs.NotFoundf("No hypervisor matching '%s' could be found.", pattern))
		return
	}
	out := map[string]any{"hypervisors": items}
	if next != nil {
		out["hypervisors_links"] = next
	}
	writeJSON(w, http.StatusOK, out)
}

// searchHypervisors serves the pre-2.53 /os-hypervisors/{pattern}/search
// and /servers calls (removed at 2.53 in favour of query parameters).
func (s *Service) searchHypervisors(with bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if versionOf(r.Context()).AtLeast(53) {
			writeFault(w, errdefs.NotFound("The resource could not be found."))
			return
		}
		s.writeHypervisors(w, r, r.PathValue("id"), false, with)
	}
}

func (s *Service) findHypervisor(w http.ResponseWriter, r *http.Request) (*store.Service, bool) {
	id := r.PathValue("id")
	var svc store.Service
	db := s.st.WithContext(r.Context()).Where("binary_name = ?", store.ComputeBinary)
	if n, err := strconv.Atoi(id); err == nil && !versionOf(r.Context()).AtLeast(53) {
		db = db.Where("id = ?", n)
	} else {
		db = db.Where("uuid = ?", id)
	}
	if err := db.First(&svc).Error; err != nil {
		writeFault(w, errdefs.NotFoundf("Hypervisor with ID %s could not be found.", id))
		return nil, false
	}
	return &svc, true
}

func (s *Service) showHypervisor(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.findHypervisor(w, r)
	if !ok {
		return
	}
	with, ok := withServers(w, r)
	if !ok {
		return
	}
	usage, err := s.st.Usage(r.Context())
	if err != nil {
		s.log.Error("show hypervisor", "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	h := s.hypervisorView(r, svc, usage[svc.Host], true)
	if with {
		if err := s.addServers(r, h, svc.Host); err != nil {
			s.log.Error("show hypervisor", "error", err)
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hypervisor": h})
}

// gone88 answers the hypervisor APIs 2.88 removed (statistics, uptime)
// with Nova's 404 from 2.88.
func gone88(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if versionOf(r.Context()).AtLeast(88) {
			writeFault(w, errdefs.NotFound("The resource could not be found."))
			return
		}
		h(w, r)
	}
}

func (s *Service) hypervisorUptime(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.findHypervisor(w, r)
	if !ok {
		return
	}
	out := s.hypervisorView(r, svc, store.Resources{}, false)
	out["uptime"] = " 00:00:00 up 0 min,  0 users,  load average: 0.00, 0.00, 0.00"
	writeJSON(w, http.StatusOK, map[string]any{"hypervisor": out})
}

func (s *Service) hypervisorStatistics(w http.ResponseWriter, r *http.Request) {
	svcs, err := s.computeServices(r)
	usage, err2 := s.st.Usage(r.Context())
	if err != nil || err2 != nil {
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	st := map[string]int{"count": 0, "current_workload": 0, "disk_available_least": 0, "free_disk_gb": 0, "free_ram_mb": 0,
		"local_gb": 0, "local_gb_used": 0, "memory_mb": 0, "memory_mb_used": 0, "running_vms": 0, "vcpus": 0, "vcpus_used": 0}
	for i := range svcs {
		h := s.hypervisorView(r, &svcs[i], usage[svcs[i].Host], true)
		st["count"]++
		for _, k := range []string{"disk_available_least", "free_disk_gb", "free_ram_mb", "local_gb", "local_gb_used",
			"memory_mb", "memory_mb_used", "running_vms", "vcpus", "vcpus_used"} {
			st[k] += h[k].(int)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hypervisor_statistics": st})
}

func (s *Service) limits(w http.ResponseWriter, r *http.Request) {
	v := versionOf(r.Context())
	creds := auth.FromContext(r.Context())
	project := creds.ProjectID
	if t := r.URL.Query().Get("tenant_id"); t != "" && creds.IsAdmin() {
		project = t
	}
	// The caller's own limits count only in their own project.
	user := ""
	if project == creds.ProjectID {
		user = creds.UserID
	}
	q, u, err := s.limitsFor(r.Context(), project, user)
	if err != nil {
		s.quotaFailed(w, project, err)
		return
	}
	abs := map[string]int{"maxServerMeta": q["metadata_items"], "maxTotalInstances": q["instances"],
		"maxTotalCores": q["cores"], "maxTotalRAMSize": q["ram"], "maxTotalKeypairs": q["key_pairs"],
		"maxServerGroups": q["server_groups"], "maxServerGroupMembers": q["server_group_members"],
		"totalInstancesUsed": u.Instances, "totalCoresUsed": u.Cores, "totalRAMUsed": u.RAM, "totalServerGroupsUsed": 0}
	if !v.AtLeast(36) {
		for k, n := range map[string]int{"maxSecurityGroups": q["security_groups"], "maxSecurityGroupRules": q["security_group_rules"],
			"maxTotalFloatingIps": q["floating_ips"], "totalSecurityGroupsUsed": 0, "totalFloatingIpsUsed": 0} {
			abs[k] = n
		}
	}
	if !v.AtLeast(39) {
		abs["maxImageMeta"] = q["metadata_items"]
	}
	if !v.AtLeast(57) {
		abs["maxPersonality"] = q["injected_files"]
		abs["maxPersonalitySize"] = q["injected_file_content_bytes"]
	}
	writeJSON(w, http.StatusOK, map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": abs}})
}

func (s *Service) availabilityZones(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		svcs, err := s.computeServices(r)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
			return
		}
		zones := map[string]map[string]any{}
		var order []string
		for i := range svcs {
			z := serviceZone(&svcs[i])
			if _, ok := zones[z]; !ok {
				zones[z] = map[string]any{}
				order = append(order, z)
			}
			var updated any
			if svcs[i].LastHeartbeat != nil {
				updated = svcs[i].LastHeartbeat.UTC().Format(serviceFmt)
			}
			zones[z][svcs[i].Host] = map[string]any{"nova-compute": map[string]any{
				"available": s.serviceUp(&svcs[i]) && !svcs[i].Disabled, "active": !svcs[i].Disabled, "updated_at": updated}}
		}
		if len(order) == 0 {
			order = []string{"nova"}
			zones["nova"] = map[string]any{}
		}
		items := []any{}
		for _, z := range order {
			item := map[string]any{"zoneName": z, "zoneState": map[string]bool{"available": true}, "hosts": nil}
			if detail {
				item["hosts"] = zones[z]
			}
			items = append(items, item)
		}
		writeJSON(w, http.StatusOK, map[string]any{"availabilityZoneInfo": items})
	}
}
