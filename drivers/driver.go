// Package drivers defines the boundary between the compute agent and the
// thing that actually runs a server: the Driver interface, its declared
// capabilities and its error kinds. Implementations live in sub-packages
// (docker/, fake/) and must all pass drivertest's conformance suite.
package drivers

import (
	"context"
	"io"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/limits"
)

// The driver's errors, values of the errdefs kinds (NotFound, NotSupported,
// FailedPrecondition). Wrap them with fmt.Errorf("...: %w",
// drivers.ErrNotFound); test with errors.Is for this exact error, or with
// errdefs.IsNotFound and friends for the kind (which survives the bus).
var (
	ErrNotFound     = errdefs.NotFound("instance not found")
	ErrNotSupported = errdefs.NotSupported("not supported by this driver")
	ErrInvalidState = errdefs.FailedPrecondition("invalid state for this operation")
	// ErrNeedsRestart is a Resize the driver cannot make to the running
	// instance but can make to a stopped one (the change is not live-
	// capable): the agent then resizes cold — stop, Resize, start.
	ErrNeedsRestart = errdefs.FailedPrecondition("the new flavor cannot be applied to the running server")
)

// Spec is what the agent asks a driver to create for one server.
type Spec struct {
	ID       string // instance UUID; the driver names its objects from it
	Name     string // display name
	Hostname string // hostname inside the server
	Image    string // registry reference, e.g. 127.0.0.1:5050/capsule/busybox:latest
	VCPUs    int    // becomes a hard CPU quota of VCPUs CPUs
	MemoryMB int    // becomes the memory limit (and memory+swap limit: no swap)
	DiskGB   int
	// PidsLimit caps the number of tasks; the agent always sets one (the
	// thread-leak lesson), drivers must refuse 0.
	PidsLimit int64
	// Limits are the flavor's extra specs parsed (limits.Parse): CPU
	// quota/period/shares, disk throttles, NIC shaping. The zero value
	// keeps the defaults: a hard quota of VCPUs CPUs, no disk throttle.
	// PidsLimit above is already the effective pid cap (the agent folds
	// Limits.PidsMax into it).
	Limits     limits.Limits
	ExtraSpecs map[string]string
	Metadata   map[string]string
	Labels     map[string]string // extra labels/annotations to set
	// DNS is the server's name servers, written to its /etc/resolv.conf
	// (empty: the driver's default).
	DNS []string
	// Networked says the server has NICs: its network namespace is then
	// held by a sandbox that exists before the workload starts (so the
	// agent plumbs first) and survives workload restarts. A server
	// without NICs needs none and boots as one container.
	Networked bool
	// StartSandbox (with Networked) lets Create start the sandbox while
	// it creates the workload, for a build that plumbs and starts right
	// after: the sandbox's start overlaps the workload's create instead of
	// following it. A create that must leave the server stopped (a
	// migration import) leaves it false. Drivers without a sandbox ignore it.
	StartSandbox bool
	// Command, when set, replaces the image's command (its CMD; the
	// entrypoint stays). Servers boot their image's init; this is for
	// tests and special images.
	Command []string
	// AuthorizedKeys, when set, is written by Create to
	// /root/.ssh/authorized_keys (directory 0700, file 0600, owned by
	// 0:0) before the first start: the keypair's key, with no cloud-init
	// or metadata service to fetch it.
	AuthorizedKeys string
	// Files are written by Create into the container before its first
	// start (the config drive's tree, what the base image's init runs of
	// the user data), owned by root, their directories made 0755 when
	// missing.
	Files []File
	// AdminPassHash, for a driver with Capabilities.PasswordAtCreate, is
	// a crypt(3) hash Create (and Rebuild) put in root's line of the new
	// disk's /etc/shadow before its first start (a build's adminPass).
	// A disk that cannot hold it (no /etc/shadow, not a regular file, no
	// root entry) is built without it: logged ("adminPass not set in the
	// new disk"), not an error. Other drivers ignore it: the agent sets
	// the password after the create (PasswordSetter).
	AdminPassHash string
	// RootVolume, when set, is the host directory where the server's boot
	// volume is mounted (boot from volume): the server's root filesystem
	// is the volume's, not the image's (the image gives its config: the
	// command, environment, user). Docker cannot take a directory as a
	// container's root, so its driver bind-mounts each top-level
	// directory of the volume over the image's.
	RootVolume string
}

// File is one file Create writes into a new server.
type File struct {
	Path    string // absolute
	Mode    int64  // permission bits, e.g. 0o444
	Content []byte
}

// PowerState of a driver-managed instance. Values match Nova's
// power_state integers so they can be stored as they are.
type PowerState int

const (
	PowerNoState  PowerState = 0
	PowerRunning  PowerState = 1
	PowerPaused   PowerState = 3
	PowerShutdown PowerState = 4
	PowerCrashed  PowerState = 6
)

// Status is what a driver knows of one instance.
type Status struct {
	ID          string // instance UUID
	Power       PowerState
	BackendID   string // e.g. the Docker container id
	StartedAt   time.Time
	ExitCode    int
	Description string // human text, e.g. Docker's state string
}

// HostInfo is the host's capacity as the driver sees it (fingerprint).
type HostInfo struct {
	VCPUs             int
	MemoryMB          int
	DiskGB            int
	HypervisorType    string // "docker", "fake"
	HypervisorVersion int    // e.g. 28005002 for 28.5.2
	CPUModel          string
	Arch              string
	// RootDisk says whether a server's root filesystem is capped at its
	// flavor's disk on this host: RootDiskEnforced, RootDiskUnprobed, or
	// RootDiskNotEnforced followed by ": " and why ("" when the driver
	// does not say).
	RootDisk string
}

// HostInfo.RootDisk values.
const (
	RootDiskEnforced    = "enforced"
	RootDiskNotEnforced = "not enforced"
	RootDiskUnprobed    = "not probed yet" // known at the first create
)

// RootDiskReporter is a driver that says, without asking its runtime,
// what HostInfo.RootDisk would (the agent's alarm loop asks every round).
type RootDiskReporter interface {
	RootDisk() string
}

// Capabilities declares which optional operations a driver supports; the
// agent refuses an operation the driver lacks with ErrNotSupported before
// calling it.
type Capabilities struct {
	Pause         bool
	ConsoleOutput bool
	LiveResize    bool
	Snapshot      bool
	// Networking: the driver holds each server's network namespace apart
	// from its workload (a sandbox), so it can be plumbed before the
	// workload starts and survives workload restarts; Sandbox works.
	Networking bool
	// PasswordAtCreate: Create and Rebuild set Spec.AdminPassHash
	// themselves, with the first-boot files.
	PasswordAtCreate bool
}

// NetnsPreparer is a driver that can make a networked instance's network
// namespace before its container exists (docker network mode netns), so
// the agent plumbs it while the container is created. PrepareNetns makes
// it and returns its path, or "" when new instances get no such namespace
// (the driver makes a sandbox with the container).
type NetnsPreparer interface {
	PrepareNetns(ctx context.Context, id string) (netnsPath string, err error)
}

// Driver runs servers on one host. Every method is idempotent where it
// makes sense: Create of an existing instance with the same ID succeeds,
// Destroy of a missing one succeeds, Start of a running one succeeds, Stop
// of a stopped one succeeds. That is what lets the agent replay a message
// after a crash.
type Driver interface {
	Name() string
	Capabilities() Capabilities
	Fingerprint(ctx context.Context) (HostInfo, error)

	// Create prepares the instance (pulls the image, creates the
	// container with its limits) without starting it.
	Create(ctx context.Context, spec Spec) error
	Start(ctx context.Context, id string) error
	// Stop asks the instance to shut down and kills it after grace.
	Stop(ctx context.Context, id string, grace time.Duration) error
	Reboot(ctx context.Context, id string, hard bool) error
	Pause(ctx context.Context, id string) error
	Unpause(ctx context.Context, id string) error
	// Destroy removes the instance and everything the driver created for
	// it. Missing instances are not an error.
	Destroy(ctx context.Context, id string) error
	// Rebuild replaces the instance's workload with a new one made from
	// spec (same ID; a new image, so the old disk is gone), keeping its
	// sandbox and so its network namespace. The old workload gets grace
	// to shut down; the new one is created, not started. The new image is
	// fetched before anything is removed. A missing workload (a rebuild
	// that failed half-way) is simply created.
	Rebuild(ctx context.Context, spec Spec, grace time.Duration) error

	// Status returns ErrNotFound (wrapped) when the instance is missing.
	Status(ctx context.Context, id string) (Status, error)
	// List returns every instance this driver manages on the host,
	// including ones the control plane does not know (orphans).
	List(ctx context.Context) ([]Status, error)
	// ConsoleOutput returns the last lines of the console log (all when
	// lines < 0).
	ConsoleOutput(ctx context.Context, id string, lines int) (string, error)

	// Sandbox makes sure the network namespace of a created instance
	// exists (starting its sandbox if needed) and returns its path, e.g.
	// /proc/<pid>/ns/net, for the agent to plumb. While the workload runs
	// it is the workload's namespace; otherwise it is the one the
	// workload joins at its next start. The namespace changes when the
	// sandbox restarts (Stop, a dockerd or host restart), so the agent
	// plumbs (idempotently) before every start. Drivers without
	// Capabilities.Networking return ErrNotSupported.
	Sandbox(ctx context.Context, id string) (netnsPath string, err error)

	// Resize applies a new size to an existing instance in place (live
	// when it runs: no restart, its processes keep their PIDs): vcpus and
	// memoryMB as in Spec, l the new flavor's limits (l.PidsMax, when set,
	// is the new pid cap; 0 keeps the current one). A failure half-way
	// puts the old values back before returning the error. A change it
	// can make only to a stopped instance fails, the old values in
	// place, with an error wrapping ErrNeedsRestart. Drivers without
	// Capabilities.LiveResize return ErrNotSupported.
	Resize(ctx context.Context, id string, vcpus, memoryMB int, l limits.Limits) error
}

// RuntimeWatcher is implemented by a driver whose runtime is a daemon that
// can stop or restart under running servers (dockerd). WatchRuntime runs
// until ctx ends and calls restarted each time the runtime answers again
// after it was lost, so the agent can reconcile at once (and start again
// servers the outage stopped).
type RuntimeWatcher interface {
	WatchRuntime(ctx context.Context, restarted func())
}

// RootDiskResizer is a driver whose root disk caps are fixed when an
// instance's container is made (drivers/docker: storage-opt size, which
// dockerd cannot change): a resize to another disk makes the container
// again, on the stopped instance, keeping its data, network namespace,
// command, limits and keys. The container it replaces is kept aside (with
// the data as of the resize) until the resize is confirmed
// (ConfirmRootDisk drops it) or reverted (ResizeRootDisk back to the kept
// container's size brings it back, as Nova's revert brings the old disk
// back). Every method is idempotent, so a request redelivered after the
// agent died half-way finishes the work.
type RootDiskResizer interface {
	// RootDiskChange reports whether giving instance id a root disk of
	// diskGB means making its container again: this host caps root
	// disks and the container's cap is another (or a remake was cut
	// short).
	RootDiskChange(ctx context.Context, id string, diskGB int) (bool, error)
	// ResizeRootDisk gives stopped instance id a root disk of diskGB (see
	// above). A failure leaves the instance as it was, stopped.
	ResizeRootDisk(ctx context.Context, id string, diskGB int) error
	// ConfirmRootDisk drops the container a resize kept; none: nothing.
	ConfirmRootDisk(ctx context.Context, id string) error
	// KeptRootDisks lists the instances that have a kept container.
	KeptRootDisks(ctx context.Context) ([]string, error)
	// DropStrayResizeImages removes what resizes left of instances
	// that have no container here any more, and says how many.
	DropStrayResizeImages(ctx context.Context) (int, error)
}

// Consoler is a driver that opens an interactive shell on a terminal in a
// running instance (its serial console): what is written goes to the
// shell's terminal, what the terminal prints is read back. Closing ends
// the shell's session (the terminal hangs up). A stopped or paused
// instance is ErrInvalidState, a missing one ErrNotFound.
type Consoler interface {
	OpenConsole(ctx context.Context, id string) (io.ReadWriteCloser, error)
}
