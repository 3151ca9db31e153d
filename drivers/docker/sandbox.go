package docker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
)

// Every server is two containers (Zun's capsules and Kubernetes pods do
// the same): a sandbox, capsule-<id>-sandbox, that only sleeps and holds
// the network namespace, the hostname and /etc/resolv.conf, and the
// workload, capsule-<id>, that joins the sandbox's namespace
// (network_mode container:<sandbox>). The agent plumbs the sandbox's
// namespace before the workload starts, so the workload never runs
// without its network (nova-docker plumbed after start and swallowed the
// errors), and a workload restart or crash keeps the network.
//
// Stop stops both: a shut-off server must not answer on its address (a
// live namespace answers ARP and ping by itself), just as a shut-off VM's
// tap disappears. Start starts the sandbox first, in a new namespace, which
// the agent plumbs again before the workload joins it. Destroy removes both.
// List and Status report the workload; the sandbox is part of it.

// Sandbox container labels and naming.
const (
	LabelRole     = "capsule.role"
	RoleSandbox   = "sandbox"
	RoleWorkload  = "workload"
	sandboxSuffix = "-sandbox"
)

// Sandbox resources: it runs one sleeping process.
const (
	sandboxMemory    = 16 << 20
	sandboxPids      = 8
	sandboxCPUQuota  = cfsPeriod / 10
	sandboxCPUShares = 2
)

// DefaultSandboxCmd is the sandbox's process: a sleep, so the infra image
// only needs a sleep binary (busybox's accepts "inf").
var DefaultSandboxCmd = []string{"sleep", "inf"}

// SandboxName is the name of the sandbox container of instance id.
func SandboxName(id string) string { return namePrefix + id + sandboxSuffix }

// sandboxConfigs builds the sandbox's container and host configuration.
func (d *Driver) sandboxConfigs(spec drivers.Spec) (*container.Config, *container.HostConfig) {
	labels := make(map[string]string, len(spec.Labels)+3)
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[LabelInstance] = spec.ID
	labels[LabelManaged] = "true"
	labels[LabelRole] = RoleSandbox

	cfg := &container.Config{
		Hostname:   spec.Hostname,
		Image:      d.opts.SandboxImage,
		Entrypoint: append([]string(nil), d.opts.SandboxCmd...),
		Labels:     labels,
		// Nothing to shut down cleanly: a sleep ignores SIGTERM as PID 1,
		// so a stop would only wait out its timeout.
		StopSignal: "SIGKILL",
	}
	mem := int64(sandboxMemory)
	pids := int64(sandboxPids)
	noInit := false
	host := &container.HostConfig{
		// The agent plumbs the namespace itself; Docker adds only lo.
		NetworkMode:    "none",
		DNS:            append([]string(nil), spec.DNS...),
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		LogConfig:      container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "1m", "max-file": "1"}},
		Privileged:     false,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    append([]string(nil), SecurityOpt...),
		ReadonlyRootfs: true,
		Init:           &noInit,
		Resources: container.Resources{
			CPUPeriod:  cfsPeriod,
			CPUQuota:   sandboxCPUQuota,
			CPUShares:  sandboxCPUShares,
			Memory:     mem,
			MemorySwap: mem,
			PidsLimit:  &pids,
		},
	}
	return cfg, host
}

// inspectSandbox returns the sandbox container of instance id, checking it
// is ours; a missing one is ErrNotFound.
func (d *Driver) inspectSandbox(ctx context.Context, op, id string) (container.InspectResponse, error) {
	c, err := d.cli.ContainerInspect(ctx, SandboxName(id))
	if err != nil {
		return c, wrap(op+" sandbox", id, err)
	}
	if c.Config == nil || c.Config.Labels[LabelInstance] != id || c.Config.Labels[LabelRole] != RoleSandbox || c.State == nil {
		return c, fmt.Errorf("docker %s sandbox %s: container %s is not managed by capsule: %w", op, id, c.ID, drivers.ErrNotFound)
	}
	return c, nil
}

// createSandbox creates the sandbox of spec unless it exists and returns
// its container id.
func (d *Driver) createSandbox(ctx context.Context, spec drivers.Spec) (string, error) {
	if c, err := d.inspectSandbox(ctx, "create", spec.ID); err == nil {
		return c.ID, nil
	} else if !errors.Is(err, drivers.ErrNotFound) {
		return "", err
	}
	cfg, host := d.sandboxConfigs(spec)
	if err := d.maskImageLabels(ctx, cfg.Image, cfg.Labels); err != nil {
		return "", fmt.Errorf("docker create %s: sandbox: %w", spec.ID, err)
	}
	resp, err := d.cli.ContainerCreate(ctx, cfg, host, nil, nil, SandboxName(spec.ID))
	if err != nil {
		if cerrdefs.IsConflict(err) {
			if c, ierr := d.inspectSandbox(ctx, "create", spec.ID); ierr == nil {
				return c.ID, nil
			}
		}
		return "", wrap("create sandbox", spec.ID, err)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("sandbox create warning", "instance", spec.ID, "warning", w)
	}
	return resp.ID, nil
}

// ensureSandbox starts the sandbox of id if it is not running and returns
// its state. A missing sandbox cannot be re-made: Docker resolved the
// workload's network_mode to the sandbox's container id at create.
func (d *Driver) ensureSandbox(ctx context.Context, op, id string) (container.InspectResponse, error) {
	c, err := d.inspectSandbox(ctx, op, id)
	if errors.Is(err, drivers.ErrNotFound) {
		return c, fmt.Errorf("docker %s %s: the sandbox container %s holding its network is missing; rebuild the server: %w",
			op, id, SandboxName(id), drivers.ErrInvalidState)
	} else if err != nil {
		return c, err
	}
	if c.State.Paused {
		if err := d.cli.ContainerUnpause(ctx, c.ID); err != nil {
			return c, wrap(op+" sandbox", id, err)
		}
	}
	if c.State.Running && c.State.Pid > 0 {
		return c, nil
	}
	if err := d.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return c, wrap(op+" sandbox", id, err)
	}
	c, err = d.inspectSandbox(ctx, op, id)
	if err != nil {
		return c, err
	}
	if !c.State.Running || c.State.Pid <= 0 {
		return c, fmt.Errorf("docker %s %s: sandbox exited right after start (%s, exit code %d); is %v runnable in image %s?",
			op, id, c.State.Status, c.State.ExitCode, d.opts.SandboxCmd, d.opts.SandboxImage)
	}
	d.log.Info("sandbox started", "instance", id, "container", c.ID, "pid", c.State.Pid)
	return c, nil
}

// stopSandbox stops the sandbox of id if it runs; a missing one is fine.
func (d *Driver) stopSandbox(ctx context.Context, id string) error {
	c, err := d.inspectSandbox(ctx, "stop", id)
	if errors.Is(err, drivers.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if !c.State.Running {
		return nil
	}
	zero := 0 // its stop signal is SIGKILL anyway
	if err := d.cli.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &zero}); err != nil {
		return wrap("stop sandbox", id, err)
	}
	return nil
}

// removeSandbox removes the sandbox of id; a missing one is fine.
func (d *Driver) removeSandbox(ctx context.Context, id string) error {
	c, err := d.inspectSandbox(ctx, "destroy", id)
	if errors.Is(err, drivers.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	err = d.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
	case cerrdefs.IsConflict(err):
		if err := d.waitGone(ctx, c.ID); err != nil {
			return wrap("destroy sandbox", id, err)
		}
	default:
		return wrap("destroy sandbox", id, err)
	}
	return nil
}

// Sandbox implements drivers.Driver: it starts the sandbox if needed and
// returns the network namespace to plumb: the running workload's (the one
// the server uses now; it is the sandbox's unless the sandbox was
// restarted under it), else the sandbox's, which the workload joins at
// its next start.
func (d *Driver) Sandbox(ctx context.Context, id string) (string, error) {
	w, err := d.inspect(ctx, "sandbox", id)
	if err != nil {
		return "", err
	}
	if d.inNetns(w) {
		// One container (netns.go): the namespace it runs in, else the
		// one it joins at its next start.
		if w.State.Running && w.State.Pid > 0 {
			return netnsPath(w.State.Pid), nil
		}
		return d.joinNetns(id, w.ID)
	}
	if !sandboxed(w) {
		return "", fmt.Errorf("docker sandbox %s: created without network (Spec.Networked false): %w", id, drivers.ErrNotSupported)
	}
	sb, err := d.ensureSandbox(ctx, "sandbox", id)
	if err != nil {
		return "", err
	}
	pid := sb.State.Pid
	if w.State.Running && w.State.Pid > 0 {
		pid = w.State.Pid
	}
	return netnsPath(pid), nil
}

func netnsPath(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/ns/net" }
