// Package ovs is a small wrapper over Open vSwitch, in the spirit of
// digitalocean/go-openvswitch: every call takes a context, runs one command
// with --timeout (ovs-vsctl for the database, ovs-ofctl for OpenFlow), and
// wraps failures with the command and its stderr.
//
// What every plug and unplug does talks to ovsdb-server's unix socket in
// process instead (RFC 7047 JSON-RPC, ovsdb.go and ovsdb_write.go): the port
// listings, and the two writes AddAccessPort and DeletePort, which do what
// "ovs-vsctl --may-exist add-port" and "--if-exists del-port" do, in one
// transaction each, and wait, as ovs-vsctl does, until ovs-vswitchd has
// applied the change (Open_vSwitch cur_cfg >= next_cfg) so that flows naming
// the port can follow at once. Each is logged at debug level as "ovsdb
// select" or "ovsdb transact"; each process run as "ovs command" (one line
// per process; ApplyFlows' runs add batches=N, the callers' batches the run
// merged: see ApplyFlows). When the socket cannot be reached (or
// Options.DBSocket is "-"), ovs-vsctl does it.
//
// Capsule's bridges use the userspace datapath (datapath_type=netdev) by
// default because compute hosts may lack the openvswitch kernel module, and
// fail_mode=secure with an explicit lowest-priority NORMAL flow: secure means
// OVS never adds or removes flows on its own (so what is in the table is
// exactly what Capsule put there), and the explicit NORMAL fallback is what
// forwards everything the per-port anti-spoofing flows do not decide.
package ovs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configures a Client; zero values take the defaults.
type Options struct {
	// VsctlPath and OfctlPath locate the tools (default: found in $PATH).
	VsctlPath string
	OfctlPath string
	// Timeout bounds every command: it is passed as --timeout (whole
	// seconds, rounded up) and also bounds the process (default 10s).
	Timeout time.Duration
	// DatapathType is what EnsureBridge sets (default "netdev", the
	// userspace datapath; "system" needs the kernel module).
	DatapathType string
	// OpenFlowVersion is passed to ovs-ofctl as -O (default "OpenFlow14":
	// atomic bundles, used by AddFlows and ReplaceFlows, need 1.4).
	OpenFlowVersion string
	// DBSocket is ovsdb-server's unix socket, which port listings,
	// AddAccessPort and DeletePort use in process (default: ovs-vsctl's,
	// $OVS_RUNDIR/db.sock; "-": always run ovs-vsctl). An unreachable
	// socket falls back to ovs-vsctl.
	DBSocket string
	// Logger receives a debug line per command (default slog.Default()).
	Logger *slog.Logger
}

// Client runs ovs-vsctl and ovs-ofctl, or talks to ovsdb-server's socket
// (a connection per call). It is safe for concurrent use (OVSDB
// transactions serialise in ovsdb-server). Its only mutable state is
// ApplyFlows' per-bridge queue (flowQueues, under mu), which merges the
// batches of concurrent callers into one ovs-ofctl run: share one Client
// per host to get that merging.
type Client struct {
	vsctl, ofctl string
	timeout      time.Duration
	datapath     string
	ofVersion    string
	dbSocket     string // "" = no in-process reads
	log          *slog.Logger

	mu         sync.Mutex
	flowQueues map[string]*flowQueue // by bridge; present while a run is under way
}

// New returns a Client for opts.
func New(opts Options) *Client {
	c := &Client{
		vsctl:     opts.VsctlPath,
		ofctl:     opts.OfctlPath,
		timeout:   opts.Timeout,
		datapath:  opts.DatapathType,
		ofVersion: opts.OpenFlowVersion,
		dbSocket:  opts.DBSocket,
		log:       opts.Logger,
	}
	switch c.dbSocket {
	case "":
		c.dbSocket = defaultDBSocket()
	case "-":
		c.dbSocket = ""
	}
	if c.vsctl == "" {
		c.vsctl = "ovs-vsctl"
	}
	if c.ofctl == "" {
		c.ofctl = "ovs-ofctl"
	}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	if c.datapath == "" {
		c.datapath = "netdev"
	}
	if c.ofVersion == "" {
		c.ofVersion = "OpenFlow14"
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c
}

// Error is a failed command: which one, how it failed and what it said.
type Error struct {
	Args   []string // the command line, tool first
	Stderr string
	Err    error
}

func (e *Error) Error() string {
	msg := strings.Join(e.Args, " ") + ": " + e.Err.Error()
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// timeoutArg is the tools' --timeout in whole seconds, at least 1.
func (c *Client) timeoutArg() string {
	return "--timeout=" + strconv.Itoa(int(math.Ceil(c.timeout.Seconds())))
}

// run executes one tool invocation and returns its stdout.
func (c *Client) run(ctx context.Context, stdin string, bin string, args ...string) (string, error) {
	return c.runLogged(ctx, stdin, nil, bin, args...)
}

// runLogged is run with extra attributes (key, value pairs) on its debug line.
func (c *Client) runLogged(ctx context.Context, stdin string, logAttrs []any, bin string, args ...string) (string, error) {
	// The tool's own --timeout makes it give up cleanly; the context
	// deadline (a little later) is the backstop for a hung process.
	ctx, cancel := context.WithTimeout(ctx, c.timeout+2*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	// One line per process: the e2e boot benchmark counts them.
	c.log.Debug("ovs command", append([]any{"cmd", bin, "args", args, "took", time.Since(start), "err", err}, logAttrs...)...)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return "", &Error{Args: append([]string{bin}, args...), Stderr: stderr.String(), Err: err}
	}
	return stdout.String(), nil
}

// Vsctl runs ovs-vsctl with args (each transaction step separated by "--"),
// adding --timeout. It is the escape hatch for what the typed calls lack.
func (c *Client) Vsctl(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, "", c.vsctl, append([]string{c.timeoutArg()}, args...)...)
}

// Ofctl runs ovs-ofctl with args, adding --timeout and -O <version>;
// stdin, when not empty, is the command's input (for "-" file arguments).
func (c *Client) Ofctl(ctx context.Context, stdin string, args ...string) (string, error) {
	pre := []string{c.timeoutArg(), "-O", c.ofVersion}
	return c.run(ctx, stdin, c.ofctl, append(pre, args...)...)
}

// BaseCookie marks the bridge-wide NORMAL fallback flow EnsureBridge adds.
// Cookies with the CookiePrefix in their top 16 bits belong to Capsule.
const (
	CookiePrefix uint64 = 0xca5e << 48
	BaseCookie          = CookiePrefix
)

// EnsureBridge creates bridge name if it does not exist and (re)sets what
// Capsule relies on: the datapath type, fail_mode=secure, OpenFlow 1.0, 1.3
// and 1.4, and the priority-0 NORMAL fallback flow. Idempotent; an existing
// bridge keeps its ports.
func (c *Client) EnsureBridge(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("ovs: ensure bridge: empty name")
	}
	if _, err := c.Vsctl(ctx, "--may-exist", "add-br", name,
		"--", "set", "Bridge", name,
		"datapath_type="+c.datapath,
		"fail_mode=secure",
		"protocols=OpenFlow10,OpenFlow13,OpenFlow14"); err != nil {
		return fmt.Errorf("ovs: ensure bridge %s: %w", name, err)
	}
	return c.EnsureFallbackFlow(ctx, name)
}

// EnsureFallbackFlow (re)adds the priority-0 NORMAL flow that forwards
// whatever no higher-priority flow decided. With fail_mode=secure nothing
// else puts it back after a del-flows, so plumbing calls this to repair it.
func (c *Client) EnsureFallbackFlow(ctx context.Context, bridge string) error {
	if err := c.AddFlows(ctx, bridge, []string{FallbackFlow()}); err != nil {
		return fmt.Errorf("ovs: fallback flow on %s: %w", bridge, err)
	}
	return nil
}

// FallbackFlow is the bridge's priority-0 NORMAL flow, for a FlowBatch
// that repairs it along with other changes (EnsureFallbackFlow alone).
func FallbackFlow() string { return fmt.Sprintf("cookie=%#x,priority=0,actions=NORMAL", BaseCookie) }

// DeleteBridge removes bridge name and its ports; a missing bridge is fine.
func (c *Client) DeleteBridge(ctx context.Context, name string) error {
	if _, err := c.Vsctl(ctx, "--if-exists", "del-br", name); err != nil {
		return fmt.Errorf("ovs: delete bridge %s: %w", name, err)
	}
	return nil
}

// BridgeExists reports whether bridge name exists.
func (c *Client) BridgeExists(ctx context.Context, name string) (bool, error) {
	_, err := c.Vsctl(ctx, "br-exists", name)
	if err == nil {
		return true, nil
	}
	// br-exists exits 2 for "no such bridge"; anything else is a failure.
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return false, nil
	}
	return false, fmt.Errorf("ovs: bridge exists %s: %w", name, err)
}
