package compute

import (
	"fmt"
	"net/http"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// Server diagnostics (admin). Rendered from what the store knows about the
// server; per-device counters are not collected, so they are null, which
// the 2.48 format allows.

// diagnosticStates maps power_state to the 2.48 "state" enum.
var diagnosticStates = map[int]string{0: "pending", 1: "running", 3: "paused", 4: "shutdown", 6: "crashed", 7: "suspended"}

func (s *Service) serverDiagnostics(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	if inst.Host == "" || lifecycle.VMState(inst.VMState) == lifecycle.Building {
		writeError(w, http.StatusConflict, fmt.Sprintf("Cannot 'get_diagnostics' instance %s while it is in vm_state %s", inst.ID, inst.VMState))
		return
	}
	if !versionOf(r.Context()).AtLeast(48) {
		// Below 2.48 the body was driver specific; libvirt's keys.
		writeJSON(w, http.StatusOK, map[string]any{"cpu0_time": 0, "memory": inst.MemoryMB * 1024, "vda_read": 0, "vda_write": 0})
		return
	}
	writeJSON(w, http.StatusOK, s.standardDiagnostics(inst))
}

// standardDiagnostics is the 2.48 body. "driver" is an enum of Nova's
// drivers in Tempest's schema with no value for containers; "libvirt" is
// the one whose fields Capsule fills the same way.
func (s *Service) standardDiagnostics(inst *store.Instance) map[string]any {
	state, ok := diagnosticStates[inst.PowerState]
	if !ok {
		state = "pending"
	}
	var uptime any
	if inst.LaunchedAt != nil && state == "running" {
		uptime = int(s.opts.Now().Sub(*inst.LaunchedAt).Seconds())
	}
	cpus := make([]map[string]any, 0, inst.VCPUs)
	for i := 0; i < inst.VCPUs; i++ {
		cpus = append(cpus, map[string]any{"id": i, "time": nil, "utilisation": nil})
	}
	disk := map[string]any{"read_bytes": nil, "read_requests": nil, "write_bytes": nil, "write_requests": nil, "errors_count": nil}
	return map[string]any{
		"state": state, "driver": "libvirt", "hypervisor": "docker", "hypervisor_os": "linux", "uptime": uptime,
		"config_drive": false, "num_cpus": inst.VCPUs, "num_nics": 0, "num_disks": 1,
		"memory_details": map[string]any{"maximum": inst.MemoryMB, "used": nil},
		"cpu_details":    cpus, "nic_details": []any{}, "disk_details": []any{disk},
	}
}
