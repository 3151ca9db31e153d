package conductor

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// An agent's OOM kill event is stored once however often it is delivered,
// gets the instance's project, and shows as an instance action of the
// server (action oom_kill, one capsule_oom_kill event in Error with the
// message as its traceback), by the server's user.
func TestHostEventOfServer(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		c := newTestConductor(st, bus.NewMem(), 3)
		addHost(t, st, "h1")
		inst := addInstance(t, st, onHost("h1"), state(lifecycle.Active, ""))
		at := testNow.Add(-3 * time.Second)
		ev := protocol.HostEvent{ID: "6b1f7d4e-0000-4000-8000-000000000001", Host: "h1", InstanceID: inst.ID,
			Kind: protocol.EventOOMKill, Severity: protocol.SeverityCritical,
			Message: "the OOM killer killed 1 process(es) in the server", Value: 1, At: at}
		for range 3 {
			mustSend(t, c, protocol.KindHostEvent, ev)
		}

		var rows []store.HostEvent
		if err := st.DB.Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 {
			t.Fatalf("%d host events after 3 deliveries, want 1", len(rows))
		}
		r := rows[0]
		if r.UUID != ev.ID || r.Host != "h1" || r.InstanceID != inst.ID || r.ProjectID != "p1" || r.Kind != "oom_kill" ||
			r.Severity != "critical" || r.Message != ev.Message || r.Value != 1 || !r.At.Equal(at) {
			t.Errorf("stored %+v", r)
		}

		var acts []store.InstanceAction
		if err := st.DB.Where("instance_id = ?", inst.ID).Find(&acts).Error; err != nil {
			t.Fatal(err)
		}
		if len(acts) != 1 {
			t.Fatalf("%d actions, want 1", len(acts))
		}
		a := acts[0]
		if a.Action != "oom_kill" || a.RequestID != "req-"+ev.ID || a.UserID != "u1" || a.ProjectID != "p1" ||
			!a.StartTime.Equal(at) || a.Message == nil || *a.Message != "Error" {
			t.Errorf("action %+v", a)
		}
		evs := eventsOf(t, st, inst.ID, "req-"+ev.ID)
		if len(evs) != 1 || evs[0].Event != "capsule_oom_kill" || evs[0].Result != "Error" || evs[0].Host != "h1" ||
			evs[0].Traceback != ev.Message || !evs[0].StartTime.Equal(at) {
			t.Errorf("action events %+v", evs)
		}
	})
}

// A host-level event has no instance action; an event about a server the
// database no longer has is still a host event; a malformed one is
// dropped without a retry.
func TestHostEventOfHost(t *testing.T) {
	st := openSQLite(t)
	c := newTestConductor(st, bus.NewMem(), 3)
	mustSend(t, c, protocol.KindHostEvent, protocol.HostEvent{ID: "e-host", Host: "h1", Kind: protocol.EventHostPids,
		Severity: protocol.SeverityCritical, Message: "host runs 27000 tasks", Value: 27000, Threshold: 26214, At: testNow})
	mustSend(t, c, protocol.KindHostEvent, protocol.HostEvent{ID: "e-gone", Host: "h1", InstanceID: "gone",
		Kind: protocol.EventPidsAlarm, Severity: protocol.SeverityWarning, Message: "leak", At: testNow})
	mustSend(t, c, protocol.KindHostEvent, protocol.HostEvent{Host: "h1", Kind: protocol.EventOOMKill})

	var rows []store.HostEvent
	if err := st.DB.Order("uuid").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].UUID != "e-gone" || rows[1].UUID != "e-host" || rows[1].InstanceID != "" || rows[1].Threshold != 26214 {
		t.Fatalf("host events %+v", rows)
	}
	var n int64
	if err := st.DB.Model(&store.InstanceAction{}).Count(&n).Error; err != nil || n != 0 {
		t.Errorf("%d instance actions (%v), want none", n, err)
	}
}
