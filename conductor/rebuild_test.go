package conductor

import (
	"fmt"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// TestRebuildReports: a rebuilt server ends running (ACTIVE) or stopped
// (SHUTOFF) as its new workload is, with a fresh launch time; a failed
// rebuild ends in ERROR with the agent's error as the fault; a report
// from another host or a duplicate changes nothing.
func TestRebuildReports(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	for _, tc := range []struct {
		from  lifecycle.VMState
		power lifecycle.PowerState
		want  lifecycle.VMState
	}{
		{lifecycle.Active, lifecycle.Running, lifecycle.Active},
		{lifecycle.Stopped, lifecycle.Shutdown, lifecycle.Stopped},
		{lifecycle.Error, lifecycle.Running, lifecycle.Active},
	} {
		t.Run(fmt.Sprintf("from %s", tc.from), func(t *testing.T) {
			inst := addInstance(t, st, onHost("h1"), state(tc.from, lifecycle.Rebuilding))
			// Another host's report is not this server's.
			stray := report(inst, "h2", lifecycle.ActRebuild, "req-r", true)
			mustSend(t, c, protocol.KindInstanceReport, stray)
			if got := loadInst(t, st, inst.ID); got.TaskState != lifecycle.Rebuilding {
				t.Fatalf("a report from h2 ended the rebuild: task %q", got.TaskState)
			}
			r := report(inst, "h1", lifecycle.ActRebuild, "req-r", true)
			r.PowerState = int(tc.power)
			mustSend(t, c, protocol.KindInstanceReport, r)
			got := loadInst(t, st, inst.ID)
			if got.VMState != tc.want || got.TaskState != "" || got.PowerState != int(tc.power) || got.LaunchedAt == nil {
				t.Errorf("after rebuild: %s/%q/%d launched %v, want %s/none/%d", got.VMState, got.TaskState, got.PowerState,
					got.LaunchedAt, tc.want, tc.power)
			}
		})
	}
	t.Run("failure", func(t *testing.T) {
		inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, lifecycle.Rebuilding))
		addAction(t, st, inst.ID, "rebuild", "req-f")
		r := report(inst, "h1", lifecycle.ActRebuild, "req-f", false)
		r.Error = "pull image: not found"
		mustSend(t, c, protocol.KindInstanceReport, r)
		got := loadInst(t, st, inst.ID)
		if got.VMState != lifecycle.Error || got.TaskState != "" || got.FaultCode != 500 ||
			got.FaultDetails != r.Error || got.FaultMessage == "" {
			t.Errorf("after a failed rebuild: %s/%q fault %d %q %q", got.VMState, got.TaskState, got.FaultCode, got.FaultMessage, got.FaultDetails)
		}
		// A duplicate success report after the failure changes nothing.
		ok := report(inst, "h1", lifecycle.ActRebuild, "req-f", true)
		ok.PowerState = int(lifecycle.Running)
		mustSend(t, c, protocol.KindInstanceReport, ok)
		if got := loadInst(t, st, inst.ID); got.VMState != lifecycle.Error {
			t.Errorf("a stale report moved the server to %s", got.VMState)
		}
		if evs := eventsOf(t, st, inst.ID, "req-f"); len(evs) != 1 || evs[0].Result != "Error" {
			t.Errorf("events = %+v", evs)
		}
	})
}
