package lifecycle

import (
	"errors"
	"testing"
)

func TestBeginResize(t *testing.T) {
	cases := []struct {
		act     Action
		vm      VMState
		task    TaskState
		want    TaskState
		wantErr bool
	}{
		{ActResize, Active, NoTask, ResizePrep, false},
		{ActResize, Stopped, NoTask, ResizePrep, false},
		{ActResize, Paused, NoTask, "", true},
		{ActResize, Resized, NoTask, "", true},
		{ActResize, Error, NoTask, "", true},
		{ActResize, Active, Rebooting, "", true},
		{ActConfirmResize, Resized, NoTask, ResizeConfirming, false},
		{ActConfirmResize, Active, NoTask, "", true},
		{ActConfirmResize, Resized, ResizeReverting, "", true},
		{ActRevertResize, Resized, NoTask, ResizeReverting, false},
		{ActRevertResize, Stopped, NoTask, "", true},
		{ActRevertResize, Resized, ResizeConfirming, "", true},
	}
	for _, c := range cases {
		got, err := Begin(c.act, c.vm, c.task)
		var ce *ConflictError
		if c.wantErr {
			if !errors.As(err, &ce) {
				t.Errorf("Begin(%s, %s, %q) = %q, %v; want a conflict", c.act, c.vm, c.task, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Begin(%s, %s, %q) = %q, %v; want %q", c.act, c.vm, c.task, got, err, c.want)
		}
	}
}

func TestResizeStatuses(t *testing.T) {
	cases := []struct {
		vm   VMState
		task TaskState
		want string
	}{
		{Active, ResizePrep, "RESIZE"},
		{Stopped, ResizePrep, "RESIZE"},
		{Active, ResizeFinish, "RESIZE"},
		{Resized, NoTask, "VERIFY_RESIZE"},
		{Resized, ResizeReverting, "REVERT_RESIZE"},
		{Resized, ResizeConfirming, "VERIFY_RESIZE"},
	}
	for _, c := range cases {
		if got := Status(c.vm, c.task); got != c.want {
			t.Errorf("Status(%s, %q) = %s, want %s", c.vm, c.task, got, c.want)
		}
	}
	if vm, _ := Outcome(ActResize); vm != Resized {
		t.Errorf("Outcome(resize) = %s, want resized", vm)
	}
	if ResizeOutcome(Stopped) != Stopped || ResizeOutcome(Active) != Active || ResizeOutcome("") != Active {
		t.Error("ResizeOutcome does not return to the state before the resize")
	}
	if TaskOf(ActRevertResize) != ResizeReverting || TaskOf(ActConfirmResize) != ResizeConfirming {
		t.Error("TaskOf of confirm/revert")
	}
}
