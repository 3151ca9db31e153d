// Command capsule-fuzz sends generated requests to every route of a
// Capsule API (identity, compute, image, network) and reports every 5xx
// and broken connection with the request that caused it
// (docs/security.md, "Fuzzing").
//
//	capsule-fuzz [-requests N] [-concurrency C] [-seed S]
//	    fuzz a control plane started in this process (SQLite, in-memory
//	    bus, fake compute driver), with goroutines and heap before/after
//	capsule-fuzz -identity http://127.0.0.1:5000/v3 -admin-password A -demo-password D [-pid PID]
//	    fuzz a running cloud (users admin and demo, as its bootstrap makes
//	    them); -pid reports that process's RSS and threads before/after
//
// It exits 1 when the API answered a 5xx (other than a documented 501),
// broke a connection, timed out, logged a panic or kept goroutines.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/capsule-cloud/capsule/internal/apifuzz"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "capsule-fuzz:", err)
		os.Exit(1)
	}
}

func run() error {
	requests := flag.Int("requests", 1_000_000, "fuzzed requests to send")
	concurrency := flag.Int("concurrency", 8, "requests in flight")
	seed := flag.Uint64("seed", 0, "generator seed (0: from the clock); the same seed sends the same requests")
	identity := flag.String("identity", "", "Keystone v3 URL of a running cloud (empty: fuzz an in-process cloud)")
	adminPass := flag.String("admin-password", os.Getenv("CAPSULE_FUZZ_ADMIN_PASSWORD"), "password of user admin (running cloud)")
	demoPass := flag.String("demo-password", os.Getenv("CAPSULE_FUZZ_DEMO_PASSWORD"), "password of user demo (running cloud)")
	pid := flag.Int("pid", 0, "the running cloud's API process, for RSS and threads before/after")
	heapProfile := flag.String("heap-profile", "", "in-process cloud: write the heap profile after the run here (go tool pprof)")
	flag.Parse()
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := apifuzz.Config{Requests: *requests, Concurrency: *concurrency, Seed: *seed, Progress: os.Stderr,
		ProgressEvery: max(*requests/20, 1000)}
	fmt.Printf("capsule-fuzz: %d requests, concurrency %d, seed %d\n", *requests, *concurrency, *seed)
	if *identity == "" {
		dir, err := os.MkdirTemp("", "capsule-fuzz")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		res, err := apifuzz.FuzzCloud(ctx, dir, cfg, *heapProfile)
		if err != nil {
			return err
		}
		fmt.Print(res.String())
		if res.Report.Failed() || len(res.Panics) > 0 || res.GoroutinesAfter > res.GoroutinesBefore {
			return fmt.Errorf("the API failed under fuzzing")
		}
		return nil
	}
	cfg.IdentityURL, cfg.AdminPassword, cfg.DemoPassword = *identity, *adminPass, *demoPass
	var rss0 uint64
	var thr0 int
	if *pid > 0 {
		var err error
		if rss0, thr0, err = apifuzz.ProcessStats(*pid); err != nil {
			return err
		}
	}
	rep, err := apifuzz.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Print(rep.String())
	if *pid > 0 {
		time.Sleep(5 * time.Second) // connections close, handlers end
		rss1, thr1, err := apifuzz.ProcessStats(*pid)
		if err != nil {
			return fmt.Errorf("the API process is gone (a crash?): %w", err)
		}
		fmt.Printf("process %d: RSS %.1f MiB before, %.1f MiB after; threads %d before, %d after\n", *pid,
			float64(rss0)/(1<<20), float64(rss1)/(1<<20), thr0, thr1)
	}
	if rep.Failed() {
		return fmt.Errorf("the API failed under fuzzing")
	}
	return nil
}
