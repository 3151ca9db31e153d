package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// Reconcile compares what the conductor places on this host with what the
// driver runs and sends the conductor one PowerSync: the observed power
// state of every expected instance (PowerNoState when its container is
// missing, e.g. removed behind our back) and the orphans, managed
// containers the cloud does not place here. Instances with an operation
// in flight on this agent, or one begun since the driver was asked, are
// left out of States: their state is a transition (or the view is stale)
// and the operation's own report follows.
//
// Orphans are only reported and logged: destroying them is an operator's
// decision (they may be a failed migration's source or a database
// restored from an old backup); the network plumbing of instances not
// placed here is removed, though (see repairNetwork): ports hold no tenant
// data; so are NICs still plugged for a server that no longer has them.
// Servers evacuated from this host while it was down (the conductor lists
// them) are no orphans: what is left of them here is removed
// (dropEvacuated). The exception is an expected instance
// whose delete is in progress (task_state deleting): its delete request
// may have been lost, so its container is destroyed and a delete report
// sent, which lets the conductor finish the delete.
func (a *Agent) Reconcile(ctx context.Context) error {
	// From before the driver is asked: an operation that starts after
	// the List below (and may end before its instance's turn in the loop)
	// makes the List's view of that instance stale.
	touched, stopWatch := a.locks.watch()
	defer stopWatch()
	gens := a.nics.generations()
	vgens := a.volc.generations()
	reply, err := a.hostReply(ctx)
	if err != nil {
		return err
	}
	expected := reply.Instances
	observed, err := a.drv.List(ctx)
	if err != nil {
		return fmt.Errorf("agent: reconcile: list instances: %w", err)
	}

	byID := make(map[string]drivers.Status, len(observed))
	for _, st := range observed {
		byID[st.ID] = st
	}
	ps := protocol.PowerSync{Host: a.cfg.Host, States: map[string]int{}, Orphans: []string{}}
	placed := make(map[string]bool, len(expected))
	for _, e := range expected {
		placed[e.Spec.ID] = true
		a.nics.refreshSince(gens, e.Spec.ID, e.Spec.NICs)
	}
	// Before any state is reported: a server a host boot stopped must
	// never be recorded SHUTOFF while its resume is due.
	resuming := a.resumeDue.Load()
	if resuming {
		ps.ResumeFailed = a.resumeGuests(ctx, expected, byID)
	}
	for _, e := range expected {
		id := e.Spec.ID
		if _, failed := ps.ResumeFailed[id]; failed {
			continue
		}
		if a.locks.busy(id) || touched(id) {
			// An operation on it runs here right now, or ran since the
			// driver was asked (a build that finished while the loop
			// destroyed another instance): what the driver showed is a
			// transition or stale, and that operation reports itself.
			continue
		}
		if deleting(e) {
			if err := a.finishDelete(ctx, id); err != nil {
				a.log.Error("reconcile: could not destroy an instance being deleted", "instance", id, "err", err)
				ps.States[id] = int(byID[id].Power)
				continue
			}
			ps.States[id] = int(drivers.PowerNoState)
			continue
		}
		st, ok := byID[id]
		if !ok {
			if e.VMState != lifecycle.Building {
				a.log.Warn("reconcile: instance placed here has no container", "instance", id, "vm_state", e.VMState, "task_state", e.TaskState)
			}
			ps.States[id] = int(drivers.PowerNoState)
			continue
		}
		ps.States[id] = int(st.Power)
	}
	// Servers evacuated from this host while it was down (rebuilt on
	// another): what is left of them here goes (before the orphan scan,
	// and before the network and volume repairs below take their ports
	// and host mounts).
	ps.Evacuated = a.dropEvacuated(ctx, reply.Evacuated, placed, byID)
	for _, st := range observed {
		if _, present := byID[st.ID]; !present {
			continue // removed above (evacuated)
		}
		if !placed[st.ID] {
			ps.Orphans = append(ps.Orphans, st.ID)
			a.log.Warn("reconcile: orphan instance: managed here but not placed here by the cloud; left alone for an operator",
				"instance", st.ID, "backend_id", st.BackendID, "power_state", st.Power, "state", st.Description)
		}
	}
	slices.Sort(ps.Orphans)

	// The power sync goes first: the network repair may take a while.
	err = a.publish(ctx, protocol.KindPowerSync, ps)
	if err == nil && resuming {
		// The next reconciles report a stopped server as it is: it
		// stopped while the agent ran (a guest poweroff, a crash).
		a.resumeDue.Store(false)
	}
	pruned := a.repairNetwork(ctx, gens, expected, placed)
	a.repairLimits(ctx, expected, byID, touched)
	// A server migrating through this host keeps its volume list (so its
	// host mounts): an import mounts the boot volume at its create and
	// binds it at its start, while the server is still placed on the
	// source; a reconcile in between must not unmount it.
	volPlaced := maps.Clone(placed)
	for _, id := range reply.Migrating {
		volPlaced[id] = true
	}
	a.volc.pruneSince(vgens, volPlaced)
	a.repairVolumes(ctx, vgens, expected, byID)
	a.dropStrayEphemeral(ctx, reply.Migrating, placed, byID, touched)
	a.dropKeptRootDisks(ctx)
	if err != nil {
		return fmt.Errorf("agent: reconcile: %w", err)
	}
	a.log.Debug("reconciled", "expected", len(expected), "observed", len(observed), "orphans", len(ps.Orphans), "pruned_nics", pruned)
	return nil
}

// repairLimits re-applies the flavor's cgroup limits (CPU, memory, pids)
// to every running server with no operation in flight, so a limit changed
// behind the cloud's back (by hand, or lost in a dockerd restart) comes
// back within one reconcile. Re-applying unchanged limits changes nothing.
func (a *Agent) repairLimits(ctx context.Context, expected []protocol.ExpectedInstance, observed map[string]drivers.Status,
	touched func(string) bool) {
	if !a.drv.Capabilities().LiveResize {
		return
	}
	for _, e := range expected {
		id := e.Spec.ID
		st, ok := observed[id]
		if !ok || e.TaskState != lifecycle.NoTask || deleting(e) ||
			(st.Power != drivers.PowerRunning && st.Power != drivers.PowerPaused) {
			continue
		}
		unlock, ok := a.locks.tryLock(id)
		if !ok {
			continue
		}
		// An operation since the reconcile listed (a resize's revert or
		// confirm) makes e.Spec's flavor stale: re-applying it would undo
		// the operation's limits. The next reconcile repairs it.
		if touched(id) {
			unlock()
			continue
		}
		if _, err := a.resize(ctx, e.Spec); err != nil {
			a.log.Error("reconcile: could not re-apply the limits of an instance", "instance", id, "err", err)
		}
		unlock()
	}
}

// dropKeptRootDisks removes the containers root disk resizes kept for a
// revert of servers settled without one pending (ACTIVE, SHUTOFF, PAUSED,
// SUSPENDED with no task: not VERIFY_RESIZE nor a resize or revert in
// flight): their confirm's message was lost, or the agent died before it
// acted on it. A kept container of a server not
// placed here is left, as orphans are (a delete's Destroy removes it).
func (a *Agent) dropKeptRootDisks(ctx context.Context) {
	dr, ok := a.drv.(drivers.RootDiskResizer)
	if !ok {
		return
	}
	kept, err := dr.KeptRootDisks(ctx)
	if err != nil {
		a.log.Error("reconcile: could not list the containers root disk resizes kept", "err", err)
		return
	}
	for _, id := range kept {
		a.dropKeptRootDisk(ctx, dr, id)
	}
	if n, err := dr.DropStrayResizeImages(ctx); err != nil {
		a.log.Error("reconcile: could not remove stray resize commits", "err", err)
	} else if n > 0 {
		a.log.Info("reconcile: removed resize commits of deleted servers", "images", n)
	}
}

// dropKeptRootDisk is dropKeptRootDisks for instance id. Its state is read
// under its lock: a resize that ran since the reconcile began left it in
// a resize task or VERIFY_RESIZE, never settled.
func (a *Agent) dropKeptRootDisk(ctx context.Context, dr drivers.RootDiskResizer, id string) {
	unlock, ok := a.locks.tryLock(id)
	if !ok {
		return
	}
	defer unlock()
	expected, err := a.instancesOnHost(ctx)
	if err != nil {
		a.log.Error("reconcile: kept root disk: could not read the instances on this host", "instance", id, "err", err)
		return
	}
	i := slices.IndexFunc(expected, func(e protocol.ExpectedInstance) bool { return e.Spec.ID == id })
	if i < 0 {
		return
	}
	// Only a server settled as confirmed (a revert removes what was
	// kept); one in ERROR keeps it for an operator.
	e := expected[i]
	settled := e.VMState == lifecycle.Active || e.VMState == lifecycle.Stopped || e.VMState == lifecycle.Paused || e.VMState == lifecycle.Suspended
	if !settled || e.TaskState != lifecycle.NoTask {
		return
	}
	if err := dr.ConfirmRootDisk(ctx, id); err != nil {
		a.log.Error("reconcile: could not drop the container a confirmed root disk resize kept", "instance", id, "err", err)
		return
	}
	a.log.Info("reconcile: dropped the container a confirmed root disk resize kept", "instance", id, "vm_state", e.VMState)
}

// deleting reports whether e's delete is in progress or done.
func deleting(e protocol.ExpectedInstance) bool {
	return e.TaskState == lifecycle.Deleting || e.VMState == lifecycle.Deleted
}

// dropEvacuated removes what is left here of each server in evacuated
// (evacuated from this host while it was down): its container and
// sandbox, ports and ephemeral disks; the server itself runs on another
// host, which this touches in no way (everything removed is this host's,
// found by the instance's id). A server placed here again since is
// left alone. It returns the servers nothing is left of any more, whose
// evacuations the conductor completes; a removal that failed is retried
// by the next reconcile. Removed ones leave byID.
func (a *Agent) dropEvacuated(ctx context.Context, evacuated []string, placed map[string]bool, byID map[string]drivers.Status) []string {
	var done []string
	for _, id := range evacuated {
		if placed[id] {
			done = append(done, id)
			continue
		}
		if _, ok := byID[id]; !ok {
			a.dropEphemeral(ctx, id)
			done = append(done, id)
			continue
		}
		unlock, ok := a.locks.tryLock(id)
		if !ok {
			continue
		}
		err := a.destroy(ctx, id)
		if err == nil {
			a.dropEphemeral(ctx, id)
		}
		unlock()
		if err != nil {
			a.log.Error("reconcile: could not remove what is left of a server evacuated from this host; next reconcile retries",
				"instance", id, "err", err)
			continue
		}
		delete(byID, id)
		a.log.Info("reconcile: removed what was left of a server evacuated from this host while it was down", "instance", id)
		done = append(done, id)
	}
	return done
}

// instancesOnHost asks the conductor which instances it places here.
func (a *Agent) instancesOnHost(ctx context.Context) ([]protocol.ExpectedInstance, error) {
	reply, err := a.hostReply(ctx)
	return reply.Instances, err
}

// hostReply asks the conductor which instances it places here, which
// others are migrating through this host, and which were evacuated from
// it.
func (a *Agent) hostReply(ctx context.Context) (protocol.InstancesOnHostReply, error) {
	var reply protocol.InstancesOnHostReply
	m, err := bus.NewMessage(protocol.KindInstancesOnHost, protocol.InstancesOnHostRequest{Host: a.cfg.Host})
	if err != nil {
		return reply, err
	}
	cctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	if err := a.bus.Call(cctx, bus.ConductorQueue, m, &reply); err != nil {
		return reply, fmt.Errorf("agent: reconcile: ask the conductor for the instances on %s: %w", a.cfg.Host, err)
	}
	return reply, nil
}

// finishDelete destroys an instance whose delete is in progress and
// reports the delete done. It takes the instance lock so it cannot
// interleave with the delete request itself, should that still arrive.
func (a *Agent) finishDelete(ctx context.Context, id string) error {
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	rep := protocol.InstanceReport{
		InstanceID: id, Host: a.cfg.Host, Action: lifecycle.ActDelete,
		Event: EventTerminate, Started: a.now().UTC(),
	}
	if err := a.destroy(ctx, id); err != nil {
		return err
	}
	a.dropEphemeral(ctx, id)
	a.deleted.add(id, a.now())
	a.log.Info("reconcile: destroyed an instance being deleted", "instance", id)
	rep.OK = true
	rep.Finished = a.now().UTC()
	if err := a.report(ctx, rep); err != nil {
		// The instance stays in deleting, so the next reconcile reports again.
		a.log.Warn("reconcile: could not report a finished delete", "instance", id, "err", err)
	}
	return nil
}
