package cgroupstats

import (
	"fmt"

	cgroups "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// Memory is how a cgroup's memory usage splits: page cache (files, v1
// "cache", v2 "file") and anonymous memory (v1 "rss", v2 "anon"), the
// split Nova's libvirt diagnostics report as memory-rss.
type Memory struct {
	CacheBytes uint64
	RSSBytes   uint64
	// InactiveFileBytes is the part of the cache the kernel reclaims
	// first (see Stats.WorkingSetBytes).
	InactiveFileBytes uint64
}

// MemoryForPID reads the memory split of the cgroup process pid belongs
// to, on cgroup v1 (legacy or hybrid) or v2.
func MemoryForPID(pid int) (Memory, error) {
	if pid <= 0 {
		return Memory{}, fmt.Errorf("cgroup memory: invalid pid %d", pid)
	}
	switch cgroups.Mode() {
	case cgroups.Unified:
		_, group, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			return Memory{}, fmt.Errorf("cgroup memory of pid %d: %w", pid, err)
		}
		mgr, err := cgroup2.Load(group)
		if err != nil {
			return Memory{}, fmt.Errorf("cgroup memory of pid %d: load %s: %w", pid, group, err)
		}
		m, err := mgr.Stat()
		if err != nil {
			return Memory{}, fmt.Errorf("cgroup memory of pid %d (%s): %w", pid, group, err)
		}
		return Memory{CacheBytes: m.GetMemory().GetFile(), RSSBytes: m.GetMemory().GetAnon(),
			InactiveFileBytes: m.GetMemory().GetInactiveFile()}, nil
	case cgroups.Legacy, cgroups.Hybrid:
		// Only the memory controller: the other controllers' files are
		// not needed here.
		cg, err := cgroup1.Load(cgroup1.PidPath(pid), cgroup1.WithHierarchy(memoryOnly))
		if err != nil {
			return Memory{}, fmt.Errorf("cgroup memory of pid %d: load v1 cgroup: %w", pid, err)
		}
		m, err := cg.Stat(cgroup1.IgnoreNotExist)
		if err != nil {
			return Memory{}, fmt.Errorf("cgroup memory of pid %d: %w", pid, err)
		}
		return Memory{CacheBytes: m.GetMemory().GetCache(), RSSBytes: m.GetMemory().GetRSS(),
			InactiveFileBytes: m.GetMemory().GetTotalInactiveFile()}, nil
	}
	return Memory{}, fmt.Errorf("cgroup memory of pid %d: no cgroup filesystem mounted at /sys/fs/cgroup", pid)
}

// memoryOnly is the v1 hierarchy restricted to the memory controller.
func memoryOnly() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	var out []cgroup1.Subsystem
	for _, s := range all {
		if s.Name() == cgroup1.Memory {
			out = append(out, s)
		}
	}
	return out, nil
}
