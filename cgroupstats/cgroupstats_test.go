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
