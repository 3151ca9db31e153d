// Command capsuled runs Capsule's roles: the OpenStack-compatible API, the
// scheduler, the conductor and the per-host compute agent, separately or
// all in one process, plus the one-shot "bootstrap" of a new cloud.
//
//	capsuled [-config /etc/capsule/capsule.yaml] all|api|scheduler|conductor|agent
//	capsuled [-config ...] bootstrap -admin-password P -demo-password Q -image NAME=REF
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/capsule-cloud/capsule/config"
)

const usage = `usage: capsuled [-config FILE] [-log-level debug|info|warn] ROLE
roles:
  all         api + scheduler + conductor + agent in one process (all-in-one)
  api         the OpenStack API (identity, compute, image, network)
  scheduler   places instances on hosts
  conductor   records agents' reports in the database
  agent       the compute agent of this host (no database access)
  bootstrap   create the default projects, users, roles, flavors and images (idempotent)
  version     print the version
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "capsuled:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("capsuled", flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/capsule/capsule.yaml", "configuration file")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("bad -log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)
	if fs.NArg() < 1 {
		fs.Usage()
		return errors.New("no role given")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	role, rest := fs.Arg(0), fs.Args()[1:]
	switch role {
	case "version":
		fmt.Println(version)
		return nil
	case "bootstrap":
		return bootstrap(ctx, cfg, rest, log)
	case "all", "api", "scheduler", "conductor", "agent":
		return runRoles(ctx, cfg, role, log)
	}
	fs.Usage()
	return fmt.Errorf("unknown role %q", role)
}

// runRoles starts the requested role(s) sharing one database handle and
// one bus connection, and stops them all when one fails or a signal
// arrives.
func runRoles(ctx context.Context, cfg config.Config, role string, log *slog.Logger) error {
	deps, err := connect(ctx, cfg, role != "agent", log)
	if err != nil {
		return err
	}
	defer deps.close()
	g, ctx := errgroup.WithContext(ctx)
	want := func(r string) bool { return role == "all" || role == r }
	if want("conductor") {
		g.Go(func() error { return runConductor(ctx, cfg, deps, log) })
	}
	if want("scheduler") {
		g.Go(func() error { return runScheduler(ctx, cfg, deps, log) })
	}
	if want("api") {
		g.Go(func() error { return runAPI(ctx, cfg, deps, log) })
	}
	if want("agent") {
		g.Go(func() error { return runAgent(ctx, cfg, deps, log) })
	}
	log.Info("capsuled started", "role", role, "version", version)
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
