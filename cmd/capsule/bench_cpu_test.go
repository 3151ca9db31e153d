package main

import (
	"runtime"
	"testing"
	"time"
)

// hostBusy counts CPU the machine spends: it grows by about what a busy
// loop burns.
func TestHostBusyCountsCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/stat")
	}
	before, ok := hostBusy()
	if !ok || before <= 0 {
		t.Fatalf("hostBusy() = %v, %v", before, ok)
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	after, ok := hostBusy()
	if !ok || after-before < 200*time.Millisecond {
		t.Fatalf("300 ms of busy loop counted as %v (ok %v)", after-before, ok)
	}
}
