package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/protocol"
)

// Event names recorded as instance-action events (Nova's names, which
// clients and Tempest look for).
const (
	EventBuild     = "compute__do_build_and_run_instance"
	EventStart     = "compute_start_instance"
	EventStop      = "compute_stop_instance"
	EventReboot    = "compute_reboot_instance"
	EventPause     = "compute_pause_instance"
	EventUnpause   = "compute_unpause_instance"
	EventSuspend   = "compute_suspend_instance"
	EventResume    = "compute_resume_instance"
	EventTerminate = "compute_terminate_instance"
	// Nova's shelve events: the shelve itself (stop, commit, push), the
	// offload, and the unshelve (start, or spawn from the shelve image).
	EventShelve        = "compute_shelve_instance"
	EventShelveOffload = "compute_shelve_offload_instance"
	EventUnshelve      = "compute_unshelve_instance"
	// EventEvacuate: the rebuild of an evacuated server on its new host
	// (Nova records an evacuation's rebuild under this name).
	EventEvacuate = "compute_rebuild_instance"
)

// Labels the agent puts on every server it creates, on top of the ones the
// driver sets itself.
const (
	LabelProject = "capsule.project"
	LabelHost    = "capsule.host"
	LabelName    = "capsule.name"
)

// ActionEvent returns the instance-action event name of action.
func ActionEvent(action lifecycle.Action) string {
	switch action {
	case lifecycle.ActCreate:
		return EventBuild
	case lifecycle.ActStart:
		return EventStart
	case lifecycle.ActStop:
		return EventStop
	case lifecycle.ActReboot, lifecycle.ActRebootHard:
		return EventReboot
	case lifecycle.ActPause:
		return EventPause
	case lifecycle.ActUnpause:
		return EventUnpause
	case lifecycle.ActSuspend:
		return EventSuspend
	case lifecycle.ActResume:
		return EventResume
	case lifecycle.ActDelete:
		return EventTerminate
	case lifecycle.ActResize:
		return EventResize
	case lifecycle.ActRevertResize:
		return EventRevertResize
	case lifecycle.ActShelve:
		return EventShelve
	case lifecycle.ActShelveOffload:
		return EventShelveOffload
	case lifecycle.ActUnshelve:
		return EventUnshelve
	case lifecycle.ActEvacuate:
		return EventEvacuate
	}
	return "compute_" + string(action) + "_instance"
}

// Handle serves one message of the compute queue. It is the bus handler
// Run installs, exported so a caller with its own consumer can reuse it.
// A malformed message is dropped (plain error); a report that could not
// be published asks for a redelivery (bus.Retry), which is safe because
// every operation is idempotent.
func (a *Agent) Handle(ctx context.Context, m bus.Message) (any, error) {
	if isVolumeKind(m.Kind) {
		return a.handleVolume(ctx, m)
	}
	switch m.Kind {
	case protocol.KindBuildInstance:
		var req protocol.BuildInstance
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, a.handleBuild(ctx, req, m.Redelivered)
	case protocol.KindInstanceAction:
		var req protocol.InstanceAction
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, a.handleAction(ctx, req)
	case protocol.KindSetAdminPassword:
		var req protocol.SetAdminPassword
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return struct{}{}, a.setAdminPassword(ctx, req)
	case protocol.KindConsoleOutput:
		var req protocol.ConsoleOutputRequest
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.consoleOutput(ctx, req)
	case protocol.KindConsoleAttach:
		var req protocol.ConsoleAttach
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.consoleAttach(ctx, req)
	case protocol.KindDiagnostics:
		var req protocol.DiagnosticsRequest
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.diagnostics(ctx, req)
	case protocol.KindAttachInterface:
		var req protocol.AttachInterface
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.attachInterface(ctx, req)
	case protocol.KindRefreshFirewall:
		var req protocol.RefreshFirewall
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, a.refreshFirewall(ctx, req)
	case protocol.KindDetachInterface:
		var req protocol.DetachInterface
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.detachInterface(ctx, req)
	case protocol.KindResizeInstance, protocol.KindRevertResize:
		var req protocol.ResizeInstance
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, a.handleResize(ctx, req, m.Kind == protocol.KindRevertResize)
	case protocol.KindConfirmResize:
		var req protocol.ResizeInstance
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, a.handleConfirmResize(ctx, req)
	case protocol.KindRebuildInstance:
		var req protocol.RebuildInstance
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, a.handleRebuild(ctx, req)
	case protocol.KindSnapshotInstance:
		var req protocol.SnapshotInstance
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return nil, a.handleSnapshot(ctx, req)
	case protocol.KindMigrationExport, protocol.KindMigrationImport,
		protocol.KindMigrationCleanup, protocol.KindMigrationRestore, protocol.KindMigrationPrecopy, protocol.KindMigrationPrepull:
		var w protocol.MigrationWork
		if err := m.Decode(&w); err != nil {
			return nil, err
		}
		return nil, a.handleMigration(ctx, m.Kind, w)
	}
	return nil, fmt.Errorf("agent: unknown message kind %q (id %s)", m.Kind, m.ID)
}

func (a *Agent) handleBuild(ctx context.Context, req protocol.BuildInstance, redelivered bool) error {
	id := req.Spec.ID
	if id == "" {
		return fmt.Errorf("agent: build request %s without an instance id", req.RequestID)
	}
	log := a.log.With("instance", id, "request_id", req.RequestID, "attempt", req.Attempt)
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()

	rep := protocol.InstanceReport{
		RequestID: req.RequestID, InstanceID: id, Host: a.cfg.Host,
		Action: lifecycle.ActCreate, Attempt: req.Attempt, Event: EventBuild,
		Started: a.now().UTC(),
	}
	switch {
	case req.Unshelve:
		rep.Action, rep.Event = lifecycle.ActUnshelve, EventUnshelve
	case req.Evacuate:
		rep.Action, rep.Event = lifecycle.ActEvacuate, EventEvacuate
	}
	log.Info("building instance", "image", req.Spec.ImageRef, "redelivered", redelivered, "unshelve", req.Unshelve,
		"evacuate", req.Evacuate)
	// An unshelve pulls the server's local volumes first (their data is
	// in the registry while it is offloaded).
	var power drivers.PowerState
	pulled, err := a.pullShelvedVolumes(ctx, req.Spec, req.VolumeRefs)
	if err == nil {
		power, err = a.build(ctx, req.Spec)
	}
	if err == nil && req.Stopped {
		// An evacuated server that was stopped (or asked to end
		// stopped, Nova's 2.95) is left stopped, as its rebuild would.
		if err = a.stop(ctx, id); err == nil {
			power = a.powerOf(ctx, id)
		}
	}
	if err != nil {
		log.Error("build failed", "err", err)
		rep.Error, rep.ErrorMessage, rep.ErrorKind = err.Error(), errdefs.Message(err), string(errdefs.KindOf(err))
		// A build refused because the instance was deleted must not
		// destroy anything: there is nothing of ours left.
		if !errors.Is(err, errDeleted) {
			if derr := a.destroy(ctx, id); derr != nil {
				log.Error("cleanup after failed build failed: the container may leak until reconcile", "err", derr)
				rep.Error += "; cleanup failed: " + derr.Error()
			} else {
				a.dropEphemeral(ctx, id) // a reschedule's next host makes them anew
			}
		}
		if derr := a.dropPulledVolumes(ctx, id, pulled); derr != nil {
			log.Error("could not delete the volume copies a failed unshelve pulled", "err", derr)
			rep.Error += "; cleanup failed: " + derr.Error()
		}
	} else {
		rep.OK = true
		log.Info("instance built", "power_state", power)
	}
	rep.PowerState = int(power)
	rep.Finished = a.now().UTC()
	return a.report(ctx, rep)
}

// errDeleted refuses a build whose instance was deleted meanwhile.
var errDeleted = errors.New("instance was deleted on this host")

// build creates the server, plumbs its NICs into its sandbox, then starts
// it, and returns its power state. The workload never runs without its
// network: a plumbing failure fails the build before the start.
func (a *Agent) build(ctx context.Context, s protocol.InstanceSpec) (drivers.PowerState, error) {
	if a.deleted.has(s.ID, a.now()) {
		return drivers.PowerNoState, fmt.Errorf("build %s: %w", s.ID, errDeleted)
	}
	ctx, cancel := context.WithTimeout(ctx, a.buildTimeout)
	defer cancel()
	// Where the driver can make the namespace first, it is plumbed while
	// the container is created (a failed build's destroy unplugs it).
	early, plugged := a.plugEarly(ctx, s)
	err := a.create(ctx, s, true)
	if early != "" {
		if perr := <-plugged; perr != nil && err == nil {
			err = fmt.Errorf("plug NICs of instance %s into %s: %w", s.ID, early, perr)
		}
	}
	if err != nil {
		return drivers.PowerNoState, err
	}
	// The adminPass goes into the new disk while the NICs are plumbed
	// (unless the driver's create put it there); the server starts once
	// both are done.
	var pw chan struct{}
	if s.AdminPassHash != "" && !a.drv.Capabilities().PasswordAtCreate {
		pw = make(chan struct{})
		go func() {
			defer close(pw)
			a.setBuildPassword(ctx, s)
		}()
	}
	if early != "" {
		// Plugged already, unless the container is not in that
		// namespace (one a replayed build found, of another mode).
		if p, err := a.drv.Sandbox(ctx, s.ID); err == nil && p == early {
			return a.bringUpWhen(ctx, s.ID, nil, pw)
		}
	}
	return a.bringUpWhen(ctx, s.ID, s.NICs, pw)
}

// plugEarly starts plugging s's NICs into a namespace the driver makes
// before the container (drivers.NetnsPreparer); it returns the
// namespace's path ("" when it did not) and where the plug's outcome
// comes.
func (a *Agent) plugEarly(ctx context.Context, s protocol.InstanceSpec) (string, <-chan error) {
	np, ok := a.drv.(drivers.NetnsPreparer)
	if !ok || len(s.NICs) == 0 || a.plumber == nil || !a.drv.Capabilities().Networking {
		return "", nil
	}
	path, err := np.PrepareNetns(ctx, s.ID)
	if err != nil || path == "" {
		if err != nil {
			a.log.Warn("build: network namespace not made ahead of the container; plugging after it", "instance", s.ID, "err", err)
		}
		return "", nil
	}
	// Known before anything is plugged (as create does).
	a.nics.set(s.ID, s.NICs)
	done := make(chan error, 1)
	go func() { done <- a.plumber.Plug(ctx, s.ID, path, s.NICs) }()
	return path, done
}

// create records s's NICs and creates the server (not started) with its
// flavor's limits: builds and migration imports. firstBoot: the server's
// disk is new (a build), so it gets its first-boot files (firstBootFiles);
// an import's disk has them as the server left them.
func (a *Agent) create(ctx context.Context, s protocol.InstanceSpec, firstBoot bool) error {
	// Known before anything is plugged, so reconcile's orphan removal
	// never takes this build's ports for leftovers.
	a.nics.set(s.ID, s.NICs)
	a.volc.set(s.ID, s.Volumes)
	if len(s.NICs) > 0 {
		// Refuse before creating anything we could not plumb.
		if a.plumber == nil {
			return fmt.Errorf("build %s with %d NICs: %w", s.ID, len(s.NICs), errNoPlumber)
		}
		if !a.drv.Capabilities().Networking {
			return fmt.Errorf("build %s with %d NICs: driver %s has no sandbox networking: %w",
				s.ID, len(s.NICs), a.drv.Name(), drivers.ErrNotSupported)
		}
	}
	spec, err := a.driverSpec(s)
	if err != nil {
		return err
	}
	if firstBoot {
		if err := a.buildVolumes(ctx, s); err != nil {
			return err
		}
	}
	if spec.RootVolume, err = a.rootVolume(ctx, s.ID, s.Volumes); err != nil {
		return err
	}
	if firstBoot {
		// A build plumbs and starts right after: the sandbox may start
		// while the workload is created.
		spec.StartSandbox = spec.Networked
		spec.AdminPassHash = a.buildPassword(s)
		if spec.Files, err = a.firstBootFiles(ctx, s); err != nil {
			return fmt.Errorf("build %s: %w", s.ID, err)
		}
	}
	if err := a.drv.Create(ctx, spec); err != nil {
		return fmt.Errorf("create instance %s: %w", s.ID, err)
	}
	return nil
}

// driverSpec turns the control plane's spec into the driver's: the
// flavor's limits parsed, the host's pid cap applied, the agent's labels.
func (a *Agent) driverSpec(s protocol.InstanceSpec) (drivers.Spec, error) {
	// The API validated the extra specs when they were set; a flavor
	// older than that validation may still carry bad ones, and a server
	// must not run without a limit its flavor promises.
	lim, err := limits.Parse(s.ExtraSpecs, s.VCPUs)
	if err != nil {
		return drivers.Spec{}, fmt.Errorf("build %s: flavor extra specs: %w", s.ID, err)
	}
	pids := a.cfg.PidsLimit
	if lim.PidsMax > 0 {
		pids = lim.PidsMax // capsule:pids_max overrides the host's default
	}
	spec := drivers.Spec{
		ID: s.ID, Name: s.Name, Hostname: s.Hostname, Image: s.ImageRef,
		VCPUs: s.VCPUs, MemoryMB: s.MemoryMB, DiskGB: s.DiskGB,
		PidsLimit:  pids,
		Limits:     lim,
		ExtraSpecs: s.ExtraSpecs, Metadata: s.Metadata,
		Labels: map[string]string{
			LabelProject: s.ProjectID,
			LabelHost:    a.cfg.Host,
			LabelName:    s.Name,
		},
		DNS:            dnsOf(s.NICs),
		Networked:      len(s.NICs) > 0,
		AuthorizedKeys: s.AuthorizedKeys,
	}
	if spec.Hostname == "" {
		spec.Hostname = s.Name
	}
	if h := a.userDataHostname(s); h != "" {
		spec.Hostname = h
	}
	spec.Hostname = kernelHostname(spec.Hostname)
	return spec, nil
}

// bringUp plumbs nics of created server id, then starts it, and returns
// its power state: running, or an error.
func (a *Agent) bringUp(ctx context.Context, id string, nics []protocol.NIC) (drivers.PowerState, error) {
	return a.bringUpWhen(ctx, id, nics, nil)
}

// bringUpWhen is bringUp that also waits, before the start, for ready to
// be closed (nil: nothing to wait for), also when the plumbing fails.
func (a *Agent) bringUpWhen(ctx context.Context, id string, nics []protocol.NIC, ready <-chan struct{}) (drivers.PowerState, error) {
	err := a.plumb(ctx, id, nics)
	if ready != nil {
		<-ready
	}
	if err != nil {
		return drivers.PowerNoState, err
	}
	// A volume-backed server binds its boot volume's directories: the
	// host mount must be there (a migration's export or a past reconcile
	// may have taken it down before a restore brings the server back).
	if err := a.beforeStart(ctx, id); err != nil {
		return drivers.PowerNoState, err
	}
	if err := a.drv.Start(ctx, id); err != nil {
		return drivers.PowerNoState, fmt.Errorf("start instance %s: %w", id, err)
	}
	a.afterStart(ctx, id)
	st, err := a.drv.Status(ctx, id)
	if err != nil {
		return drivers.PowerNoState, fmt.Errorf("status of instance %s after start: %w", id, err)
	}
	if st.Power != drivers.PowerRunning {
		return st.Power, fmt.Errorf("instance %s is not running after start (power state %d, %s, exit code %d)",
			id, st.Power, st.Description, st.ExitCode)
	}
	return st.Power, nil
}

// destroy removes an instance and its network plumbing, and forgets its
// NICs; it keeps going when the caller's context ended so a failed build
// never leaks its container or ports. The unplug (OVS port, flows, host
// veth) runs while the container is removed: neither needs the other,
// and a server being deleted may lose its network first (at ten deletes
// in flight the unplug was a third of a delete's time, after the remove).
func (a *Agent) destroy(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.StopTimeout+time.Minute)
	defer cancel()
	unplugged := make(chan error, 1)
	go func() { unplugged <- a.unplug(ctx, id) }()
	err := a.drv.Destroy(ctx, id)
	uerr := <-unplugged
	if err != nil {
		return fmt.Errorf("destroy instance %s: %w", id, err)
	}
	if uerr != nil {
		return uerr
	}
	a.nics.del(id)
	a.releaseVolumes(ctx, id)
	return nil
}

func (a *Agent) handleAction(ctx context.Context, req protocol.InstanceAction) error {
	if req.InstanceID == "" {
		return fmt.Errorf("agent: %s request %s without an instance id", req.Action, req.RequestID)
	}
	return a.runReported(ctx, req.RequestID, req.InstanceID, req.Action, func(ctx context.Context) (drivers.PowerState, error) {
		if req.Action == lifecycle.ActRescue || req.Action == lifecycle.ActUnrescue {
			return a.runRescue(ctx, req)
		}
		if req.Action == lifecycle.ActShelveOffload {
			return a.offload(ctx, req)
		}
		return a.runAction(ctx, req.InstanceID, req.Action)
	})
}

// runReported runs one operation on instance id under the instance's
// lock and reports its outcome (with the power state the instance is in
// afterwards, also on failure) to the conductor.
func (a *Agent) runReported(ctx context.Context, requestID, id string, action lifecycle.Action,
	run func(context.Context) (drivers.PowerState, error)) error {
	log := a.log.With("instance", id, "request_id", requestID, "action", action)
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()

	rep := protocol.InstanceReport{
		RequestID: requestID, InstanceID: id, Host: a.cfg.Host,
		Action: action, Event: ActionEvent(action), Started: a.now().UTC(),
	}
	power, err := run(ctx)
	rep.PowerState = int(power)
	if err != nil {
		log.Error("action failed", "err", err, "power_state", power)
		rep.Error, rep.ErrorMessage, rep.ErrorKind = err.Error(), errdefs.Message(err), string(errdefs.KindOf(err))
	} else {
		rep.OK = true
		log.Info("action done", "power_state", power)
	}
	rep.Finished = a.now().UTC()
	return a.report(ctx, rep)
}

// runAction runs one lifecycle action and returns the power state the
// instance is in afterwards (also on failure, so the conductor can put
// the instance back in the state it really is in).
func (a *Agent) runAction(ctx context.Context, id string, action lifecycle.Action) (drivers.PowerState, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StopTimeout+2*time.Minute)
	defer cancel()

	if action == lifecycle.ActDelete {
		// Destroy of a missing instance succeeds: a delete is done when
		// nothing is left, however it got there. Ports left behind fail
		// the delete (a retried delete finishes the job).
		if err := a.destroy(ctx, id); err != nil {
			return a.powerOf(ctx, id), fmt.Errorf("delete instance %s: %w", id, err)
		}
		a.dropEphemeral(ctx, id)
		a.deleted.add(id, a.now())
		return drivers.PowerNoState, nil
	}
	if action == lifecycle.ActShelveOffload {
		// The shelve image holds the server; its container, sandbox and
		// ports go (a missing container is already offloaded). Unlike a
		// delete, a later unshelve may build it here again.
		if err := a.destroy(ctx, id); err != nil {
			return a.powerOf(ctx, id), fmt.Errorf("offload instance %s: %w", id, err)
		}
		return drivers.PowerNoState, nil
	}

	var op func() error
	caps := a.drv.Capabilities()
	switch action {
	case lifecycle.ActStart, lifecycle.ActUnshelve:
		// Unshelving a server still on its host starts it (Nova's).
		op = func() error { return a.start(ctx, id) }
	case lifecycle.ActStop:
		op = func() error { return a.stop(ctx, id) }
	case lifecycle.ActReboot, lifecycle.ActRebootHard:
		hard := action == lifecycle.ActRebootHard
		op = func() error {
			if err := a.plumbFor(ctx, id); err != nil {
				return err
			}
			if err := a.drv.Reboot(ctx, id, hard); err != nil {
				return err
			}
			// A new workload process: a new mount namespace.
			a.afterStart(ctx, id)
			// Normally a no-op: the workload rejoined the namespace
			// plumbed above. It repairs the case of a sandbox that had
			// been restarted under the running workload, whose reboot
			// moved it to the sandbox's new namespace.
			return a.plumbFor(ctx, id)
		}
	case lifecycle.ActPause, lifecycle.ActUnpause, lifecycle.ActSuspend, lifecycle.ActResume:
		if !caps.Pause {
			return a.powerOf(ctx, id), fmt.Errorf("%s instance %s: driver %s: %w", action, id, a.drv.Name(), drivers.ErrNotSupported)
		}
		// Suspend is pause under Nova's other name: the cgroup freezer
		// keeps the processes and their memory, nothing goes to disk.
		// The conductor records it as suspended.
		if action == lifecycle.ActPause || action == lifecycle.ActSuspend {
			op = func() error { return a.drv.Pause(ctx, id) }
		} else {
			op = func() error { return a.drv.Unpause(ctx, id) }
		}
	default:
		return a.powerOf(ctx, id), fmt.Errorf("agent: unknown action %q for instance %s", action, id)
	}

	if _, err := a.drv.Status(ctx, id); err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return drivers.PowerNoState, errdefs.Wrap(fmt.Errorf("%s instance %s: no such instance on host %s (its container is missing): %w",
				action, id, a.cfg.Host, err), errdefs.ErrNotFound, "the server's container is missing on its host")
		}
		return drivers.PowerNoState, fmt.Errorf("%s instance %s: status: %w", action, id, err)
	}
	if err := op(); err != nil {
		return a.powerOf(ctx, id), fmt.Errorf("%s instance %s: %w", action, id, err)
	}
	st, err := a.drv.Status(ctx, id)
	if err != nil {
		return drivers.PowerNoState, fmt.Errorf("status of instance %s after %s: %w", id, action, err)
	}
	return st.Power, nil
}

// start starts instance id. The sandbox of a stopped server (or one a
// dockerd or host restart took down) comes back in a new namespace: it is
// plumbed before the workload joins it.
func (a *Agent) start(ctx context.Context, id string) error {
	if err := a.plumbFor(ctx, id); err != nil {
		return err
	}
	if err := a.beforeStart(ctx, id); err != nil {
		return err
	}
	if err := a.drv.Start(ctx, id); err != nil {
		return err
	}
	a.afterStart(ctx, id)
	return nil
}

// stop stops instance id (its grace: the agent's stop timeout).
func (a *Agent) stop(ctx context.Context, id string) error {
	if err := a.drv.Stop(ctx, id, a.cfg.StopTimeout); err != nil {
		return err
	}
	// The sandbox stopped with the workload, its namespace and veths are
	// gone; remove the ports too. The server is stopped either way, so a
	// failure is for reconcile to retry, not the user's problem.
	if err := a.unplug(ctx, id); err != nil {
		a.log.Error("stop: could not unplug the stopped instance; reconcile retries", "instance", id, "err", err)
	}
	return nil
}

// plumbFor plumbs instance id's NICs, looking them up first.
func (a *Agent) plumbFor(ctx context.Context, id string) error {
	nics, err := a.nicsOf(ctx, id)
	if err != nil {
		return err
	}
	return a.plumb(ctx, id, nics)
}

// powerOf returns id's power state, PowerNoState when it cannot be read.
func (a *Agent) powerOf(ctx context.Context, id string) drivers.PowerState {
	st, err := a.drv.Status(context.WithoutCancel(ctx), id)
	if err != nil {
		return drivers.PowerNoState
	}
	return st.Power
}

func (a *Agent) consoleOutput(ctx context.Context, req protocol.ConsoleOutputRequest) (protocol.ConsoleOutputReply, error) {
	if !a.drv.Capabilities().ConsoleOutput {
		return protocol.ConsoleOutputReply{}, fmt.Errorf("console output of instance %s: driver %s: %w",
			req.InstanceID, a.drv.Name(), drivers.ErrNotSupported)
	}
	// No instance lock: reading the log must not wait behind a build's
	// image pull, and the driver reads it atomically.
	ctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	out, err := a.drv.ConsoleOutput(ctx, req.InstanceID, req.Lines)
	if err != nil {
		return protocol.ConsoleOutputReply{}, fmt.Errorf("console output of instance %s on host %s: %w",
			req.InstanceID, a.cfg.Host, err)
	}
	return protocol.ConsoleOutputReply{Output: out}, nil
}

// report publishes an instance report to the conductor, retrying a few
// times in place (a redelivery would re-run the operation, e.g. reboot
// twice) before asking the bus to redeliver.
func (a *Agent) report(ctx context.Context, rep protocol.InstanceReport) error {
	return a.publish(ctx, protocol.KindInstanceReport, rep)
}

func (a *Agent) publish(ctx context.Context, kind string, body any) error {
	m, err := bus.NewMessage(kind, body)
	if err != nil {
		return err // cannot happen with our bodies; retrying would not help
	}
	delay := 200 * time.Millisecond
	for try := 1; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, a.callTimeout)
		err = a.bus.Publish(pctx, bus.ConductorQueue, m)
		cancel()
		if err == nil {
			return nil
		}
		if try == 3 || ctx.Err() != nil {
			return bus.Retry(fmt.Errorf("agent: publish %s to %s: %w", kind, bus.ConductorQueue, err))
		}
		a.log.Warn("publish failed; retrying", "kind", kind, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		delay *= 2
	}
}
