package conductor

import (
	"encoding/json"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// TestHostReportStoresPCPUs: the dedicated CPU count a heartbeat reports
// is the host's PCPU capacity, updated by later heartbeats; the shared
// VCPUs stay apart, and cpu_info's topology counts both.
func TestHostReportStoresPCPUs(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		c := newTestConductor(st, bus.NewMem(), 3)
		r := hostReport("h1")
		r.VCPUs, r.PCPUs = 6, 2
		mustSend(t, c, protocol.KindHostReport, r)
		s := computeServices(t, st)[0]
		if s.PCPUs != 2 || s.VCPUs != 6 {
			t.Fatalf("service vcpus/pcpus = %d/%d, want 6/2", s.VCPUs, s.PCPUs)
		}
		if capa := store.Capacity(&s); capa.PCPUs != 2 || capa.VCPUs != 24 {
			t.Errorf("capacity = %+v, want 2 PCPUs and 6×4 shared vCPUs", capa)
		}
		var cpu struct {
			Topology map[string]int `json:"topology"`
		}
		if err := json.Unmarshal([]byte(s.CPUInfo), &cpu); err != nil || cpu.Topology["cores"] != 8 {
			t.Errorf("cpu_info %s: cores = %d, want 8", s.CPUInfo, cpu.Topology["cores"])
		}

		r.VCPUs, r.PCPUs = 8, 0 // the operator emptied cpu_dedicated_set
		mustSend(t, c, protocol.KindHostReport, r)
		if s := computeServices(t, st)[0]; s.PCPUs != 0 || s.VCPUs != 8 {
			t.Errorf("after an update vcpus/pcpus = %d/%d, want 8/0", s.VCPUs, s.PCPUs)
		}
	})
}
