package lifecycle

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

var (
	testVMStates   = []VMState{Building, Active, Stopped, Paused, Suspended, Resized, Shelved, ShelvedOffloaded, Rescued, Error, Deleted}
	testTaskStates = []TaskState{NoTask, Scheduling, Spawning, PoweringOff, PoweringOn, Rebooting, RebootingHard,
		Pausing, Unpausing, Suspending, Resuming, Deleting, ResizePrep, ResizeMigrating, ResizeMigrated, ResizeFinish,
		ResizeReverting, ResizeConfirming, Migrating, ImageSnapshot, ImageBackup, Rebuilding, RebuildSpawning, Shelving,
		ShelvingOffloading, Unshelving, Rescuing, Unrescuing}
	userActions = []Action{ActStart, ActStop, ActReboot, ActRebootHard, ActPause, ActUnpause, ActSuspend, ActResume,
		ActDelete, ActRebuild, ActSnapshot, ActBackup, ActResize, ActMigrate, ActShelve, ActShelveOffload, ActUnshelve,
		ActRescue, ActUnrescue, ActEvacuate}
)

// TestStateListsComplete keeps the package's own state lists (used by
// StatusFilter) in step with the constants the tests know.
func TestStateListsComplete(t *testing.T) {
	if !slices.Equal(allVMStates, testVMStates) {
		t.Errorf("allVMStates = %v, want %v", allVMStates, testVMStates)
	}
	if !slices.Equal(allTaskStates, testTaskStates) {
		t.Errorf("allTaskStates = %v, want %v", allTaskStates, testTaskStates)
	}
}

// TestBegin checks every action from every vm_state, idle and with each
// task in progress, against Nova's check_instance_state rules as Capsule
// adopts them.
func TestBegin(t *testing.T) {
	type want struct {
		from []VMState   // allowed vm_states
		task TaskState   // task_state set while it runs
		over []TaskState // tasks it may interrupt (besides none)
		any  bool        // interrupts any task
	}
	wants := map[Action]want{
		// Nova's stop does not take a suspended instance (409).
		ActStart:  {from: []VMState{Stopped}, task: PoweringOn},
		ActStop:   {from: []VMState{Active, Paused, Error}, task: PoweringOff},
		ActReboot: {from: []VMState{Active}, task: Rebooting},
		// vm_states.ALLOW_HARD_REBOOT and task_states.ALLOW_REBOOT.
		ActRebootHard: {from: []VMState{Active, Stopped, Paused, Suspended, Error}, task: RebootingHard,
			over: []TaskState{Rebooting, RebootingHard, Pausing, Unpausing, Suspending, Resuming}},
		ActPause:   {from: []VMState{Active}, task: Pausing},
		ActUnpause: {from: []VMState{Paused}, task: Unpausing},
		ActSuspend: {from: []VMState{Active}, task: Suspending},
		ActResume:  {from: []VMState{Suspended}, task: Resuming},
		ActDelete: {from: []VMState{Building, Active, Stopped, Paused, Suspended, Resized, Shelved, ShelvedOffloaded, Rescued, Error},
			task: Deleting, any: true},
		ActRebuild: {from: []VMState{Active, Stopped, Error}, task: Rebuilding},
		// Nova's evacuate: ACTIVE, STOPPED, ERROR (rebuilt elsewhere).
		ActEvacuate: {from: []VMState{Active, Stopped, Error}, task: Rebuilding},
		// snapshot and backup: ACTIVE, STOPPED, PAUSED, SUSPENDED; resize
		// and migrate: ACTIVE, STOPPED only.
		ActSnapshot: {from: []VMState{Active, Stopped, Paused, Suspended}, task: ImageSnapshot},
		ActBackup:   {from: []VMState{Active, Stopped, Paused, Suspended}, task: ImageBackup},
		ActResize:   {from: []VMState{Active, Stopped}, task: ResizePrep},
		ActMigrate:  {from: []VMState{Active, Stopped}, task: ResizePrep},
		// Nova's shelve: ACTIVE, STOPPED, PAUSED, SUSPENDED; shelve_offload:
		// SHELVED; unshelve: SHELVED, SHELVED_OFFLOADED.
		ActShelve:        {from: []VMState{Active, Stopped, Paused, Suspended}, task: Shelving},
		ActShelveOffload: {from: []VMState{Shelved}, task: ShelvingOffloading},
		ActUnshelve:      {from: []VMState{Shelved, ShelvedOffloaded}, task: Unshelving},
		// rescue: ACTIVE, STOPPED, ERROR; unrescue: RESCUED.
		ActRescue:   {from: []VMState{Active, Stopped, Error}, task: Rescuing},
		ActUnrescue: {from: []VMState{Rescued}, task: Unrescuing},
	}
	for _, action := range userActions {
		w := wants[action]
		for _, vm := range testVMStates {
			for _, task := range testTaskStates {
				t.Run(fmt.Sprintf("%s/%s/%s", action, vm, taskName(task)), func(t *testing.T) {
					got, err := Begin(action, vm, task)
					taskOK := task == NoTask || w.any || slices.Contains(w.over, task)
					allowed := taskOK && slices.Contains(w.from, vm)
					if action == ActDelete && task == Deleting {
						allowed = true // a repeated delete is idempotent
					}
					if allowed {
						if err != nil {
							t.Fatalf("Begin(%s, %s, %q) = error %v, want task %s", action, vm, task, err, w.task)
						}
						if got != w.task {
							t.Errorf("Begin(%s, %s, %q) = %q, want %q", action, vm, task, got, w.task)
						}
						return
					}
					var ce *ConflictError
					if !errors.As(err, &ce) {
						t.Fatalf("Begin(%s, %s, %q) = (%q, %v), want a *ConflictError", action, vm, task, got, err)
					}
					if got != NoTask {
						t.Errorf("refused Begin returned task %q, want none", got)
					}
					if ce.Action != action || ce.VM != vm || ce.Task != task {
						t.Errorf("ConflictError = %+v, want action %s vm %s task %q", ce, action, vm, task)
					}
					msg := err.Error()
					if !strings.Contains(msg, "'"+string(action)+"'") {
						t.Errorf("message %q does not name the action %s", msg, action)
					}
					// The message names what blocks the action: the task in
					// progress, else the vm_state.
					wantState := "vm_state " + string(vm)
					if task != NoTask {
						wantState = "task_state " + string(task)
					}
					if !strings.Contains(msg, wantState) {
						t.Errorf("message %q does not contain %q", msg, wantState)
					}
				})
			}
		}
	}
}

func taskName(task TaskState) string {
	if task == NoTask {
		return "none"
	}
	return string(task)
}

func TestBeginDeletePreemptsEveryTask(t *testing.T) {
	for _, vm := range []VMState{Building, Active, Stopped, Paused, Suspended, Resized, Error} {
		for _, task := range testTaskStates {
			got, err := Begin(ActDelete, vm, task)
			if err != nil || got != Deleting {
				t.Errorf("Begin(delete, %s, %q) = (%q, %v), want deleting", vm, task, got, err)
			}
		}
	}
	// Deleting twice is accepted and keeps the task, whatever the vm_state.
	for _, vm := range testVMStates {
		if got, err := Begin(ActDelete, vm, Deleting); err != nil || got != Deleting {
			t.Errorf("repeated delete from %s = (%q, %v), want deleting", vm, got, err)
		}
	}
	// An instance already deleted cannot be deleted again.
	var ce *ConflictError
	if _, err := Begin(ActDelete, Deleted, NoTask); !errors.As(err, &ce) {
		t.Errorf("delete of a deleted instance: err = %v, want *ConflictError", err)
	}
}

func TestBeginUnknownAction(t *testing.T) {
	for _, a := range []Action{ActCreate, "frobnicate", ""} {
		got, err := Begin(a, Active, NoTask)
		if err == nil {
			t.Errorf("Begin(%q) succeeded with %q, want an error", a, got)
			continue
		}
		var ce *ConflictError
		if errors.As(err, &ce) {
			t.Errorf("Begin(%q): got a ConflictError (409), want a plain error", a)
		}
		if !strings.Contains(err.Error(), "unknown action") {
			t.Errorf("Begin(%q) error %q should say the action is unknown", a, err)
		}
	}
}

func TestConflictErrorMessage(t *testing.T) {
	cases := []struct {
		err  ConflictError
		want string
	}{
		{ConflictError{Action: ActStop, VM: Stopped}, "Cannot 'stop' instance while it is in vm_state stopped"},
		{ConflictError{Action: ActStart, VM: Active, Task: PoweringOff}, "Cannot 'start' instance while it is in task_state powering-off"},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
	}
}

func TestOutcome(t *testing.T) {
	cases := []struct {
		action Action
		vm     VMState
		power  PowerState
	}{
		{ActCreate, Active, Running},
		{ActStart, Active, Running},
		{ActStop, Stopped, Shutdown},
		{ActReboot, Active, Running},
		{ActRebootHard, Active, Running},
		{ActPause, Paused, PausedPS},
		{ActUnpause, Active, Running},
		{ActSuspend, Suspended, SuspendedPS},
		{ActResume, Active, Running},
		{ActDelete, Deleted, NoState},
		{ActResize, Resized, Running},
		{ActShelve, Shelved, Shutdown},
		{ActShelveOffload, ShelvedOffloaded, NoState},
		{ActUnshelve, Active, Running},
		{ActRescue, Rescued, Running},
		{ActUnrescue, Active, Running},
		{"frobnicate", Error, NoState},
	}
	for _, c := range cases {
		vm, power := Outcome(c.action)
		if vm != c.vm || power != c.power {
			t.Errorf("Outcome(%q) = (%s, %d), want (%s, %d)", c.action, vm, power, c.vm, c.power)
		}
	}
}

func TestTaskOf(t *testing.T) {
	want := map[Action]TaskState{ActStart: PoweringOn, ActStop: PoweringOff, ActReboot: Rebooting,
		ActRebootHard: RebootingHard, ActPause: Pausing, ActUnpause: Unpausing, ActSuspend: Suspending, ActResume: Resuming,
		ActSnapshot: ImageSnapshot, ActBackup: ImageBackup, ActDelete: Deleting, ActCreate: NoTask}
	for a, task := range want {
		if got := TaskOf(a); got != task {
			t.Errorf("TaskOf(%s) = %q, want %q", a, got, task)
		}
	}
}

func TestPowerStateValues(t *testing.T) {
	// Nova's integers; clients print them (OS-EXT-STS:power_state).
	for ps, want := range map[PowerState]int{NoState: 0, Running: 1, PausedPS: 3, Shutdown: 4, Crashed: 6,
		SuspendedPS: 7} {
		if int(ps) != want {
			t.Errorf("power state %d, want %d", ps, want)
		}
	}
}

// novaStateMap is nova/api/openstack/common.py _STATE_MAP restricted to
// the states Capsule has: the default status per vm_state and the
// task_states that override it.
var novaStateMap = map[VMState]struct {
	def       string
	overrides map[TaskState]string
}{
	Active: {"ACTIVE", map[TaskState]string{
		Rebooting: "REBOOT", RebootingHard: "HARD_REBOOT", Migrating: "MIGRATING", Rebuilding: "REBUILD", RebuildSpawning: "REBUILD",
		ResizePrep: "RESIZE", ResizeMigrating: "RESIZE", ResizeMigrated: "RESIZE", ResizeFinish: "RESIZE"}},
	Building: {"BUILD", nil},
	Stopped: {"SHUTOFF", map[TaskState]string{Rebuilding: "REBUILD", RebuildSpawning: "REBUILD",
		ResizePrep: "RESIZE", ResizeMigrating: "RESIZE", ResizeMigrated: "RESIZE", ResizeFinish: "RESIZE"}},
	Resized:          {"VERIFY_RESIZE", map[TaskState]string{ResizeReverting: "REVERT_RESIZE"}},
	Paused:           {"PAUSED", map[TaskState]string{Migrating: "MIGRATING"}},
	Suspended:        {"SUSPENDED", nil},
	Shelved:          {"SHELVED", nil},
	ShelvedOffloaded: {"SHELVED_OFFLOADED", nil},
	Rescued:          {"RESCUE", nil},
	Error:            {"ERROR", map[TaskState]string{Rebuilding: "REBUILD", RebuildSpawning: "REBUILD"}},
	Deleted:          {"DELETED", nil},
}

func TestStatusEveryPair(t *testing.T) {
	for _, vm := range testVMStates {
		m, ok := novaStateMap[vm]
		if !ok {
			t.Fatalf("no expectation for vm_state %s", vm)
		}
		for _, task := range testTaskStates {
			want := m.def
			if o, ok := m.overrides[task]; ok {
				want = o
			}
			if got := Status(vm, task); got != want {
				t.Errorf("Status(%s, %q) = %s, want %s", vm, task, got, want)
			}
		}
	}
	if got := Status("soft-delete", NoTask); got != "UNKNOWN" {
		t.Errorf("Status of an unknown vm_state = %s, want UNKNOWN", got)
	}
}

func TestStatusFilter(t *testing.T) {
	cases := []struct {
		status string
		want   []VMState
	}{
		{"ACTIVE", []VMState{Active}},
		{"active", []VMState{Active}},
		{"Active", []VMState{Active}},
		{" shutoff ", []VMState{Stopped}},
		{"BUILD", []VMState{Building}},
		{"PAUSED", []VMState{Paused}},
		{"suspended", []VMState{Suspended}},
		{"ERROR", []VMState{Error}},
		{"deleted", []VMState{Deleted}},
		{"VERIFY_RESIZE", []VMState{Resized}},
		{"revert_resize", []VMState{Resized}},
		{"REBOOT", []VMState{Active}},
		{"hard_reboot", []VMState{Active}},
		// A transitional status occurs in several vm_states (Nova's
		// task_and_vm_state_from_status collects them all).
		{"RESIZE", []VMState{Active, Stopped}},
		{"MIGRATING", []VMState{Active, Paused}},
	}
	for _, c := range cases {
		got, ok := StatusFilter(c.status)
		if !ok || !slices.Equal(got, c.want) {
			t.Errorf("StatusFilter(%q) = (%v, %v), want (%v, true)", c.status, got, ok, c.want)
		}
	}
	for _, s := range []string{"", "UNKNOWN", "bogus", "SHUTOFFX", "SUSPENDED_"} {
		if got, ok := StatusFilter(s); ok || len(got) != 0 {
			t.Errorf("StatusFilter(%q) = (%v, %v), want (nil, false)", s, got, ok)
		}
	}
}

// TestStatusFilterInvertsStatus: every status Status can produce is
// accepted by the filter, and the filter's vm_states are exactly those
// that can show it.
func TestStatusFilterInvertsStatus(t *testing.T) {
	shows := map[string][]VMState{}
	for _, vm := range testVMStates {
		for _, task := range testTaskStates {
			s := Status(vm, task)
			if !slices.Contains(shows[s], vm) {
				shows[s] = append(shows[s], vm)
			}
		}
	}
	for s, want := range shows {
		got, ok := StatusFilter(strings.ToLower(s))
		if !ok || !slices.Equal(got, want) {
			t.Errorf("StatusFilter(%q) = (%v, %v), want (%v, true)", s, got, ok, want)
		}
	}
}

// TestShelveTransitions: shelve from Nova's four states only, offload
// only from shelved, unshelve from both shelved states, delete from both,
// and nothing else (start, stop, resize, snapshot) from a shelved server.
func TestShelveTransitions(t *testing.T) {
	for _, vm := range []VMState{Active, Stopped, Paused, Suspended} {
		if got, err := Begin(ActShelve, vm, NoTask); err != nil || got != Shelving {
			t.Errorf("shelve from %s = (%q, %v), want shelving", vm, got, err)
		}
	}
	for _, vm := range []VMState{Building, Resized, Error, Shelved, ShelvedOffloaded} {
		if _, err := Begin(ActShelve, vm, NoTask); err == nil {
			t.Errorf("shelve from %s allowed", vm)
		}
	}
	if got, err := Begin(ActShelveOffload, Shelved, NoTask); err != nil || got != ShelvingOffloading {
		t.Errorf("offload of shelved = (%q, %v)", got, err)
	}
	for _, vm := range []VMState{Active, Stopped, ShelvedOffloaded} {
		if _, err := Begin(ActShelveOffload, vm, NoTask); err == nil {
			t.Errorf("offload from %s allowed", vm)
		}
	}
	for _, vm := range []VMState{Shelved, ShelvedOffloaded} {
		if got, err := Begin(ActUnshelve, vm, NoTask); err != nil || got != Unshelving {
			t.Errorf("unshelve from %s = (%q, %v)", vm, got, err)
		}
		if got, err := Begin(ActDelete, vm, NoTask); err != nil || got != Deleting {
			t.Errorf("delete from %s = (%q, %v)", vm, got, err)
		}
		for _, a := range []Action{ActStart, ActStop, ActResize, ActSnapshot, ActRebuild, ActMigrate, ActShelve} {
			if _, err := Begin(a, vm, NoTask); err == nil {
				t.Errorf("%s from %s allowed", a, vm)
			}
		}
	}
	if _, err := Begin(ActUnshelve, Active, NoTask); err == nil {
		t.Error("unshelve of an active server allowed")
	}
	if _, err := Begin(ActUnshelve, ShelvedOffloaded, Unshelving); err == nil {
		t.Error("unshelve while unshelving allowed")
	}
	if Status(Shelved, Unshelving) != "SHELVED" || Status(ShelvedOffloaded, Spawning) != "SHELVED_OFFLOADED" {
		t.Error("shelved statuses")
	}
}
