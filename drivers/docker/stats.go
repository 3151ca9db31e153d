package docker

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/cgroupstats"
	"github.com/capsule-cloud/capsule/drivers"
)

// Stats reads the cgroup counters of a running instance's workload (CPU
// time and throttling, memory, OOM kills, tasks, block IO), for
// diagnostics and for measuring that its limits hold. It needs dockerd on
// this host: the counters are read from this host's cgroup filesystem.
func (d *Driver) Stats(ctx context.Context, id string) (cgroupstats.Stats, error) {
	c, err := d.inspect(ctx, "stats", id)
	if err != nil {
		return cgroupstats.Stats{}, err
	}
	if !c.State.Running || c.State.Pid <= 0 {
		return cgroupstats.Stats{}, fmt.Errorf("docker stats %s: not running: %w", id, drivers.ErrInvalidState)
	}
	if !d.local() {
		return cgroupstats.Stats{}, fmt.Errorf("docker stats %s: dockerd at %s is not on this host: %w", id, d.cli.DaemonHost(), drivers.ErrNotSupported)
	}
	st, err := cgroupstats.ForPID(c.State.Pid)
	if err != nil {
		return st, fmt.Errorf("docker stats %s: %w", id, err)
	}
	return st, nil
}
