//go:build ratetest

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// Rate tests (build tag ratetest): TCP rates measured against a
// tolerance, which deploy/test.sh runs on their own, on a quiet machine.

// TestRateFlavorShapesServerNICs: a flavor with quota:vif_inbound_average and
// quota:vif_outbound_average of 1250 KB/s (10 Mbit/s) shapes TCP into and
// out of a server booted from it to that rate (±15%), measured between two
// real servers on one VLAN.
func TestRateFlavorShapesServerNICs(t *testing.T) {
	c := startCloud(t, withBridge)
	shaped, plain := c.shapedPair(t, "shape", 1250, "10.79.0.0/24")

	const size = 5_000_000 // bytes served; 4 s at 1250 KB/s
	serve := func(s *netServer) {
		t.Helper()
		if out, err := s.exec("sh", "-c", fmt.Sprintf("mkdir -p /tmp/w && dd if=/dev/zero of=/tmp/w/f bs=1000 count=%d 2>/dev/null && httpd -p 8080 -h /tmp/w", size/1000)); err != nil {
			t.Fatalf("serve on %s: %v %s", s.name, err, out)
		}
	}
	// fetch downloads the file from "from" into "to" and returns the rate
	// in KB/s (1 KB = 1000 B, Nova's and libvirt's unit for vif rates).
	fetch := func(to, from *netServer) float64 {
		t.Helper()
		start := time.Now()
		out, err := to.exec("sh", "-c", fmt.Sprintf("timeout 30 wget -qO /tmp/got http://%s:8080/f && wc -c < /tmp/got", from.ip))
		took := time.Since(start)
		if err != nil || out != fmt.Sprint(size) {
			t.Fatalf("%s fetching from %s: %v %q", to.name, from.name, err, out)
		}
		return float64(size) / 1000 / took.Seconds()
	}
	serve(shaped)
	serve(plain)
	in := fetch(shaped, plain)  // into the shaped server
	out := fetch(plain, shaped) // out of it
	t.Logf("shaped server: into %.0f KB/s, out of %.0f KB/s (limit 1250 each way)", in, out)
	for _, m := range []struct {
		dir  string
		rate float64
	}{{"into", in}, {"out of", out}} {
		if m.rate < 1250*0.85 || m.rate > 1250*1.15 {
			t.Errorf("TCP %s the shaped server at %.0f KB/s, want 1250 ± 15%%", m.dir, m.rate)
		}
	}
}
