package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestRecordEventIsIdempotent(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, "sqlite", filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.StartAction(ctx, "i1", "create", "req-1", "u", "p"); err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC()
	ev := Event{InstanceID: "i1", RequestID: "req-1", Name: "compute__do_build_and_run_instance", Host: "h1", Start: start, OK: true}
	for i := 0; i < 3; i++ { // a report redelivered twice
		if err := st.RecordEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	var n int64
	st.DB.Model(&InstanceActionEvent{}).Count(&n)
	if n != 1 {
		t.Fatalf("%d events recorded, want 1", n)
	}
	ev.OK, ev.Start = false, start.Add(time.Second) // a new attempt is a new event
	if err := st.RecordEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	var a InstanceAction
	st.DB.Preload("Events").First(&a)
	if len(a.Events) != 2 || a.Message == nil || *a.Message != "Error" {
		t.Fatalf("action %+v", a)
	}
	// Unknown request ids are dropped, not errors.
	if err := st.RecordEvent(ctx, Event{InstanceID: "i1", RequestID: "nope", Name: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestHeartbeatRegistersThenUpdates(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, "sqlite", filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 2; i++ {
		if err := st.Heartbeat(ctx, "ctl1", SchedulerBinary, t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var svcs []Service
	st.DB.Find(&svcs)
	if len(svcs) != 1 || svcs[0].Zone != "internal" || !svcs[0].LastHeartbeat.Equal(t0.Add(time.Minute)) {
		t.Fatalf("services %+v", svcs)
	}
}
