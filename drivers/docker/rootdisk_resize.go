package docker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
)

// A server's root disk cap is its container's storage-opt size, which
// dockerd sets at create and cannot change. A resize to a flavor with
// another disk therefore makes the workload container again, on the
// stopped server (drivers.RootDiskResizer):
//
//  1. commit the container to a local image, capsule-rootdisk/<id>:<its
//     short id> (its writable layer: the server's data, keys and all);
//  2. rename the container aside to capsule-<id>.pre-resize (kept: the
//     revert brings it back, with the data as of the resize);
//  3. create capsule-<id> again from the commit with the old container's
//     own configuration (command, labels, limits, cpuset, LXCFS mounts,
//     the sandbox's network namespace, so NICs, IP and MAC stay) and the
//     new storage-opt size.
//
// Each step can be found done on a redelivery (the tag exists, the kept
// container exists, the new one has the new cap), so a remake an agent
// restart cut short is finished, not started over. The confirm removes
// the kept container; the revert removes the new one with its commit
// image and renames the kept one back. A kept container is not an
// instance: List and the CPU accounting skip it, Destroy removes it.
//
// The cap counts the server's committed data: btrfs's qgroup limit counts
// every extent a container's subvolume references (its image's too), so
// the new container gets the flavor's disk as is; overlay2's project
// quota counts only the writable layer, so a remade container's cap is
// the flavor's disk less the data its commit layers hold (labelCommitted),
// and a server never holds more than its flavor's disk.

const (
	// LabelRootDiskGB is the root disk (GB, 0 uncapped) a remade
	// container was made for: its storage-opt size need not say it in GB.
	LabelRootDiskGB = "capsule.root_disk_gb"
	// labelCommitted is the bytes of the server's own data its remade
	// container's image holds (the resize commits' layers).
	labelCommitted = "capsule.root_disk_committed"
	keptSuffix     = ".pre-resize"
	// resizeRepo is the local repository of resize commits; they never
	// leave the host.
	resizeRepo = "capsule-rootdisk"
)

var _ drivers.RootDiskResizer = (*Driver)(nil)

// keptName is the name of the container a root disk resize of instance id
// set aside.
func keptName(id string) string { return ContainerName(id) + keptSuffix }

// isKept reports whether the listed container is one a resize set aside.
func isKept(s container.Summary) bool {
	for _, n := range s.Names {
		if strings.HasSuffix(n, keptSuffix) {
			return true
		}
	}
	return false
}

// resizeImageRef is the commit of container cid of instance id.
func resizeImageRef(id, cid string) string { return resizeRepo + "/" + id + ":" + shortID(cid) }

// isResizeImage reports whether ref is a resize commit, private to one
// server (removed with the container that runs from it).
func isResizeImage(ref string) bool { return strings.HasPrefix(ref, resizeRepo+"/") }

// rootDiskGBOf is the root disk (GB) container c is capped at, 0 when it
// is not capped.
func rootDiskGBOf(c container.InspectResponse) int {
	if c.Config != nil {
		if n, err := strconv.Atoi(c.Config.Labels[LabelRootDiskGB]); err == nil {
			return n
		}
	}
	if c.HostConfig != nil {
		if n, err := strconv.Atoi(strings.TrimSuffix(c.HostConfig.StorageOpt["size"], "G")); err == nil {
			return n
		}
	}
	return 0
}

// committedOf is labelCommitted of c (0 when absent).
func committedOf(c container.InspectResponse) int64 {
	if c.Config == nil {
		return 0
	}
	n, _ := strconv.ParseInt(c.Config.Labels[labelCommitted], 10, 64)
	return max(n, 0)
}

// remadeStorageOpt is the storage-opt of a container remade with a disk of
// gb that holds committed bytes of the server's data in its image, on
// storage driver storage (see above); nil when uncapped. An error when the
// data does not fit the disk.
func remadeStorageOpt(storage string, gb int, committed int64) (map[string]string, error) {
	if gb <= 0 {
		return nil, nil
	}
	if committed >= int64(gb)<<30 {
		return nil, errdefs.Wrap(fmt.Errorf("%d bytes of data for a %d GB disk: %w", committed, gb, drivers.ErrInvalidState),
			errdefs.ErrFailedPrecondition, fmt.Sprintf("the server holds %d MB of data, more than the new flavor's %d GB disk", committed>>20, gb))
	}
	if storage != "overlay2" {
		return map[string]string{"size": strconv.Itoa(gb) + "G"}, nil
	}
	return map[string]string{"size": strconv.FormatInt(int64(gb)<<30-committed, 10)}, nil
}

// inspectKept returns the container a resize of instance id set aside.
func (d *Driver) inspectKept(ctx context.Context, id string) (container.InspectResponse, error) {
	c, err := d.cli.ContainerInspect(ctx, keptName(id))
	if err != nil {
		return c, wrap("inspect kept container", id, err)
	}
	if c.Config == nil || c.Config.Labels[LabelInstance] != id || c.State == nil || c.HostConfig == nil {
		return c, fmt.Errorf("docker inspect kept container %s: container %s is not managed by capsule: %w", id, c.ID, drivers.ErrNotFound)
	}
	return c, nil
}

// capsRootDisks says whether this dockerd caps root disks, probing with
// image (present) when no create has decided it yet (after an agent
// restart, say).
func (d *Driver) capsRootDisks(ctx context.Context, image, id string) (bool, error) {
	if err := d.probeRootDisk(ctx, image, id); err != nil {
		return false, err
	}
	d.root.mu.Lock()
	defer d.root.mu.Unlock()
	return d.root.state == rootDiskEnforced, nil
}

// RootDiskChange implements drivers.RootDiskResizer.
func (d *Driver) RootDiskChange(ctx context.Context, id string, diskGB int) (bool, error) {
	c, err := d.inspect(ctx, "root disk", id)
	if errors.Is(err, drivers.ErrNotFound) {
		if _, kerr := d.inspectKept(ctx, id); kerr == nil {
			return true, nil // a remake cut short between its rename and its create
		}
	}
	if err != nil {
		return false, err
	}
	if rootDiskGBOf(c) == diskGB {
		return false, nil
	}
	return d.capsRootDisks(ctx, c.Image, id)
}

// ResizeRootDisk implements drivers.RootDiskResizer.
func (d *Driver) ResizeRootDisk(ctx context.Context, id string, diskGB int) error {
	cur, cerr := d.inspect(ctx, "resize root disk", id)
	if cerr != nil && !errors.Is(cerr, drivers.ErrNotFound) {
		return cerr
	}
	kept, kerr := d.inspectKept(ctx, id)
	if kerr != nil && !errors.Is(kerr, drivers.ErrNotFound) {
		return kerr
	}
	haveCur, haveKept := cerr == nil, kerr == nil
	if haveCur && cur.State.Running {
		return fmt.Errorf("docker resize root disk %s: the instance must be stopped: %w", id, drivers.ErrInvalidState)
	}
	switch {
	case haveCur && rootDiskGBOf(cur) == diskGB:
		return nil // done already (a redelivery)
	case haveKept && rootDiskGBOf(kept) == diskGB:
		return d.restoreKept(ctx, id, cur, haveCur, kept)
	case haveKept && haveCur:
		return errdefs.Wrap(fmt.Errorf("docker resize root disk %s: a pre-resize container of %d GB is kept: %w", id, rootDiskGBOf(kept), drivers.ErrInvalidState),
			errdefs.ErrFailedPrecondition, "the server has a resize to confirm or revert first")
	case haveKept:
		return d.remake(ctx, id, kept, false, diskGB) // cut short after the rename: go on
	case haveCur:
		return d.remake(ctx, id, cur, true, diskGB)
	}
	return cerr
}

// restoreKept is a revert: the kept container comes back as the instance's
// and cur (when there is one), the resized container, goes with its commit
// image.
func (d *Driver) restoreKept(ctx context.Context, id string, cur container.InspectResponse, haveCur bool, kept container.InspectResponse) error {
	d.pin.mu.Lock() // as in remake: the CPUs pass from one container to the other
	defer d.pin.mu.Unlock()
	if haveCur {
		if err := d.removeWorkload(ctx, id, cur); err != nil {
			return fmt.Errorf("docker revert root disk %s: remove the resized container: %w", id, err)
		}
	}
	if err := d.cli.ContainerRename(ctx, kept.ID, ContainerName(id)); err != nil {
		return wrap("revert root disk: rename the kept container back", id, err)
	}
	d.pruneResizeImages(ctx, id)
	d.log.Info("root disk resize reverted: the pre-resize container is back", "instance", id, "container", kept.ID,
		"root_disk_gb", rootDiskGBOf(kept))
	return nil
}

// remake makes instance id's container again with a disk of diskGB from
// src, its stopped container (still under its own name when inPlace,
// else already renamed aside). A failure before the new container exists
// puts src back under the instance's name.
func (d *Driver) remake(ctx context.Context, id string, src container.InspectResponse, inPlace bool, diskGB int) error {
	for _, m := range src.Mounts {
		if m.Type == "bind" && underRootVolume(src.Config.Labels[LabelRootVolume], m.Source) {
			continue // a boot volume's: the new container binds it as well
		}
		if !ownMount(m.Destination) && (m.Type == "volume" || m.Type == "bind") {
			return errdefs.Wrap(fmt.Errorf("docker resize root disk %s: mount %s: %w", id, m.Destination, drivers.ErrHasVolumes),
				errdefs.ErrFailedPrecondition, "the server keeps data in volumes, which a root disk resize cannot carry")
		}
	}
	info, err := d.cli.Info(ctx)
	if err != nil {
		return fmt.Errorf("docker resize root disk %s: docker info: %w", id, err)
	}
	sized, _, err := d.cli.ContainerInspectWithRaw(ctx, src.ID, true)
	if err != nil {
		return wrap("resize root disk: size of the writable layer", id, err)
	}
	committed := committedOf(src)
	if sized.SizeRw != nil {
		committed += *sized.SizeRw
	}
	opt, err := remadeStorageOpt(info.Driver, diskGB, committed)
	if err != nil {
		return fmt.Errorf("docker resize root disk %s: %w", id, err)
	}
	ref := resizeImageRef(id, src.ID)
	if _, err := d.cli.ImageInspect(ctx, ref); cerrdefs.IsNotFound(err) {
		if _, err := d.cli.ContainerCommit(ctx, src.ID, container.CommitOptions{Reference: ref,
			Comment: "capsule root disk resize of instance " + id,
			Config:  &container.Config{Labels: blankCapsuleLabels(src.Config.Labels)}}); err != nil {
			return wrap("resize root disk: commit", id, err)
		}
	} else if err != nil {
		return fmt.Errorf("docker resize root disk %s: inspect %s: %w", id, ref, err)
	}
	// Under the pinning lock from the rename to the create: a kept
	// container's CPUs are not counted (cpuUse), so a concurrent create
	// must not see them free before the new container holds them.
	d.pin.mu.Lock()
	defer d.pin.mu.Unlock()
	aside := !inPlace
	undo := func(cause error) error {
		bg := context.WithoutCancel(ctx)
		if aside {
			if err := d.cli.ContainerRename(bg, src.ID, ContainerName(id)); err != nil {
				d.log.Error("root disk resize: could not put the old container back under its name", "instance", id, "container", src.ID, "err", err)
				return fmt.Errorf("%w (putting the old container back failed: %v)", cause, err)
			}
		}
		if err := d.RemoveImage(bg, ref); err != nil {
			d.log.Warn("root disk resize: could not remove the commit of a failed resize", "instance", id, "image", ref, "err", err)
		}
		return cause
	}
	if inPlace {
		if err := d.cli.ContainerRename(ctx, src.ID, keptName(id)); err != nil {
			return undo(wrap("resize root disk: set the old container aside", id, err))
		}
		aside = true
	}
	cfg := *src.Config
	cfg.Image = ref
	cfg.Labels = maps.Clone(src.Config.Labels)
	cfg.Labels[LabelRootDiskGB] = strconv.Itoa(diskGB)
	cfg.Labels[labelCommitted] = strconv.FormatInt(committed, 10)
	// It runs the resize commit, not a volume-free copy (volumes.go):
	// its removal removes that commit; the copy goes with the old one.
	cfg.Labels[LabelSourceImage] = ""
	host := *src.HostConfig
	host.StorageOpt = opt
	if sandboxed(src) {
		// By name: the sandbox may have been made again since.
		host.NetworkMode = container.NetworkMode("container:" + SandboxName(id))
		cfg.Hostname, cfg.Domainname = "", ""
	}
	resp, err := d.cli.ContainerCreate(ctx, &cfg, &host, nil, nil, ContainerName(id))
	if err != nil {
		return undo(resizeCreateRefused(wrap("resize root disk: create", id, err)))
	}
	d.log.Info("root disk resized: container made again from a commit of the old one, kept aside until confirm or revert",
		"instance", id, "container", resp.ID, "kept", src.ID, "image", ref, "root_disk_gb", diskGB,
		"storage_opt", opt["size"], "committed_bytes", committed, "storage_driver", info.Driver)
	return nil
}

// resizeCreateRefused gives a failed create of a remade container a
// message the server's user may see.
func resizeCreateRefused(err error) error {
	if errdefs.KindOf(err) != "" {
		return err
	}
	return errdefs.Wrap(err, errdefs.ErrInternal, "the host could not make the server's container with the new root disk")
}

// ConfirmRootDisk implements drivers.RootDiskResizer.
func (d *Driver) ConfirmRootDisk(ctx context.Context, id string) error {
	kept, err := d.inspectKept(ctx, id)
	if errors.Is(err, drivers.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if err := d.removeWorkload(ctx, id, kept); err != nil {
		return fmt.Errorf("docker confirm root disk %s: remove the kept container: %w", id, err)
	}
	d.pruneResizeImages(ctx, id)
	d.log.Info("root disk resize confirmed: the pre-resize container removed", "instance", id, "container", kept.ID)
	return nil
}

// KeptRootDisks implements drivers.RootDiskResizer.
func (d *Driver) KeptRootDisks(ctx context.Context) ([]string, error) {
	f := filters.NewArgs(filters.Arg("label", LabelManaged+"=true"))
	if d.opts.Owner != "" {
		f.Add("label", LabelOwnerHost+"="+d.opts.Owner)
	}
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("docker list kept containers: %w", err)
	}
	var ids []string
	for _, s := range cs {
		if id := s.Labels[LabelInstance]; id != "" && isKept(s) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// DropStrayResizeImages implements drivers.RootDiskResizer: the resize
// commits of instances with no container on this dockerd go (a delete
// lists them only for servers it knows were resized). Images are listed
// before containers, so a commit made meanwhile belongs to an instance the
// container list shows; RemoveImage keeps one a container runs from.
func (d *Driver) DropStrayResizeImages(ctx context.Context) (int, error) {
	imgs, err := d.cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", resizeRepo+"/*"))})
	if err != nil {
		return 0, fmt.Errorf("docker list resize commits: %w", err)
	}
	if len(imgs) == 0 {
		return 0, nil
	}
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelManaged+"=true"))})
	if err != nil {
		return 0, fmt.Errorf("docker list containers: %w", err)
	}
	have := map[string]bool{}
	for _, c := range cs {
		have[c.Labels[LabelInstance]] = true
	}
	dropped := 0
	for _, img := range imgs {
		for _, ref := range img.RepoTags {
			id := strings.TrimPrefix(ref, resizeRepo+"/")
			if i := strings.LastIndexByte(id, ':'); i >= 0 {
				id = id[:i]
			}
			if !isResizeImage(ref) || have[id] {
				continue
			}
			if err := d.RemoveImage(ctx, ref); err != nil {
				d.log.Warn("could not remove a stray resize commit", "instance", id, "image", ref, "err", err)
				continue
			}
			dropped++
		}
	}
	return dropped, nil
}

// pruneResizeImages removes instance id's resize commits no container
// runs from (RemoveImage keeps one in use): those a revert or confirm
// cut short by an agent restart left, the crash between a remove and a
// rename.
func (d *Driver) pruneResizeImages(ctx context.Context, id string) {
	imgs, err := d.cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", resizeRepo+"/"+id))})
	if err != nil {
		d.log.Warn("could not list the resize commits of an instance", "instance", id, "err", err)
		return
	}
	for _, img := range imgs {
		for _, ref := range img.RepoTags {
			if err := d.RemoveImage(ctx, ref); err != nil {
				d.log.Warn("could not remove a resize commit", "instance", id, "image", ref, "err", err)
			}
		}
	}
}
