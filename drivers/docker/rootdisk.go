package docker

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
)

// A flavor's disk (GB) is the size of the server's root filesystem: its
// container's writable layer, capped with Docker's --storage-opt size.
// overlay2 can cap only on an XFS data root mounted with project quotas
// (pquota); the btrfs storage driver caps with btrfs qgroups (kernels
// without XFS quotas); elsewhere dockerd refuses any create carrying the
// option. So
// the driver finds out once whether this dockerd can cap, and either caps
// every server (a writer past its disk gets ENOSPC, its neighbours and the
// host do not notice) or caps none, warns once and says so in its
// fingerprint (HostInfo.RootDisk) so the operator sees the host
// that does not enforce the flavor's disk. See docs/operations.md "Root
// disk".

// rootDiskState is what the driver knows of its dockerd's root disk caps.
type rootDiskState int

const (
	rootDiskUnknown     rootDiskState = iota // overlay2 on XFS or btrfs: the probe create decides
	rootDiskEnforced                         // creates carry storage-opt size
	rootDiskNotEnforced                      // no caps on this host
)

// rootDisk holds the decision; the probe runs at most once to a verdict.
type rootDisk struct {
	mu     sync.Mutex
	state  rootDiskState
	reason string // why the disk is not enforced
}

// rootDiskFromInfo decides from docker info's storage driver and its
// status (DriverStatus pairs) whether caps are possible at all.
func rootDiskFromInfo(driver string, status [][2]string) (rootDiskState, string) {
	if driver == "btrfs" {
		// qgroups: dockerd enables them at the first create with a size
		// and refuses it when it cannot; the probe says which.
		return rootDiskUnknown, ""
	}
	if driver != "overlay2" {
		return rootDiskNotEnforced, fmt.Sprintf("storage driver %q (root disk caps need overlay2 on XFS with pquota, or btrfs)", driver)
	}
	backing := ""
	for _, kv := range status {
		if kv[0] == "Backing Filesystem" {
			backing = kv[1]
		}
	}
	if backing != "xfs" {
		return rootDiskNotEnforced, fmt.Sprintf("overlay2 data root on %q, not xfs with pquota", backing)
	}
	return rootDiskUnknown, ""
}

// storageOptRefused reports whether err is dockerd refusing storage-opt
// size because its data root cannot cap (rather than any other failure):
// overlay2 names storage-opt or pquota, btrfs the qgroup it failed to set.
func storageOptRefused(err error) bool {
	if err == nil {
		return false
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "storage-opt") || strings.Contains(msg, "storage option") || strings.Contains(msg, "pquota") ||
		strings.Contains(msg, "qgroup")
}

// enforced reports whether this host caps root disks.
func (r *rootDisk) enforced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state == rootDiskEnforced
}

// storageOpt is the StorageOpt of a server with a disk of diskGB; nil when
// it has no cap (disk 0 is unlimited, as Nova's) or the host cannot cap.
func (r *rootDisk) storageOpt(diskGB int) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != rootDiskEnforced || diskGB <= 0 {
		return nil
	}
	return map[string]string{"size": strconv.Itoa(diskGB) + "G"}
}

// report is the host report's word on root disks (HostInfo.RootDisk).
func (r *rootDisk) report() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.state {
	case rootDiskEnforced:
		return drivers.RootDiskEnforced
	case rootDiskNotEnforced:
		return drivers.RootDiskNotEnforced + ": " + r.reason
	}
	return drivers.RootDiskUnprobed
}

// RootDisk implements drivers.RootDiskReporter.
func (d *Driver) RootDisk() string { return d.root.report() }

// set records a verdict and warns once when it is "not enforced".
func (r *rootDisk) set(state rootDiskState, reason string, log *slog.Logger) {
	r.state, r.reason = state, reason
	switch state {
	case rootDiskEnforced:
		log.Info("root disk enforced: every server's writable layer is capped at its flavor's disk (storage-opt size)")
	case rootDiskNotEnforced:
		log.Warn("root disk NOT enforced on this host: a server can fill the Docker data root; give dockerd an XFS data root mounted with pquota or a btrfs one (docs/operations.md)", "reason", reason)
	}
}

// probe settles an unknown state with probeCreate, a create carrying
// storage-opt size: accepted means dockerd caps. Another failure leaves
// the state unknown (tried again at the next create) and is returned.
func (r *rootDisk) probe(ctx context.Context, log *slog.Logger, probeCreate func(ctx context.Context, opt map[string]string) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != rootDiskUnknown {
		return nil
	}
	err := probeCreate(ctx, map[string]string{"size": "1G"})
	switch {
	case err == nil:
		r.set(rootDiskEnforced, "", log)
	case storageOptRefused(err):
		r.set(rootDiskNotEnforced, err.Error(), log)
	default:
		return fmt.Errorf("root disk probe: %w", err)
	}
	return nil
}

// initRootDisk decides from docker info at driver start.
func (d *Driver) initRootDisk(ctx context.Context) error {
	info, err := d.cli.Info(ctx)
	if err != nil {
		return fmt.Errorf("docker info: %w", err)
	}
	state, reason := rootDiskFromInfo(info.Driver, info.DriverStatus)
	d.root.mu.Lock()
	if state == rootDiskNotEnforced {
		d.root.set(state, reason, d.log)
	}
	d.root.mu.Unlock()
	return nil
}

// probeRootDisk creates (and removes) a container of image, which is
// present, with storage-opt size, when the verdict is still open.
func (d *Driver) probeRootDisk(ctx context.Context, image, id string) error {
	return d.root.probe(ctx, d.log, func(ctx context.Context, opt map[string]string) error {
		name := namePrefix + "rootdisk-probe-" + id
		resp, err := d.cli.ContainerCreate(ctx, &container.Config{Image: image},
			&container.HostConfig{NetworkMode: "none", StorageOpt: opt}, nil, nil, name)
		if err != nil {
			if cerrdefs.IsConflict(err) {
				// A probe left by a crash: remove it and let the next create try.
				_ = d.cli.ContainerRemove(context.WithoutCancel(ctx), name, container.RemoveOptions{Force: true, RemoveVolumes: true})
			}
			return err
		}
		if err := d.cli.ContainerRemove(context.WithoutCancel(ctx), resp.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			d.log.Error("could not remove the root disk probe container", "container", resp.ID, "err", err)
		}
		return nil
	})
}
