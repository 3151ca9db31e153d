package conductor

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// A host's usage points become its servers' history; a point about a
// server of another host is dropped (a host reports its own servers).
func TestServerUsageRecorded(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	addHost(t, st, "h1")
	addHost(t, st, "h2")
	mine := addInstance(t, st, onHost("h1"), state(lifecycle.Active, ""))
	theirs := addInstance(t, st, onHost("h2"), state(lifecycle.Active, ""))
	at := testNow.Add(-time.Second)
	mustSend(t, c, protocol.KindServerUsage, protocol.ServerUsage{Host: "h1", Interval: time.Second, Points: []protocol.UsagePoint{
		{InstanceID: mine.ID, At: at, CPU: 0.5, MemoryBytes: 1 << 20},
		{InstanceID: theirs.ID, At: at, CPU: 1},
	}})
	for _, tc := range []struct {
		id   string
		want int
	}{{mine.ID, 1}, {theirs.ID, 0}} {
		pts, err := store.UsageSince(st.DB, tc.id, store.UsageFine, at.Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != tc.want {
			t.Errorf("server %s: %d points, want %d", tc.id, len(pts), tc.want)
		}
	}
}
