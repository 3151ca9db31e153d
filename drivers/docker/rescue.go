package docker

import (
	"context"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
)

var _ drivers.Rescuer = (*Driver)(nil)

// RoleRescue labels a server's rescue container.
const RoleRescue = "rescue"

const rescueSuffix = "-rescue"

// RescueName is the name of instance id's rescue container, and of the
// volume that mounts its root filesystem there.
func RescueName(id string) string { return namePrefix + id + rescueSuffix }

// Rescue implements drivers.Rescuer. The server's filesystem is exposed
// as Docker itself assembles it: its overlay2 layers (the image's lower
// dirs, the -init layer and the container's upper dir), mounted by
// dockerd as a "local" volume of type overlay when the rescue container
// starts (in dockerd's mount namespace, unmounted when it stops). Writes
// under /mnt land in the container's own upper dir, so the workload sees
// them when it starts again; nothing is copied, committed or pushed. The
// workload is stopped first (two overlay mounts must never share an upper
// dir); its sandbox stays up, so the rescue container has the server's
// NICs and address. The rescue container copies the workload's limits,
// capabilities, seccomp profile and mounts.
func (d *Driver) Rescue(ctx context.Context, id, image string, grace time.Duration) error {
	c, err := d.inspect(ctx, "rescue", id)
	if err != nil {
		return err
	}
	g := c.GraphDriver
	lower, upper, work := g.Data["LowerDir"], g.Data["UpperDir"], g.Data["WorkDir"]
	if g.Name != "overlay2" || lower == "" || upper == "" || work == "" {
		return errdefs.Wrap(fmt.Errorf("docker rescue %s: storage driver %q: %w", id, g.Name, drivers.ErrNotSupported),
			errdefs.ErrInvalidArgument, fmt.Sprintf("Instance %s cannot be rescued: its host's storage driver (%s) does not expose its disk", id, g.Name))
	}
	if err := d.ensureImage(ctx, image); err != nil {
		return fmt.Errorf("docker rescue %s: %w", id, err)
	}
	if err := d.stopWorkload(ctx, id, c, grace); err != nil {
		return err
	}
	if sandboxed(c) {
		if _, err := d.ensureSandbox(ctx, "rescue", id); err != nil {
			return err
		}
	}
	name := RescueName(id)
	// A volume-backed server's root is its boot volume (bootvolume.go):
	// its host mount, not the container's layers, is what /mnt shows,
	// and the rescue image keeps its own directories (the workload's
	// binds of the volume's are left out).
	rootVol := c.Config.Labels[LabelRootVolume]
	if rootVol == "" {
		opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
		if v, err := d.cli.VolumeInspect(ctx, name); err == nil && v.Options["o"] != opts {
			if err := d.cli.VolumeRemove(ctx, name, false); err != nil && !cerrdefs.IsNotFound(err) {
				return wrap("rescue volume", id, err)
			}
		}
		if _, err := d.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Driver: "local",
			DriverOpts: map[string]string{"type": "overlay", "device": "overlay", "o": opts},
			Labels:     map[string]string{LabelInstance: id, LabelManaged: "true", LabelRole: RoleRescue}}); err != nil {
			return wrap("rescue volume", id, err)
		}
	}
	r, err := d.cli.ContainerInspect(ctx, name)
	rid := name
	if err == nil {
		rid = r.ID
	}
	switch {
	case cerrdefs.IsNotFound(err):
		labels := map[string]string{}
		for k, v := range c.Config.Labels {
			labels[k] = v
		}
		labels[LabelRole] = RoleRescue
		cfg := &container.Config{Image: image, Labels: labels, StopTimeout: c.Config.StopTimeout}
		if d.inNetns(c) {
			// One container (netns.go): the server's hostname; its
			// runtime joins it to the server's namespace below.
			cfg.Hostname = c.Config.Hostname
		}
		host := *c.HostConfig
		host.Mounts = nil
		for _, m := range c.HostConfig.Mounts {
			if m.Type == mount.TypeBind && underRootVolume(rootVol, m.Source) {
				continue
			}
			host.Mounts = append(host.Mounts, m)
		}
		if rootVol != "" {
			delete(labels, LabelRootVolume)
			host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeBind, Source: rootVol, Target: "/mnt",
				BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate}})
		} else {
			host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeVolume, Source: name, Target: "/mnt"})
		}
		host.AutoRemove = false
		resp, err := d.cli.ContainerCreate(ctx, cfg, &host, nil, nil, name)
		if err != nil {
			return wrap("rescue create", id, err)
		}
		rid = resp.ID
	case err != nil:
		return wrap("rescue inspect", id, err)
	case r.State != nil && r.State.Running:
		return nil
	}
	if d.inNetns(c) {
		if _, err := d.joinNetns(id, rid); err != nil {
			return err
		}
	}
	if err := d.cli.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
		return wrap("rescue start", id, err)
	}
	d.log.Info("rescue container started", "instance", id, "image", image)
	return nil
}

// Unrescue implements drivers.Rescuer: the rescue container (with any
// anonymous volume its image declares) and its
// volume go (dockerd unmounts the server's filesystem); the workload is
// left stopped for the agent to start.
func (d *Driver) Unrescue(ctx context.Context, id string, grace time.Duration) error {
	name := RescueName(id)
	if err := d.cli.ContainerStop(ctx, name, container.StopOptions{Timeout: secondsCeil(grace)}); err != nil && !cerrdefs.IsNotFound(err) {
		return wrap("unrescue stop", id, err)
	}
	if err := d.cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return wrap("unrescue remove", id, err)
	}
	if err := d.cli.VolumeRemove(ctx, name, true); err != nil && !cerrdefs.IsNotFound(err) {
		return wrap("unrescue volume", id, err)
	}
	d.log.Info("rescue container removed", "instance", id)
	return nil
}

// isRescue reports whether s is a rescue container (part of its instance,
// not the instance).
func isRescue(s container.Summary) bool {
	return s.Labels[LabelRole] == RoleRescue || slicesHasSuffix(s.Names, rescueSuffix)
}

func slicesHasSuffix(names []string, suffix string) bool {
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}
