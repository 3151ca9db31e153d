package docker

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/blkiodev"
	"github.com/docker/docker/api/types/container"
	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/limits"
)

// Resize implements drivers.Driver: docker update of the workload
// container's CPU period/quota/shares, memory (+swap: none), pids cap,
// and the disk IO throttles written to its cgroup, on the running
// container: no restart, so every process keeps its PID. If any of it
// fails the old values are applied again.
//
// Docker's update does not change device IO throttles, so the driver
// writes them to the container's cgroup itself (cgroup.SetDiskThrottles),
// which needs the container running on this host. Docker's record of the
// container keeps the throttles it was created with and a start applies
// them, so Start and Reboot write a live resize's back (liveThrottles;
// after an agent restart, the reconcile's limits repair does). A stopped
// container's new throttles are only recorded there: its next start
// writes them, as a VM's new flavor takes effect when it boots. A resize
// that changes the throttles of a container on a remote dockerd is
// refused before anything changes, rather than leaving the server with
// throttles its flavor no longer promises.
func (d *Driver) Resize(ctx context.Context, id string, vcpus, memoryMB int, l limits.Limits) error {
	c, err := d.inspect(ctx, "resize", id)
	if err != nil {
		return err
	}
	if c.HostConfig == nil {
		return fmt.Errorf("docker resize %s: container %s has no host config: %w", id, c.ID, drivers.ErrInvalidState)
	}
	old := c.HostConfig.Resources
	pids := int64(0)
	if old.PidsLimit != nil {
		pids = *old.PidsLimit
	}
	spec := drivers.Spec{ID: id, VCPUs: vcpus, MemoryMB: memoryMB, PidsLimit: pids, Limits: l, Image: "-"}
	if err := validate(spec); err != nil {
		return fmt.Errorf("docker resize %s: %w", id, err)
	}
	var diskDev string
	if l.Disk.Limited() {
		if diskDev, err = d.diskDevice(ctx); err != nil {
			return fmt.Errorf("docker resize %s: disk throttles: %w", id, err)
		}
	}
	want := resources(spec, diskDev)
	throttles, err := d.throttleChange(c, l.Disk, diskDev, old, want)
	if err != nil {
		return fmt.Errorf("docker resize %s: %w", id, err)
	}
	// The cpuset follows the vCPUs (nproc counts it), chosen and applied
	// under the pinning lock so a concurrent boot sees it.
	d.pin.mu.Lock()
	defer d.pin.mu.Unlock()
	if want.CpusetCpus, old.CpusetCpus, err = d.resizeCPUs(ctx, c, vcpus, l); err != nil {
		return fmt.Errorf("docker resize %s: %w", id, err)
	}
	sameDisk := throttles == nil || (!throttles.pending && slices.Equal(throttles.old, throttles.new))
	if sameDisk && d.limitsInPlace(c, want) {
		// Nothing to change (the agent's drift repair asks every
		// reconcile): no docker update, no log.
		return nil
	}
	err = d.update(ctx, c.ID, want)
	if err == nil && throttles != nil && !throttles.pending {
		if err = cgroup.SetDiskThrottles(c.State.Pid, throttles.new); err != nil {
			err = fmt.Errorf("disk throttles: %w", err)
		}
	}
	if err != nil {
		// Put back what was there: a partly applied update (say, CPU
		// changed, memory refused) must not leave a mix of two flavors.
		rerr := d.update(context.WithoutCancel(ctx), c.ID, old)
		if throttles != nil && !throttles.pending {
			if terr := cgroup.SetDiskThrottles(c.State.Pid, throttles.old); terr != nil && rerr == nil {
				rerr = fmt.Errorf("disk throttles: %w", terr)
			}
		}
		if rerr != nil {
			d.log.Error("resize rollback failed: the container may run with mixed limits", "instance", id, "err", rerr)
			return fmt.Errorf("docker resize %s: %w (rollback failed: %v)", id, err, rerr)
		}
		return resizeRefused(fmt.Errorf("docker resize %s (rolled back): %w", id, err))
	}
	switch {
	case throttles == nil:
	case throttles.pending && throttles.record:
		d.live.forget(c.ID) // the next start applies Docker's record, as the flavor asks
	default:
		d.live.set(c.ID, throttles.new)
	}
	args := []any{"instance", id, "vcpus", vcpus, "memory_mb", memoryMB,
		"cpu_quota_us", want.CPUQuota, "cpu_period_us", want.CPUPeriod, "cpu_shares", want.CPUShares, "pids_limit", *want.PidsLimit, "cpuset", want.CpusetCpus}
	if throttles != nil {
		args = append(args, "disk_throttles", fmt.Sprintf("%+v", throttles.new), "old_disk_throttles", fmt.Sprintf("%+v", throttles.old))
	}
	d.log.Info("container resized", args...)
	return nil
}

// throttleSwap is a change of a container's disk throttles: the ones its
// cgroup has and the ones its new flavor asks for. A pending one is a
// stopped container's: nothing to write now, its next start applies new
// (or, when record is set, Docker's record of the container, which
// already says what the flavor asks).
type throttleSwap struct {
	old, new []cgroup.DiskThrottle
	pending  bool
	record   bool
}

// throttleChange compares the disk throttles container c runs with to the
// ones of the new flavor (disk on diskDev; want its Docker form, old the
// container's): nil when they are the same. A running container on this
// host is compared by its cgroup, the kernel's view (a live resize or a
// hand-made change is not in Docker's record). A stopped one is compared
// by what its next start applies: Docker's record, or the throttles of a
// live resize (liveThrottles); a change is pending until that start.
func (d *Driver) throttleChange(c container.InspectResponse, disk limits.Disk, diskDev string, old, want container.Resources) (*throttleSwap, error) {
	running := c.State != nil && c.State.Running && c.State.Pid > 0
	if !d.local() {
		if sameThrottles(old, want) {
			return nil, nil
		}
		return nil, errdefs.Wrap(fmt.Errorf("dockerd %s, container %s: %w", d.cli.DaemonHost(), c.ID, drivers.ErrNotSupported),
			errdefs.ErrNotSupported, "the new flavor changes disk IO throttles, which this compute host cannot change in place")
	}
	var next []cgroup.DiskThrottle
	if diskDev != "" {
		dev, err := deviceNumber(diskDev)
		if err != nil {
			return nil, fmt.Errorf("disk throttles: %w", err)
		}
		next = diskThrottles(disk, dev)
	}
	if !running {
		live, ok := d.live.get(c.ID)
		switch {
		case ok && slices.Equal(live, next):
			return nil, nil
		case sameThrottles(old, want):
			if !ok {
				return nil, nil
			}
			return &throttleSwap{old: live, new: next, pending: true, record: true}, nil
		}
		return &throttleSwap{old: live, new: next, pending: true}, nil
	}
	cur, err := cgroup.DiskThrottlesOf(c.State.Pid)
	if err != nil {
		return nil, fmt.Errorf("disk throttles: %w", err)
	}
	// Even when they do not change they are written again: docker update
	// hands runc the whole of Docker's record, whose create-time
	// throttles it writes back to the cgroup (measured: `docker update
	// --cpu-shares` put a cgroup's 20 MB/s back to the create's 10), so a
	// resize that changes only CPU or memory, or a rolled-back one, would
	// otherwise lose a live resize's throttles.
	return &throttleSwap{old: cur, new: next}, nil
}

// diskThrottles are the cgroup throttles of disk on device dev
// (major:minor); nil when none.
func diskThrottles(disk limits.Disk, dev string) []cgroup.DiskThrottle {
	rb, wb, ri, wi := disk.Throttles()
	t := cgroup.DiskThrottle{Device: dev, ReadBPS: positive(rb), WriteBPS: positive(wb), ReadIOPS: positive(ri), WriteIOPS: positive(wi)}
	if t == (cgroup.DiskThrottle{Device: dev}) {
		return nil
	}
	return []cgroup.DiskThrottle{t}
}

func positive(v int64) uint64 {
	if v <= 0 {
		return 0
	}
	return uint64(v)
}

// deviceNumber is the major:minor of the block device at path.
func deviceNumber(path string) (string, error) {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("device number of %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("device number of %s: not a block device", path)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), nil
}

// update applies the CPU, memory and pids settings of r to container cid.
func (d *Driver) update(ctx context.Context, cid string, r container.Resources) error {
	u := container.Resources{
		CPUPeriod: r.CPUPeriod, CPUQuota: r.CPUQuota, CPUShares: r.CPUShares,
		Memory: r.Memory, MemorySwap: r.MemorySwap, PidsLimit: r.PidsLimit,
		CpusetCpus: r.CpusetCpus, // "" leaves it as is
	}
	if u.CPUQuota == 0 {
		// 0 means "leave as is" to docker update; -1 lifts a quota.
		u.CPUQuota = -1
	}
	// The cpusets cpuUse cached may change (cpuset.go): forgotten before,
	// and after for a cpuUse that read the old one meanwhile.
	d.pin.forgetCPUsets()
	resp, err := d.cli.ContainerUpdate(ctx, cid, container.UpdateConfig{Resources: u})
	d.pin.forgetCPUsets()
	if err != nil {
		return wrap("update", cid, err)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("container update warning", "container", cid, "warning", w)
	}
	return nil
}

// limitsInPlace reports whether container c already has the CPU, memory,
// pids and cpuset limits of want (disk throttles are throttleChange's):
// in Docker's record and, for a running container of this host, in its
// cgroup, the kernel's view (a change written there behind Docker's back
// is drift too). Anything it cannot read counts as a difference, so the
// update is made.
func (d *Driver) limitsInPlace(c container.InspectResponse, want container.Resources) bool {
	rec := c.HostConfig.Resources
	quotaOff := func(q int64) bool { return q <= 0 }
	recPids, wantPids := int64(0), int64(0)
	if rec.PidsLimit != nil {
		recPids = *rec.PidsLimit
	}
	if want.PidsLimit != nil {
		wantPids = *want.PidsLimit
	}
	if !(rec.CPUQuota == want.CPUQuota || quotaOff(rec.CPUQuota) && quotaOff(want.CPUQuota)) ||
		(!quotaOff(want.CPUQuota) && rec.CPUPeriod != want.CPUPeriod) ||
		rec.CPUShares != want.CPUShares || rec.Memory != want.Memory || rec.MemorySwap != want.MemorySwap ||
		recPids != wantPids || (want.CpusetCpus != "" && want.CpusetCpus != rec.CpusetCpus) {
		return false
	}
	if c.State == nil || !c.State.Running || c.State.Pid <= 0 || !d.local() {
		return true // nothing runs to read, or not here: the record is what a start applies
	}
	k, err := cgroup.LimitsOf(c.State.Pid)
	if err != nil {
		return false
	}
	period := want.CPUPeriod
	if period == 0 {
		period = 100000 // the kernel's default CFS period
	}
	switch {
	case quotaOff(want.CPUQuota) && k.CPUQuotaUS != -1,
		!quotaOff(want.CPUQuota) && (k.CPUQuotaUS != want.CPUQuota || k.CPUPeriodUS != period),
		k.CgroupVersion == 1 && want.CPUShares > 0 && k.CPUShares != want.CPUShares,
		want.Memory > 0 && k.MemoryBytes != want.Memory,
		wantPids > 0 && k.PidsMax != wantPids:
		return false
	}
	if want.CpusetCpus != "" {
		have, herr := limits.ParseCPUList(k.Cpuset)
		wantSet, werr := limits.ParseCPUList(want.CpusetCpus)
		if herr != nil || werr != nil || !slices.Equal(have, wantSet) {
			return false
		}
	}
	return true
}

// sameThrottles reports whether a and b throttle the same devices alike.
func sameThrottles(a, b container.Resources) bool {
	eq := func(x, y []*blkiodev.ThrottleDevice) bool {
		return slices.EqualFunc(x, y, func(p, q *blkiodev.ThrottleDevice) bool { return p.Path == q.Path && p.Rate == q.Rate })
	}
	return eq(a.BlkioDeviceReadBps, b.BlkioDeviceReadBps) && eq(a.BlkioDeviceWriteBps, b.BlkioDeviceWriteBps) &&
		eq(a.BlkioDeviceReadIOps, b.BlkioDeviceReadIOps) && eq(a.BlkioDeviceWriteIOps, b.BlkioDeviceWriteIOps)
}

// resizeRefused classifies a resize the kernel or runc refused (and that
// was rolled back) with a message the server's user may see.
// runc names a memory limit below the cgroup's usage (it reclaims what
// it can first) this way; no error type says it. A stopped container has
// no usage, so that one is a change that needs a restart
// (drivers.ErrNeedsRestart): the agent makes it cold.
func resizeRefused(err error) error {
	switch {
	case strings.Contains(err.Error(), "unable to set memory limit"):
		return errdefs.Wrap(fmt.Errorf("%w: %w", err, drivers.ErrNeedsRestart), errdefs.ErrFailedPrecondition,
			"the server uses more memory than the new flavor has")
	case errdefs.KindOf(err) == "":
		return errdefs.Wrap(err, errdefs.ErrInternal, "the host could not apply the new flavor's limits to the running server")
	}
	return err // already classified (e.g. the container went away)
}
