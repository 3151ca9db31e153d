// Package fake is an in-memory compute driver for tests of the agent and
// everything above it. It follows the same contract as the real drivers
// (drivertest passes against it) and offers knobs to inject failures.
package fake

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/shadowpw"
)

// Op names a driver operation, for error injection and call counting.
type Op string

// Operations that can be counted and made to fail.
const (
	OpCreate        Op = "create"
	OpStart         Op = "start"
	OpStop          Op = "stop"
	OpReboot        Op = "reboot"
	OpPause         Op = "pause"
	OpUnpause       Op = "unpause"
	OpDestroy       Op = "destroy"
	OpStatus        Op = "status"
	OpList          Op = "list"
	OpConsoleOutput Op = "console"
	OpFingerprint   Op = "fingerprint"
	OpSandbox       Op = "sandbox"
	OpResize        Op = "resize"
)

// AuthorizedKeysPath is where Create writes Spec.AuthorizedKeys in the
// instance's Files, as the docker driver does on the container's disk.
const AuthorizedKeysPath = "/root/.ssh/authorized_keys"

// bootLines is the console log an instance gets each time it starts, like
// the base image's init.
var bootLines = []string{
	"capsule-init: booting",
	"capsule-init: mounting filesystems",
	"capsule-init: setting hostname",
	"capsule-init: starting services",
	"capsule-init: ready",
}

// Instance is the fake's record of one instance (a copy is returned by
// Get, so tests can look at what the driver was asked to create).
type Instance struct {
	Spec      drivers.Spec
	Power     drivers.PowerState
	StartedAt time.Time
	ExitCode  int
	Console   []string
	Boots     int

	// The sandbox, as in the docker driver: it holds the network
	// namespace, starts before the workload and stops with it. Each
	// sandbox start is a new namespace (generation); the workload joins
	// the current one when it starts.
	SandboxRunning bool
	SandboxGen     int
	WorkloadNetns  string // namespace the workload joined at its last start
	// Resizes counts the live resizes applied; Spec holds the newest size.
	Resizes int
	// Files is the instance's disk: what a snapshot or migration carries
	// (WriteFile puts files; an instance created from a pushed image
	// starts with the image's files).
	Files map[string]string
	// Volumes are the mounts Migrator.Volumes reports (SetVolumes).
	Volumes []string
}

// Driver is the in-memory driver. The zero value is not usable: call New.
type Driver struct {
	mu        sync.Mutex
	instances map[string]*Instance
	calls     map[Op]int

	// FailCreate, when set, is consulted before Create and its error is
	// returned as is.
	FailCreate func(spec drivers.Spec) error
	// Fail, when set, is consulted before every operation (after
	// FailCreate for Create); a non-nil error is returned as is. id is
	// empty for List and Fingerprint.
	Fail func(op Op, id string) error
	// Delay, when non-zero, makes every operation wait that long (or until
	// its context ends), to test timeouts and concurrency.
	Delay time.Duration

	// Host is what Fingerprint reports.
	Host drivers.HostInfo
	// Caps is what Capabilities reports.
	Caps drivers.Capabilities
	// NetnsPath names the namespace of generation gen of id's sandbox;
	// default /run/fake-netns/<id>/<gen>.
	NetnsPath func(id string, gen int) string

	// registry is where Snapshot pushes and Pull pulls from (see
	// migrate.go); images is this host's image store: refs pulled.
	registry *Registry
	images   map[string]bool
}

// New returns an empty fake driver with all capabilities but Snapshot (Networking included), and a small host.
func New() *Driver {
	return &Driver{
		instances: map[string]*Instance{},
		calls:     map[Op]int{},
		registry:  NewRegistry(),
		images:    map[string]bool{},
		Host: drivers.HostInfo{
			VCPUs:             8,
			MemoryMB:          16384,
			DiskGB:            200,
			HypervisorType:    "fake",
			HypervisorVersion: 1000000,
			CPUModel:          "fake-cpu",
			Arch:              "x86_64",
		},
		Caps: drivers.Capabilities{Pause: true, ConsoleOutput: true, Networking: true, LiveResize: true},
	}
}

var _ drivers.Driver = (*Driver)(nil)

// Name implements drivers.Driver.
func (d *Driver) Name() string { return "fake" }

// Capabilities implements drivers.Driver.
func (d *Driver) Capabilities() drivers.Capabilities {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Caps
}

// SetFail installs (or with nil removes) the error-injection hook under the
// lock, for tests that change it while the driver is in use.
func (d *Driver) SetFail(f func(op Op, id string) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Fail = f
}

// Calls returns how many times op was called (including failed calls).
func (d *Driver) Calls(op Op) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[op]
}

// Get returns a copy of the instance record, and whether it exists.
func (d *Driver) Get(id string) (Instance, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, ok := d.instances[id]
	if !ok {
		return Instance{}, false
	}
	cp := *in
	cp.Console = append([]string(nil), in.Console...)
	cp.Files = copyMap(in.Files)
	cp.Volumes = append([]string(nil), in.Volumes...)
	return cp, true
}

// Crash marks a running instance as crashed with the given exit code, as if
// its PID 1 died: the way tests simulate an instance dying behind the
// agent's back.
func (d *Driver) Crash(id string, exitCode int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, ok := d.instances[id]
	if !ok {
		return fmt.Errorf("crash %s: %w", id, drivers.ErrNotFound)
	}
	in.Power = drivers.PowerCrashed
	in.ExitCode = exitCode
	return nil
}

// RestartHost simulates a host (or dockerd) restart: every workload and
// sandbox is down, so every namespace is gone.
func (d *Driver) RestartHost() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, in := range d.instances {
		if in.Power == drivers.PowerRunning || in.Power == drivers.PowerPaused {
			in.Power = drivers.PowerShutdown
			in.ExitCode = 137
		}
		in.SandboxRunning = false
		in.WorkloadNetns = ""
	}
}

// Remove deletes an instance without going through Destroy, as if it
// vanished from the host.
func (d *Driver) Remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.instances, id)
}

// begin counts the call, waits Delay and runs the Fail hook. It returns
// with d.mu held when err is nil.
func (d *Driver) begin(ctx context.Context, op Op, id string) error {
	d.mu.Lock()
	d.calls[op]++
	delay := d.Delay
	fail := d.Fail
	d.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("fake %s %s: %w", op, id, ctx.Err())
		case <-t.C:
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fake %s %s: %w", op, id, err)
	}
	if fail != nil {
		if err := fail(op, id); err != nil {
			return err
		}
	}
	d.mu.Lock()
	return nil
}

// lookup returns the instance or a wrapped ErrNotFound; d.mu must be held.
func (d *Driver) lookup(op Op, id string) (*Instance, error) {
	in, ok := d.instances[id]
	if !ok {
		return nil, fmt.Errorf("fake %s %s: %w", op, id, drivers.ErrNotFound)
	}
	return in, nil
}

// netns returns the path of the sandbox's current namespace; d.mu held.
func (d *Driver) netns(in *Instance) string {
	if d.NetnsPath != nil {
		return d.NetnsPath(in.Spec.ID, in.SandboxGen)
	}
	return fmt.Sprintf("/run/fake-netns/%s/%d", in.Spec.ID, in.SandboxGen)
}

// ensureSandbox starts the sandbox in a new namespace unless it runs;
// d.mu held.
func (d *Driver) ensureSandbox(in *Instance) {
	if !in.SandboxRunning {
		in.SandboxRunning = true
		in.SandboxGen++
	}
}

// boot starts the workload in the sandbox's namespace; d.mu held.
func (d *Driver) boot(in *Instance) {
	d.ensureSandbox(in)
	in.WorkloadNetns = d.netns(in)
	in.boot()
}

func (in *Instance) boot() {
	in.Power = drivers.PowerRunning
	in.StartedAt = time.Now()
	in.ExitCode = 0
	in.Boots++
	in.Console = append(in.Console, bootLines...)
}

// Fingerprint implements drivers.Driver.
func (d *Driver) Fingerprint(ctx context.Context) (drivers.HostInfo, error) {
	if err := d.begin(ctx, OpFingerprint, ""); err != nil {
		return drivers.HostInfo{}, err
	}
	defer d.mu.Unlock()
	return d.Host, nil
}

// Create implements drivers.Driver.
func (d *Driver) Create(ctx context.Context, spec drivers.Spec) error {
	d.mu.Lock()
	failCreate := d.FailCreate
	d.mu.Unlock()
	if failCreate != nil {
		if err := failCreate(spec); err != nil {
			d.mu.Lock()
			d.calls[OpCreate]++
			d.mu.Unlock()
			return err
		}
	}
	if err := d.begin(ctx, OpCreate, spec.ID); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := validate(spec); err != nil {
		return err
	}
	if _, ok := d.instances[spec.ID]; ok {
		return nil // idempotent: a replayed create finds its instance
	}
	cp := spec
	cp.Labels = copyMap(spec.Labels)
	cp.Metadata = copyMap(spec.Metadata)
	cp.ExtraSpecs = copyMap(spec.ExtraSpecs)
	cp.DNS = append([]string(nil), spec.DNS...)
	in := &Instance{Spec: cp, Power: drivers.PowerShutdown}
	// Like dockerd, a create pulls an image it lacks; one pushed by a
	// snapshot brings its files.
	if img, ok := d.registry.get(spec.Image); ok {
		d.images[spec.Image] = true
		in.Files = copyMap(img.Files)
	}
	if spec.AuthorizedKeys != "" {
		// As the docker driver: on the disk before the first boot, so a
		// snapshot or migration carries it.
		if in.Files == nil {
			in.Files = map[string]string{}
		}
		in.Files[AuthorizedKeysPath] = strings.TrimRight(spec.AuthorizedKeys, "\n") + "\n"
	}
	for _, f := range spec.Files {
		if in.Files == nil {
			in.Files = map[string]string{}
		}
		in.Files[f.Path] = string(f.Content)
	}
	d.instances[spec.ID] = in
	return nil
}

// validate applies the checks every driver makes on a spec.
func validate(spec drivers.Spec) error {
	switch {
	case spec.ID == "":
		return fmt.Errorf("create: empty instance id: %w", drivers.ErrInvalidState)
	case spec.PidsLimit <= 0:
		return fmt.Errorf("create %s: pids limit must be > 0, got %d: %w", spec.ID, spec.PidsLimit, drivers.ErrInvalidState)
	case spec.VCPUs < 0 || spec.MemoryMB < 0:
		return fmt.Errorf("create %s: negative vcpus/memory: %w", spec.ID, drivers.ErrInvalidState)
	case spec.Image == "":
		return fmt.Errorf("create %s: empty image: %w", spec.ID, drivers.ErrInvalidState)
	}
	return nil
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Start implements drivers.Driver.
func (d *Driver) Start(ctx context.Context, id string) error {
	if err := d.begin(ctx, OpStart, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpStart, id)
	if err != nil {
		return err
	}
	switch in.Power {
	case drivers.PowerRunning:
		return nil
	case drivers.PowerPaused:
		return fmt.Errorf("fake start %s: instance is paused: %w", id, drivers.ErrInvalidState)
	}
	d.boot(in)
	return nil
}

// Stop implements drivers.Driver.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	if err := d.begin(ctx, OpStop, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpStop, id)
	if err != nil {
		return err
	}
	if in.Power == drivers.PowerRunning || in.Power == drivers.PowerPaused {
		in.Power = drivers.PowerShutdown
		in.ExitCode = 0
		in.Console = append(in.Console, "capsule-init: shutting down")
	}
	in.SandboxRunning = false
	in.WorkloadNetns = ""
	return nil
}

// Reboot implements drivers.Driver.
func (d *Driver) Reboot(ctx context.Context, id string, hard bool) error {
	if err := d.begin(ctx, OpReboot, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpReboot, id)
	if err != nil {
		return err
	}
	if !hard {
		in.Console = append(in.Console, "capsule-init: shutting down")
	}
	d.boot(in)
	return nil
}

// Pause implements drivers.Driver.
func (d *Driver) Pause(ctx context.Context, id string) error {
	if err := d.begin(ctx, OpPause, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpPause, id)
	if err != nil {
		return err
	}
	switch in.Power {
	case drivers.PowerPaused:
		return nil
	case drivers.PowerRunning:
		in.Power = drivers.PowerPaused
		return nil
	}
	return fmt.Errorf("fake pause %s: instance is not running: %w", id, drivers.ErrInvalidState)
}

// Unpause implements drivers.Driver.
func (d *Driver) Unpause(ctx context.Context, id string) error {
	if err := d.begin(ctx, OpUnpause, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpUnpause, id)
	if err != nil {
		return err
	}
	switch in.Power {
	case drivers.PowerRunning:
		return nil
	case drivers.PowerPaused:
		in.Power = drivers.PowerRunning
		return nil
	}
	return fmt.Errorf("fake unpause %s: instance is not paused: %w", id, drivers.ErrInvalidState)
}

// Destroy implements drivers.Driver.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if err := d.begin(ctx, OpDestroy, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	delete(d.instances, id)
	return nil
}

func (in *Instance) status() drivers.Status {
	desc := map[drivers.PowerState]string{
		drivers.PowerRunning:  "running",
		drivers.PowerPaused:   "paused",
		drivers.PowerShutdown: "exited",
		drivers.PowerCrashed:  "dead",
	}[in.Power]
	return drivers.Status{
		ID:          in.Spec.ID,
		Power:       in.Power,
		BackendID:   "fake-" + in.Spec.ID,
		StartedAt:   in.StartedAt,
		ExitCode:    in.ExitCode,
		Description: desc,
	}
}

// Status implements drivers.Driver.
func (d *Driver) Status(ctx context.Context, id string) (drivers.Status, error) {
	if err := d.begin(ctx, OpStatus, id); err != nil {
		return drivers.Status{}, err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpStatus, id)
	if err != nil {
		return drivers.Status{}, err
	}
	return in.status(), nil
}

// List implements drivers.Driver; the result is sorted by ID.
func (d *Driver) List(ctx context.Context) ([]drivers.Status, error) {
	if err := d.begin(ctx, OpList, ""); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	out := make([]drivers.Status, 0, len(d.instances))
	for _, in := range d.instances {
		out = append(out, in.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ConsoleOutput implements drivers.Driver.
func (d *Driver) ConsoleOutput(ctx context.Context, id string, lines int) (string, error) {
	if err := d.begin(ctx, OpConsoleOutput, id); err != nil {
		return "", err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpConsoleOutput, id)
	if err != nil {
		return "", err
	}
	out := in.Console
	if lines >= 0 && lines < len(out) {
		out = out[len(out)-lines:]
	}
	if len(out) == 0 {
		return "", nil
	}
	return strings.Join(out, "\n") + "\n", nil
}

// Sandbox implements drivers.Driver: it starts the sandbox if needed and
// returns the running workload's namespace, else the sandbox's.
func (d *Driver) Sandbox(ctx context.Context, id string) (string, error) {
	if err := d.begin(ctx, OpSandbox, id); err != nil {
		return "", err
	}
	defer d.mu.Unlock()
	if !d.Caps.Networking {
		return "", fmt.Errorf("fake sandbox %s: %w", id, drivers.ErrNotSupported)
	}
	in, err := d.lookup(OpSandbox, id)
	if err != nil {
		return "", err
	}
	if !in.Spec.Networked {
		return "", fmt.Errorf("fake sandbox %s: created without network: %w", id, drivers.ErrNotSupported)
	}
	d.ensureSandbox(in)
	if (in.Power == drivers.PowerRunning || in.Power == drivers.PowerPaused) && in.WorkloadNetns != "" {
		return in.WorkloadNetns, nil
	}
	return d.netns(in), nil
}

// Resize implements drivers.Driver: it records the new size in the
// instance's Spec, leaving it running (no boot: Boots is unchanged).
func (d *Driver) Resize(ctx context.Context, id string, vcpus, memoryMB int, l limits.Limits) error {
	if err := d.begin(ctx, OpResize, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if !d.Caps.LiveResize {
		return fmt.Errorf("fake resize %s: %w", id, drivers.ErrNotSupported)
	}
	in, err := d.lookup(OpResize, id)
	if err != nil {
		return err
	}
	if vcpus <= 0 || memoryMB <= 0 {
		return fmt.Errorf("fake resize %s: vcpus and memory must be > 0, got %d/%d: %w", id, vcpus, memoryMB, drivers.ErrInvalidState)
	}
	next := in.Spec
	next.VCPUs, next.MemoryMB, next.Limits = vcpus, memoryMB, l
	if l.PidsMax > 0 {
		next.PidsLimit = l.PidsMax
	}
	if err := validate(next); err != nil {
		return fmt.Errorf("fake resize %s: %w", id, err)
	}
	in.Spec = next
	in.Resizes++
	return nil
}

// OpSetAdminPassword names SetAdminPassword for failure injection.
const OpSetAdminPassword Op = "set_admin_password"

// SetAdminPassword implements drivers.PasswordSetter as the docker driver
// does, on the instance's Files: root's /etc/shadow line gets hash; an
// instance without /etc/shadow is NotSupported.
func (d *Driver) SetAdminPassword(ctx context.Context, id, hash string) error {
	if err := d.begin(ctx, OpSetAdminPassword, id); err != nil {
		return err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpSetAdminPassword, id)
	if err != nil {
		return err
	}
	shadow, ok := in.Files["/etc/shadow"]
	if !ok {
		return fmt.Errorf("fake: the server's image has no /etc/shadow to hold a root password: %w", drivers.ErrNotSupported)
	}
	updated, err := shadowpw.SetRoot([]byte(shadow), hash, time.Now().Unix()/86400)
	if err != nil {
		return fmt.Errorf("fake: set password: %w", err)
	}
	in.Files["/etc/shadow"] = string(updated)
	return nil
}

var _ drivers.PasswordSetter = (*Driver)(nil)
