// Package drivers defines the boundary between the compute agent and the
// thing that actually runs a server: the Driver interface, its declared
// capabilities and its error kinds. Implementations live in sub-packages
// (docker/, fake/) and must all pass drivertest's conformance suite.
package drivers

import (
	"context"
	"errors"
	"time"
)

// Error kinds (in the spirit of containerd's errdefs). Wrap them with
// fmt.Errorf("...: %w", drivers.ErrNotFound) and test with errors.Is.
var (
	ErrNotFound     = errors.New("instance not found")
	ErrNotSupported = errors.New("not supported by this driver")
	ErrInvalidState = errors.New("invalid state for this operation")
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
	PidsLimit  int64
	ExtraSpecs map[string]string
	Metadata   map[string]string
	Labels     map[string]string // extra labels/annotations to set
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
}

// Capabilities declares which optional operations a driver supports; the
// agent refuses an operation the driver lacks with ErrNotSupported before
// calling it.
type Capabilities struct {
	Pause         bool
	ConsoleOutput bool
	LiveResize    bool
	Snapshot      bool
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

	// Status returns ErrNotFound (wrapped) when the instance is missing.
	Status(ctx context.Context, id string) (Status, error)
	// List returns every instance this driver manages on the host,
	// including ones the control plane does not know (orphans).
	List(ctx context.Context) ([]Status, error)
	// ConsoleOutput returns the last lines of the console log (all when
	// lines < 0).
	ConsoleOutput(ctx context.Context, id string, lines int) (string, error)
}
