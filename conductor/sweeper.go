package conductor

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// sweptTasks are the tasks an agent carries out that the sweeper ends
// when they make no progress for their deadline, with the action whose
// failure report ends each. Builds have their own sweep (periodic), cold
// migrations their engine's step deadlines (package migrate).
var sweptTasks = map[lifecycle.TaskState]lifecycle.Action{
	lifecycle.PoweringOff:     lifecycle.ActStop,
	lifecycle.PoweringOn:      lifecycle.ActStart,
	lifecycle.Rebooting:       lifecycle.ActReboot,
	lifecycle.RebootingHard:   lifecycle.ActRebootHard,
	lifecycle.Pausing:         lifecycle.ActPause,
	lifecycle.Unpausing:       lifecycle.ActUnpause,
	lifecycle.Suspending:      lifecycle.ActSuspend,
	lifecycle.Resuming:        lifecycle.ActResume,
	lifecycle.Deleting:        lifecycle.ActDelete,
	lifecycle.ResizePrep:      lifecycle.ActResize,
	lifecycle.ResizeFinish:    lifecycle.ActResize,
	lifecycle.ResizeReverting: lifecycle.ActRevertResize,
	lifecycle.Rebuilding:      lifecycle.ActRebuild,
	// An evacuation's build on its new host.
	lifecycle.RebuildSpawning: lifecycle.ActEvacuate,
	lifecycle.ImageSnapshot:   lifecycle.ActSnapshot,
	lifecycle.ImageBackup:     lifecycle.ActBackup,
	// A shelve pushes (its deadline is an image task's); an offload
	// and an unshelve on its host report as actions. An unshelve no
	// scheduler placed ends as an unplaced one (instance.UnshelveUnplaced).
	lifecycle.Shelving:           lifecycle.ActShelve,
	lifecycle.ShelvingOffloading: lifecycle.ActShelveOffload,
	lifecycle.Unshelving:         lifecycle.ActUnshelve,
	lifecycle.Rescuing:           lifecycle.ActRescue,
	lifecycle.Unrescuing:         lifecycle.ActUnrescue,
}

// taskDeadline is how long task may go without progress.
func (c *Conductor) taskDeadline(task lifecycle.TaskState) time.Duration {
	short, long := c.cfg.TaskTimeout, c.cfg.ImageTaskTimeout
	if short <= 0 {
		short = 10 * time.Minute
	}
	if long <= 0 {
		long = time.Hour
	}
	switch task {
	// An offload pushes the server's local volumes (instance/shelve.go).
	case lifecycle.ImageSnapshot, lifecycle.ImageBackup, lifecycle.Rebuilding, lifecycle.RebuildSpawning, lifecycle.Shelving,
		lifecycle.ShelvingOffloading:
		return long
	}
	return short
}

// sweepTasks ends every task whose worker died: a task that made no
// progress (the instance's updated_at) for its deadline is ended as its
// host's failure report would end it, through the same code (and so the
// same lifecycle rules): a power action, reboot, pause or suspend gives
// the server its state back (power sync then records what really runs),
// a delete or rebuild puts it in ERROR with a fault, a resize gets its old
// flavor and claim back with a fault, a snapshot's image is removed.
//
// A task whose message still waits in the outbox is not swept: its work
// has not reached the host yet (the broker was down), the relay is still
// delivering it. The message a committed task implies always reaches the
// host (the outbox), so a task is only past its deadline when the host
// took the work and never answered.
func (c *Conductor) sweepTasks(ctx context.Context) {
	shortest := min(c.taskDeadline(lifecycle.Rebooting), c.taskDeadline(lifecycle.ImageSnapshot))
	tasks := make([]lifecycle.TaskState, 0, len(sweptTasks))
	for t := range sweptTasks {
		tasks = append(tasks, t)
	}
	now := c.now()
	var stuck []store.Instance
	db := c.st.WithContext(ctx)
	if err := db.Where("deleted_at IS NULL AND task_state IN ? AND updated_at < ?", tasks, now.Add(-shortest)).
		Order("updated_at").Find(&stuck).Error; err != nil {
		c.log.Error("find stuck tasks", "error", err)
		return
	}
	for i := range stuck {
		inst := &stuck[i]
		deadline := c.taskDeadline(inst.TaskState)
		if inst.UpdatedAt.After(now.Add(-deadline)) {
			continue
		}
		if err := c.expireTask(ctx, inst, deadline); err != nil {
			c.log.Error("end stuck task", "instance", inst.ID, "task", inst.TaskState, "error", err)
		}
	}
}

// expireTask ends inst's task, past its deadline, as failed.
func (c *Conductor) expireTask(ctx context.Context, inst *store.Instance, deadline time.Duration) error {
	db := c.st.WithContext(ctx)
	// A message the broker refused for the whole deadline (its queue is
	// gone with its host, say) is dropped with the task; one younger than
	// the deadline (written by a later request) still has its chance.
	now := c.now()
	if dropped, err := store.DropOutbox(db, inst.ID, now.Add(-deadline)); err != nil {
		return err
	} else if dropped > 0 {
		c.log.Warn("dropped messages the broker refused until the task's deadline", "instance", inst.ID,
			"task", inst.TaskState, "messages", dropped)
	}
	if pending, err := store.OutboxPending(db, inst.ID); err != nil || pending {
		return err
	}
	if m, err := migrate.Active(ctx, db, inst.ID); err != nil || m != nil {
		return err // a cold migration: its engine's step deadlines end it
	}
	action := sweptTasks[inst.TaskState]
	if inst.TaskState == lifecycle.Rebuilding {
		// An evacuation no scheduler placed: it stays on its dead host.
		if m, err := instance.Evacuation(db, inst.ID); err != nil || m != nil {
			if err != nil {
				return err
			}
			ok, err := instance.EvacuationUnplaced(db, inst.ID, m, instance.Fault{Code: 500, At: now,
				Message: fmt.Sprintf("Evacuation failed: no host was chosen for it within %s", deadline)})
			if ok {
				c.log.Warn("evacuation timed out waiting for a host", "instance", inst.ID, "source", m.SourceCompute)
			}
			return err
		}
	}
	var last store.InstanceAction
	if err := db.Where("instance_id = ?", inst.ID).Order("id DESC").Limit(1).Find(&last).Error; err != nil {
		return fmt.Errorf("last action of %s: %w", inst.ID, err)
	}
	why := fmt.Sprintf("the task %s got no answer from host %s within %s", inst.TaskState, inst.Host, deadline)
	c.log.Warn("task timed out; ending it as failed", "instance", inst.ID, "task", inst.TaskState, "host", inst.Host,
		"deadline", deadline, "since", inst.UpdatedAt)
	const event = "conductor_task_timeout"
	if action == lifecycle.ActSnapshot || action == lifecycle.ActBackup || action == lifecycle.ActShelve {
		return c.onSnapshotReport(ctx, protocol.SnapshotReport{RequestID: last.RequestID, InstanceID: inst.ID,
			ImageID: c.pendingSnapshot(ctx, inst.ID), Host: inst.Host, OK: false, Error: why, Event: event,
			Shelve: action == lifecycle.ActShelve, PowerState: inst.PowerState, Started: inst.UpdatedAt, Finished: now})
	}
	return c.onInstanceReport(ctx, protocol.InstanceReport{RequestID: last.RequestID, InstanceID: inst.ID, Host: inst.Host,
		Action: action, OK: false, Error: why, ErrorMessage: "Timed out waiting for the compute host",
		PowerState: inst.PowerState, Event: event, Started: inst.UpdatedAt, Finished: now})
}

// pendingSnapshot is the id of the image a snapshot or backup of
// instanceID is saving ("" when there is none).
func (c *Conductor) pendingSnapshot(ctx context.Context, instanceID string) string {
	var imgs []store.Image
	// The LIKE only narrows the scan; the properties decide.
	err := c.st.WithContext(ctx).Where("status IN ? AND properties LIKE ?", []string{imageQueued, imageSaving}, "%"+instanceID+"%").
		Order("created_at DESC").Find(&imgs).Error
	if err != nil {
		c.log.Warn("find the image of a stuck snapshot", "instance", instanceID, "error", err)
		return ""
	}
	for _, img := range imgs {
		props := map[string]string{}
		if json.Unmarshal([]byte(img.Properties), &props) == nil && props["instance_uuid"] == instanceID {
			return img.ID
		}
	}
	return ""
}
