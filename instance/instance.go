// Package instance is the domain layer of the control plane for servers:
// the only code that writes an instance's vm_state and task_state, its
// claims on hosts, its port bindings and its migrations' statuses. The
// API, the scheduler, the conductor and the cold-migration engine
// (package migrate) call these operations instead of writing columns by
// hand; internal/archtest's tests keep it so (and keep the API off the
// conductor and the scheduler).
//
// The pure rules live in package lifecycle (which states an action may
// start from, the task it runs as, the state it ends in); this package
// applies them to the database. Every change is a guarded UPDATE: it
// applies only while the instance is still in the state the caller saw,
// so a duplicate or stale request or report changes nothing.
package instance

import (
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// ErrStateChanged: the instance left the state an operation was checked
// against before the operation could be recorded.
var ErrStateChanged = errors.New("instance state changed meanwhile")

// Guard is the state a change expects the instance to still be in: not
// deleted, its vm_state one of VM (none: any), its task_state one of Task
// (none: any) and, when Host is set, on that host.
type Guard struct {
	VM   []lifecycle.VMState
	Task []lifecycle.TaskState
	Host string
}

// In guards on exactly (vm, task).
func In(vm lifecycle.VMState, task lifecycle.TaskState) Guard {
	return Guard{VM: []lifecycle.VMState{vm}, Task: []lifecycle.TaskState{task}}
}

// During guards on any of tasks, whatever the vm_state.
func During(tasks ...lifecycle.TaskState) Guard { return Guard{Task: tasks} }

// OnHost returns g also guarding on host.
func (g Guard) OnHost(host string) Guard {
	g.Host = host
	return g
}

// Fault is what an instance in ERROR shows as its fault.
type Fault struct {
	Code    int
	Message string
	Details string
	At      time.Time
}

// Change is what a transition writes.
type Change struct {
	VM   lifecycle.VMState   // the new vm_state; "" keeps it
	Task lifecycle.TaskState // the new task_state (NoTask ends the task)
	// Fault, when set, is recorded; ClearFault drops the recorded one.
	Fault      *Fault
	ClearFault bool
	// Set holds the other columns the transition changes (host,
	// power_state, flavor copy, ...).
	Set map[string]any
	// At is recorded as updated_at; zero leaves it.
	At time.Time
}

// Apply writes c to instance id in tx while g holds, and reports whether
// it did (false: the instance left the guarded state).
func Apply(tx *gorm.DB, id string, g Guard, c Change) (bool, error) {
	fields := make(map[string]any, len(c.Set)+8)
	for k, v := range c.Set {
		fields[k] = v
	}
	fields["task_state"] = c.Task
	if c.VM != "" {
		fields["vm_state"] = c.VM
	}
	switch {
	case c.Fault != nil:
		fields["fault_code"], fields["fault_message"], fields["fault_details"], fields["fault_at"] =
			c.Fault.Code, c.Fault.Message, c.Fault.Details, c.Fault.At
	case c.ClearFault:
		fields["fault_code"], fields["fault_message"], fields["fault_details"], fields["fault_at"] = 0, "", "", nil
	}
	if !c.At.IsZero() {
		fields["updated_at"] = c.At
	}
	q := tx.Model(&store.Instance{}).Where("id = ? AND deleted_at IS NULL", id)
	switch len(g.VM) {
	case 0:
	case 1:
		q = q.Where("vm_state = ?", g.VM[0])
	default:
		q = q.Where("vm_state IN ?", g.VM)
	}
	switch len(g.Task) {
	case 0:
	case 1:
		q = q.Where("task_state = ?", g.Task[0])
	default:
		q = q.Where("task_state IN ?", g.Task)
	}
	if g.Host != "" {
		q = q.Where("host = ?", g.Host)
	}
	res := q.Updates(fields)
	if res.Error != nil {
		return false, fmt.Errorf("update instance %s: %w", id, res.Error)
	}
	return res.RowsAffected > 0, nil
}

// Create inserts a new server, building and waiting for a host.
func Create(tx *gorm.DB, inst *store.Instance) error {
	inst.VMState, inst.TaskState = lifecycle.Building, lifecycle.Scheduling
	return tx.Create(inst).Error
}

// Begin starts action on inst in tx: the lifecycle rules must allow it
// from the state inst was read in (else a *lifecycle.ConflictError), and
// the instance must still be in that state and on its host (else
// ErrStateChanged). It records the action's task with the columns in set
// and returns that task.
func Begin(tx *gorm.DB, inst *store.Instance, action lifecycle.Action, at time.Time, set map[string]any) (lifecycle.TaskState, error) {
	task, err := lifecycle.Begin(action, inst.VMState, inst.TaskState)
	if err != nil {
		return lifecycle.NoTask, err
	}
	ok, err := Apply(tx, inst.ID, In(inst.VMState, inst.TaskState).OnHost(inst.Host), Change{Task: task, Set: set, At: at})
	if err != nil {
		return lifecycle.NoTask, fmt.Errorf("begin %s of %s: %w", action, inst.ID, err)
	}
	if !ok {
		return lifecycle.NoTask, ErrStateChanged
	}
	return task, nil
}

// Begun returns a copy of inst as a Begin of task left it, for a response
// that shows the instance as it now is.
func Begun(inst *store.Instance, task lifecycle.TaskState) *store.Instance {
	c := *inst
	c.TaskState = task
	return &c
}

// Undo takes back a Begin whose work never reached a host: while the
// instance still runs task, it gets back the task it had before (and
// the columns in set). Like the Begin it undoes, it leaves updated_at.
func Undo(tx *gorm.DB, id string, task, before lifecycle.TaskState, set map[string]any) error {
	_, err := Apply(tx, id, During(task), Change{Task: before, Set: set})
	return err
}

// Finish records the outcome of action, which inst's host reports: on
// success the state the action ends in, else the state inst was in; the
// task ends either way. It applies only while inst still runs the
// action's task in its vm_state. fault, when set, is recorded (a failed
// action says why).
func Finish(tx *gorm.DB, inst *store.Instance, action lifecycle.Action, ok bool, power lifecycle.PowerState, fault *Fault, at time.Time) (bool, error) {
	vm := inst.VMState
	if ok {
		vm, _ = lifecycle.Outcome(action)
	}
	return Apply(tx, inst.ID, In(inst.VMState, lifecycle.TaskOf(action)), Change{VM: vm, Task: lifecycle.NoTask,
		Fault: fault, Set: map[string]any{"power_state": int(lifecycle.RecordedPower(vm, power))}, At: at})
}

// Fail puts the instance into ERROR with fault, its task ended, while g
// holds; set holds other columns to change with it.
func Fail(tx *gorm.DB, id string, g Guard, fault Fault, set map[string]any, at time.Time) (bool, error) {
	return Apply(tx, id, g, Change{VM: lifecycle.Error, Task: lifecycle.NoTask, Fault: &fault, Set: set, At: at})
}

// ResetState is the admin's way out of a stuck state: vm becomes the
// instance's state with no task, whatever it was doing.
func ResetState(tx *gorm.DB, id string, vm lifecycle.VMState, at time.Time) error {
	_, err := Apply(tx, id, Guard{}, Change{VM: vm, Task: lifecycle.NoTask, At: at})
	return err
}
