// Package docker is the compute driver that runs each server as a Docker
// container through the Docker Engine API, with hard CPU, memory and pid
// limits and a locked-down security profile (the tenant must not be able to
// take the host down, see docs/lessons).
package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/internal/netnsfile"
	"github.com/capsule-cloud/capsule/limits"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// Labels the driver puts on every container it creates.
const (
	LabelInstance = "capsule.instance"
	LabelManaged  = "capsule.managed"
	namePrefix    = "capsule-"
	// LabelOwnerHost is the compute host whose agent created the
	// container (the agent sets it through Spec.Labels; Options.Owner
	// filters on it).
	LabelOwnerHost = "capsule.host"
)

// CapDrop is the set of capabilities removed from every container on top of
// Docker's default set. The aim is that a tenant cannot build network
// devices or namespaces, create device nodes, write to
// the host's audit log or read the kernel log (the lessons: a bridge made
// inside a container crashed the host; host and container rsyslog fought
// over the kernel ring buffer). NET_ADMIN, SYS_ADMIN, SYS_MODULE, SYSLOG...
// are not in Docker's default set; they are listed anyway so they stay
// absent even if a daemon's defaults change. SYS_CHROOT is kept: sshd's
// privilege separation chroots, and VM users expect sshd to work.
// Creating user/network namespaces without CAP_SYS_ADMIN is blocked by
// Docker's default seccomp profile, which is why it is never disabled.
// NET_RAW is kept: a server is used like a VM (ping, traceroute, tcpdump
// inside it), raw sockets only reach the server's own namespace, and what
// it sends is checked by its port's anti-spoofing flows in Open vSwitch.
var CapDrop = []string{
	"MKNOD", "AUDIT_WRITE", "SETFCAP",
	"NET_ADMIN", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE",
	"SYS_BOOT", "SYS_TIME", "SYSLOG", "MAC_ADMIN", "MAC_OVERRIDE",
	"AUDIT_CONTROL", "SYS_RESOURCE", "NET_BROADCAST", "LINUX_IMMUTABLE",
	"DAC_READ_SEARCH", "WAKE_ALARM", "BLOCK_SUSPEND", "LEASE", "IPC_LOCK",
	"SYS_NICE", "SYS_PACCT", "SYS_TTY_CONFIG", "AUDIT_READ",
}

// SecurityOpt is set on every container. Docker's default seccomp profile
// applies because no seccomp option is given.
var SecurityOpt = []string{"no-new-privileges"}

// cfsPeriod is the CFS period in microseconds of the sandboxes; servers
// get their flavor's (limits.CPU.CFS, default the same 100 ms).
const cfsPeriod = limits.DefaultCPUPeriodUS

// RegistryAuth is the optional registry login used for pulls.
type RegistryAuth struct {
	Username      string
	Password      string
	ServerAddress string
}

// Options configures the driver.
type Options struct {
	// Host is the dockerd endpoint, e.g. unix:///run/capsule/docker.sock.
	// Empty means the client's environment defaults (DOCKER_HOST...).
	Host string
	// RegistryAuth, when set, is sent with every image pull.
	RegistryAuth *RegistryAuth
	// Owner, when set, is the compute host this driver serves: List only
	// sees containers labelled capsule.host=<Owner> (the agent labels
	// every server it creates), so agents sharing one dockerd — test
	// clouds, simulated hosts — never count, alarm on or report each
	// other's servers.
	Owner string
	// StopTimeout is the grace period of a soft reboot and of a Stop
	// called with grace <= 0. Default 10s.
	StopTimeout time.Duration
	// LogMaxSize and LogMaxFile bound each container's console log so a
	// chatty server cannot fill the disk. Defaults 10m and 2.
	LogMaxSize string
	LogMaxFile int
	// ConsoleMaxBytes caps the console output one request returns (the
	// log's tail). Default DefaultConsoleMaxBytes.
	ConsoleMaxBytes int
	// DefaultDiskGB is reported by Fingerprint when Docker's root dir
	// cannot be inspected (remote daemon). Default 100.
	DefaultDiskGB int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SandboxImage is the infra image of every server's sandbox, the
	// container holding its network namespace (see sandbox.go), e.g. the
	// base image. Required. SandboxCmd is its process, DefaultSandboxCmd
	// when empty; it must run forever.
	SandboxImage string
	SandboxCmd   []string
	// NetworkMode is how a networked server holds its network namespace:
	// NetworkSandbox (default) a sandbox container beside the workload
	// (sandbox.go), NetworkNetns one container joined to a namespace the
	// driver keeps as a file (netns.go). Servers keep the mode they were
	// created in.
	NetworkMode string
	// NetnsDir is where NetworkNetns keeps the namespaces, one file per
	// instance; default DefaultNetnsDir/<Owner, else "default">.
	NetnsDir string
	// Runtime is the name of Capsule's OCI runtime wrapper in dockerd
	// (NetworkNetns); default DefaultRuntime. New checks dockerd has it.
	Runtime string
	// DiskDevice is the whole-disk block device holding Docker's data
	// (e.g. /dev/vda), where a flavor's disk throttles apply. Empty: found
	// from docker info and this host's mounts at the first throttled
	// create (a remote daemon needs it set).
	DiskDevice string
	// LXCFS is the mount point of the host's LXCFS (config agent.lxcfs):
	// when it answers at driver start, its proc files are bind-mounted
	// read-only over every server's /proc (see proc.go). Empty disables.
	LXCFS string
	// CPUDedicatedSet is the agent's cpu_dedicated_set, a CPU list: the
	// CPUs hw:cpu_policy=dedicated servers are pinned to, one server per
	// CPU; shared servers are pinned within the others (cpuset.go). ""
	// reserves none. New refuses CPUs the host lacks and a set that leaves
	// no shared CPU.
	CPUDedicatedSet string
}

// Driver implements drivers.Driver on the Docker Engine API.
type Driver struct {
	cli  *client.Client
	opts Options
	log  *slog.Logger
	disk diskDevice
	proc procView // LXCFS mounts of every server (proc.go)
	pin  pinning  // CPU pinning (cpuset.go)
	live liveThrottles
	root rootDisk  // root disk caps (rootdisk.go)
	pre  precopies // migration pre-copies (precopy.go)
	// shadows: images' /etc/shadow by image ID, for a build's adminPass
	// (password.go, shadowcache.go).
	shadows shadowCache
	info    infoCache // docker info for Fingerprint
}

// infoCache keeps the last docker info for fingerprintInfoTTL: every
// docker info makes dockerd run `runc --version` and `docker-init
// --version` (two processes), and the heartbeat fingerprints every few
// seconds for figures that change only with the daemon.
type infoCache struct {
	mu sync.Mutex
	v  system.Info
	at time.Time // zero: nothing cached
}

// fingerprintInfoTTL is how long Fingerprint reuses a docker info (a ping
// still checks that dockerd answers each time).
const fingerprintInfoTTL = time.Minute

// dockerInfo is docker info, reused for fingerprintInfoTTL after a ping.
func (d *Driver) dockerInfo(ctx context.Context) (system.Info, error) {
	d.info.mu.Lock()
	v, at := d.info.v, d.info.at
	d.info.mu.Unlock()
	if !at.IsZero() && time.Since(at) < fingerprintInfoTTL {
		if _, err := d.cli.Ping(ctx); err != nil {
			d.forgetInfo()
			return system.Info{}, err
		}
		return v, nil
	}
	v, err := d.cli.Info(ctx)
	if err != nil {
		d.forgetInfo()
		return system.Info{}, err
	}
	d.info.mu.Lock()
	d.info.v, d.info.at = v, time.Now()
	d.info.mu.Unlock()
	return v, nil
}

// forgetInfo drops the cached docker info (dockerd went away or came back:
// it may be another version now).
func (d *Driver) forgetInfo() {
	d.info.mu.Lock()
	d.info.at = time.Time{}
	d.info.mu.Unlock()
}

var _ drivers.Driver = (*Driver)(nil)

// New connects to dockerd (negotiating the API version, so an older daemon
// such as 20.10 works) and checks that it answers.
func New(ctx context.Context, opts Options) (*Driver, error) {
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	if opts.ConsoleMaxBytes <= 0 {
		opts.ConsoleMaxBytes = DefaultConsoleMaxBytes
	}
	if opts.LogMaxSize == "" {
		opts.LogMaxSize = "10m"
	}
	if opts.LogMaxFile <= 0 {
		opts.LogMaxFile = 2
	}
	if opts.DefaultDiskGB <= 0 {
		opts.DefaultDiskGB = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SandboxImage == "" {
		return nil, errors.New("docker driver: no sandbox image configured (the infra image holding each server's network namespace)")
	}
	if len(opts.SandboxCmd) == 0 {
		opts.SandboxCmd = DefaultSandboxCmd
	}
	switch opts.NetworkMode {
	case "":
		opts.NetworkMode = DefaultNetworkMode
	case NetworkSandbox, NetworkNetns:
	default:
		return nil, fmt.Errorf("docker driver: network mode %q: want %s or %s", opts.NetworkMode, NetworkSandbox, NetworkNetns)
	}
	if opts.Runtime == "" {
		opts.Runtime = DefaultRuntime
	}
	if opts.NetnsDir == "" {
		owner := opts.Owner
		if owner == "" {
			owner = "default"
		}
		opts.NetnsDir = filepath.Join(DefaultNetnsDir, owner)
	}
	copts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if opts.Host != "" {
		copts = append(copts, client.WithHost(opts.Host))
	}
	cli, err := client.NewClientWithOpts(copts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", opts.Host, err)
	}
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("ping dockerd at %q: %w", opts.Host, err)
	}
	// Settle the API version now: the client negotiates lazily on first
	// use, and that is not safe when the first calls are concurrent.
	cli.NegotiateAPIVersion(ctx)
	d := &Driver{cli: cli, opts: opts, log: opts.Logger.With("driver", "docker")}
	if d.netnsMode() {
		if err := d.checkRuntime(ctx); err != nil {
			cli.Close()
			return nil, fmt.Errorf("docker driver: %w", err)
		}
	}
	if opts.CPUDedicatedSet != "" {
		pools, err := d.cpuPools(ctx)
		if err != nil {
			cli.Close()
			return nil, fmt.Errorf("docker driver: %w", err)
		}
		d.log.Info("cpu pools", "shared", limits.FormatCPUList(pools.Shared), "dedicated", limits.FormatCPUList(pools.Dedicated))
	}
	d.initProcView()
	if err := d.initRootDisk(ctx); err != nil {
		// Left unprobed: the first create with a disk decides.
		d.log.Warn("root disk: cannot read docker info at start", "err", err)
	}
	return d, nil
}

// Close releases the client's connections.
func (d *Driver) Close() error { return d.cli.Close() }

// Client exposes the Docker client, for code that must reach the same
// daemon (e.g. networking putting a workload into an infra netns).
func (d *Driver) Client() *client.Client { return d.cli }

// ContainerName is the name of the container of instance id.
func ContainerName(id string) string { return namePrefix + id }

// Name implements drivers.Driver.
func (d *Driver) Name() string { return "docker" }

// Capabilities implements drivers.Driver.
func (d *Driver) Capabilities() drivers.Capabilities {
	return drivers.Capabilities{Pause: true, ConsoleOutput: true, Networking: true, LiveResize: true, PasswordAtCreate: true}
}

// wrap turns a Docker error into one carrying the driver's error kind.
func wrap(op, id string, err error) error {
	switch {
	case err == nil:
		return nil
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("docker %s %s: %w: %w", op, id, drivers.ErrNotFound, err)
	case cerrdefs.IsConflict(err):
		return fmt.Errorf("docker %s %s: %w: %w", op, id, drivers.ErrInvalidState, err)
	}
	return fmt.Errorf("docker %s %s: %w", op, id, err)
}

// inspect returns the container of instance id, checking it is ours (a
// same-named container without our label is not an instance).
func (d *Driver) inspect(ctx context.Context, op, id string) (container.InspectResponse, error) {
	if id == "" {
		return container.InspectResponse{}, fmt.Errorf("docker %s: empty instance id: %w", op, drivers.ErrNotFound)
	}
	c, err := d.cli.ContainerInspect(ctx, ContainerName(id))
	if err != nil {
		return c, wrap(op, id, err)
	}
	if c.Config == nil || c.Config.Labels[LabelInstance] != id || c.State == nil {
		return c, fmt.Errorf("docker %s %s: container %s is not managed by capsule: %w", op, id, c.ID, drivers.ErrNotFound)
	}
	return c, nil
}

// validate refuses specs that would run a server without hard limits.
func validate(spec drivers.Spec) error {
	switch {
	case spec.ID == "":
		return fmt.Errorf("docker create: empty instance id: %w", drivers.ErrInvalidState)
	case spec.Image == "":
		return fmt.Errorf("docker create %s: empty image: %w", spec.ID, drivers.ErrInvalidState)
	case pidsLimit(spec) <= 0:
		// The thread-leak lesson: no container may run without a pid cap.
		return fmt.Errorf("docker create %s: pids limit must be > 0, got %d: %w", spec.ID, pidsLimit(spec), drivers.ErrInvalidState)
	case spec.VCPUs <= 0:
		return fmt.Errorf("docker create %s: vcpus must be > 0, got %d: %w", spec.ID, spec.VCPUs, drivers.ErrInvalidState)
	case spec.MemoryMB < 6:
		// Docker's own minimum is 6 MiB; 0 would mean unlimited.
		return fmt.Errorf("docker create %s: memory must be >= 6 MB, got %d: %w", spec.ID, spec.MemoryMB, drivers.ErrInvalidState)
	}
	return nil
}

// configs builds the container and host configuration of spec; diskDev
// is where its disk throttles apply (empty: none).
func (d *Driver) configs(spec drivers.Spec, diskDev string, useNetns bool) (*container.Config, *container.HostConfig) {
	labels := make(map[string]string, len(spec.Labels)+2)
	for k, v := range spec.Labels {
		labels[k] = v
	}
	// Ours last, so a spec label cannot hide the instance from List. All
	// of the driver's labels are set, whatever their value, so that none
	// comes from the image (Docker adds an image's labels the container
	// does not set); maskImageLabels blanks the image's other capsule.*.
	labels[LabelInstance] = spec.ID
	labels[LabelManaged] = "true"
	labels[LabelRole] = RoleWorkload
	labels[LabelCPUPolicy] = policyShared
	labels[LabelSourceImage] = "" // Create names the image when it runs a copy
	if spec.Limits.CPU.Dedicated {
		labels[LabelCPUPolicy] = policyDedicated
	}

	stopSecs := int(math.Ceil(d.opts.StopTimeout.Seconds()))
	cfg := &container.Config{
		// No Hostname when sandboxed: Docker refuses one with a container
		// network mode; the workload gets the sandbox's (and its
		// /etc/resolv.conf).
		Image:       spec.Image,
		Labels:      labels,
		StopTimeout: &stopSecs,
		// No TTY: the console log is then a clean stdout/stderr stream.
		Tty: false,
		Cmd: spec.Command,
	}
	noInit := false
	host := &container.HostConfig{
		// The sandbox's namespace, plumbed before the workload starts.
		NetworkMode:   container.NetworkMode("container:" + SandboxName(spec.ID)),
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		LogConfig: container.LogConfig{
			Type: "json-file",
			Config: map[string]string{
				"max-size": d.opts.LogMaxSize,
				"max-file": strconv.Itoa(d.opts.LogMaxFile),
			},
		},
		Privileged:  false,
		CapDrop:     append([]string(nil), CapDrop...),
		SecurityOpt: append([]string(nil), SecurityOpt...),
		// The image brings its own PID 1.
		Init:      &noInit,
		Resources: resources(spec, diskDev),
		// The server's own figures in /proc (LXCFS), when the host has it.
		Mounts: append([]mount.Mount(nil), d.proc.mounts...),
	}
	if !spec.Networked {
		// No NICs, no sandbox: the server is one container without a
		// network, with its own hostname.
		cfg.Hostname = spec.Hostname
		host.NetworkMode = "none"
		host.DNS = spec.DNS
	} else if useNetns {
		// One container (netns.go): Docker gives it no network, its
		// runtime joins it to the namespace the agent plumbed.
		cfg.Hostname = spec.Hostname
		host.NetworkMode = "none"
		host.DNS = spec.DNS
		host.Runtime = d.opts.Runtime
	}
	return cfg, host
}

// sandboxed reports whether the workload c lives in a sandbox's namespace.
func sandboxed(c container.InspectResponse) bool {
	return c.HostConfig != nil && c.HostConfig.NetworkMode.IsContainer()
}

// Create implements drivers.Driver: it pulls the images when missing and
// creates the sandbox and the workload container, neither started. An
// existing workload container of the same instance is accepted as is; a
// failed create leaves no sandbox behind.
func (d *Driver) Create(ctx context.Context, spec drivers.Spec) error {
	return d.create(ctx, spec, d.netnsMode())
}

// create is Create; useNetns: a networked spec gets one container
// (netns.go) rather than a sandbox (a rebuild keeps the server's mode).
func (d *Driver) create(ctx context.Context, spec drivers.Spec, useNetns bool) error {
	if err := validate(spec); err != nil {
		return err
	}
	if c, err := d.inspect(ctx, "create", spec.ID); err == nil {
		d.setReplayedPassword(ctx, c.ID, spec)
		return nil
	} else if !errors.Is(err, drivers.ErrNotFound) {
		return err
	}
	// One inspect of the image serves the whole create: its volumes and
	// its labels are read from it (a tag may move between two inspects,
	// and each is a dockerd round trip at every boot).
	raw, err := d.ensureImageRaw(ctx, spec.Image)
	if err != nil {
		return fmt.Errorf("docker create %s: %w", spec.ID, err)
	}
	if spec.DiskGB > 0 {
		if err := d.probeRootDisk(ctx, spec.Image, spec.ID); err != nil {
			return fmt.Errorf("docker create %s: %w", spec.ID, err)
		}
	}
	// The server's VOLUME paths are directories of its root disk
	// (volumes.go): it runs a copy of its image without them.
	img, volumeDirs, err := d.volumeFreeImage(ctx, spec.Image, raw)
	if err != nil {
		if !d.root.enforced() {
			// Without a cap to escape, a volume costs the host nothing
			// more than the writable layer would: the server runs as
			// Docker makes it (and a cold migration refuses it).
			d.log.Warn("server created with its image's VOLUMEs as anonymous volumes", "instance", spec.ID, "image", spec.Image, "err", err)
			img = spec.Image
		} else {
			return fmt.Errorf("docker create %s: %w: %w", spec.ID, ErrImageVolumes, err)
		}
	}
	// A copy made for this create goes if the create fails.
	copied := img != spec.Image
	dropCopy := func() {
		if copied {
			d.removeVolumeFreeCopy(context.WithoutCancel(ctx), spec.ID, img)
		}
	}
	var diskDev string
	if spec.Limits.Disk.Limited() {
		// Refuse rather than run the server without the throttle its
		// flavor promises; before the sandbox, so nothing is left behind.
		dev, err := d.diskDevice(ctx)
		if err != nil {
			dropCopy()
			return fmt.Errorf("docker create %s: disk throttles: %w", spec.ID, err)
		}
		diskDev = dev
	}
	// joinSandbox waits for a sandbox start begun below and returns its
	// error; every path out of Create waits for it, so a cleanup never
	// races the start.
	joinSandbox := func() error { return nil }
	defer func() { _ = joinSandbox() }()
	if spec.Networked && useNetns {
		// The namespace is made while the container is created.
		made := make(chan error, 1)
		go func() { made <- netnsfile.Make(d.netnsPathOf(spec.ID)) }()
		joinSandbox = sync.OnceValue(func() error { return <-made })
	} else if spec.Networked {
		if err := d.ensureImage(ctx, d.opts.SandboxImage); err != nil {
			dropCopy()
			return fmt.Errorf("docker create %s: sandbox: %w", spec.ID, err)
		}
		sbID, err := d.createSandbox(ctx, spec)
		if err != nil {
			dropCopy()
			return err
		}
		if spec.StartSandbox {
			started := make(chan error, 1)
			go func() { started <- d.cli.ContainerStart(ctx, sbID, container.StartOptions{}) }()
			joinSandbox = sync.OnceValue(func() error { return <-started })
		}
	}
	cfg, host := d.configs(spec, diskDev, useNetns)
	if spec.RootVolume != "" {
		mounts, err := rootVolumeMounts(spec.RootVolume)
		if err != nil {
			_ = joinSandbox()
			if rerr := d.dropNetwork(context.WithoutCancel(ctx), spec.ID); rerr != nil {
				d.log.Error("could not remove the sandbox of a failed create", "instance", spec.ID, "err", rerr)
			}
			dropCopy()
			return fmt.Errorf("docker create %s: %w", spec.ID, err)
		}
		host.Mounts = append(host.Mounts, mounts...)
		cfg.Labels[LabelRootVolume] = spec.RootVolume
	}
	if copied {
		cfg.Image = img
		cfg.Labels[LabelSourceImage] = spec.Image
	}
	// The flavor's disk caps the writable layer where dockerd can.
	host.StorageOpt = d.root.storageOpt(spec.DiskGB)
	if err := maskRawImageLabels(spec.Image, raw, cfg.Labels); err != nil {
		_ = joinSandbox()
		if rerr := d.dropNetwork(context.WithoutCancel(ctx), spec.ID); rerr != nil {
			d.log.Error("could not remove the sandbox of a failed create", "instance", spec.ID, "err", rerr)
		}
		dropCopy()
		return fmt.Errorf("docker create %s: %w", spec.ID, err)
	}
	// Pinned to its vCPUs' worth of host CPUs (cpuset.go).
	resp, err := d.createPinned(ctx, spec, cfg, host)
	if err != nil {
		if cerrdefs.IsConflict(err) {
			// A concurrent create of the same instance won the name.
			if c, ierr := d.inspect(ctx, "create", spec.ID); ierr == nil {
				d.setReplayedPassword(ctx, c.ID, spec)
				return nil
			}
		}
		_ = joinSandbox()
		if rerr := d.dropNetwork(context.WithoutCancel(ctx), spec.ID); rerr != nil {
			d.log.Error("could not remove the sandbox of a failed create", "instance", spec.ID, "err", rerr)
		}
		dropCopy()
		return wrap("create", spec.ID, err)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("container create warning", "instance", spec.ID, "warning", w)
	}
	// The VOLUME directories first: a file may be written into one.
	if err := d.makeVolumeDirs(ctx, resp.ID, volumeDirs); err != nil {
		// Not half an instance, as for the files and keys below.
		_ = joinSandbox()
		if derr := d.Destroy(context.WithoutCancel(ctx), spec.ID); derr != nil {
			d.log.Error("could not remove a container whose VOLUME directories could not be made", "instance", spec.ID, "err", derr)
		}
		return wrap("create", spec.ID, err)
	}
	// The adminPass goes into /etc/shadow with the first-boot files, in
	// one copy into the container (none when the image cannot hold it).
	files := filesOf(spec.Files)
	if spec.AdminPassHash != "" {
		runImageID := imageIDOf(raw)
		if copied {
			runImageID = img
		}
		if f, err := d.newDiskShadow(ctx, resp.ID, spec, imageIDOf(raw), runImageID); err != nil {
			// As Nova's spawn without password injection: the server
			// is built without it (changePassword then says why).
			d.log.Warn("adminPass not set in the new disk", "instance", spec.ID, "error", err)
		} else {
			files = append([]diskFile{f}, files...)
		}
	}
	if len(files) > 0 {
		err := d.writeDiskFiles(ctx, resp.ID, files)
		switch {
		case err != nil && len(spec.Files) == 0:
			// The password alone: the build goes on without it.
			d.log.Warn("adminPass not set in the new disk", "instance", spec.ID, "error", wrap("write "+shadowPath, spec.ID, err))
		case err != nil:
			_ = joinSandbox()
			if derr := d.Destroy(context.WithoutCancel(ctx), spec.ID); derr != nil {
				d.log.Error("could not remove a container whose files could not be written", "instance", spec.ID, "err", derr)
			}
			return wrap("create", spec.ID, err)
		case len(files) > len(spec.Files):
			d.log.Info("root password set", "instance", spec.ID)
		}
	}
	if spec.AuthorizedKeys != "" {
		if err := d.writeAuthorizedKeys(ctx, resp.ID, spec.AuthorizedKeys); err != nil {
			// Not half an instance: a replayed create would accept the
			// container as is and boot it without its key.
			_ = joinSandbox()
			if derr := d.Destroy(context.WithoutCancel(ctx), spec.ID); derr != nil {
				d.log.Error("could not remove a container whose key could not be written", "instance", spec.ID, "err", derr)
			}
			return wrap("create", spec.ID, err)
		}
	}
	d.log.Info("container created", "instance", spec.ID, "container", resp.ID, "image", spec.Image, "run_image", img,
		"vcpus", spec.VCPUs, "memory_mb", spec.MemoryMB, "pids_limit", pidsLimit(spec),
		"cpu_quota_us", host.CPUQuota, "cpu_period_us", host.CPUPeriod, "cpu_shares", host.CPUShares, "disk_device", diskDev,
		"cpuset", host.CpusetCpus, "lxcfs", len(host.Mounts) > 0, "root_disk", host.StorageOpt["size"])
	if err := joinSandbox(); err != nil {
		// The server is whole; its sandbox starts again (its namespace
		// is made again) when the agent plumbs it (Sandbox), which
		// reports what keeps it from running.
		d.log.Warn("early sandbox start failed", "instance", spec.ID, "err", err)
	} else if spec.Networked && useNetns {
		if err := netnsfile.WriteMap(netnsfile.MapDir, resp.ID, d.netnsPathOf(spec.ID)); err != nil {
			d.log.Warn("network namespace map", "instance", spec.ID, "err", err) // written again before the start
		}
	}
	return nil
}

// labelPrefix starts every label Capsule reads (LabelInstance, LabelRole,
// LabelCPUPolicy, the agent's ...): they are Capsule's alone.
const labelPrefix = "capsule."

// maskImageLabels blanks in labels every capsule.* label of image ref
// that labels does not set. Docker gives a container the labels of its
// image it does not set itself, and images are the tenants': a
// capsule.role or capsule.cpu_policy baked into one would otherwise
// steer List, the CPU accounting and the rescue (a label cannot be
// removed, only overridden; a blank one means nothing to Capsule).
func (d *Driver) maskImageLabels(ctx context.Context, ref string, labels map[string]string) error {
	img, err := d.cli.ImageInspect(ctx, ref)
	if err != nil {
		return fmt.Errorf("inspect image %s for its labels: %w", ref, err)
	}
	if img.Config == nil {
		return nil
	}
	maskLabels(img.Config.Labels, labels)
	return nil
}

// imageIDOf is the ID of the image whose docker image inspect is raw
// ("" when raw has none).
func imageIDOf(raw []byte) string {
	var img struct {
		ID string `json:"Id"`
	}
	if json.Unmarshal(raw, &img) != nil {
		return ""
	}
	return img.ID
}

// maskRawImageLabels is maskImageLabels for an image already inspected
// (raw: the body of docker image inspect of ref).
func maskRawImageLabels(ref string, raw []byte, labels map[string]string) error {
	var img struct {
		Config *struct{ Labels map[string]string }
	}
	if err := json.Unmarshal(raw, &img); err != nil {
		return fmt.Errorf("decode the inspect of image %s for its labels: %w", ref, err)
	}
	if img.Config != nil {
		maskLabels(img.Config.Labels, labels)
	}
	return nil
}

// maskLabels blanks in labels every capsule.* label of imageLabels that
// labels does not set.
func maskLabels(imageLabels, labels map[string]string) {
	for k := range imageLabels {
		if _, set := labels[k]; !set && strings.HasPrefix(k, labelPrefix) {
			labels[k] = ""
		}
	}
}

// isSandbox reports whether the listed container is a sandbox: its role
// label says so and it bears its instance's sandbox name, which only the
// driver gives (a workload created before the driver set its own role
// could carry its image's capsule.role).
func isSandbox(s container.Summary) bool {
	if s.Labels[LabelRole] != RoleSandbox {
		return false
	}
	return slices.Contains(s.Names, "/"+SandboxName(s.Labels[LabelInstance]))
}

// ensureImage pulls ref unless it is already present.
func (d *Driver) ensureImage(ctx context.Context, ref string) error {
	if _, err := d.cli.ImageInspect(ctx, ref); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return d.pullImage(ctx, ref)
}

// ensureImageRaw pulls ref unless it is already present and returns the
// body of its docker image inspect: one round trip when it is present.
func (d *Driver) ensureImageRaw(ctx context.Context, ref string) ([]byte, error) {
	var raw bytes.Buffer
	if _, err := d.cli.ImageInspect(ctx, ref, client.ImageInspectWithRawResponse(&raw)); err == nil {
		return raw.Bytes(), nil
	} else if !cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("inspect image %s: %w", ref, err)
	}
	if err := d.pullImage(ctx, ref); err != nil {
		return nil, err
	}
	raw.Reset()
	if _, err := d.cli.ImageInspect(ctx, ref, client.ImageInspectWithRawResponse(&raw)); err != nil {
		return nil, fmt.Errorf("inspect image %s after its pull: %w", ref, err)
	}
	return raw.Bytes(), nil
}

// pullImage pulls ref (with the registry's credentials, if any).
func (d *Driver) pullImage(ctx context.Context, ref string) error {
	var popts image.PullOptions
	if a := d.opts.RegistryAuth; a != nil {
		enc, err := registry.EncodeAuthConfig(registry.AuthConfig{
			Username: a.Username, Password: a.Password, ServerAddress: a.ServerAddress,
		})
		if err != nil {
			return fmt.Errorf("encode registry auth: %w", err)
		}
		popts.RegistryAuth = enc
	}
	d.log.Info("pulling image", "image", ref)
	rc, err := d.cli.ImagePull(ctx, ref, popts)
	if err != nil {
		return fmt.Errorf("pull image %s: %w", ref, err)
	}
	defer rc.Close()
	if err := drainPull(rc); err != nil {
		return fmt.Errorf("pull image %s: %w", ref, err)
	}
	return nil
}

// drainPull reads a pull's JSON progress stream to its end: the pull only
// completes when the stream is consumed, and failures arrive in it as
// messages, not as an HTTP status.
func drainPull(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			return errors.New(msg.ErrorDetail.Message)
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// Start implements drivers.Driver; starting a running instance succeeds.
// The sandbox starts first: the workload cannot join a namespace that does
// not exist.
func (d *Driver) Start(ctx context.Context, id string) error {
	c, err := d.inspect(ctx, "start", id)
	if err != nil {
		return err
	}
	if sandboxed(c) {
		if _, err := d.ensureSandbox(ctx, "start", id); err != nil {
			return err
		}
	}
	if c.State.Running && !c.State.Paused {
		return nil
	}
	if d.inNetns(c) {
		if _, err := d.joinNetns(id, c.ID); err != nil {
			return err
		}
	}
	if err := d.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return wrap("start", id, err)
	}
	d.restoreThrottles(ctx, id, c.ID)
	d.log.Info("container started", "instance", id, "container", c.ID)
	return nil
}

func secondsCeil(dur time.Duration) *int {
	s := int(math.Ceil(dur.Seconds()))
	return &s
}

// Stop implements drivers.Driver: SIGTERM, then SIGKILL after grace, then
// the sandbox (see sandbox.go for why it does not outlive the workload).
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	c, err := d.inspect(ctx, "stop", id)
	if err != nil {
		return err
	}
	if !c.State.Running {
		return d.stopSandbox(ctx, id)
	}
	if err := d.stopWorkload(ctx, id, c, grace); err != nil {
		return err
	}
	if err := d.stopSandbox(ctx, id); err != nil {
		return err
	}
	d.log.Info("container stopped", "instance", id, "container", c.ID)
	return nil
}

// Reboot implements drivers.Driver: soft is a docker restart with the stop
// timeout (the init gets SIGTERM), hard is a kill then a start.
func (d *Driver) Reboot(ctx context.Context, id string, hard bool) error {
	c, err := d.inspect(ctx, "reboot", id)
	if err != nil {
		return err
	}
	// The restarted workload joins the sandbox's namespace.
	if sandboxed(c) {
		if _, err := d.ensureSandbox(ctx, "reboot", id); err != nil {
			return err
		}
	}
	if d.inNetns(c) {
		if _, err := d.joinNetns(id, c.ID); err != nil {
			return err
		}
	}
	if c.State.Paused {
		// A frozen init cannot handle SIGTERM; thaw it first.
		if err := d.cli.ContainerUnpause(ctx, c.ID); err != nil {
			return wrap("reboot", id, err)
		}
	}
	if !hard {
		if err := d.cli.ContainerRestart(ctx, c.ID, container.StopOptions{Timeout: secondsCeil(d.opts.StopTimeout)}); err != nil {
			return wrap("reboot", id, err)
		}
		d.restoreThrottles(ctx, id, c.ID)
		d.log.Info("container rebooted", "instance", id, "container", c.ID, "hard", false)
		return nil
	}
	if c.State.Running {
		if err := d.cli.ContainerKill(ctx, c.ID, "KILL"); err != nil && !cerrdefs.IsConflict(err) {
			// Conflict means it stopped on its own meanwhile.
			return wrap("reboot", id, err)
		}
		if err := d.waitNotRunning(ctx, c.ID); err != nil {
			return wrap("reboot", id, err)
		}
	}
	if err := d.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return wrap("reboot", id, err)
	}
	d.restoreThrottles(ctx, id, c.ID)
	d.log.Info("container rebooted", "instance", id, "container", c.ID, "hard", true)
	return nil
}

// waitNotRunning waits until the container has exited, so that a following
// start is not taken for a start of a running container.
func (d *Driver) waitNotRunning(ctx context.Context, cid string) error {
	resC, errC := d.cli.ContainerWait(ctx, cid, container.WaitConditionNotRunning)
	select {
	case <-resC:
		return nil
	case err := <-errC:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Pause implements drivers.Driver (cgroup freezer); pausing a paused
// instance succeeds.
func (d *Driver) Pause(ctx context.Context, id string) error {
	c, err := d.inspect(ctx, "pause", id)
	if err != nil {
		return err
	}
	if c.State.Paused {
		return nil
	}
	// runc gives up on a cgroup v1 freezer that has not reached FROZEN
	// after its own short retries ("unable to freeze"), which a busy host
	// hits while the container's tasks are being scheduled; the freeze is
	// safe to ask again, so a transient refusal does not fail the pause.
	for attempt := 1; ; attempt++ {
		err := d.cli.ContainerPause(ctx, c.ID)
		if err == nil {
			return nil
		}
		if attempt == pauseAttempts || !strings.Contains(err.Error(), "unable to freeze") {
			return wrap("pause", id, err)
		}
		d.log.WarnContext(ctx, "docker pause: the freezer did not settle, trying again", "instance", id, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return wrap("pause", id, err)
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
}

// pauseAttempts bounds the pause retries on runc's "unable to freeze".
const pauseAttempts = 5

// Unpause implements drivers.Driver; unpausing a running instance succeeds.
func (d *Driver) Unpause(ctx context.Context, id string) error {
	c, err := d.inspect(ctx, "unpause", id)
	if err != nil {
		return err
	}
	if c.State.Running && !c.State.Paused {
		return nil
	}
	if err := d.cli.ContainerUnpause(ctx, c.ID); err != nil {
		return wrap("unpause", id, err)
	}
	return nil
}

// Destroy implements drivers.Driver: it force-removes the workload
// container and its anonymous volumes, then the sandbox (also when the
// workload is already gone, e.g. after a create that died half-way). A
// missing instance is not an error.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	// Which of the instance's containers exist, in one listing: most
	// servers have no kept, rescue or sandbox container, and asking for
	// each cost a round trip per delete.
	has, err := d.instanceContainers(ctx, id)
	if err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	// A container a root disk resize kept aside goes too (its image
	// with it).
	if has[keptName(id)] {
		if err := d.ConfirmRootDisk(ctx, id); err != nil {
			return fmt.Errorf("destroy: %w", err)
		}
	}
	// So does a rescue system (with the volume mounting the disk, which
	// an unrescue cut short may have left without its container).
	if has[RescueName(id)] {
		if err := d.Unrescue(ctx, id, time.Second); err != nil {
			return fmt.Errorf("destroy: %w", err)
		}
	} else if err := d.cli.VolumeRemove(ctx, RescueName(id), true); err != nil && !cerrdefs.IsNotFound(err) {
		return wrap("destroy rescue volume", id, err)
	}
	removeSandbox := func() error {
		if !has[SandboxName(id)] {
			return nil
		}
		return d.removeSandbox(ctx, id)
	}
	c, err := d.inspect(ctx, "destroy", id)
	if errors.Is(err, drivers.ErrNotFound) {
		if err := removeSandbox(); err != nil {
			return err
		}
		return d.removeNetns(id, "")
	} else if err != nil {
		return err
	}
	if err := d.removeWorkload(ctx, id, c); err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	if err := removeSandbox(); err != nil {
		return err
	}
	if err := d.removeNetns(id, c.ID); err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	// Other resize commits of a server that was resized here. Listing
	// images costs dockerd a walk of every image on the host, so a server
	// never resized here is not asked about; a commit some cut-short
	// resize left for it is collected by the reconcile
	// (DropStrayResizeImages).
	if has[keptName(id)] || (c.Config != nil && isResizeImage(c.Config.Image)) {
		d.pruneResizeImages(ctx, id)
	}
	d.log.Info("container destroyed", "instance", id, "container", c.ID)
	return nil
}

// instanceContainers returns the names (without their leading slash) of
// the containers of instance id on this dockerd: its workload, sandbox,
// rescue and kept containers, whichever exist.
func (d *Driver) instanceContainers(ctx context.Context, id string) (map[string]bool, error) {
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("name", regexp.QuoteMeta(ContainerName(id))))})
	if err != nil {
		return nil, fmt.Errorf("list the containers of %s: %w", id, err)
	}
	has := map[string]bool{}
	for _, s := range cs {
		for _, n := range s.Names {
			has[strings.TrimPrefix(n, "/")] = true
		}
	}
	return has, nil
}

// isMigrationImage reports whether ref is a migration commit
// (<registry>/capsule/migrations:<migration uuid>), private to one server.
func isMigrationImage(ref string) bool {
	r, err := capreg.ParseRef(ref)
	return err == nil && r.Repo == capreg.MigrationRepo
}

func (d *Driver) waitGone(ctx context.Context, cid string) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := d.cli.ContainerInspect(ctx, cid); cerrdefs.IsNotFound(err) {
			return nil
		} else if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// powerOf maps Docker's state to a Nova power state. An exit Docker or the
// user caused (0, SIGTERM 143, SIGKILL 137) is a shutdown; any other exit
// of PID 1, an OOM kill or a dead container is a crash.
func powerOf(s *container.State) drivers.PowerState {
	switch {
	case s.Paused:
		return drivers.PowerPaused
	case s.Running, s.Restarting:
		return drivers.PowerRunning
	case s.Dead, s.OOMKilled:
		return drivers.PowerCrashed
	}
	switch s.Status {
	case container.StateCreated:
		return drivers.PowerShutdown
	case container.StateExited:
		switch s.ExitCode {
		case 0, 128 + 9, 128 + 15:
			return drivers.PowerShutdown
		}
		return drivers.PowerCrashed
	}
	return drivers.PowerNoState
}

func statusOf(id string, c container.InspectResponse) drivers.Status {
	st := drivers.Status{
		ID:          id,
		Power:       powerOf(c.State),
		BackendID:   c.ID,
		ExitCode:    c.State.ExitCode,
		Description: string(c.State.Status),
	}
	if c.State.Running {
		if t, err := time.Parse(time.RFC3339Nano, c.State.StartedAt); err == nil {
			st.StartedAt = t
		}
	}
	if c.State.Status == container.StateExited {
		st.Description = fmt.Sprintf("exited (%d)", c.State.ExitCode)
	}
	if c.State.OOMKilled {
		st.Description += ", OOM killed"
	}
	if c.State.Error != "" {
		st.Description += ": " + c.State.Error
	}
	return st
}

// Status implements drivers.Driver.
func (d *Driver) Status(ctx context.Context, id string) (drivers.Status, error) {
	c, err := d.inspect(ctx, "status", id)
	if err != nil {
		return drivers.Status{}, err
	}
	return statusOf(id, c), nil
}

// List implements drivers.Driver: every instance with a container
// labelled as managed by capsule, whether or not the control plane knows
// it. Sandboxes are part of their instance, not instances; a sandbox left
// without its workload (a create cut short) is listed as its instance with
// no power state, so the leftover shows up as an orphan.
func (d *Driver) List(ctx context.Context) ([]drivers.Status, error) {
	f := filters.NewArgs(filters.Arg("label", LabelManaged+"=true"))
	if d.opts.Owner != "" {
		f.Add("label", LabelOwnerHost+"="+d.opts.Owner)
	}
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("docker list: %w", err)
	}
	out := make([]drivers.Status, 0, len(cs))
	workloads := map[string]bool{}
	listed := make(map[string]bool, len(cs))
	var sandboxes []drivers.Status
	for _, s := range cs {
		listed[s.ID] = true
		id := s.Labels[LabelInstance]
		if id == "" {
			continue
		}
		if isKept(s) || isRescue(s) {
			continue // a root disk resize's old container, a rescue system: not the instance
		}
		if isSandbox(s) {
			sandboxes = append(sandboxes, drivers.Status{ID: id, Power: drivers.PowerNoState, BackendID: s.ID,
				Description: "sandbox only: the workload container is missing"})
			continue
		}
		workloads[id] = true
		// Inspect for the exit code, start time and OOM flag the
		// summary lacks.
		c, err := d.cli.ContainerInspect(ctx, s.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed since the listing
		} else if err != nil {
			return nil, wrap("list", id, err)
		}
		if c.State == nil {
			continue
		}
		out = append(out, statusOf(id, c))
	}
	for _, sb := range sandboxes {
		if !workloads[sb.ID] {
			out = append(out, sb)
			workloads[sb.ID] = true
		}
	}
	out = append(out, d.netnsOrphans(ctx, workloads, listed)...)
	return out, nil
}

// ConsoleOutput implements drivers.Driver: the container's stdout and
// stderr, the last lines of them when lines >= 0, cleaned of control
// characters so it can be shown to users and stored as JSON.
func (d *Driver) ConsoleOutput(ctx context.Context, id string, lines int) (string, error) {
	c, err := d.inspect(ctx, "console", id)
	if err != nil {
		return "", err
	}
	// Every line is at least its newline, so the last ConsoleMaxBytes
	// lines hold the last ConsoleMaxBytes bytes: dockerd is never asked
	// for more of a huge log than the tail that will be kept.
	tail := strconv.Itoa(d.opts.ConsoleMaxBytes)
	if lines >= 0 && lines < d.opts.ConsoleMaxBytes {
		tail = strconv.Itoa(lines)
	}
	rc, err := d.cli.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail})
	if err != nil {
		return "", wrap("console", id, err)
	}
	defer rc.Close()
	raw, err := demux(rc, c.Config.Tty, d.opts.ConsoleMaxBytes)
	if err != nil {
		return "", wrap("console", id, err)
	}
	out := CleanConsole(raw)
	if lines >= 0 {
		// Docker's tail counts raw lines; keep the contract exact anyway.
		out = lastLines(out, lines)
	}
	return out, nil
}

func lastLines(s string, n int) string {
	if n == 0 {
		return ""
	}
	trail := strings.HasSuffix(s, "\n")
	ls := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(ls) <= n {
		return s
	}
	out := strings.Join(ls[len(ls)-n:], "\n")
	if trail {
		out += "\n"
	}
	return out
}

// Fingerprint implements drivers.Driver from docker info, the daemon's
// version and the filesystem holding Docker's root dir.
func (d *Driver) Fingerprint(ctx context.Context) (drivers.HostInfo, error) {
	info, err := d.dockerInfo(ctx)
	if err != nil {
		return drivers.HostInfo{}, fmt.Errorf("docker info: %w", err)
	}
	hi := drivers.HostInfo{
		VCPUs:             info.NCPU,
		MemoryMB:          int(info.MemTotal / (1024 * 1024)),
		DiskGB:            d.opts.DefaultDiskGB,
		HypervisorType:    "docker",
		HypervisorVersion: VersionInt(info.ServerVersion),
		Arch:              info.Architecture,
		CPUModel:          "unknown",
		RootDisk:          d.root.report(),
	}
	if d.local() {
		if gb, err := diskGB(info.DockerRootDir); err == nil {
			hi.DiskGB = gb
		} else {
			d.log.Debug("cannot statfs docker root dir, using default disk size", "dir", info.DockerRootDir, "err", err)
		}
		if m := cpuModel(); m != "" {
			hi.CPUModel = m
		}
	}
	return hi, nil
}

// local reports whether dockerd runs on this machine, so its root dir and
// /proc/cpuinfo describe the same host.
func (d *Driver) local() bool {
	return strings.HasPrefix(d.cli.DaemonHost(), "unix://")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// VersionInt encodes a version such as "20.10.24+dfsg1" as
// major*1000000 + minor*1000 + patch (20010024), Nova's convention.
func VersionInt(v string) int {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	mult := []int{1000000, 1000, 1}
	total := 0
	for i, p := range parts {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		n, _ := strconv.Atoi(p[:end])
		total += n * mult[i]
		if end < len(p) {
			break // suffix such as "-ce" or "+dfsg1"
		}
	}
	return total
}
