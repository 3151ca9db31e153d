package limits

import (
	"errors"
	"testing"
)

// FuzzParse: the flavor extra-spec validator never panics, rejects with
// an Errors list naming each bad key, and what it accepts yields limits
// the drivers can apply (no negative CFS quota or throttle).
func FuzzParse(f *testing.F) {
	for _, kv := range [][2]string{{"quota:cpu_quota", "50000"}, {"quota:cpu_period", "0"}, {"quota:cpu_shares", "-1"},
		{"quota:disk_write_bytes_sec", "9223372036854775808"}, {"quota:vif_inbound_average", "1e3"}, {"quota:vif_outbound_burst", " 7 "},
		{"hw:cpu_policy", "dedicated"}, {"hw:cpu_policy", "mixed"}, {"quota:cpu_quota", "-1"}, {"unknown", "x"}} {
		f.Add(kv[0], kv[1], "quota:cpu_period", "100000", 1)
	}
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, vcpus int) {
		l, err := Parse(map[string]string{k1: v1, k2: v2}, vcpus)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("Parse error %v (%T) is not a list of key errors", err, err)
			}
			return
		}
		if vcpus > 0 {
			if period, quota := l.CPU.CFS(vcpus); period < 0 || quota < -1 {
				t.Fatalf("accepted specs %q=%q %q=%q give CFS period %d quota %d", k1, v1, k2, v2, period, quota)
			}
		}
		if r, w, ri, wi := l.Disk.Throttles(); r < 0 || w < 0 || ri < 0 || wi < 0 {
			t.Fatalf("accepted specs %q=%q %q=%q give negative disk throttles", k1, v1, k2, v2)
		}
	})
}
