// Command capsuled runs Capsule's roles: the OpenStack-compatible API, the
// scheduler, the conductor and the per-host compute agent, separately or
// all in one process, plus the one-shot "bootstrap" of a new cloud.
//
//	capsuled [-config /etc/capsule/capsule.yaml] all|api|scheduler|conductor|agent
//	CAPSULE_ADMIN_PASSWORD=P CAPSULE_DEMO_PASSWORD=Q capsuled [-config ...] bootstrap -image NAME=REF
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/volume"
)

const usage = `usage: capsuled [-config FILE] [-log-level debug|info|warn] ROLE[,ROLE...]
roles:
  all         api + scheduler + conductor + agent in one process (all-in-one);
              or a list, e.g. api,scheduler,conductor for a control-plane node
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
	// The volume mount helper: this binary in a server's mount namespace.
	volume.RunHelper(os.Args)
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
	}
	if roles, ok := parseRoles(role); ok {
		return runRoles(ctx, cfg, roles, log)
	}
	fs.Usage()
	return fmt.Errorf("unknown role %q", role)
}

// parseRoles reads "all" or a comma-separated list of roles, e.g.
// "api,scheduler,conductor" for a control-plane node.
func parseRoles(arg string) (map[string]bool, bool) {
	known := []string{"api", "scheduler", "conductor", "agent"}
	roles := map[string]bool{}
	if arg == "all" {
		for _, r := range known {
			roles[r] = true
		}
		return roles, true
	}
	for _, r := range strings.Split(arg, ",") {
		if !slices.Contains(known, r) {
			return nil, false
		}
		roles[r] = true
	}
	return roles, len(roles) > 0
}

// runRoles starts the requested roles sharing one database handle and one
// bus connection, and stops them all when one fails or a signal arrives.
// An agent-only process never opens the database.
func runRoles(ctx context.Context, cfg config.Config, roles map[string]bool, log *slog.Logger) error {
	role := strings.Join(slices.Sorted(maps.Keys(roles)), ",")
	needDB := roles["api"] || roles["scheduler"] || roles["conductor"]
	deps, err := connect(ctx, cfg, needDB, log)
	if err != nil {
		return err
	}
	defer deps.close()
	g, ctx := errgroup.WithContext(ctx)
	want := func(r string) bool { return roles[r] }
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
