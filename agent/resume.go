package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// Resuming servers after a host reboot (Nova's
// resume_guests_state_on_host_boot). A host that rebooted, or a dockerd
// that went down with its containers, leaves every server's containers
// stopped while the cloud still records them ACTIVE, PAUSED, SUSPENDED or
// (a running server) VERIFY_RESIZE: the owner never asked for a stop. The
// agent's first reconcile after it starts (a host boot starts the agent)
// starts those servers again before
// it sends any power sync, so the conductor never records them SHUTOFF;
// what the owner stopped is SHUTOFF in the cloud and stays stopped. Later
// reconciles do not resume: a server that stops while the agent runs
// stopped itself (a guest poweroff, a crash), and becomes SHUTOFF as in
// Nova.

// resumable reports whether e's server should be started again because
// the cloud records it as running (or paused) while its container, found
// with status st, is stopped.
func resumable(e protocol.ExpectedInstance, st drivers.Status, found bool) bool {
	if !found || !expectedRunning(e) {
		return false
	}
	return st.Power == drivers.PowerShutdown || st.Power == drivers.PowerCrashed || st.Power == drivers.PowerNoState
}

// expectedRunning reports whether the cloud records e's server as running
// or paused with no task: ACTIVE, PAUSED, SUSPENDED, or waiting in
// VERIFY_RESIZE after a resize of a running server (vm_state resized,
// recorded power state running; a stopped server resized stays stopped
// until confirm or revert). Resuming a server in VERIFY_RESIZE only starts
// its container, which already has the new flavor: its migration, claims
// and old flavor stay for the confirm or revert.
func expectedRunning(e protocol.ExpectedInstance) bool {
	if e.TaskState != lifecycle.NoTask || deleting(e) {
		return false
	}
	switch e.VMState {
	case lifecycle.Active, lifecycle.Paused, lifecycle.Suspended:
		return true
	case lifecycle.Resized:
		return lifecycle.PowerState(e.PowerState) == lifecycle.Running
	}
	return false
}

// resumeGuests starts again every server of expected the cloud records as
// running or paused whose container is stopped (observed holds the
// driver's view, updated in place with each resumed server's new state).
// A server with no container at all cannot be resumed: its data is gone.
// It returns, per server that could not be resumed, why (for its fault).
func (a *Agent) resumeGuests(ctx context.Context, expected []protocol.ExpectedInstance, observed map[string]drivers.Status) map[string]string {
	failed := map[string]string{}
	for _, e := range expected {
		id := e.Spec.ID
		st, found := observed[id]
		if !found && expectedRunning(e) {
			// The owner sees this reason: no host name in it.
			failed[id] = "its container is missing (removed while the host was down); rebuild or delete the server"
			a.log.Error("resume after host boot: instance has no container", "instance", id, "vm_state", e.VMState)
			continue
		}
		if !resumable(e, st, found) {
			continue
		}
		unlock, ok := a.locks.tryLock(id)
		if !ok {
			continue // an operation on it runs right now and reports itself
		}
		started := a.now()
		power, err := a.resumeGuest(ctx, id, e.VMState)
		unlock()
		if err != nil {
			a.log.Error("resume after host boot failed", "instance", id, "vm_state", e.VMState, "err", err)
			failed[id] = err.Error()
			continue
		}
		st.Power = power
		observed[id] = st
		a.log.Info("resumed instance after host boot", "instance", id, "vm_state", e.VMState,
			"power_state", power, "took", a.now().Sub(started).Round(time.Millisecond))
	}
	return failed
}

// resumeGuest starts stopped server id as a start request would (its NICs
// plumbed into a new sandbox namespace before the workload joins it),
// then pauses it again when the cloud records it paused or suspended, and
// returns its power state.
func (a *Agent) resumeGuest(ctx context.Context, id string, vm lifecycle.VMState) (drivers.PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StopTimeout+2*time.Minute)
	defer cancel()
	if err := a.plumbFor(ctx, id); err != nil {
		return drivers.PowerNoState, fmt.Errorf("re-plumb its network: %w", err)
	}
	if err := a.beforeStart(ctx, id); err != nil {
		return drivers.PowerNoState, err
	}
	if err := a.drv.Start(ctx, id); err != nil {
		return drivers.PowerNoState, fmt.Errorf("start: %w", err)
	}
	a.afterStart(ctx, id)
	if vm == lifecycle.Paused || vm == lifecycle.Suspended {
		if !a.drv.Capabilities().Pause {
			return drivers.PowerNoState, fmt.Errorf("pause it again: driver %s: %w", a.drv.Name(), drivers.ErrNotSupported)
		}
		if err := a.drv.Pause(ctx, id); err != nil {
			return drivers.PowerNoState, fmt.Errorf("pause it again: %w", err)
		}
	}
	st, err := a.drv.Status(ctx, id)
	if err != nil {
		return drivers.PowerNoState, fmt.Errorf("status after start: %w", err)
	}
	want, wantName := drivers.PowerRunning, "running"
	if vm == lifecycle.Paused || vm == lifecycle.Suspended {
		want, wantName = drivers.PowerPaused, "paused"
	}
	if st.Power != want {
		return st.Power, fmt.Errorf("not %s after start (power state %d, %s, exit code %d)",
			wantName, st.Power, st.Description, st.ExitCode)
	}
	return st.Power, nil
}
