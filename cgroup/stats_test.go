package cgroup

import (
	"os"
	"testing"
)

// The counters of this very process: whatever the host's cgroup layout
// (v1, hybrid, v2), they are found, the CPU time and anonymous memory
// (its heap) are there, and the working set is within the usage.
// Servers' counters are proved in drivers/docker (limits_test.go).
func TestStatsOfSelf(t *testing.T) {
	s, err := StatsOf(os.Getpid())
	if err != nil {
		t.Fatalf("StatsOf(self): %v", err)
	}
	t.Logf("stats of this test: %+v", s)
	if s.CgroupVersion != 1 && s.CgroupVersion != 2 {
		t.Errorf("cgroup version %d", s.CgroupVersion)
	}
	if s.CPUUsageNS == 0 || s.MemoryUsageBytes == 0 || s.MemoryRSSBytes == 0 {
		t.Errorf("no CPU time or memory accounted: %+v", s)
	}
	if s.MemoryWorkingSetBytes == 0 || s.MemoryWorkingSetBytes > s.MemoryUsageBytes {
		t.Errorf("working set %d of usage %d", s.MemoryWorkingSetBytes, s.MemoryUsageBytes)
	}
}

func TestStatsOfErrors(t *testing.T) {
	if _, err := StatsOf(0); err == nil {
		t.Error("pid 0 accepted")
	}
	// A pid that does not exist (above the kernel's largest pid_max).
	if _, err := StatsOf(1 << 23); err == nil {
		t.Error("missing pid accepted")
	}
}

// The working set leaves out the inactive page cache only, and never
// goes below zero (v1's usage is batched per CPU and may read lower than
// its parts for a moment).
func TestWorkingSet(t *testing.T) {
	for _, c := range []struct {
		usage, inactive, want uint64
	}{{100, 30, 70}, {100, 0, 100}, {30, 40, 0}, {0, 0, 0}} {
		if got := workingSet(c.usage, c.inactive); got != c.want {
			t.Errorf("usage %d, inactive_file %d: working set %d, want %d", c.usage, c.inactive, got, c.want)
		}
	}
}
