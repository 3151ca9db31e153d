package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
)

var _ drivers.StatsReader = (*Driver)(nil)

// InstanceStats implements drivers.StatsReader: the cgroup counters of a
// running instance's workload (CPU time and throttling, memory, OOM
// kills, tasks, block IO) and when it started, for diagnostics and for
// measuring that its limits hold. It needs dockerd on this host: the
// counters are read from this host's cgroup filesystem.
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
	st, err := cgroup.StatsOf(c.State.Pid)
	if err != nil {
		return drivers.InstanceStats{}, fmt.Errorf("docker stats %s: %w", id, err)
	}
	out := drivers.InstanceStats{Stats: st}
	if t, err := time.Parse(time.RFC3339Nano, c.State.StartedAt); err == nil {
		out.StartedAt = t
	}
	return out, nil
}
