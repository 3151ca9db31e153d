package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/internal/netnsfile"
)

// Network modes of a networked server (Options.NetworkMode).
//
// NetworkSandbox: two containers, see sandbox.go.
//
// NetworkNetns: one container. The workload is created with network mode
// "none" (so it takes its own hostname and DNS servers, as a server
// without NICs does) and the OCI runtime Options.Runtime, Capsule's runc
// wrapper (cmd/capsule-runc), registered with dockerd. The driver keeps
// the server's network namespace as a file, <NetnsDir>/<instance id>,
// made in process (internal/netnsfile), which the agent plumbs (Sandbox
// returns it) before the workload starts; before every start the driver
// records the namespace for the container's id in netnsfile.MapDir, and
// the wrapper points the container at it when runc creates it. The
// namespace outlives the workload's process: Stop leaves it (the agent
// unplugs the server's NICs, so a stopped server has only its loopback
// and answers nothing), a restart or reboot rejoins it, a dockerd restart
// with live-restore leaves it in use, an agent restart finds it in /run.
// A host reboot takes it (and the map) away: Sandbox and Start make it
// again, and the agent plumbs it before the start. Destroy removes the
// container, the namespace and the map entry; List reports a namespace
// left without its container as an orphan for the agent to Destroy.
const (
	NetworkSandbox = "sandbox"
	NetworkNetns   = "netns"
)

// DefaultNetworkMode is the mode of a driver configured with none: one
// container per server (one create, start and shim per boot; the sandbox
// mode's second container is kept for hosts whose dockerd cannot register
// Capsule's runtime).
const DefaultNetworkMode = NetworkNetns

// DefaultRuntime is the name Capsule's runc wrapper is registered under
// with dockerd (--add-runtime capsule=/usr/local/bin/capsule-runc).
const DefaultRuntime = "capsule"

// DefaultNetnsDir is where the namespaces of a host's servers are kept
// (under it, one directory per agent: agents sharing a kernel each sweep
// their own).
const DefaultNetnsDir = "/run/capsule/netns"

// netnsMode reports whether new networked servers get one container.
func (d *Driver) netnsMode() bool { return d.opts.NetworkMode == NetworkNetns }

// inNetns reports whether the workload c joins a namespace kept by the
// driver (network mode none, Capsule's runtime).
func (d *Driver) inNetns(c container.InspectResponse) bool {
	return c.HostConfig != nil && c.HostConfig.Runtime != "" && c.HostConfig.Runtime == d.opts.Runtime &&
		c.HostConfig.NetworkMode.IsNone()
}

// netnsPathOf is the namespace file of instance id.
func (d *Driver) netnsPathOf(id string) string { return filepath.Join(d.opts.NetnsDir, id) }

// checkRuntime refuses a dockerd without Capsule's runtime when new
// servers need it: a create would fail later with Docker's "unknown
// runtime", after the scheduler picked this host.
func (d *Driver) checkRuntime(ctx context.Context) error {
	info, err := d.cli.Info(ctx)
	if err != nil {
		return fmt.Errorf("docker info: %w", err)
	}
	if _, ok := info.Runtimes[d.opts.Runtime]; ok {
		return nil
	}
	names := make([]string, 0, len(info.Runtimes))
	for n := range info.Runtimes {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Errorf("network mode %q needs the OCI runtime %q registered with dockerd %q (it has %v): start dockerd with "+
		"--add-runtime %s=/usr/local/bin/capsule-runc (deploy/lib.sh does; restart a dockerd started by an older "+
		"deploy/test-env.sh or allinone.sh), or set agent.network_mode: sandbox",
		NetworkNetns, d.opts.Runtime, d.opts.Host, names, d.opts.Runtime)
}

// joinNetns makes sure instance id's namespace exists and records it for
// container cid; it returns the namespace's path.
func (d *Driver) joinNetns(id, cid string) (string, error) {
	p := d.netnsPathOf(id)
	if err := netnsfile.Make(p); err != nil {
		return "", fmt.Errorf("docker network namespace of %s: %w", id, err)
	}
	if err := netnsfile.WriteMap(netnsfile.MapDir, cid, p); err != nil {
		return "", fmt.Errorf("docker network namespace of %s: %w", id, err)
	}
	return p, nil
}

// removeNetns removes instance id's namespace and the map entry of its
// container cid (when known).
func (d *Driver) removeNetns(id, cid string) error {
	if cid != "" {
		if err := netnsfile.RemoveMap(netnsfile.MapDir, cid); err != nil {
			return err
		}
	}
	if d.opts.NetnsDir == "" {
		return nil
	}
	return netnsfile.Remove(d.netnsPathOf(id))
}

// netnsOrphans returns the instances with a namespace under NetnsDir and
// no container among have (a create cut short, a migration's prepared
// namespace left behind), as List reports them, and removes the map
// entries pointing into NetnsDir whose container is gone (live is every
// container id on this dockerd).
func (d *Driver) netnsOrphans(ctx context.Context, have map[string]bool, live map[string]bool) []drivers.Status {
	if d.opts.NetnsDir == "" {
		return nil
	}
	var out []drivers.Status
	ents, err := os.ReadDir(d.opts.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("list network namespaces", "dir", d.opts.NetnsDir, "err", err)
	}
	for _, e := range ents {
		if e.IsDir() || have[e.Name()] {
			continue
		}
		out = append(out, drivers.Status{ID: e.Name(), Power: drivers.PowerNoState,
			Description: "network namespace only: the workload container is missing"})
	}
	maps, err := netnsfile.Maps(netnsfile.MapDir)
	if err != nil {
		d.log.Warn("list network namespace map", "err", err)
	}
	for cid, p := range maps {
		if filepath.Dir(p) != filepath.Clean(d.opts.NetnsDir) || live[cid] {
			continue
		}
		// Written after its container's create, maybe after the listing.
		if _, err := d.cli.ContainerInspect(ctx, cid); !cerrdefs.IsNotFound(err) {
			continue
		}
		if err := netnsfile.RemoveMap(netnsfile.MapDir, cid); err != nil {
			d.log.Warn("remove a stale network namespace map entry", "container", cid, "err", err)
		}
	}
	return out
}

// dropNetwork removes what a create cut short made for instance id's
// network: its sandbox, its namespace.
func (d *Driver) dropNetwork(ctx context.Context, id string) error {
	if err := d.removeSandbox(ctx, id); err != nil {
		return err
	}
	return d.removeNetns(id, "")
}

// PrepareNetns implements drivers.NetnsPreparer: in mode netns it makes
// instance id's namespace (Create keeps it) and returns its path.
func (d *Driver) PrepareNetns(_ context.Context, id string) (string, error) {
	if !d.netnsMode() {
		return "", nil
	}
	p := d.netnsPathOf(id)
	if err := netnsfile.Make(p); err != nil {
		return "", fmt.Errorf("docker network namespace of %s: %w", id, err)
	}
	return p, nil
}
