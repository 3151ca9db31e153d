package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

const testHost = "node-t1"

// conductor stands in for the real conductor: it consumes the conductor
// queue, records what agents report and answers instances_on_host.
type conductor struct {
	host     string // the agent's host; testHost when empty
	mu       sync.Mutex
	expected []protocol.ExpectedInstance
	reports  []protocol.InstanceReport
	syncs    []protocol.PowerSync
	hosts    []protocol.HostReport
	snaps    []protocol.SnapshotReport
	volReps  []protocol.VolumeReport
	asked    int
	// migrating: InstancesOnHostReply.Migrating
	migrating []string
	// evacuated: the instances_on_host reply's servers evacuated from
	// the host.
	evacuated []string
}

func (c *conductor) handle(_ context.Context, m bus.Message) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.Kind {
	case protocol.KindInstanceReport:
		var r protocol.InstanceReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.reports = append(c.reports, r)
	case protocol.KindPowerSync:
		var r protocol.PowerSync
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.syncs = append(c.syncs, r)
	case protocol.KindSnapshotReport:
		var r protocol.SnapshotReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.snaps = append(c.snaps, r)
	case protocol.KindVolumeReport:
		var r protocol.VolumeReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.volReps = append(c.volReps, r)
	case protocol.KindHostReport:
		var r protocol.HostReport
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		c.hosts = append(c.hosts, r)
	case protocol.KindInstancesOnHost:
		var r protocol.InstancesOnHostRequest
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		if want := cmp.Or(c.host, testHost); r.Host != want {
			return nil, fmt.Errorf("instances_on_host for unexpected host %q", r.Host)
		}
		c.asked++
		// As the conductor: migrations listed, none unless set.
		return protocol.InstancesOnHostReply{Instances: c.expected, Migrating: append([]string{}, c.migrating...),
			Evacuated: c.evacuated}, nil
	case protocol.KindInstanceMetadata:
		var r protocol.InstanceMetadataRequest
		if err := m.Decode(&r); err != nil {
			return nil, err
		}
		if want := cmp.Or(c.host, testHost); r.Host != want {
			return nil, fmt.Errorf("instance_metadata for unexpected host %q", r.Host)
		}
		return protocol.InstanceMetadata{UUID: r.InstanceID, Name: "srv-" + r.InstanceID, ProjectID: "proj-1"}, nil
	default:
		return nil, fmt.Errorf("conductor stand-in: unexpected kind %s", m.Kind)
	}
	return nil, nil
}

// setMigrating sets the servers whose migrations pass through this host.
func (c *conductor) setMigrating(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.migrating = ids
}

func (c *conductor) setExpected(e ...protocol.ExpectedInstance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expected = e
}

// reportsFor returns the instance reports about id, in arrival order.
func (c *conductor) reportsFor(id string) []protocol.InstanceReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []protocol.InstanceReport
	for _, r := range c.reports {
		if r.InstanceID == id {
			out = append(out, r)
		}
	}
	return out
}

func (c *conductor) powerSyncs() []protocol.PowerSync {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]protocol.PowerSync(nil), c.syncs...)
}

func (c *conductor) hostReports() []protocol.HostReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]protocol.HostReport(nil), c.hosts...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// env is one agent under test with its bus and conductor stand-in.
type env struct {
	t     *testing.T
	bus   *bus.Mem
	cond  *conductor
	agent *Agent
	cfg   config.Agent

	cancel context.CancelFunc
	done   chan error
}

func testConfig() config.Agent {
	cfg := config.Default().Agent
	cfg.Host = testHost
	cfg.Zone = "zone-t"
	cfg.HostIP = "192.0.2.10"
	cfg.PidsLimit = 321
	cfg.CPUAllocationRatio = 8
	cfg.RAMAllocationRatio = 1.5
	cfg.DiskAllocationRatio = 2
	cfg.ReservedMemoryMB = 256
	cfg.HeartbeatInterval = time.Hour // tests that want beats lower it
	cfg.StopTimeout = time.Second
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	// Quiet unless -v: failure paths log errors on purpose.
	lvl := slog.LevelError + 4
	if testing.Verbose() {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// newEnv wires an agent on drv to a Mem bus and a conductor stand-in
// that already answers; start runs it.
func newEnv(t *testing.T, drv drivers.Driver, cfg config.Agent, opts ...Option) *env {
	t.Helper()
	b := bus.NewMem(bus.MemLogger(testLogger(t)))
	t.Cleanup(func() { b.Close() })
	e := &env{t: t, bus: b, cond: &conductor{}, cfg: cfg}
	opts = append([]Option{WithReconcileInterval(0), WithCallTimeout(2 * time.Second),
		WithReconcileBackoff(20 * time.Millisecond)}, opts...)
	e.agent = New(cfg, drv, b, testLogger(t), opts...)
	return e
}

func (e *env) serveConductor() {
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	if err := e.bus.Consume(ctx, bus.ConductorQueue, e.cond.handle); err != nil {
		e.t.Fatalf("conductor consume: %v", err)
	}
}

// start runs the agent until the test ends (or stop is called) and waits
// for its first power sync, i.e. until it serves its queue.
func (e *env) start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- e.agent.Run(ctx) }()
	e.t.Cleanup(e.stop)
	waitFor(e.t, 5*time.Second, "the start-up power sync", func() bool { return len(e.cond.powerSyncs()) > 0 })
}

// stop cancels Run and waits for it to return.
func (e *env) stop() {
	e.t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Errorf("Run did not return after its context ended")
	}
}

func (e *env) publish(kind string, body any) {
	e.t.Helper()
	m, err := bus.NewMessage(kind, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.bus.Publish(context.Background(), bus.ComputeQueue(testHost), m); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) build(id, reqID string, image string) {
	e.publish(protocol.KindBuildInstance, protocol.BuildInstance{
		RequestID: reqID, Attempt: 1,
		Spec: protocol.InstanceSpec{ID: id, Name: "srv-" + id, ProjectID: "proj-1", ImageRef: image,
			VCPUs: 1, MemoryMB: 64, DiskGB: 1},
	})
}

func (e *env) action(id, reqID string, act lifecycle.Action) {
	e.publish(protocol.KindInstanceAction, protocol.InstanceAction{RequestID: reqID, InstanceID: id, Action: act})
}

// waitReport waits for the n-th (1-based) report about id.
func (e *env) waitReport(id string, n int, timeout time.Duration) protocol.InstanceReport {
	e.t.Helper()
	waitFor(e.t, timeout, fmt.Sprintf("report #%d about %s", n, id), func() bool { return len(e.cond.reportsFor(id)) >= n })
	return e.cond.reportsFor(id)[n-1]
}
