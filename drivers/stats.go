package drivers

import (
	"context"
	"time"

	"github.com/capsule-cloud/capsule/cgroup"
)

// InstanceStats are what the kernel accounts to a running instance's
// workload (its cgroups: the counters of cgroup.Stats) and when the
// workload last started, for diagnostics, alarms and metrics.
type InstanceStats struct {
	StartedAt time.Time // when the workload last started
	cgroup.Stats
}

// StatsReader is the optional interface of drivers that can measure their
// instances. InstanceStats returns ErrNotFound (wrapped) for a missing
// instance and ErrInvalidState for one whose workload does not run.
type StatsReader interface {
	InstanceStats(ctx context.Context, id string) (InstanceStats, error)
}
