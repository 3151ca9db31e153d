package fake

import (
	"context"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
)

// OpStats counts (and lets tests fail) InstanceStats calls.
const OpStats Op = "stats"

var _ drivers.StatsReader = (*Driver)(nil)

// InstanceStats implements drivers.StatsReader with synthetic numbers
// that follow the instance's spec and age: a tenth of a CPU used since
// the workload started, a quarter of its memory limit in use (half of it
// rss), one task under the spec's pid limit, one MiB read and written per
// boot. Not running: ErrInvalidState, as the real drivers.
func (d *Driver) InstanceStats(ctx context.Context, id string) (drivers.InstanceStats, error) {
	if err := d.begin(ctx, OpStats, id); err != nil {
		return drivers.InstanceStats{}, err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpStats, id)
	if err != nil {
		return drivers.InstanceStats{}, err
	}
	if in.Power != drivers.PowerRunning && in.Power != drivers.PowerPaused {
		return drivers.InstanceStats{}, fmt.Errorf("fake stats %s: not running: %w", id, drivers.ErrInvalidState)
	}
	cpu := uint64(time.Since(in.StartedAt).Nanoseconds()/10) + 1
	limit := uint64(in.Spec.MemoryMB) << 20
	boots := uint64(in.Boots)
	return drivers.InstanceStats{StartedAt: in.StartedAt, Stats: cgroup.Stats{
		CgroupVersion:    2,
		CPUUsageNS:       cpu,
		CPUUserNS:        cpu * 3 / 4,
		CPUSystemNS:      cpu - cpu*3/4,
		CPUPeriods:       cpu / 100_000_000,
		MemoryUsageBytes: limit / 4,
		MemoryLimitBytes: limit,
		MemoryRSSBytes:   limit / 8,
		MemoryCacheBytes: limit / 8,
		Pids:             1,
		PidsLimit:        uint64(max(in.Spec.PidsLimit, 0)),
		DiskReadBytes:    boots << 20,
		DiskWriteBytes:   boots << 20,
		DiskReadOps:      boots * 256,
		DiskWriteOps:     boots * 256,
	}}, nil
}
