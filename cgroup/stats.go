// Package cgroup reads what the kernel does to a process through its
// cgroups, on cgroup v1 (legacy or hybrid hosts, the controllers mounted
// separately or co-mounted) and v2 (unified) alike: the counters it
// accounts (Stats: CPU time and throttling, memory, OOM kills, tasks,
// block IO; through containerd/cgroups) and the limits it enforces
// (Limits: CPU quota, period, shares and cpuset, memory, pids, disk
// throttles; read back from the cgroup files). Drivers measure their
// instances with it; the agent's diagnostics, alarms and metrics and the
// tests' proofs use its Stats. It also sets one limit, the disk throttles
// (SetDiskThrottles), which the Docker Engine cannot change on a running
// container.
package cgroup

import (
	"errors"
	"fmt"

	cgroups "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// Stats are the counters of one cgroup (a server's container). Counters
// only grow; rates come from two samples. Limits of 0 mean "none", and
// figures a reader cannot tell are 0.
type Stats struct {
	CgroupVersion int // 1 or 2

	CPUUsageNS          uint64 // CPU time used, all CPUs
	CPUUserNS           uint64
	CPUSystemNS         uint64
	CPUPeriods          uint64 // CFS periods with runnable tasks
	CPUThrottledPeriods uint64 // periods the quota ran out in
	CPUThrottledNS      uint64 // time spent throttled

	MemoryUsageBytes uint64 // page cache included (what the limit is compared to)
	MemoryLimitBytes uint64 // 0: unlimited
	// The usage's split: page cache (v1 cache, v2 file; tmpfs files
	// included) and anonymous memory (v1 rss, v2 anon).
	MemoryCacheBytes uint64
	MemoryRSSBytes   uint64
	// MemoryWorkingSetBytes is the memory the cgroup holds that the
	// kernel cannot simply drop: usage minus the inactive page cache
	// (cAdvisor's and the kubelet's working set), what alarms and "used"
	// memory count. Page cache under memory pressure is reclaimed before
	// any OOM kill, so usage alone overstates a server that reads or
	// writes a lot of files; tmpfs files and recently used cache do
	// count. 0 when unknown.
	MemoryWorkingSetBytes uint64
	OOMKills              uint64 // tasks the OOM killer killed in this cgroup

	Pids      uint64 // tasks now
	PidsLimit uint64 // 0: unlimited

	// Block IO that reached a block device (page-cache writes count when
	// written back, and on cgroup v1 only for direct IO), all devices.
	DiskReadBytes  uint64
	DiskWriteBytes uint64
	DiskReadOps    uint64
	DiskWriteOps   uint64
}

// unlimited: cgroup v1 reports "no memory limit" as a huge page-rounded
// number, v2 as max (the library turns it into MaxUint64).
const unlimited = 1 << 62

// StatsOf reads the stats of the cgroups process pid belongs to. On a
// hybrid host (v1 controllers plus an empty v2 mount) the v1 controllers
// are the ones that count.
func StatsOf(pid int) (Stats, error) {
	if pid <= 0 {
		return Stats{}, fmt.Errorf("cgroup stats: invalid pid %d", pid)
	}
	switch cgroups.Mode() {
	case cgroups.Unified:
		return statsV2(pid)
	case cgroups.Legacy, cgroups.Hybrid:
		return statsV1(pid)
	}
	return Stats{}, errors.New("cgroup stats: no cgroup filesystem mounted at /sys/fs/cgroup")
}

func statsV1(pid int) (Stats, error) {
	cg, err := cgroup1.Load(cgroup1.PidPath(pid))
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup stats of pid %d: load v1 cgroups: %w", pid, err)
	}
	// IgnoreNotExist: a controller missing on this host (e.g. no rdma)
	// must not hide the others.
	m, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup stats of pid %d: %w", pid, err)
	}
	return fromV1(m), nil
}

func fromV1(m *v1.Metrics) Stats {
	s := Stats{CgroupVersion: 1}
	if c := m.GetCPU(); c != nil {
		s.CPUUsageNS = c.GetUsage().GetTotal()
		s.CPUUserNS = c.GetUsage().GetUser()
		s.CPUSystemNS = c.GetUsage().GetKernel()
		s.CPUPeriods = c.GetThrottling().GetPeriods()
		s.CPUThrottledPeriods = c.GetThrottling().GetThrottledPeriods()
		s.CPUThrottledNS = c.GetThrottling().GetThrottledTime()
	}
	if mem := m.GetMemory(); mem != nil {
		s.MemoryUsageBytes = mem.GetUsage().GetUsage()
		s.MemoryLimitBytes = limit(mem.GetUsage().GetLimit())
		// total_*: the cgroup and its children, as usage counts them.
		s.MemoryCacheBytes = mem.GetTotalCache()
		s.MemoryRSSBytes = mem.GetTotalRSS()
		s.MemoryWorkingSetBytes = workingSet(s.MemoryUsageBytes, mem.GetTotalInactiveFile())
	}
	s.OOMKills = m.GetMemoryOomControl().GetOomKill()
	s.Pids = m.GetPids().GetCurrent()
	s.PidsLimit = m.GetPids().GetLimit()
	// io_service_bytes / io_serviced: per device and op (Read, Write,
	// Sync, Async, Discard, Total); Read and Write partition the IO.
	for _, e := range m.GetBlkio().GetIoServiceBytesRecursive() {
		switch e.GetOp() {
		case "Read", "read":
			s.DiskReadBytes += e.GetValue()
		case "Write", "write":
			s.DiskWriteBytes += e.GetValue()
		}
	}
	for _, e := range m.GetBlkio().GetIoServicedRecursive() {
		switch e.GetOp() {
		case "Read", "read":
			s.DiskReadOps += e.GetValue()
		case "Write", "write":
			s.DiskWriteOps += e.GetValue()
		}
	}
	return s
}

func statsV2(pid int) (Stats, error) {
	_, group, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup stats of pid %d: %w", pid, err)
	}
	if group == "" {
		return Stats{}, fmt.Errorf("cgroup stats of pid %d: not in a cgroup v2 group", pid)
	}
	mgr, err := cgroup2.Load(group)
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup stats of pid %d: load %s: %w", pid, group, err)
	}
	m, err := mgr.Stat()
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup stats of pid %d (%s): %w", pid, group, err)
	}
	s := Stats{CgroupVersion: 2}
	if c := m.GetCPU(); c != nil {
		s.CPUUsageNS = c.GetUsageUsec() * 1000
		s.CPUUserNS = c.GetUserUsec() * 1000
		s.CPUSystemNS = c.GetSystemUsec() * 1000
		s.CPUPeriods = c.GetNrPeriods()
		s.CPUThrottledPeriods = c.GetNrThrottled()
		s.CPUThrottledNS = c.GetThrottledUsec() * 1000
	}
	s.MemoryUsageBytes = m.GetMemory().GetUsage()
	s.MemoryLimitBytes = limit(m.GetMemory().GetUsageLimit())
	s.MemoryCacheBytes = m.GetMemory().GetFile()
	s.MemoryRSSBytes = m.GetMemory().GetAnon()
	s.MemoryWorkingSetBytes = workingSet(s.MemoryUsageBytes, m.GetMemory().GetInactiveFile())
	s.OOMKills = m.GetMemoryEvents().GetOomKill()
	s.Pids = m.GetPids().GetCurrent()
	s.PidsLimit = limit(m.GetPids().GetLimit())
	for _, e := range m.GetIo().GetUsage() {
		s.DiskReadBytes += e.GetRbytes()
		s.DiskWriteBytes += e.GetWbytes()
		s.DiskReadOps += e.GetRios()
		s.DiskWriteOps += e.GetWios()
	}
	return s, nil
}

// workingSet is usage minus the inactive page cache, never below zero
// (v1's usage is batched per CPU and may read lower than its parts for a
// moment).
func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile >= usage {
		return 0
	}
	return usage - inactiveFile
}

func limit(v uint64) uint64 {
	if v >= unlimited {
		return 0
	}
	return v
}
