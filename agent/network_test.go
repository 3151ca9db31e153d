package agent

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// fakePlumber keeps what is plugged in memory and notes every call in the
// fake driver's call log, so tests see the order of driver and plumbing
// steps; a failure set with drv.setFail("plug", id, err) makes Plug fail
// (and, like vif, leave nothing behind).
type fakePlumber struct {
	drv *fakeDriver

	mu      sync.Mutex
	plugged map[string]plugged
}

type plugged struct {
	netns string
	nics  []protocol.NIC
}

func newFakePlumber(drv *fakeDriver) *fakePlumber {
	return &fakePlumber{drv: drv, plugged: map[string]plugged{}}
}

func (p *fakePlumber) Plug(_ context.Context, id, netns string, nics []protocol.NIC) error {
	if err := p.drv.note("plug", id); err != nil {
		return err
	}
	if netns == "" || len(nics) == 0 {
		return errors.New("fake plug: empty netns or NICs")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.plugged[id] = plugged{netns: netns, nics: slices.Clone(nics)}
	return nil
}

func (p *fakePlumber) Unplug(_ context.Context, id string, nics []protocol.NIC) error {
	if err := p.drv.note("unplug", id); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.plugged, id)
	return nil
}

func (p *fakePlumber) UnplugInstance(_ context.Context, id string) error {
	if err := p.drv.note("unplug_instance", id); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.plugged, id)
	return nil
}

func (p *fakePlumber) RemoveOrphans(_ context.Context, keep func(string) bool) ([]string, error) {
	if err := p.drv.note("orphans", ""); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, id := range slices.Sorted(maps.Keys(p.plugged)) {
		if !keep(id) {
			delete(p.plugged, id)
			out = append(out, id)
		}
	}
	return out, nil
}

// Drift implements DriftChecker: what is plugged for id differs from a
// Plug of nics into netns when it is missing or was plugged elsewhere or
// with other NICs.
func (p *fakePlumber) Drift(_ context.Context, id, netns string, nics []protocol.NIC) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.plugged[id]
	switch {
	case !ok:
		return "not plugged", nil
	case v.netns != netns:
		return "plugged into " + v.netns, nil
	case !slices.EqualFunc(v.nics, nics, func(a, b protocol.NIC) bool { return a.PortID == b.PortID && a.MAC == b.MAC }):
		return "other NICs", nil
	}
	return "", nil
}

func (p *fakePlumber) get(id string) (plugged, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.plugged[id]
	return v, ok
}

func (p *fakePlumber) put(id, netns string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.plugged[id] = plugged{netns: netns, nics: testNICs()}
}

func (p *fakePlumber) wipe() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.plugged = map[string]plugged{}
}

// seq returns the calls about id among ops, in order, as "op".
func (d *fakeDriver) seq(id string, ops ...string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, c := range d.calls {
		op, cid, _ := strings.Cut(c, " ")
		if cid == id && slices.Contains(ops, op) {
			out = append(out, op)
		}
	}
	return out
}

func (d *fakeDriver) resetCalls() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = nil
}

var netOps = []string{"create", "sandbox", "plug", "start", "stop", "reboot", "reboot_hard", "destroy", "unplug", "unplug_instance"}

func testNICs() []protocol.NIC {
	return []protocol.NIC{
		{PortID: "port-a", NetworkID: "net-1", MAC: "fa:16:3e:00:00:01", MTU: 1500,
			IPs:     []protocol.IP{{Address: "10.0.0.5", PrefixLen: 24, SubnetID: "sub-1"}},
			Gateway: "10.0.0.1", DNS: []string{"10.0.0.53", "10.0.0.54"},
			PhysicalNetwork: "physnet1", NetworkType: "vlan", SegmentationID: 101, PortSecurity: true},
		{PortID: "port-b", NetworkID: "net-2", MAC: "fa:16:3e:00:00:02", MTU: 1500,
			IPs:             []protocol.IP{{Address: "10.1.0.5", PrefixLen: 24, SubnetID: "sub-2"}},
			DNS:             []string{"10.0.0.54", "10.1.0.53"},
			PhysicalNetwork: "physnet1", NetworkType: "vlan", SegmentationID: 102},
	}
}

func netSpec(id string) protocol.InstanceSpec {
	return protocol.InstanceSpec{ID: id, Name: "srv-" + id, ProjectID: "proj-1", ImageRef: fakeImage,
		VCPUs: 1, MemoryMB: 64, DiskGB: 1, NICs: testNICs()}
}

func (e *env) buildNet(id, reqID string) {
	e.publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: reqID, Attempt: 1, Spec: netSpec(id)})
}

// startNet runs an agent on the fake driver with a fake plumber.
func startNet(t *testing.T) (*env, *fakeDriver, *fakePlumber) {
	t.Helper()
	drv := newFakeDriver()
	p := newFakePlumber(drv)
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	e.serveConductor()
	e.start()
	return e, drv, p
}

// wantJoined checks id is plugged into the namespace its workload runs in.
func wantJoined(t *testing.T, drv *fakeDriver, p *fakePlumber, id string) {
	t.Helper()
	inst, ok := drv.get(id)
	if !ok || inst.Power != drivers.PowerRunning {
		t.Fatalf("instance %s = %+v, %v; want running", id, inst, ok)
	}
	pl, ok := p.get(id)
	if !ok {
		t.Fatalf("instance %s runs unplugged", id)
	}
	if pl.netns != inst.WorkloadNetns {
		t.Errorf("instance %s: plugged into %s, workload runs in %s", id, pl.netns, inst.WorkloadNetns)
	}
}

func TestBuildWithNICsPlumbsBeforeStart(t *testing.T) {
	e, drv, p := startNet(t)
	e.buildNet("i-n1", "req-n1")
	r := e.waitReport("i-n1", 1, 5*time.Second)
	if !r.OK || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("report = %+v", r)
	}
	if got, want := drv.seq("i-n1", netOps...), []string{"create", "sandbox", "plug", "start"}; !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
	wantJoined(t, drv, p, "i-n1")
	pl, _ := p.get("i-n1")
	if len(pl.nics) != 2 || pl.nics[0].PortID != "port-a" || pl.nics[1].SegmentationID != 102 {
		t.Errorf("plugged NICs = %+v", pl.nics)
	}
	inst, _ := drv.get("i-n1")
	if want := []string{"10.0.0.53", "10.0.0.54", "10.1.0.53"}; !slices.Equal(inst.Spec.DNS, want) {
		t.Errorf("driver DNS = %v, want %v", inst.Spec.DNS, want)
	}
}

func TestBuildWithoutNICsDoesNotPlumb(t *testing.T) {
	e, drv, _ := startNet(t)
	e.build("i-n0", "req-n0", fakeImage)
	if r := e.waitReport("i-n0", 1, 5*time.Second); !r.OK {
		t.Fatalf("report = %+v", r)
	}
	if got, want := drv.seq("i-n0", netOps...), []string{"create", "start"}; !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
}

func TestBuildPlugFailureLeaksNothing(t *testing.T) {
	e, drv, p := startNet(t)
	drv.setFail("plug", "i-pf", errors.New("ovs-vsctl: no bridge br-physnet1"))
	e.buildNet("i-pf", "req-pf")
	r := e.waitReport("i-pf", 1, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "no bridge br-physnet1") || r.PowerState != 0 {
		t.Fatalf("report = %+v, want a failure with the plumbing error", r)
	}
	if got, want := drv.seq("i-pf", netOps...), []string{"create", "sandbox", "plug", "destroy", "unplug"}; !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v (never started, destroyed then unplugged)", got, want)
	}
	if _, ok := drv.get("i-pf"); ok {
		t.Error("the instance leaked in the driver")
	}
	if _, ok := p.get("i-pf"); ok {
		t.Error("the instance's ports leaked")
	}
	if e.agent.nics.has("i-pf") {
		t.Error("the failed build's NICs are still remembered")
	}
}

func TestBuildSandboxFailureNeverStarts(t *testing.T) {
	e, drv, p := startNet(t)
	drv.setFail("sandbox", "i-sf", errors.New("sandbox exited right after start"))
	e.buildNet("i-sf", "req-sf")
	r := e.waitReport("i-sf", 1, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "sandbox exited") {
		t.Fatalf("report = %+v", r)
	}
	if got := drv.seq("i-sf", "start", "plug"); len(got) != 0 {
		t.Errorf("%v called after the sandbox failed", got)
	}
	if _, ok := drv.get("i-sf"); ok {
		t.Error("the instance leaked")
	}
	if _, ok := p.get("i-sf"); ok {
		t.Error("ports leaked")
	}
}

func TestBuildWithNICsNeedsPlumberAndNetworking(t *testing.T) {
	t.Run("no plumber", func(t *testing.T) {
		e, drv := startFake(t)
		e.buildNet("i-np", "req-np")
		r := e.waitReport("i-np", 1, 5*time.Second)
		if r.OK || !strings.Contains(r.Error, "no network plumbing") {
			t.Fatalf("report = %+v", r)
		}
		if got := drv.callsOf("create"); len(got) != 0 {
			t.Errorf("created %v without being able to plumb", got)
		}
	})
	t.Run("driver without networking", func(t *testing.T) {
		drv := newFakeDriver()
		drv.Caps.Networking = false
		e := newEnv(t, drv, testConfig(), WithPlumber(newFakePlumber(drv)))
		e.serveConductor()
		e.start()
		e.buildNet("i-nn", "req-nn")
		r := e.waitReport("i-nn", 1, 5*time.Second)
		if r.OK || !strings.Contains(r.Error, drivers.ErrNotSupported.Error()) {
			t.Fatalf("report = %+v", r)
		}
		if got := drv.callsOf("start"); len(got) != 0 {
			t.Errorf("started %v", got)
		}
	})
}

func TestDeleteUnplugs(t *testing.T) {
	e, drv, p := startNet(t)
	e.buildNet("i-d1", "req-d1")
	e.waitReport("i-d1", 1, 5*time.Second)
	drv.resetCalls()
	e.action("i-d1", "req-d2", lifecycle.ActDelete)
	r := e.waitReport("i-d1", 2, 5*time.Second)
	if !r.OK {
		t.Fatalf("delete report = %+v", r)
	}
	// Both, in either order: the unplug runs while the container goes.
	got := drv.seq("i-d1", netOps...)
	slices.Sort(got)
	if want := []string{"destroy", "unplug"}; !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v in any order", got, want)
	}
	if _, ok := p.get("i-d1"); ok {
		t.Error("ports left after delete")
	}
	if e.agent.nics.has("i-d1") {
		t.Error("NICs of the deleted instance still remembered")
	}
}

func TestDeleteUnplugFailureFailsTheDelete(t *testing.T) {
	e, drv, _ := startNet(t)
	e.buildNet("i-d3", "req-d3")
	e.waitReport("i-d3", 1, 5*time.Second)
	drv.setFail("unplug", "i-d3", errors.New("ovsdb unreachable"))
	e.action("i-d3", "req-d4", lifecycle.ActDelete)
	if r := e.waitReport("i-d3", 2, 5*time.Second); r.OK || !strings.Contains(r.Error, "ovsdb unreachable") {
		t.Fatalf("delete report = %+v, want the unplug failure", r)
	}
	// The retried delete finishes the job.
	drv.setFail("unplug", "i-d3", nil)
	e.action("i-d3", "req-d5", lifecycle.ActDelete)
	if r := e.waitReport("i-d3", 3, 5*time.Second); !r.OK {
		t.Fatalf("second delete report = %+v", r)
	}
}

// TestDeleteAfterAgentRestart: the agent lost its memory of the NICs
// (restarted, no reconcile yet), so it removes whatever is plugged under
// the instance's id.
func TestDeleteAfterAgentRestart(t *testing.T) {
	drv := newFakeDriver()
	p := newFakePlumber(drv)
	drv.put(t, "i-d6", drivers.PowerRunning)
	p.put("i-d6", "/run/fake-netns/i-d6/1")
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	if _, err := e.agent.runAction(context.Background(), "i-d6", lifecycle.ActDelete); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, ok := p.get("i-d6"); ok {
		t.Error("ports left after delete")
	}
	if got := drv.seq("i-d6", netOps...); !slices.Equal(got, []string{"destroy", "unplug_instance"}) {
		t.Errorf("calls = %v", got)
	}
}

func TestStopUnplugsAndStartReplugs(t *testing.T) {
	e, drv, p := startNet(t)
	e.buildNet("i-s1", "req-s1")
	e.waitReport("i-s1", 1, 5*time.Second)
	first, _ := p.get("i-s1")

	drv.resetCalls()
	e.action("i-s1", "req-s2", lifecycle.ActStop)
	if r := e.waitReport("i-s1", 2, 5*time.Second); !r.OK || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("stop report = %+v", r)
	}
	if got, want := drv.seq("i-s1", netOps...), []string{"stop", "unplug"}; !slices.Equal(got, want) {
		t.Errorf("stop calls = %v, want %v", got, want)
	}
	if _, ok := p.get("i-s1"); ok {
		t.Error("a stopped server is still plugged")
	}

	drv.resetCalls()
	e.action("i-s1", "req-s3", lifecycle.ActStart)
	if r := e.waitReport("i-s1", 3, 5*time.Second); !r.OK || r.PowerState != int(drivers.PowerRunning) {
		t.Fatalf("start report = %+v", r)
	}
	if got, want := drv.seq("i-s1", netOps...), []string{"sandbox", "plug", "start"}; !slices.Equal(got, want) {
		t.Errorf("start calls = %v, want %v", got, want)
	}
	wantJoined(t, drv, p, "i-s1")
	if again, _ := p.get("i-s1"); again.netns == first.netns {
		t.Errorf("start plugged the old namespace %s", again.netns)
	}
}

// TestRebootAfterHostRestartReplugs: after a host restart the sandbox
// comes back in a new namespace; reboot and start plumb it before the
// workload joins it.
func TestRebootAfterHostRestartReplugs(t *testing.T) {
	for _, act := range []lifecycle.Action{lifecycle.ActReboot, lifecycle.ActRebootHard, lifecycle.ActStart} {
		t.Run(string(act), func(t *testing.T) {
			e, drv, p := startNet(t)
			e.buildNet("i-r1", "req-r1")
			e.waitReport("i-r1", 1, 5*time.Second)
			drv.RestartHost()
			drv.resetCalls()
			e.action("i-r1", "req-r2", act)
			if r := e.waitReport("i-r1", 2, 5*time.Second); !r.OK || r.PowerState != int(drivers.PowerRunning) {
				t.Fatalf("%s report = %+v", act, r)
			}
			seq := drv.seq("i-r1", netOps...)
			if len(seq) < 3 || seq[0] != "sandbox" || seq[1] != "plug" {
				t.Errorf("calls = %v, want the sandbox plugged before the workload runs", seq)
			}
			wantJoined(t, drv, p, "i-r1")
		})
	}
}

// TestStartAfterAgentRestartAsksTheConductor: with no NICs in memory, a
// start asks the conductor for them rather than start unplugged.
func TestStartAfterAgentRestartAsksTheConductor(t *testing.T) {
	drv := newFakeDriver()
	p := newFakePlumber(drv)
	drv.put(t, "i-a1", drivers.PowerShutdown)
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	e.serveConductor()
	e.start() // the start-up reconcile sees nothing expected
	e.cond.setExpected(protocol.ExpectedInstance{Spec: netSpec("i-a1"), VMState: lifecycle.Stopped})
	e.action("i-a1", "req-a1", lifecycle.ActStart)
	if r := e.waitReport("i-a1", 1, 5*time.Second); !r.OK {
		t.Fatalf("start report = %+v", r)
	}
	wantJoined(t, drv, p, "i-a1")
	if pl, _ := p.get("i-a1"); len(pl.nics) != 2 {
		t.Errorf("plugged NICs = %+v", pl.nics)
	}
}

func TestStartFailsWhenThePlugFails(t *testing.T) {
	e, drv, _ := startNet(t)
	e.buildNet("i-sp", "req-sp")
	e.waitReport("i-sp", 1, 5*time.Second)
	e.action("i-sp", "req-sp2", lifecycle.ActStop)
	e.waitReport("i-sp", 2, 5*time.Second)
	drv.setFail("plug", "i-sp", errors.New("veth create failed"))
	drv.resetCalls()
	e.action("i-sp", "req-sp3", lifecycle.ActStart)
	r := e.waitReport("i-sp", 3, 5*time.Second)
	if r.OK || !strings.Contains(r.Error, "veth create failed") || r.PowerState != int(drivers.PowerShutdown) {
		t.Fatalf("start report = %+v, want a failure leaving it shut down", r)
	}
	if got := drv.seq("i-sp", "start"); len(got) != 0 {
		t.Errorf("the workload was started without its network")
	}
}

// TestReconcileRepairsDriftAndRemovesOrphanPorts: running instances get
// their lost plumbing back, stopped ones lose theirs, and ports of
// instances not placed here go; an instance being built is left alone.
func TestReconcileRepairsDriftAndRemovesOrphanPorts(t *testing.T) {
	e, drv, p := startNet(t)
	e.buildNet("i-g1", "req-g1")
	e.waitReport("i-g1", 1, 5*time.Second)
	e.buildNet("i-g2", "req-g2")
	e.waitReport("i-g2", 1, 5*time.Second)
	e.action("i-g2", "req-g3", lifecycle.ActStop)
	e.waitReport("i-g2", 2, 5*time.Second)

	// OVS lost everything (e.g. its database was reset); a stale port of
	// the stopped server and two of servers not on this host appear.
	p.wipe()
	p.put("i-g2", "/run/fake-netns/i-g2/1")
	p.put("i-ghost", "/run/fake-netns/i-ghost/1")
	p.put("i-deleted", "/run/fake-netns/i-deleted/1")

	// A build in flight, not yet known to the conductor's list.
	release, entered := make(chan struct{}), make(chan struct{})
	drv.setHook(func(op, id string) {
		if op == "start" && id == "i-g4" {
			close(entered)
			<-release
		}
	})
	e.buildNet("i-g4", "req-g4")
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the build did not reach its start")
	}
	if _, ok := p.get("i-g4"); !ok {
		t.Fatal("the build started unplugged")
	}

	spec1, spec2 := netSpec("i-g1"), netSpec("i-g2")
	spec2.NICs = nil // the conductor does not send NICs: the build's stay
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: spec1, VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: spec2, VMState: lifecycle.Stopped},
	)
	drv.resetCalls()
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantJoined(t, drv, p, "i-g1")
	if _, ok := p.get("i-g2"); ok {
		t.Error("the stopped server's stale port was not removed")
	}
	for _, id := range []string{"i-ghost", "i-deleted"} {
		if _, ok := p.get(id); ok {
			t.Errorf("orphan ports of %s not removed", id)
		}
	}
	if _, ok := p.get("i-g4"); !ok {
		t.Error("reconcile removed the ports of a build in flight")
	}
	if got := drv.seq("i-g4", netOps...); len(got) != 0 {
		t.Errorf("reconcile touched the instance being built: %v", got)
	}
	close(release)
	if r := e.waitReport("i-g4", 1, 5*time.Second); !r.OK {
		t.Fatalf("build report = %+v", r)
	}
	wantJoined(t, drv, p, "i-g4")
}

// TestReconcileLeavesHealthyServersAlone: a reconcile plugs again only a
// running server whose plumbing drifted; one in place is not touched
// (no Plug: it rewrites OVS rows and flows, and logs, every minute).
func TestReconcileLeavesHealthyServersAlone(t *testing.T) {
	e, drv, p := startNet(t)
	e.buildNet("i-ok", "req-ok")
	e.waitReport("i-ok", 1, 5*time.Second)
	e.buildNet("i-lost", "req-lost")
	e.waitReport("i-lost", 1, 5*time.Second)
	e.cond.setExpected(
		protocol.ExpectedInstance{Spec: netSpec("i-ok"), VMState: lifecycle.Active},
		protocol.ExpectedInstance{Spec: netSpec("i-lost"), VMState: lifecycle.Active},
	)
	// i-lost's ports went (OVS lost them); i-ok's are in place.
	p.mu.Lock()
	delete(p.plugged, "i-lost")
	p.mu.Unlock()
	drv.resetCalls()
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := drv.seq("i-ok", "plug", "unplug"); len(got) != 0 {
		t.Errorf("reconcile re-plumbed the healthy server: %v", got)
	}
	if got := drv.seq("i-lost", "plug"); len(got) != 1 {
		t.Errorf("reconcile plugs of the server whose ports went: %v, want one", got)
	}
	wantJoined(t, drv, p, "i-lost")
	// Again: both are in place now.
	drv.resetCalls()
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := drv.seq("i-ok", "plug"); len(got) != 0 {
		t.Errorf("second reconcile plugged i-ok: %v", got)
	}
	if got := drv.seq("i-lost", "plug"); len(got) != 0 {
		t.Errorf("second reconcile plugged i-lost again: %v", got)
	}
}
