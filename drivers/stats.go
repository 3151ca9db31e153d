package drivers

import (
	"context"
	"time"
)

// InstanceStats are what the kernel accounts to a running instance's
// workload (its cgroups), for diagnostics. Counters only grow; limits of 0
// mean none.
type InstanceStats struct {
	StartedAt     time.Time // when the workload last started
	CgroupVersion int       // 1 or 2

	CPUUsageNS          uint64
	CPUUserNS           uint64
	CPUSystemNS         uint64
	CPUPeriods          uint64
	CPUThrottledPeriods uint64
	CPUThrottledNS      uint64

	MemoryUsageBytes uint64
	MemoryLimitBytes uint64
	MemoryCacheBytes uint64 // page cache; 0 when unknown
	MemoryRSSBytes   uint64 // anonymous memory; 0 when unknown
	// MemoryWorkingSetBytes is the usage minus the inactive page cache:
	// what the kernel cannot reclaim, which alarms and "used" memory
	// count; 0 when unknown.
	MemoryWorkingSetBytes uint64
	OOMKills              uint64

	Pids      uint64
	PidsLimit uint64

	DiskReadBytes  uint64
	DiskWriteBytes uint64
	DiskReadOps    uint64
	DiskWriteOps   uint64
}

// StatsReader is the optional interface of drivers that can measure their
// instances. InstanceStats returns ErrNotFound (wrapped) for a missing
// instance and ErrInvalidState for one whose workload does not run.
type StatsReader interface {
	InstanceStats(ctx context.Context, id string) (InstanceStats, error)
}
