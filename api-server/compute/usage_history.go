package compute

import (
	"net/http"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// usagePeriods are the spans GET /servers/{id}/capsule-usage serves and
// the tier each reads: the last hour and day at the agents' interval (1
// min by default), the week in its 10-interval averages.
var usagePeriods = map[string]struct {
	span time.Duration
	tier int
}{
	"hour": {time.Hour, store.UsageFine},
	"day":  {24 * time.Hour, store.UsageFine},
	"week": {7 * 24 * time.Hour, store.UsageCoarse},
}

// serverUsageHistory serves GET /servers/{id}/capsule-usage?period=hour|day|week
// (a Capsule extension): the server's usage history the conductor keeps
// from the agents' points, for its own project (another project's server
// is 404 as everywhere) and admins. CPU is a percent of the server's
// vCPUs.
func (s *Service) serverUsageHistory(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	name := r.URL.Query().Get("period")
	if name == "" {
		name = "hour"
	}
	period, ok := usagePeriods[name]
	if !ok {
		writeFault(w, errdefs.InvalidArgumentf("Invalid period %q: hour, day or week.", name))
		return
	}
	now := time.Now()
	pts, err := store.UsageSince(s.st.WithContext(r.Context()), inst.ID, period.tier, now.Add(-period.span))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	vcpus := max(inst.VCPUs, 1)
	out := make([]map[string]any, 0, len(pts))
	var res int64
	for _, p := range pts {
		n := float64(max(p.N, 1))
		res = p.Res
		out = append(out, map[string]any{
			"at":               time.Unix(p.TS, 0).UTC().Format(time.RFC3339),
			"cpu_percent":      p.CPU / n / float64(vcpus) * 100,
			"memory_mb":        p.Memory / n / (1 << 20),
			"memory_limit_mb":  p.MemLimit / n / (1 << 20),
			"disk_read_bps":    p.DiskRead / n,
			"disk_write_bps":   p.DiskWrite / n,
			"net_rx_bps":       p.NetRx / n,
			"net_tx_bps":       p.NetTx / n,
			"samples_averaged": p.N,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"usage": map[string]any{
		"server_id": inst.ID, "period": name, "from": now.Add(-period.span).UTC().Format(time.RFC3339),
		"to": now.UTC().Format(time.RFC3339), "resolution_seconds": res, "vcpus": inst.VCPUs, "memory_mb": inst.MemoryMB,
		"points": out}})
}
