package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/cgroupstats"
	"github.com/capsule-cloud/capsule/drivers"
)

var _ drivers.StatsReader = (*Driver)(nil)

// InstanceStats implements drivers.StatsReader: Stats' cgroup counters,
// the memory split (cache/rss) and when the workload started. The memory
// split is best effort: a failure to read it leaves it at 0 rather than
// hiding the counters.
func (d *Driver) InstanceStats(ctx context.Context, id string) (drivers.InstanceStats, error) {
	c, err := d.inspect(ctx, "stats", id)
	if err != nil {
		return drivers.InstanceStats{}, err
	}
	if !c.State.Running || c.State.Pid <= 0 {
		return drivers.InstanceStats{}, fmt.Errorf("docker stats %s: not running: %w", id, drivers.ErrInvalidState)
	}
	if !d.local() {
		return drivers.InstanceStats{}, fmt.Errorf("docker stats %s: dockerd at %s is not on this host: %w", id, d.cli.DaemonHost(), drivers.ErrNotSupported)
	}
	st, err := cgroupstats.ForPID(c.State.Pid)
	if err != nil {
		return drivers.InstanceStats{}, fmt.Errorf("docker stats %s: %w", id, err)
	}
	out := fromCgroupStats(st)
	if mem, err := cgroupstats.MemoryForPID(c.State.Pid); err == nil {
		out.MemoryCacheBytes, out.MemoryRSSBytes = mem.CacheBytes, mem.RSSBytes
	}
	if t, err := time.Parse(time.RFC3339Nano, c.State.StartedAt); err == nil {
		out.StartedAt = t
	}
	return out, nil
}

func fromCgroupStats(s cgroupstats.Stats) drivers.InstanceStats {
	return drivers.InstanceStats{
		CgroupVersion:         s.CgroupVersion,
		CPUUsageNS:            s.CPUUsageNS,
		CPUUserNS:             s.CPUUserNS,
		CPUSystemNS:           s.CPUSystemNS,
		CPUPeriods:            s.CPUPeriods,
		CPUThrottledPeriods:   s.CPUThrottledPeriods,
		CPUThrottledNS:        s.CPUThrottledNS,
		MemoryUsageBytes:      s.MemoryUsageBytes,
		MemoryLimitBytes:      s.MemoryLimitBytes,
		MemoryCacheBytes:      s.MemoryCacheBytes,
		MemoryRSSBytes:        s.MemoryRSSBytes,
		MemoryWorkingSetBytes: s.WorkingSetBytes(),
		OOMKills:              s.OOMKills,
		Pids:                  s.Pids,
		PidsLimit:             s.PidsLimit,
		DiskReadBytes:         s.DiskReadBytes,
		DiskWriteBytes:        s.DiskWriteBytes,
		DiskReadOps:           s.DiskReadOps,
		DiskWriteOps:          s.DiskWriteOps,
	}
}
