//go:build ratetest

package agent

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/protocol"
)

// Rate tests (build tag ratetest): latencies measured against a bound,
// which deploy/test.sh runs on their own, on a quiet machine.

// TestRateAlarmOOMKillLatency: the alarm loop (1 s interval) raises the
// oom_kill event of a process killed in a server within about one
// interval of the kill.
func TestRateAlarmOOMKillLatency(t *testing.T) {
	d := startAlarmDocker(t, time.Second, nil)
	id, killed := d.oomKill(t)
	_, at := d.rec.wait(t, id, protocol.EventOOMKill, 10*time.Second)
	lag := at.Sub(killed)
	t.Logf("MEASURED OOM kill → event in %v", lag.Round(time.Millisecond))
	if lag > 3*time.Second {
		t.Errorf("event %v after the kill, want within about one 1s interval", lag)
	}
}
