package apifuzz

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestFuzzInProcessCloud sends CAPSULE_FUZZ_REQUESTS (default 20,000)
// fuzzed requests to an in-process cloud: no 5xx, no broken connection,
// no panic logged, and no goroutine left behind.
func TestFuzzInProcessCloud(t *testing.T) {
	n := 20000
	if s := os.Getenv("CAPSULE_FUZZ_REQUESTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("CAPSULE_FUZZ_REQUESTS: %v", err)
		}
	}
	if testing.Short() {
		n = min(n, 2000)
	}
	ctx := context.Background()
	res, err := FuzzCloud(ctx, t.TempDir(), Config{Requests: n, Concurrency: 8, Seed: uint64(time.Now().UnixNano())}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + res.String())
	if res.Report.Failed() || len(res.Panics) > 0 {
		t.Errorf("the API failed under fuzzing:\n%s", res.String())
	}
	if g := res.GoroutinesAfter - res.GoroutinesBefore; g > 0 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines more after the run than before:\n%s", g, buf[:runtime.Stack(buf, true)])
	}
}
