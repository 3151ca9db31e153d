package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/volume"
)

// Persistent volumes on this host (protocol/volumes.go): the agent runs
// the control plane's volume work through package volume and keeps every
// server's attached volumes mounted in it. A server's mount namespace
// dies with its workload (a stop, a reboot, a host boot, a dockerd
// restart), so the volumes are mounted again right after every start
// (afterStart) and reconcile re-mounts what is missing and removes mounts
// of volumes no longer attached.

// WithVolumes gives the agent its host's volumes and the registry local
// volumes move through; without it volume work is refused (NotSupported).
func WithVolumes(m *volume.Manager, reg *registry.Client) Option {
	return func(a *Agent) { a.vols, a.reg = m, reg }
}

// volCache is what the agent knows of each server's attached volumes
// (like nicCache): builds and attaches fill it, reconciles refresh it
// from the conductor unless an attach or detach changed it since.
type volCache struct {
	mu  sync.Mutex
	m   map[string][]protocol.VolumeMount
	gen map[string]uint64
	// busy counts the volume work in flight per volume: reconcile leaves
	// those volumes' mounts alone.
	busy map[string]int
}

func newVolCache() *volCache {
	return &volCache{m: map[string][]protocol.VolumeMount{}, gen: map[string]uint64{}, busy: map[string]int{}}
}

func (c *volCache) get(id string) ([]protocol.VolumeMount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[id]
	return slices.Clone(v), ok
}

func (c *volCache) set(id string, v []protocol.VolumeMount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[id] = slices.Clone(v)
	c.gen[id]++
}

func (c *volCache) del(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
	c.gen[id]++
}

// change applies f to id's list (an attach or detach).
func (c *volCache) change(id string, f func([]protocol.VolumeMount) []protocol.VolumeMount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[id] = f(slices.Clone(c.m[id]))
	c.gen[id]++
}

func (c *volCache) generations() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := make(map[string]uint64, len(c.gen))
	for k, v := range c.gen {
		g[k] = v
	}
	return g
}

// refreshSince records the conductor's list unless id's changed since
// gens were taken.
func (c *volCache) refreshSince(gens map[string]uint64, id string, v []protocol.VolumeMount) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[id] != gens[id] {
		return false
	}
	c.m[id] = slices.Clone(v)
	return true
}

// enter marks volume work on vol in flight; the returned func ends it.
func (c *volCache) enter(vol string) func() {
	c.mu.Lock()
	c.busy[vol]++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		if c.busy[vol]--; c.busy[vol] <= 0 {
			delete(c.busy, vol)
		}
		c.mu.Unlock()
	}
}

func (c *volCache) isBusy(vol string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.busy[vol] > 0
}

// inUse is the set of volumes some server of this host has attached.
func (c *volCache) inUse() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for _, ms := range c.m {
		for _, m := range ms {
			out[m.Volume.ID] = true
		}
	}
	return out
}

// backendOf maps the protocol's backend to the volume package's.
func backendOf(v protocol.VolumeSpec) volume.Backend {
	if v.Backend == protocol.BackendShared {
		return volume.Shared
	}
	return volume.Local
}

// errNoVolumes refuses volume work on a host without volumes.
var errNoVolumes = errdefs.NotSupported("this host does not keep volumes")

// volumeWork runs one piece of volume work and answers with its report
// (the reply of a Call), also published to the conductor.
func (a *Agent) volumeWork(ctx context.Context, kind string, rep protocol.VolumeReport, deadline time.Time,
	run func(ctx context.Context, rep *protocol.VolumeReport) error) (protocol.VolumeReport, error) {
	rep.Kind, rep.Host, rep.Started = kind, a.cfg.Host, a.now().UTC()
	log := a.log.With("volume", rep.VolumeID, "kind", kind, "request_id", rep.RequestID)
	var err error
	switch {
	case a.vols == nil:
		err = errNoVolumes
	case !deadline.IsZero() && a.now().After(deadline):
		err = errdefs.Unavailablef("volume work %s arrived after its deadline %s", kind, deadline.UTC().Format(time.RFC3339))
	default:
		done := a.volc.enter(rep.VolumeID)
		err = run(ctx, &rep)
		done()
	}
	rep.Finished = a.now().UTC()
	if err != nil {
		log.Error("volume work failed", "err", err)
		rep.OK, rep.Error, rep.ErrorMessage, rep.ErrorKind = false, err.Error(), errdefs.Message(err), string(errdefs.KindOf(err))
	} else {
		rep.OK = true
		log.Info("volume work done", "instance", rep.InstanceID, "live", rep.Live)
	}
	if perr := a.publish(ctx, protocol.KindVolumeReport, rep); perr != nil {
		return rep, perr
	}
	return rep, nil
}

// handleVolume serves the volume kinds of the compute queue.
func (a *Agent) handleVolume(ctx context.Context, m bus.Message) (any, error) {
	switch m.Kind {
	case protocol.KindVolumeCreate:
		var req protocol.VolumeCreate
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.volumeWork(ctx, m.Kind, protocol.VolumeReport{RequestID: req.RequestID, VolumeID: req.Volume.ID}, req.Deadline,
			func(ctx context.Context, rep *protocol.VolumeReport) error { return a.volumeCreate(ctx, req, rep) })
	case protocol.KindVolumeDelete:
		var req protocol.VolumeDelete
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.volumeWork(ctx, m.Kind, protocol.VolumeReport{RequestID: req.RequestID, VolumeID: req.Volume.ID}, time.Time{},
			func(ctx context.Context, rep *protocol.VolumeReport) error {
				if err := a.vols.Unmount(ctx, req.Volume.ID); err != nil {
					return err
				}
				return a.vols.Delete(ctx, backendOf(req.Volume), req.Volume.ID)
			})
	case protocol.KindVolumeExtend:
		var req protocol.VolumeExtend
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.volumeWork(ctx, m.Kind, protocol.VolumeReport{RequestID: req.RequestID, VolumeID: req.Volume.ID, InstanceID: req.InstanceID}, time.Time{},
			func(ctx context.Context, rep *protocol.VolumeReport) error {
				err := a.vols.Extend(ctx, backendOf(req.Volume), req.Volume.ID, req.Volume.SizeGB)
				if gb, serr := a.vols.SizeGB(backendOf(req.Volume), req.Volume.ID); serr == nil {
					rep.SizeGB = gb
				}
				return err
			})
	case protocol.KindVolumeAttach:
		var req protocol.VolumeAttach
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.volumeWork(ctx, m.Kind, protocol.VolumeReport{RequestID: req.RequestID, VolumeID: req.Mount.Volume.ID,
			AttachmentID: req.Mount.AttachmentID, InstanceID: req.InstanceID}, req.Deadline,
			func(ctx context.Context, rep *protocol.VolumeReport) error { return a.volumeAttach(ctx, req, rep) })
	case protocol.KindVolumeDetach:
		var req protocol.VolumeDetach
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.volumeWork(ctx, m.Kind, protocol.VolumeReport{RequestID: req.RequestID, VolumeID: req.Mount.Volume.ID,
			AttachmentID: req.Mount.AttachmentID, InstanceID: req.InstanceID}, req.Deadline,
			func(ctx context.Context, rep *protocol.VolumeReport) error { return a.volumeDetach(ctx, req, rep) })
	case protocol.KindSnapshotCreate, protocol.KindSnapshotDelete:
		var req protocol.SnapshotCreate // SnapshotDelete has the same fields
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.volumeWork(ctx, m.Kind, protocol.VolumeReport{RequestID: req.RequestID, VolumeID: req.Volume.ID, SnapshotID: req.SnapshotID}, time.Time{},
			func(ctx context.Context, rep *protocol.VolumeReport) error {
				b := backendOf(req.Volume)
				if m.Kind == protocol.KindSnapshotDelete {
					return a.vols.DeleteSnapshot(ctx, b, req.SnapshotID)
				}
				if err := a.vols.Snapshot(ctx, b, req.Volume.ID, req.SnapshotID); err != nil {
					return err
				}
				rep.Bytes, _ = a.vols.UsedBytes(b, req.SnapshotID, true)
				return nil
			})
	case protocol.KindVolumeExport, protocol.KindVolumeImport:
		var req protocol.VolumeTransfer
		if err := m.Decode(&req); err != nil {
			return nil, err
		}
		return a.volumeWork(ctx, m.Kind, protocol.VolumeReport{RequestID: req.RequestID, VolumeID: req.Volume.ID, Ref: req.Ref}, req.Deadline,
			func(ctx context.Context, rep *protocol.VolumeReport) error {
				if a.reg == nil {
					return errdefs.FailedPrecondition("this agent has no registry to move volumes through")
				}
				b := backendOf(req.Volume)
				var err error
				if m.Kind == protocol.KindVolumeExport {
					if a.volc.inUse()[req.Volume.ID] {
						return errdefs.Conflictf("volume %s is still attached to a server of this host", req.Volume.ID)
					}
					rep.Bytes, err = a.vols.Export(ctx, b, req.Volume.ID, a.reg, req.Ref)
					return err
				}
				rep.Bytes, err = a.vols.Import(ctx, b, req.Volume.ID, req.Volume.SizeGB, a.reg, req.Ref)
				if err == nil {
					rep.SizeGB, _ = a.vols.SizeGB(b, req.Volume.ID)
				}
				return err
			})
	}
	return nil, fmt.Errorf("agent: unknown volume message kind %q", m.Kind)
}

// isVolumeKind reports whether kind is volume work for this agent.
func isVolumeKind(kind string) bool {
	switch kind {
	case protocol.KindVolumeCreate, protocol.KindVolumeDelete, protocol.KindVolumeExtend,
		protocol.KindVolumeAttach, protocol.KindVolumeDetach, protocol.KindSnapshotCreate,
		protocol.KindSnapshotDelete, protocol.KindVolumeExport, protocol.KindVolumeImport:
		return true
	}
	return false
}

func (a *Agent) volumeCreate(ctx context.Context, req protocol.VolumeCreate, rep *protocol.VolumeReport) error {
	src := volume.Source{Snapshot: req.SnapshotID}
	b := backendOf(req.Volume)
	if req.ImageRef != "" {
		if ok, err := a.vols.Exists(b, req.Volume.ID); err != nil {
			return err
		} else if !ok {
			ex, isEx := a.drv.(drivers.ImageExporter)
			if !isEx {
				return fmt.Errorf("volume %s from image %s: driver %s: %w", req.Volume.ID, req.ImageRef, a.drv.Name(), drivers.ErrNotSupported)
			}
			rc, err := ex.ExportImage(ctx, req.ImageRef)
			if err != nil {
				return fmt.Errorf("volume %s from image %s: %w", req.Volume.ID, req.ImageRef, err)
			}
			defer rc.Close()
			src.Tar = rc
		}
	}
	if err := a.vols.Create(ctx, b, req.Volume.ID, req.Volume.SizeGB, src); err != nil {
		return err
	}
	rep.SizeGB, _ = a.vols.SizeGB(b, req.Volume.ID)
	return nil
}

// volumeAttach records the attachment and mounts the volume into the
// server when it runs (live: same PID 1); a stopped server gets it at its
// next start. The volume is mounted on the host either way, so a volume
// whose data is not here fails now rather than at the next start.
func (a *Agent) volumeAttach(ctx context.Context, req protocol.VolumeAttach, rep *protocol.VolumeReport) error {
	id, vm := req.InstanceID, req.Mount
	if err := volume.CheckTarget(vm.MountPath); err != nil {
		return err
	}
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()
	if _, err := a.vols.Mount(ctx, backendOf(vm.Volume), vm.Volume.ID); err != nil {
		return err
	}
	a.volc.change(id, func(ms []protocol.VolumeMount) []protocol.VolumeMount {
		ms = slices.DeleteFunc(ms, func(m protocol.VolumeMount) bool { return m.Volume.ID == vm.Volume.ID })
		return append(ms, vm)
	})
	pid, running, err := a.initPID(ctx, id)
	if err != nil {
		return err
	}
	if !running {
		return nil
	}
	if err := a.vols.Attach(ctx, backendOf(vm.Volume), vm.Volume.ID, pid, vm.MountPath); err != nil {
		return err
	}
	rep.Live = true
	return nil
}

// volumeDetach unmounts the volume from the server (refused while busy
// unless Force), then from the host, and forgets the attachment.
func (a *Agent) volumeDetach(ctx context.Context, req protocol.VolumeDetach, rep *protocol.VolumeReport) error {
	id, vm := req.InstanceID, req.Mount
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()
	pid, running, err := a.initPID(ctx, id)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if running && volume.CheckTarget(vm.MountPath) == nil {
		err := a.vols.Detach(ctx, vm.Volume.ID, pid, vm.MountPath)
		if err != nil && !(req.Force && errdefs.IsConflict(err)) {
			return err
		}
		if err != nil {
			// The server is going away: its mount namespace goes
			// with it, and the host mount below lets go of the device
			// once it has.
			a.log.Warn("forced detach of a busy volume: it leaves with the server's processes", "volume", vm.Volume.ID, "instance", id)
		}
		rep.Live = true
	}
	a.volc.change(id, func(ms []protocol.VolumeMount) []protocol.VolumeMount {
		return slices.DeleteFunc(ms, func(m protocol.VolumeMount) bool { return m.Volume.ID == vm.Volume.ID })
	})
	return a.vols.Unmount(ctx, vm.Volume.ID)
}

// initPID is the host PID of server id's init and whether it runs; a
// driver without volume support refuses.
func (a *Agent) initPID(ctx context.Context, id string) (int, bool, error) {
	vh, ok := a.drv.(drivers.VolumeHost)
	if !ok {
		return 0, false, fmt.Errorf("volumes of instance %s: driver %s: %w", id, a.drv.Name(), drivers.ErrNotSupported)
	}
	pid, err := vh.InitPID(ctx, id)
	if errors.Is(err, drivers.ErrInvalidState) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return pid, true, nil
}

// volumesOf is server id's attached volumes, asking the conductor when
// this agent does not know them (it restarted).
func (a *Agent) volumesOf(ctx context.Context, id string) []protocol.VolumeMount {
	if ms, ok := a.volc.get(id); ok {
		return ms
	}
	gens := a.volc.generations()
	expected, err := a.instancesOnHost(ctx)
	if err != nil {
		a.log.Warn("could not ask the conductor for the volumes of an instance; reconcile mounts them", "instance", id, "err", err)
		return nil
	}
	for _, e := range expected {
		a.volc.refreshSince(gens, e.Spec.ID, e.Spec.Volumes)
	}
	ms, _ := a.volc.get(id)
	return ms
}

// afterStart mounts server id's attached volumes into its new mount
// namespace, right after its workload started. A volume that cannot be
// mounted does not fail the start (the server runs, the volume is
// missing): it is logged and reconcile tries again.
func (a *Agent) afterStart(ctx context.Context, id string) {
	if a.vols == nil {
		return
	}
	ms := a.volumesOf(ctx, id)
	if len(ms) == 0 {
		return
	}
	pid, running, err := a.initPID(ctx, id)
	if err != nil || !running {
		if err != nil {
			a.log.Error("could not find the server's init to mount its volumes", "instance", id, "err", err)
		}
		return
	}
	for _, vm := range ms {
		if vm.Root() {
			continue // bound when the workload was created
		}
		if err := a.vols.Attach(ctx, backendOf(vm.Volume), vm.Volume.ID, pid, vm.MountPath); err != nil {
			a.log.Error("could not mount a volume into a started server; reconcile retries", "instance", id, "volume", vm.Volume.ID, "err", err)
		}
	}
}

// repairVolumes is reconcile's part for volumes: every running server
// without an operation in flight gets its missing volumes mounted and the
// mounts of volumes no longer attached to it removed; host mounts of
// volumes no server here has attached go. Volumes with work in flight
// are left alone.
func (a *Agent) repairVolumes(ctx context.Context, gens map[string]uint64, expected []protocol.ExpectedInstance, observed map[string]drivers.Status) {
	if a.vols == nil {
		return
	}
	fresh := map[string]bool{}
	for _, e := range expected {
		fresh[e.Spec.ID] = a.volc.refreshSince(gens, e.Spec.ID, e.Spec.Volumes)
	}
	for _, e := range expected {
		id := e.Spec.ID
		if st, ok := observed[id]; !ok || st.Power != drivers.PowerRunning || deleting(e) || !fresh[id] {
			continue
		}
		unlock, ok := a.locks.tryLock(id)
		if !ok {
			continue
		}
		a.repairServerVolumes(ctx, id)
		unlock()
	}
	// Host mounts of volumes no server here has attached: a detach lost
	// half-way, a server deleted behind the cloud's back.
	mounted, err := a.vols.HostMounted()
	if err != nil {
		a.log.Error("reconcile: could not list the volumes mounted on this host", "err", err)
		return
	}
	inUse := a.volc.inUse()
	for _, vol := range mounted {
		if inUse[vol] || a.volc.isBusy(vol) {
			continue
		}
		if err := a.vols.Unmount(ctx, vol); err != nil {
			a.log.Warn("reconcile: could not unmount a volume no server here has attached", "volume", vol, "err", err)
			continue
		}
		a.log.Info("reconcile: unmounted a volume no server here has attached", "volume", vol)
	}
}

// repairServerVolumes mounts server id's missing volumes and unmounts
// the ones it no longer has (id's lock held).
func (a *Agent) repairServerVolumes(ctx context.Context, id string) {
	ms, _ := a.volc.get(id)
	pid, running, err := a.initPID(ctx, id)
	if err != nil || !running {
		return
	}
	want := map[string]string{} // target -> volume
	root := ""                  // the boot volume: its directories are bound over the root
	for _, vm := range ms {
		if vm.Root() {
			root = vm.Volume.ID
			continue
		}
		want[vm.MountPath] = vm.Volume.ID
		if a.volc.isBusy(vm.Volume.ID) {
			continue
		}
		if ok, err := a.vols.AttachedIn(vm.Volume.ID, pid, vm.MountPath); err == nil && ok {
			continue
		}
		if err := a.vols.Attach(ctx, backendOf(vm.Volume), vm.Volume.ID, pid, vm.MountPath); err != nil {
			a.log.Error("reconcile: could not mount an attached volume into its server", "instance", id, "volume", vm.Volume.ID, "err", err)
			continue
		}
		a.log.Info("reconcile: mounted a missing volume into its server", "instance", id, "volume", vm.Volume.ID, "target", vm.MountPath)
	}
	// Mounts of our volumes that are not (or no longer) attached here.
	mounted, err := a.vols.HostMounted()
	if err != nil {
		return
	}
	devs := map[string]string{} // device -> volume
	for _, vol := range mounted {
		if dev, err := a.vols.Device(vol); err == nil {
			devs[dev] = vol
		}
	}
	inServer, err := volume.Mounts(pid)
	if err != nil {
		return
	}
	for target, dev := range inServer {
		vol, ours := devs[dev]
		if !ours || want[target] == vol || vol == root || a.volc.isBusy(vol) {
			continue
		}
		if err := a.vols.Detach(ctx, vol, pid, target); err != nil {
			a.log.Warn("reconcile: could not unmount a volume no longer attached to its server", "instance", id, "volume", vol, "target", target, "err", err)
			continue
		}
		a.log.Info("reconcile: unmounted a volume no longer attached to its server", "instance", id, "volume", vol, "target", target)
	}
}

// pruneSince forgets the volumes of servers no longer placed here, unless
// an attach changed them since gens were taken.
func (c *volCache) pruneSince(gens map[string]uint64, placed map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.m {
		if !placed[id] && c.gen[id] == gens[id] {
			delete(c.m, id)
		}
	}
}

// releaseVolumes unmounts from the host the volumes of server id, whose
// container is gone (a delete, an offload, a failed build, a migration's
// source): they stay attached in the cloud and are mounted again wherever
// the server starts next. The server's own mounts went with it.
func (a *Agent) releaseVolumes(ctx context.Context, id string) {
	ms, _ := a.volc.get(id)
	a.volc.del(id)
	if a.vols == nil {
		return
	}
	for _, vm := range ms {
		if err := a.vols.Unmount(ctx, vm.Volume.ID); err != nil {
			a.log.Warn("could not unmount the volume of a destroyed server; reconcile retries", "instance", id, "volume", vm.Volume.ID, "err", err)
		}
	}
}

// deleteLocalCopy unmounts local volume vol from this host and deletes
// its image file, under the volume's lock; deleting what is not here
// succeeds.
func (a *Agent) deleteLocalCopy(ctx context.Context, vol string) error {
	done := a.volc.enter(vol)
	defer done()
	if err := a.vols.Unmount(ctx, vol); err != nil {
		return err
	}
	return a.vols.Delete(ctx, volume.Local, vol)
}

// dropEphemeral deletes server id's ephemeral disks on this host (the
// server is deleted, offloaded or its build failed here: they live and
// die with it; its container, so their mounts, went already). Each
// failure is logged: the disk stays until the next delete of the server
// finds it.
func (a *Agent) dropEphemeral(ctx context.Context, id string) {
	if a.vols == nil {
		return
	}
	ids, err := a.vols.List(volume.Local, id+"-eph")
	if err != nil {
		a.log.Warn("could not list the ephemeral disks of a server gone from this host", "instance", id, "err", err)
		return
	}
	for _, vol := range ids {
		if !protocol.EphemeralOf(vol, id) {
			continue
		}
		err := a.deleteLocalCopy(ctx, vol)
		if err != nil {
			a.log.Warn("could not delete an ephemeral disk of a server gone from this host", "instance", id, "volume", vol, "err", err)
			continue
		}
		a.log.Info("ephemeral disk deleted with its server", "instance", id, "volume", vol)
	}
}

// dropStrayEphemeral deletes (unmounting them first) the ephemeral disks
// on this host of servers the cloud no longer has here: not placed here
// (deleted, offloaded, rescheduled or moved elsewhere), with no container
// here (an orphan's disks stay with it for an operator), no cold
// migration through this host (migrating: its copies are the
// migration's) and no operation on them since the reconcile began
// (touched: a build or an import may be making them right now). A delete
// cut short by an agent crash, or a failed build whose cleanup did not
// run, leaves such disks; nothing else ever deletes them. A conductor
// that does not list migrations (migrating nil) gets no sweep.
func (a *Agent) dropStrayEphemeral(ctx context.Context, migrating []string, placed map[string]bool,
	observed map[string]drivers.Status, touched func(string) bool) {
	if a.vols == nil || migrating == nil {
		return
	}
	ids, err := a.vols.List(volume.Local, "")
	if err != nil {
		a.log.Error("reconcile: could not list the local volumes of this host", "err", err)
		return
	}
	for _, vol := range ids {
		server, ok := protocol.EphemeralServer(vol)
		if !ok || placed[server] || slices.Contains(migrating, server) {
			continue
		}
		if _, here := observed[server]; here || a.locks.busy(server) || touched(server) || a.volc.isBusy(vol) {
			continue
		}
		if err := a.deleteLocalCopy(ctx, vol); err != nil {
			a.log.Warn("reconcile: could not delete the ephemeral disk of a server no longer here", "instance", server, "volume", vol, "err", err)
			continue
		}
		a.log.Info("reconcile: deleted the ephemeral disk of a server no longer here", "instance", server, "volume", vol)
	}
}

// Local volumes moving with a migrated server (package migrate's
// volumes.go): the source pushes them, the target pulls them into fresh
// copies, the host that ends without the server deletes its copy.

// exportVolumes pushes the local volumes of w.VolumeRefs (the server is
// stopped: nothing writes to them) and returns the bytes pushed. Pushing
// again (a redelivery) replaces the tag with the same data.
func (a *Agent) exportVolumes(ctx context.Context, w protocol.MigrationWork) (int64, error) {
	if len(w.VolumeRefs) == 0 {
		return 0, nil
	}
	if a.vols == nil || a.reg == nil {
		return 0, errdefs.FailedPrecondition("this host cannot move the server's local volumes (no volumes or no registry configured)")
	}
	var total int64
	for _, vol := range slices.Sorted(maps.Keys(w.VolumeRefs)) {
		done := a.volc.enter(vol)
		n, err := a.vols.Export(ctx, volume.Local, vol, a.reg, w.VolumeRefs[vol])
		done()
		if err != nil {
			return total, fmt.Errorf("push volume %s: %w", vol, err)
		}
		total += n
	}
	return total, nil
}

// importVolumes pulls the local volumes of w.VolumeRefs into copies on
// this host and returns the bytes pulled. A copy found here already is
// replaced: it is left from an earlier move (this host is not where the
// volume lives, or the conductor would not move it here), so only the
// pushed data is current; a copy in use here is refused.
func (a *Agent) importVolumes(ctx context.Context, w protocol.MigrationWork) (int64, error) {
	if len(w.VolumeRefs) == 0 {
		return 0, nil
	}
	if a.vols == nil || a.reg == nil {
		return 0, errdefs.FailedPrecondition("this host cannot take the server's local volumes (no volumes or no registry configured)")
	}
	sizes := map[string]int{}
	for _, vm := range w.Spec.Volumes {
		sizes[vm.Volume.ID] = vm.Volume.SizeGB
	}
	var total int64
	for _, vol := range slices.Sorted(maps.Keys(w.VolumeRefs)) {
		if sizes[vol] <= 0 {
			return total, fmt.Errorf("volume %s: not among the server's attached volumes", vol)
		}
		done := a.volc.enter(vol)
		err := a.vols.Delete(ctx, volume.Local, vol)
		var n int64
		if err == nil {
			n, err = a.vols.Import(ctx, volume.Local, vol, sizes[vol], a.reg, w.VolumeRefs[vol])
		}
		done()
		if err != nil {
			return total, fmt.Errorf("pull volume %s: %w", vol, err)
		}
		total += n
	}
	return total, nil
}

// dropVolumes deletes this host's copies of w.DropVolumes (the server's
// container, and so its mounts, went already). Deleting what is not here
// succeeds.
func (a *Agent) dropVolumes(ctx context.Context, w protocol.MigrationWork) error {
	if len(w.DropVolumes) == 0 {
		return nil
	}
	if a.vols == nil {
		return errNoVolumes
	}
	var errs []error
	for _, vol := range w.DropVolumes {
		err := a.deleteLocalCopy(ctx, vol)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete the copy of volume %s: %w", vol, err))
			continue
		}
		a.log.Info("migration: deleted this host's obsolete copy of a volume", "instance", w.InstanceID, "volume", vol)
	}
	return errors.Join(errs...)
}

// buildVolumes makes the volumes a new server's create asked for that do
// not exist yet (block-device mappings: Create set), on this host, before
// the server is created; what was made already (a redelivered build) is
// kept. A failure fails the build; the control plane deletes or keeps
// the volumes as their delete_on_termination says.
func (a *Agent) buildVolumes(ctx context.Context, s protocol.InstanceSpec) error {
	for _, vm := range s.Volumes {
		if vm.Create == nil {
			continue
		}
		if a.vols == nil {
			return fmt.Errorf("build %s: volume %s: %w", s.ID, vm.Volume.ID, errNoVolumes)
		}
		done := a.volc.enter(vm.Volume.ID)
		err := a.volumeCreate(ctx, protocol.VolumeCreate{Volume: vm.Volume, ImageRef: vm.Create.ImageRef, SnapshotID: vm.Create.SnapshotID},
			&protocol.VolumeReport{})
		done()
		if err != nil {
			return fmt.Errorf("build %s: create volume %s: %w", s.ID, vm.Volume.ID, err)
		}
	}
	return nil
}

// rootVolume mounts server id's boot volume on this host and returns
// where ("" when the server boots from its image). A volume-backed
// server's workload binds the volume's directories (drivers.Spec
// RootVolume), so the host mount must exist before every start: after a
// host reboot or an unmount by a past reconcile it is made again here.
func (a *Agent) rootVolume(ctx context.Context, id string, ms []protocol.VolumeMount) (string, error) {
	for _, vm := range ms {
		if !vm.Root() {
			continue
		}
		if a.vols == nil {
			return "", fmt.Errorf("boot volume %s of instance %s: %w", vm.Volume.ID, id, errNoVolumes)
		}
		dir, err := a.vols.Mount(ctx, backendOf(vm.Volume), vm.Volume.ID)
		if err != nil {
			return "", fmt.Errorf("mount boot volume %s of instance %s: %w", vm.Volume.ID, id, err)
		}
		return dir, nil
	}
	return "", nil
}

// beforeStart gets server id's boot volume mounted on this host (see
// rootVolume) before its workload starts.
func (a *Agent) beforeStart(ctx context.Context, id string) error {
	if a.vols == nil {
		return nil
	}
	ms := a.volumesOf(ctx, id)
	_, err := a.rootVolume(ctx, id, ms)
	return err
}
