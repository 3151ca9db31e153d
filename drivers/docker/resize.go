package docker

import (
	"context"
	"fmt"
	"slices"

	"github.com/docker/docker/api/types/blkiodev"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/limits"
)

// Resize implements drivers.Driver: docker update of the workload
// container's CPU period/quota/shares, memory (+swap: none), pids cap,
// on the running container: no restart, so every process keeps its PID.
// If the update fails the old values are applied again.
//
// Docker's update does not change device IO throttles; a resize that
// would change them is refused before anything changes, rather than
// leaving the server with throttles its flavor no longer promises.
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
	if !sameThrottles(old, want) {
		return fmt.Errorf("docker resize %s: the new flavor changes disk IO throttles, which cannot be changed on a running container: %w",
			id, drivers.ErrNotSupported)
	}
	// The cpuset follows the vCPUs (nproc counts it), chosen and applied
	// under the pinning lock so a concurrent boot sees it.
	d.pin.mu.Lock()
	defer d.pin.mu.Unlock()
	if want.CpusetCpus, old.CpusetCpus, err = d.resizeCPUs(ctx, c, vcpus, l); err != nil {
		return fmt.Errorf("docker resize %s: %w", id, err)
	}
	if err := d.update(ctx, c.ID, want); err != nil {
		// Put back what was there: a partly applied update (say, CPU
		// changed, memory refused) must not leave a mix of two flavors.
		if rerr := d.update(context.WithoutCancel(ctx), c.ID, old); rerr != nil {
			d.log.Error("resize rollback failed: the container may run with mixed limits", "instance", id, "err", rerr)
			return fmt.Errorf("docker resize %s: %w (rollback failed: %v)", id, err, rerr)
		}
		return fmt.Errorf("docker resize %s (rolled back): %w", id, err)
	}
	d.log.Info("container resized", "instance", id, "vcpus", vcpus, "memory_mb", memoryMB,
		"cpu_quota_us", want.CPUQuota, "cpu_period_us", want.CPUPeriod, "cpu_shares", want.CPUShares, "pids_limit", *want.PidsLimit, "cpuset", want.CpusetCpus)
	return nil
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
	resp, err := d.cli.ContainerUpdate(ctx, cid, container.UpdateConfig{Resources: u})
	if err != nil {
		return wrap("update", cid, err)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("container update warning", "container", cid, "warning", w)
	}
	return nil
}

// sameThrottles reports whether a and b throttle the same devices alike.
func sameThrottles(a, b container.Resources) bool {
	eq := func(x, y []*blkiodev.ThrottleDevice) bool {
		return slices.EqualFunc(x, y, func(p, q *blkiodev.ThrottleDevice) bool { return p.Path == q.Path && p.Rate == q.Rate })
	}
	return eq(a.BlkioDeviceReadBps, b.BlkioDeviceReadBps) && eq(a.BlkioDeviceWriteBps, b.BlkioDeviceWriteBps) &&
		eq(a.BlkioDeviceReadIOps, b.BlkioDeviceReadIOps) && eq(a.BlkioDeviceWriteIOps, b.BlkioDeviceWriteIOps)
}
