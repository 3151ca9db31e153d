package instance

import (
	"errors"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

func reload(t *testing.T, st *store.Store, id string) store.Instance {
	t.Helper()
	var inst store.Instance
	if err := st.DB.Where("id = ?", id).First(&inst).Error; err != nil {
		t.Fatal(err)
	}
	return inst
}

// TestBeginGuards: Begin records the action's task only from a state the
// rules allow and only while the instance is still as the caller read it;
// Undo puts the task back.
func TestBeginGuards(t *testing.T) {
	st := openSQLite(t)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	inst := newInstance(t, st, "i1", func(i *store.Instance) {
		i.VMState, i.TaskState, i.Host = lifecycle.Active, lifecycle.NoTask, "h1"
	})
	stale := *inst

	task, err := Begin(st.DB, inst, lifecycle.ActStop, at, map[string]any{"name": "renamed"})
	if err != nil || task != lifecycle.PoweringOff {
		t.Fatalf("Begin(stop) = %q, %v", task, err)
	}
	got := reload(t, st, "i1")
	if got.TaskState != lifecycle.PoweringOff || got.VMState != lifecycle.Active || got.Name != "renamed" || !got.UpdatedAt.Equal(at) {
		t.Errorf("after Begin: %s/%s name %q updated %v", got.VMState, got.TaskState, got.Name, got.UpdatedAt)
	}
	// The same request again, from the state read before: refused.
	if _, err := Begin(st.DB, &stale, lifecycle.ActStop, at, nil); !errors.Is(err, ErrStateChanged) {
		t.Errorf("Begin from a stale read = %v, want ErrStateChanged", err)
	}
	// From the current state, the rules refuse a reboot.
	var conflict *lifecycle.ConflictError
	if _, err := Begin(st.DB, &got, lifecycle.ActReboot, at, nil); !errors.As(err, &conflict) {
		t.Errorf("Begin(reboot) while powering off = %v, want a ConflictError", err)
	}
	if err := Undo(st.DB, "i1", lifecycle.PoweringOff, lifecycle.NoTask, nil); err != nil {
		t.Fatal(err)
	}
	if got := reload(t, st, "i1"); got.TaskState != lifecycle.NoTask {
		t.Errorf("after Undo: task %q", got.TaskState)
	}
}

// TestApplyGuardAndFault: a change applies only while every part of its
// guard holds; a fault is recorded and cleared with the state.
func TestApplyGuardAndFault(t *testing.T) {
	st := openSQLite(t)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	newInstance(t, st, "i1", func(i *store.Instance) {
		i.VMState, i.TaskState, i.Host = lifecycle.Active, lifecycle.Rebuilding, "h1"
	})
	fail := Change{VM: lifecycle.Error, Task: lifecycle.NoTask, At: at,
		Fault: &Fault{Code: 500, Message: "Rebuild failed", Details: "boom", At: at}}
	for _, g := range []Guard{
		In(lifecycle.Stopped, lifecycle.Rebuilding),
		In(lifecycle.Active, lifecycle.NoTask),
		In(lifecycle.Active, lifecycle.Rebuilding).OnHost("h2"),
	} {
		if ok, err := Apply(st.DB, "i1", g, fail); ok || err != nil {
			t.Errorf("Apply under %+v = %v, %v; want not applied", g, ok, err)
		}
	}
	if ok, err := Apply(st.DB, "i1", In(lifecycle.Active, lifecycle.Rebuilding).OnHost("h1"), fail); !ok || err != nil {
		t.Fatalf("Apply = %v, %v", ok, err)
	}
	got := reload(t, st, "i1")
	if got.VMState != lifecycle.Error || got.TaskState != lifecycle.NoTask || got.FaultCode != 500 ||
		got.FaultMessage != "Rebuild failed" || got.FaultDetails != "boom" || got.FaultAt == nil {
		t.Errorf("after the failure: %+v", got)
	}
	ok, err := Apply(st.DB, "i1", During(lifecycle.NoTask), Change{VM: lifecycle.Active, ClearFault: true})
	if !ok || err != nil {
		t.Fatalf("Apply = %v, %v", ok, err)
	}
	if got := reload(t, st, "i1"); got.VMState != lifecycle.Active || got.FaultCode != 0 || got.FaultMessage != "" || got.FaultAt != nil {
		t.Errorf("after clearing: %+v", got)
	}
	// A deleted instance changes no more.
	if err := MarkDeleted(t.Context(), st, "i1", at); err != nil {
		t.Fatal(err)
	}
	if ok, err := Apply(st.DB, "i1", Guard{}, Change{VM: lifecycle.Active}); ok || err != nil {
		t.Errorf("Apply on a deleted instance = %v, %v", ok, err)
	}
	if got := reload(t, st, "i1"); got.VMState != lifecycle.Deleted || got.DeletedAt == nil {
		t.Errorf("after MarkDeleted: %s deleted_at %v", got.VMState, got.DeletedAt)
	}
}
