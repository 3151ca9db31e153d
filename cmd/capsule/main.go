// Command capsule is the operator CLI of a Capsule cloud. It speaks the
// cloud's OpenStack API through gophercloud and reads the same credentials
// as the openstack CLI: OS_CLOUD with clouds.yaml, or the OS_* variables of
// an openrc file.
//
//	capsule [-f table|json] server list [--all-projects] | server show ID
//	capsule [-f table|json] host list|disable|enable|evacuate|events
//	capsule [-f table|json] server migrate|resize ...
//	capsule [-f table|json] migration list
//	capsule rescue-data SERVER --to DIR   (offline: reads Docker's data root)
//	capsule bench boot --count N --concurrency C [--network NET] [--image NAME] [--flavor NAME]
//	capsule bench sched --hosts N | bench list --servers N   (offline, scratch database)
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

const usage = `usage: capsule [-f table|json] COMMAND
commands:
  server list [--all-projects]     servers with status, host and flavor
  server show SERVER               one server (id or name)
  server migrate SERVER [--host H] [--wait]
                                   cold-migrate a server (admin); --wait shows progress
  server resize SERVER FLAVOR [--wait] | server resize SERVER --confirm|--revert [--wait]
                                   resize (across hosts when the host lacks room); confirm or revert
  console SERVER                   attach the terminal to a server's serial console (a shell in it); Ctrl-] detaches
  host list                        compute hosts with state and usage (admin)
  host disable HOST [--reason R] | host enable HOST
                                   keep the scheduler off a host, or let it back
  host evacuate HOST [--wait] [--parallel N]
                                   disable HOST and cold-migrate every server away (admin;
                                   a HOST that is down: evacuate them, rebuilt elsewhere);
                                   --wait confirms each move; --timeout D bounds every wait
  host events [HOST] [--server S] [--kind K] [--since 1h] [--limit N]
                                   alarms and OOM kills agents raised (admin)
  migration list [--host H] [--server S] [--status S]
                                   migrations and resizes, newest first (admin)
  rescue-data SERVER --to DIR [--data-root /var/lib/capsule/docker] | rescue-data --list
                                   offline: copy a server's files out of Docker's data root (dockerd may be down)
  bench boot --count N --concurrency C [--network NET] [--image busybox] [--flavor m1.tiny] [--docker-host unix:///run/capsule/docker.sock]
                                   boot-and-delete benchmark beside raw docker run
  bench sched [--hosts 5000] [--servers 10000] [--concurrency 8] [--postgres DSN]
                                   offline: the scheduler placing over simulated hosts in a scratch database
  bench list [--servers 10000 | --images N] [--limit 1000] [--requests 50] [--admin] [--postgres DSN]
                                   offline: GET /servers/detail (or /v2/images) pages over a scratch database
Credentials: OS_CLOUD (clouds.yaml) or OS_AUTH_URL/OS_USERNAME/... (source /etc/capsule/admin-openrc);
OS_CACERT names the CA of an https endpoint.
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		// An error may quote the API (a fault message naming a server).
		fmt.Fprintln(os.Stderr, "capsule:", safe(err.Error()))
		os.Exit(1)
	}
}

// cli holds what every command needs.
type cli struct {
	format string
	region string
	pc     *gophercloud.ProviderClient
}

func run(args []string) error {
	fs := flag.NewFlagSet("capsule", flag.ContinueOnError)
	format := fs.String("f", "table", "output format: table or json")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("unknown format %q (table or json)", *format)
	}
	rest := fs.Args()
	if len(rest) > 0 && rest[0] == "rescue-data" {
		// Offline by design: no API, no credentials, dockerd may be down.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return rescueData(ctx, rest[1:])
	}
	if len(rest) < 2 {
		fs.Usage()
		return errors.New("missing command")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &cli{format: *format}
	switch rest[0] + " " + rest[1] {
	case "bench sched": // offline: a scratch database, no cloud
		return c.benchSched(ctx, rest[2:])
	case "bench list":
		return c.benchList(ctx, rest[2:])
	}
	if err := c.authenticate(ctx); err != nil {
		return err
	}
	if rest[0] == "console" {
		return c.serverConsole(ctx, rest[1:])
	}
	switch rest[0] + " " + rest[1] {
	case "server list":
		return c.serverList(ctx, rest[2:])
	case "server show":
		return c.serverShow(ctx, rest[2:])
	case "host list":
		return c.hostList(ctx)
	case "host disable":
		return c.hostDisable(ctx, rest[2:])
	case "host enable":
		return c.hostEnable(ctx, rest[2:])
	case "host evacuate":
		return c.hostEvacuate(ctx, rest[2:])
	case "host events":
		return c.hostEvents(ctx, rest[2:])
	case "server migrate":
		return c.serverMigrate(ctx, rest[2:])
	case "server resize":
		return c.serverResize(ctx, rest[2:])
	case "migration list":
		return c.migrationList(ctx, rest[2:])
	case "bench boot":
		return c.benchBoot(ctx, rest[2:])
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", rest[0]+" "+rest[1])
}

// authenticate reads clouds.yaml when OS_CLOUD is set, OS_* otherwise.
func (c *cli) authenticate(ctx context.Context) error {
	var ao gophercloud.AuthOptions
	var tc *tls.Config
	var err error
	c.region = os.Getenv("OS_REGION_NAME")
	if os.Getenv("OS_CLOUD") != "" {
		var eo gophercloud.EndpointOpts
		ao, eo, tc, err = clouds.Parse()
		c.region = eo.Region
	} else {
		ao, err = authFromEnv()
	}
	if err != nil {
		return fmt.Errorf("credentials: %w (source an openrc file or set OS_CLOUD)", err)
	}
	if ca := os.Getenv("OS_CACERT"); ca != "" && tc == nil {
		if tc, err = caTLS(ca); err != nil {
			// The openstack CLI opens the CA only for an https
			// connection: a stale OS_CACERT beside an http cloud does
			// not stop it, nor this.
			if !strings.HasPrefix(ao.IdentityEndpoint, "http://") {
				return err
			}
			fmt.Fprintf(os.Stderr, "capsule: %v (ignored: the identity endpoint is http)\n", err)
			tc = nil
		}
	}
	ao.AllowReauth = true
	c.pc, err = authenticatedClient(ctx, ao, tc)
	if err != nil {
		return fmt.Errorf("authenticate at %s: %w", ao.IdentityEndpoint, err)
	}
	return nil
}

// authFromEnv reads the OS_* variables as the openstack CLI does (user and
// project domains apart: OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME),
// which gophercloud's AuthOptionsFromEnv does not.
func authFromEnv() (gophercloud.AuthOptions, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := os.Getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	ao := gophercloud.AuthOptions{
		IdentityEndpoint: env("OS_AUTH_URL"),
		UserID:           env("OS_USER_ID"),
		Username:         env("OS_USERNAME"),
		Password:         env("OS_PASSWORD"),
		DomainID:         env("OS_USER_DOMAIN_ID"),
		DomainName:       env("OS_USER_DOMAIN_NAME", "OS_DOMAIN_NAME"),
	}
	if ao.IdentityEndpoint == "" || ao.Password == "" || (ao.Username == "" && ao.UserID == "") {
		return ao, errors.New("OS_AUTH_URL, OS_USERNAME (or OS_USER_ID) and OS_PASSWORD are required")
	}
	if ao.UserID == "" && ao.DomainID == "" && ao.DomainName == "" {
		ao.DomainID = "default"
	}
	scope := &gophercloud.AuthScope{ProjectID: env("OS_PROJECT_ID", "OS_TENANT_ID"), ProjectName: env("OS_PROJECT_NAME", "OS_TENANT_NAME")}
	if scope.ProjectID == "" {
		scope.DomainID = env("OS_PROJECT_DOMAIN_ID")
		scope.DomainName = env("OS_PROJECT_DOMAIN_NAME", "OS_DOMAIN_NAME")
		if scope.DomainID == "" && scope.DomainName == "" {
			scope.DomainID = "default"
		}
	}
	if scope.ProjectID != "" || scope.ProjectName != "" {
		ao.Scope = scope
	}
	return ao, nil
}

func (c *cli) compute() (*gophercloud.ServiceClient, error) {
	return openstack.NewComputeV2(c.pc, gophercloud.EndpointOpts{Region: c.region})
}
