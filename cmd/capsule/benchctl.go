package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/capsule-cloud/capsule/internal/ctlbench"
)

// Control-plane benchmarks: offline, no cloud and no credentials. Each
// makes a scratch database (SQLite in a temporary directory, or a database
// of its own on the PostgreSQL server of --postgres, dropped at the end)
// and drives the real scheduler or the real Compute API handlers on it.

func (c *cli) benchSched(ctx context.Context, args []string) error {
	slog.SetLogLoggerLevel(slog.LevelWarn) // not the scratch schema's migrations
	fs := flag.NewFlagSet("bench sched", flag.ContinueOnError)
	hosts := fs.Int("hosts", 5000, "simulated compute hosts")
	servers := fs.Int("servers", 10000, "placements to make")
	conc := fs.Int("concurrency", 8, "placers at once")
	weigher := fs.String("weigher", "spread", "spread or pack")
	pg := fs.String("postgres", "", "PostgreSQL server DSN to make the scratch database on (default: SQLite)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, cleanup, err := ctlbench.Scratch(ctx, *pg)
	if err != nil {
		return err
	}
	defer cleanup()
	r, err := ctlbench.Sched(ctx, st, ctlbench.SchedOptions{Hosts: *hosts, Servers: *servers, Concurrency: *conc,
		Weigher: *weigher})
	if err != nil {
		return err
	}
	err = c.table([]string{"DB", "Hosts", "Servers", "Conc", "placed", "no valid host", "placements/s", "p50 ms", "p99 ms",
		"over-committed hosts"}, [][]string{{st.Driver, fmt.Sprint(r.Hosts), fmt.Sprint(r.Servers), fmt.Sprint(r.Concurrency),
		fmt.Sprint(r.Placed), fmt.Sprint(r.NoValidHost), fmt.Sprintf("%.0f", r.PerSecond), msf(r.P50), msf(r.P99),
		fmt.Sprint(r.OverCommitted)}})
	if err == nil && r.OverCommitted > 0 {
		err = fmt.Errorf("%d host(s) over-committed", r.OverCommitted)
	}
	return err
}

func (c *cli) benchList(ctx context.Context, args []string) error {
	slog.SetLogLoggerLevel(slog.LevelWarn)
	fs := flag.NewFlagSet("bench list", flag.ContinueOnError)
	servers := fs.Int("servers", 10000, "servers in the database")
	limit := fs.Int("limit", 1000, "page size")
	requests := fs.Int("requests", 50, "timed requests")
	admin := fs.Bool("admin", false, "list as an admin with all_tenants=1 (adds host_status)")
	path := fs.String("path", "/v2.1/servers/detail", "collection to list")
	images := fs.Int("images", 0, "list GET /v2/images with this many images in the database instead of servers")
	pg := fs.String("postgres", "", "PostgreSQL server DSN to make the scratch database on (default: SQLite)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, cleanup, err := ctlbench.Scratch(ctx, *pg)
	if err != nil {
		return err
	}
	defer cleanup()
	o := ctlbench.ListOptions{Servers: *servers, Limit: *limit, Requests: *requests, Path: *path, Admin: *admin, Images: *images}
	list, what := ctlbench.List, "Servers"
	if *images > 0 {
		list, what = ctlbench.ListImages, "Images"
	}
	fmt.Fprintf(os.Stderr, "bench: seeding %s on %s...\n", strings.ToLower(what), st.Driver)
	r, err := list(ctx, st, o)
	if err != nil {
		return err
	}
	return c.table([]string{"DB", what, "limit", "pages", "requests", "p50 ms", "p99 ms", "max ms"},
		[][]string{{st.Driver, fmt.Sprint(r.Servers), fmt.Sprint(r.Limit), fmt.Sprint(r.Pages), fmt.Sprint(r.Requests),
			msf(r.P50), msf(r.P99), msf(r.Max)}})
}

func msf(d interface{ Seconds() float64 }) string { return fmt.Sprintf("%.1f", d.Seconds()*1000) }
