// Package lifecycle holds the instance state machine: Nova's vm_state,
// task_state and power_state as explicit types, the transitions each
// operation may make, and the mapping to the API's "status" field.
//
// It is pure (no database): the rules table says which vm_states each
// action may start from and which task it runs as, Outcome where it ends.
// Package instance applies these rules to the database; it is the only
// code that writes an instance's states, so an illegal transition is an
// error at one place.
package lifecycle

import (
	"fmt"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/errdefs"
)

// VMState is the stable state of an instance (Nova's vm_state).
type VMState string

const (
	Building VMState = "building"
	Active   VMState = "active"
	Stopped  VMState = "stopped"
	Paused   VMState = "paused"
	// Suspended is Nova's suspended. Capsule suspends like it pauses
	// (cgroup freezer: memory kept, nothing written to disk) but keeps
	// Nova's own states so clients see SUSPENDED and power_state 7.
	Suspended VMState = "suspended"
	Resized   VMState = "resized"
	// Shelved is a shelved server still on its host: stopped, pushed to
	// the registry as its shelve image, its host's room still held.
	Shelved VMState = "shelved"
	// ShelvedOffloaded is a shelved server no host holds: its container
	// and sandbox are gone and its claims released; its ports and fixed
	// IPs stay, its shelve image is what an unshelve boots.
	ShelvedOffloaded VMState = "shelved_offloaded"
	// Rescued is Nova's rescued: the server's workload is stopped and a
	// rescue system runs in its place (same NICs), its disk at /mnt.
	Rescued VMState = "rescued"
	Error   VMState = "error"
	Deleted VMState = "deleted"
)

// TaskState is the operation in progress (Nova's task_state); NoTask is
// rendered as JSON null.
type TaskState string

const (
	NoTask           TaskState = ""
	Scheduling       TaskState = "scheduling"
	Spawning         TaskState = "spawning"
	PoweringOff      TaskState = "powering-off"
	PoweringOn       TaskState = "powering-on"
	Rebooting        TaskState = "rebooting"
	RebootingHard    TaskState = "rebooting_hard"
	Pausing          TaskState = "pausing"
	Unpausing        TaskState = "unpausing"
	Suspending       TaskState = "suspending"
	Resuming         TaskState = "resuming"
	Deleting         TaskState = "deleting"
	ResizePrep       TaskState = "resize_prep"
	ResizeMigrating  TaskState = "resize_migrating"
	ResizeMigrated   TaskState = "resize_migrated"
	ResizeFinish     TaskState = "resize_finish"
	ResizeReverting  TaskState = "resize_reverting"
	ResizeConfirming TaskState = "resize_confirming"
	Migrating        TaskState = "migrating"
	ImageSnapshot    TaskState = "image_snapshot"
	ImageBackup      TaskState = "image_backup"
	Rebuilding       TaskState = "rebuilding"
	// RebuildSpawning: an evacuated server is being rebuilt on the host
	// the scheduler chose (Nova's rebuild_spawning; REBUILD).
	RebuildSpawning TaskState = "rebuild_spawning"
	// Shelving: the host stops, commits and pushes the server;
	// ShelvingOffloading: it removes the container and sandbox;
	// Unshelving: a host is chosen (offloaded) or the server started
	// (shelved), then, offloaded, it spawns from the shelve image.
	Shelving           TaskState = "shelving"
	ShelvingOffloading TaskState = "shelving_offloading"
	Unshelving         TaskState = "unshelving"
	Rescuing           TaskState = "rescuing"
	Unrescuing         TaskState = "unrescuing"
)

// PowerState mirrors Nova's integer power states.
type PowerState int

const (
	NoState  PowerState = 0
	Running  PowerState = 1
	PausedPS PowerState = 3
	Shutdown PowerState = 4
	Crashed  PowerState = 6
	// SuspendedPS is what the conductor records for a suspended
	// instance; the driver itself only knows "paused" (frozen).
	SuspendedPS PowerState = 7
)

// Status is the API-visible status derived from vm_state and task_state
// (nova/api/openstack/common.py _STATE_MAP).
func Status(vm VMState, task TaskState) string {
	switch vm {
	case Building:
		return "BUILD"
	case Active:
		switch task {
		case Rebuilding, RebuildSpawning:
			return "REBUILD"
		case Rebooting:
			return "REBOOT"
		case RebootingHard:
			return "HARD_REBOOT"
		case Migrating:
			return "MIGRATING"
		case ResizePrep, ResizeMigrating, ResizeMigrated, ResizeFinish:
			return "RESIZE"
		}
		return "ACTIVE"
	case Stopped:
		switch task {
		case Rebuilding, RebuildSpawning:
			return "REBUILD"
		case ResizePrep, ResizeMigrating, ResizeMigrated, ResizeFinish:
			return "RESIZE"
		}
		return "SHUTOFF"
	case Paused:
		if task == Migrating {
			return "MIGRATING"
		}
		return "PAUSED"
	case Suspended:
		return "SUSPENDED"
	case Shelved:
		return "SHELVED"
	case ShelvedOffloaded:
		return "SHELVED_OFFLOADED"
	case Rescued:
		return "RESCUE"
	case Resized:
		if task == ResizeReverting {
			return "REVERT_RESIZE"
		}
		return "VERIFY_RESIZE"
	case Error:
		if task == Rebuilding || task == RebuildSpawning {
			return "REBUILD"
		}
		return "ERROR"
	case Deleted:
		return "DELETED"
	}
	return "UNKNOWN"
}

// StatusFilter returns the vm_states an instance may be in to show status
// s (case insensitive, surrounding blanks ignored), for the servers list
// "status" filter; ok is false for an unknown status. Like Nova's
// task_and_vm_state_from_status it inverts Status over every
// (vm_state, task_state) pair, so a transitional status finds every
// vm_state it occurs in (RESIZE: active and stopped; MIGRATING: active and
// paused; REVERT_RESIZE: resized).
func StatusFilter(s string) (states []VMState, ok bool) {
	s = strings.TrimSpace(s)
	for _, vm := range allVMStates {
		for _, task := range allTaskStates {
			if equalFold(Status(vm, task), s) {
				states = append(states, vm)
				break
			}
		}
	}
	return states, len(states) > 0
}

// allVMStates and allTaskStates list every state, in declaration order.
var (
	allVMStates   = []VMState{Building, Active, Stopped, Paused, Suspended, Resized, Shelved, ShelvedOffloaded, Rescued, Error, Deleted}
	allTaskStates = []TaskState{NoTask, Scheduling, Spawning, PoweringOff, PoweringOn, Rebooting, RebootingHard,
		Pausing, Unpausing, Suspending, Resuming, Deleting, ResizePrep, ResizeMigrating, ResizeMigrated, ResizeFinish,
		ResizeReverting, ResizeConfirming, Migrating, ImageSnapshot, ImageBackup, Rebuilding, RebuildSpawning, Shelving,
		ShelvingOffloading, Unshelving, Rescuing, Unrescuing}
)

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Action is an operation a user or the system asks of an instance.
type Action string

const (
	ActCreate     Action = "create"
	ActStart      Action = "start"
	ActStop       Action = "stop"
	ActReboot     Action = "reboot"
	ActRebootHard Action = "reboot_hard"
	ActPause      Action = "pause"
	ActUnpause    Action = "unpause"
	// Suspend and resume freeze and thaw the container like pause and
	// unpause do, under Nova's suspended states.
	ActSuspend Action = "suspend"
	ActResume  Action = "resume"
	ActDelete  Action = "delete"
	// Resize applies a new flavor (live, on the same host); the instance
	// then waits in resized (VERIFY_RESIZE) for a confirm or a revert.
	ActResize        Action = "resize"
	ActConfirmResize Action = "confirm_resize"
	ActRevertResize  Action = "revert_resize"
	// Snapshot saves the instance as an image (createImage); the
	// vm_state does not change.
	ActSnapshot Action = "snapshot"
	// Backup is a snapshot (createBackup) that the conductor rotates:
	// older backups of the same type beyond the rotation are deleted.
	ActBackup Action = "backup"
	// Migrate moves the instance to another host, cold (commit, push,
	// pull: see package migrate); a resize that does not fit its host
	// becomes one too. Both end in resized (VERIFY_RESIZE) on the target.
	ActMigrate Action = "migrate"
	// Rebuild replaces the server's disk with a new image (its writable
	// layer is wiped) keeping its identity, flavor, ports and addresses.
	// A stopped server stays stopped; an errored one comes back active.
	ActRebuild Action = "rebuild"
	// Evacuate rebuilds the server of a dead host on another host from
	// its image, with its ports, addresses and shared volumes
	// (rebuilding while a host is chosen, rebuild_spawning while that
	// host builds it). It ends as it was (active or stopped; an errored
	// one active), or stopped when asked (2.95).
	ActEvacuate Action = "evacuate"
	// Shelve stops the server and pushes it as its shelve image (Nova's
	// <name>-shelved snapshot); it ends in shelved, on its host.
	ActShelve Action = "shelve"
	// ShelveOffload frees the host of a shelved server (container,
	// sandbox, claims); it ends in shelved_offloaded, on no host.
	ActShelveOffload Action = "shelve_offload"
	// Unshelve brings a shelved server back: started where it is
	// (shelved) or spawned from its shelve image on a host the scheduler
	// picks (shelved_offloaded), with the same ports and addresses.
	ActUnshelve Action = "unshelve"
	// Rescue boots a rescue system in the server's place (its disk at
	// /mnt, same NICs); unrescue brings the server back, with every change
	// made from the rescue system.
	ActRescue   Action = "rescue"
	ActUnrescue Action = "unrescue"
)

// rule says from which vm_states an action may start (with no task in
// progress, one of Over, or any task if Preempts is set) and which
// task_state it sets meanwhile.
type rule struct {
	From     []VMState
	Task     TaskState
	Over     []TaskState // tasks it may interrupt besides none
	Preempts bool        // may interrupt any task (delete)
}

var rules = map[Action]rule{
	ActStart:  {From: []VMState{Stopped}, Task: PoweringOn},
	ActStop:   {From: []VMState{Active, Paused, Error}, Task: PoweringOff},
	ActReboot: {From: []VMState{Active}, Task: Rebooting},
	// A hard reboot may interrupt a reboot, (un)pause or suspend/resume
	// that hangs, as Nova's task_states.ALLOW_REBOOT lets it: it is how a
	// user gets an instance stuck in REBOOT back. Like Nova's
	// ALLOW_HARD_REBOOT it also wakes a suspended instance.
	ActRebootHard: {From: []VMState{Active, Stopped, Paused, Suspended, Error}, Task: RebootingHard,
		Over: []TaskState{Rebooting, RebootingHard, Pausing, Unpausing, Suspending, Resuming}},
	ActPause:   {From: []VMState{Active}, Task: Pausing},
	ActUnpause: {From: []VMState{Paused}, Task: Unpausing},
	ActSuspend: {From: []VMState{Active}, Task: Suspending},
	ActResume:  {From: []VMState{Suspended}, Task: Resuming},
	ActDelete: {From: []VMState{Building, Active, Stopped, Paused, Suspended, Resized, Shelved, ShelvedOffloaded, Rescued, Error},
		Task: Deleting, Preempts: true},
	// Resize starts in resize_prep; the driver's work runs as
	// resize_finish (both show RESIZE) and it ends in resized.
	ActResize:        {From: []VMState{Active, Stopped}, Task: ResizePrep},
	ActConfirmResize: {From: []VMState{Resized}, Task: ResizeConfirming},
	ActRevertResize:  {From: []VMState{Resized}, Task: ResizeReverting},
	// Nova's snapshot and backup both allow active, stopped, paused and
	// suspended (stop, resize, migrate and rebuild do not allow
	// suspended: the instance must be resumed first).
	ActSnapshot: {From: []VMState{Active, Stopped, Paused, Suspended}, Task: ImageSnapshot},
	ActBackup:   {From: []VMState{Active, Stopped, Paused, Suspended}, Task: ImageBackup},
	// A cold migration starts in resize_prep (scheduling, claim), then
	// runs as resize_migrating (source: stop, commit, push),
	// resize_migrated (handed over) and resize_finish (target: pull,
	// create, start), all shown as RESIZE, as Nova's.
	ActMigrate: {From: []VMState{Active, Stopped}, Task: ResizePrep},
	ActRebuild: {From: []VMState{Active, Stopped, Error}, Task: Rebuilding},
	// Nova's evacuate: active, stopped, error.
	ActEvacuate: {From: []VMState{Active, Stopped, Error}, Task: Rebuilding},
	// Nova's shelve allows active, stopped, paused and suspended;
	// shelveOffload only shelved; unshelve both shelved states.
	ActShelve:        {From: []VMState{Active, Stopped, Paused, Suspended}, Task: Shelving},
	ActShelveOffload: {From: []VMState{Shelved}, Task: ShelvingOffloading},
	ActUnshelve:      {From: []VMState{Shelved, ShelvedOffloaded}, Task: Unshelving},
	// Nova's rescue: active, stopped, error; unrescue: rescued.
	ActRescue:   {From: []VMState{Active, Stopped, Error}, Task: Rescuing},
	ActUnrescue: {From: []VMState{Rescued}, Task: Unrescuing},
}

// ConflictError is returned when an action is not allowed in the
// instance's current state. It is an errdefs Conflict (its text the safe
// message), which the APIs map to 409.
type ConflictError struct {
	Action Action
	VM     VMState
	Task   TaskState
}

func (e *ConflictError) Error() string {
	if e.Task != NoTask {
		return fmt.Sprintf("Cannot '%s' instance while it is in task_state %s", e.Action, e.Task)
	}
	return fmt.Sprintf("Cannot '%s' instance while it is in vm_state %s", e.Action, e.VM)
}

// Unwrap classifies the refusal as a Conflict.
func (e *ConflictError) Unwrap() error { return errdefs.Conflict(e.Error()) }

// Begin checks that action may start from (vm, task) and returns the
// task_state to record while it runs.
func Begin(action Action, vm VMState, task TaskState) (TaskState, error) {
	r, ok := rules[action]
	if !ok {
		return NoTask, fmt.Errorf("lifecycle: unknown action %q", action)
	}
	if task != NoTask && !r.Preempts && !slices.Contains(r.Over, task) {
		return NoTask, &ConflictError{Action: action, VM: vm, Task: task}
	}
	if action == ActDelete && task == Deleting {
		// A second delete is accepted (idempotent) and keeps the task.
		return Deleting, nil
	}
	for _, f := range r.From {
		if f == vm {
			return r.Task, nil
		}
	}
	return NoTask, &ConflictError{Action: action, VM: vm, Task: task}
}

// Outcome is the stable state an action reaches on success.
func Outcome(action Action) (VMState, PowerState) {
	switch action {
	case ActStart, ActReboot, ActRebootHard, ActUnpause, ActResume, ActCreate:
		return Active, Running
	case ActStop:
		return Stopped, Shutdown
	case ActPause:
		return Paused, PausedPS
	case ActSuspend:
		return Suspended, SuspendedPS
	case ActDelete:
		return Deleted, NoState
	case ActResize:
		return Resized, Running
	case ActShelve:
		return Shelved, Shutdown
	case ActShelveOffload:
		return ShelvedOffloaded, NoState
	case ActRescue:
		return Rescued, Running
	case ActUnrescue:
		return Active, Running
	case ActUnshelve:
		return Active, Running
	}
	return Error, NoState
}

// ResizeOutcome is the vm_state a resize's confirm or revert returns the
// instance to: where it was before the resize (active or stopped).
func ResizeOutcome(before VMState) VMState {
	if before == Stopped {
		return Stopped
	}
	return Active
}

// RebuildOutcome is the vm_state a successful rebuild leaves: stopped
// when the new workload was left stopped (the server was SHUTOFF),
// active otherwise.
func RebuildOutcome(power PowerState) VMState {
	if power == Running {
		return Active
	}
	return Stopped
}

// TaskOf returns the task_state an action runs under.
func TaskOf(action Action) TaskState { return rules[action].Task }

// MigrationStatus is a migration's status (Nova's), for a live resize
// and a cold migration alike.
type MigrationStatus string

// Migration statuses, in the order a resize or migration goes through
// them.
const (
	MigrationPreMigrating  MigrationStatus = "pre-migrating"
	MigrationMigrating     MigrationStatus = "migrating"
	MigrationPostMigrating MigrationStatus = "post-migrating"
	MigrationConfirming    MigrationStatus = "confirming"
	MigrationFinished      MigrationStatus = "finished"
	MigrationConfirmed     MigrationStatus = "confirmed"
	MigrationReverting     MigrationStatus = "reverting"
	MigrationReverted      MigrationStatus = "reverted"
	MigrationError         MigrationStatus = "error"
)

// RecordedPower is the power state to record for an instance in vm whose
// driver sees ps: a suspended instance is a frozen container, which the
// driver reports as paused, but Nova shows SUSPENDED (7) for it.
func RecordedPower(vm VMState, ps PowerState) PowerState {
	if vm == Suspended && ps == PausedPS {
		return SuspendedPS
	}
	return ps
}
