package cgroupstats_test

import (
	"os"
	"testing"

	"github.com/capsule-cloud/capsule/cgroupstats"
)

// This very process has anonymous memory (its heap) in its cgroup, and
// the split never exceeds the usage ForPID reads.
func TestMemoryForPIDSelf(t *testing.T) {
	m, err := cgroupstats.MemoryForPID(os.Getpid())
	if err != nil {
		t.Fatalf("MemoryForPID(self): %v", err)
	}
	s, err := cgroupstats.ForPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("memory of this test: %+v (usage %d)", m, s.MemoryUsageBytes)
	if m.RSSBytes == 0 {
		t.Errorf("no anonymous memory accounted: %+v", m)
	}
	if _, err := cgroupstats.MemoryForPID(0); err == nil {
		t.Error("pid 0 accepted")
	}
}
