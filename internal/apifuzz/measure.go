package apifuzz

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// CloudResult is a run against an in-process cloud: the report plus what
// the process itself showed.
type CloudResult struct {
	Report                            *Report
	Panics                            []string // panics the cloud logged
	ErrorLines                        int      // error-level log lines (a 5xx logs one)
	FirstErrors                       []string
	GoroutinesBefore, GoroutinesAfter int
	HeapBefore, HeapAfter             uint64 // live heap after a GC, bytes
}

func (r *CloudResult) String() string {
	var b strings.Builder
	b.WriteString(r.Report.String())
	fmt.Fprintf(&b, "panics logged: %d\n", len(r.Panics))
	for _, p := range r.Panics {
		fmt.Fprintf(&b, "  %s\n", truncate(p, 2000))
	}
	fmt.Fprintf(&b, "error log lines: %d\n", r.ErrorLines)
	for _, l := range r.FirstErrors {
		fmt.Fprintf(&b, "  %s\n", truncate(l, 500))
	}
	fmt.Fprintf(&b, "goroutines: %d before, %d after\nheap: %.1f MiB before, %.1f MiB after\n", r.GoroutinesBefore,
		r.GoroutinesAfter, float64(r.HeapBefore)/(1<<20), float64(r.HeapAfter)/(1<<20))
	return b.String()
}

// FuzzCloud starts a cloud in dir, fuzzes it with cfg (its URL and
// passwords are filled in) and measures goroutines and heap once the
// fuzzer has logged in and seeded, and again after the run, once what the
// requests set off has settled.
//
// heapProfile, when not "", is where the heap profile after the run goes
// (go tool pprof), to tell what a grown heap holds.
func FuzzCloud(ctx context.Context, dir string, cfg Config, heapProfile string) (*CloudResult, error) {
	c, err := StartCloud(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cfg.IdentityURL, cfg.AdminPassword, cfg.DemoPassword = c.IdentityURL, c.AdminPassword, c.DemoPassword
	res := &CloudResult{}
	cfg.ready = func(closeIdle func()) {
		closeIdle()
		c.Settle(10 * time.Second)
		res.GoroutinesBefore, res.HeapBefore = settledStats(0)
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	res.Report = rep
	c.Settle(30 * time.Second)
	res.GoroutinesAfter, res.HeapAfter = settledStats(res.GoroutinesBefore)
	if heapProfile != "" {
		if err := writeHeapProfile(heapProfile); err != nil {
			return nil, err
		}
	}
	res.Panics = c.Events().Panics()
	res.ErrorLines, res.FirstErrors = c.Events().ErrorLines()
	return res, nil
}

// settledStats returns the goroutine count and live heap, waiting up to
// 10 s for the goroutine count to come down to want (connections closing,
// handlers finishing).
func settledStats(want int) (int, uint64) {
	deadline := time.Now().Add(10 * time.Second)
	for want > 0 && runtime.NumGoroutine() > want && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// Twice: the first GC moves sync.Pool caches (encoding/json's
	// buffers) to their victim cache, the second frees them.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

// ProcessStats reads the resident set size (bytes) and thread count of
// process pid from /proc, for a fuzzed API running as its own process.
func ProcessStats(pid int) (rss uint64, threads int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			n, _ := strconv.ParseUint(f[0], 10, 64)
			rss = n * 1024
		case "Threads":
			threads, _ = strconv.Atoi(f[0])
		}
	}
	return rss, threads, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("write heap profile: %w", err)
	}
	return f.Close()
}
