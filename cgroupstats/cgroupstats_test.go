package cgroupstats_test

import (
	"os"
	"testing"

	"github.com/capsule-cloud/capsule/cgroupstats"
)

// The counters of this very process: whatever the host's cgroup layout
// (v1, hybrid, v2), they are found and the CPU time is there. Servers'
// counters are proved in drivers/docker (limits_test.go).
func TestForPIDSelf(t *testing.T) {
	s, err := cgroupstats.ForPID(os.Getpid())
	if err != nil {
		t.Fatalf("ForPID(self): %v", err)
	}
	t.Logf("stats of this test: %+v", s)
	if s.CgroupVersion != 1 && s.CgroupVersion != 2 {
		t.Errorf("cgroup version %d", s.CgroupVersion)
	}
	if s.CPUUsageNS == 0 || s.MemoryUsageBytes == 0 {
		t.Errorf("no CPU time or memory accounted: %+v", s)
	}
}

func TestForPIDErrors(t *testing.T) {
	if _, err := cgroupstats.ForPID(0); err == nil {
		t.Error("pid 0 accepted")
	}
	// A pid that does not exist (above the kernel's largest pid_max).
	if _, err := cgroupstats.ForPID(1 << 23); err == nil {
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
		s := cgroupstats.Stats{MemoryUsageBytes: c.usage, MemoryInactiveFileBytes: c.inactive}
		if got := s.WorkingSetBytes(); got != c.want {
			t.Errorf("usage %d, inactive_file %d: working set %d, want %d", c.usage, c.inactive, got, c.want)
		}
	}
	s, err := cgroupstats.ForPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.MemoryInactiveFileBytes > s.MemoryCacheBytes || s.MemoryRSSBytes == 0 || s.WorkingSetBytes() > s.MemoryUsageBytes {
		t.Errorf("memory split of this test inconsistent: %+v (working set %d)", s, s.WorkingSetBytes())
	}
}
