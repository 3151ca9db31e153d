package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// unplugRecorder is the fake plumber that also remembers which NICs each
// Unplug was given, so tests see a detach unplugs only its NIC.
type unplugRecorder struct {
	*fakePlumber
	mu       sync.Mutex
	unplugs  [][]string // port ids per Unplug call
	unplugOf []string   // instance per Unplug call
}

func (r *unplugRecorder) Unplug(ctx context.Context, id string, nics []protocol.NIC) error {
	r.mu.Lock()
	var ports []string
	for _, n := range nics {
		ports = append(ports, n.PortID)
	}
	r.unplugs = append(r.unplugs, ports)
	r.unplugOf = append(r.unplugOf, id)
	r.mu.Unlock()
	return r.fakePlumber.Unplug(ctx, id, nics)
}

func (r *unplugRecorder) last() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.unplugs) == 0 {
		return nil
	}
	return r.unplugs[len(r.unplugs)-1]
}

func startIface(t *testing.T) (*env, *fakeDriver, *unplugRecorder) {
	t.Helper()
	drv := newFakeDriver()
	p := &unplugRecorder{fakePlumber: newFakePlumber(drv)}
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	e.serveConductor()
	e.start()
	return e, drv, p
}

func (e *env) ifaceCall(kind string, body any) (protocol.InterfaceReply, error) {
	e.t.Helper()
	m, err := bus.NewMessage(kind, body)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rep protocol.InterfaceReply
	err = e.bus.Call(ctx, bus.ComputeQueue(testHost), m, &rep)
	return rep, err
}

func (e *env) attach(id string, nic protocol.NIC) (protocol.InterfaceReply, error) {
	return e.ifaceCall(protocol.KindAttachInterface, protocol.AttachInterface{RequestID: "req-att", InstanceID: id, NIC: nic,
		Deadline: time.Now().Add(4 * time.Second)})
}

func (e *env) detach(id, portID string) (protocol.InterfaceReply, error) {
	return e.ifaceCall(protocol.KindDetachInterface, protocol.DetachInterface{RequestID: "req-det", InstanceID: id, PortID: portID,
		NIC: protocol.NIC{PortID: portID, PhysicalNetwork: "physnet1", NetworkType: "vlan", SegmentationID: 103}})
}

func thirdNIC() protocol.NIC {
	return protocol.NIC{PortID: "port-c", NetworkID: "net-3", MAC: "fa:16:3e:00:00:03", MTU: 1450,
		IPs:             []protocol.IP{{Address: "10.2.0.5", PrefixLen: 24, SubnetID: "sub-3"}},
		Gateway:         "10.2.0.1",
		PhysicalNetwork: "physnet1", NetworkType: "vlan", SegmentationID: 103, PortSecurity: true,
		Bandwidth: &protocol.Bandwidth{InboundAverageKBps: 100}}
}

func portIDs(nics []protocol.NIC) []string {
	var out []string
	for _, n := range nics {
		out = append(out, n.PortID)
	}
	return out
}

// A NIC attached to a running server is plugged at once, after the ones
// it has (vif keeps their names, see vif.assignNames); drift repair with
// the conductor's updated list keeps it; a detach unplugs only that NIC,
// re-plugs the rest, and drift repair does not bring it back.
func TestAttachDetachInterfaceLive(t *testing.T) {
	e, drv, p := startIface(t)
	e.buildNet("i-hp", "req-hp")
	if r := e.waitReport("i-hp", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	rep, err := e.attach("i-hp", thirdNIC())
	if err != nil || !rep.Live {
		t.Fatalf("attach = %+v, %v", rep, err)
	}
	wantJoined(t, drv, p.fakePlumber, "i-hp")
	pl, _ := p.get("i-hp")
	if got := portIDs(pl.nics); !slices.Equal(got, []string{"port-a", "port-b", "port-c"}) {
		t.Fatalf("plugged after attach = %v", got)
	}
	if pl.nics[2].Bandwidth == nil || pl.nics[2].Bandwidth.InboundAverageKBps != 100 {
		t.Errorf("attached NIC lost its shaping: %+v", pl.nics[2])
	}
	// Attaching the same port again is idempotent.
	if _, err := e.attach("i-hp", thirdNIC()); err != nil {
		t.Fatal(err)
	}
	if nics, _ := e.agent.nics.get("i-hp"); len(nics) != 3 {
		t.Errorf("NICs after a repeated attach = %v", portIDs(nics))
	}

	spec := netSpec("i-hp")
	spec.NICs = append(spec.NICs, thirdNIC())
	e.cond.setExpected(protocol.ExpectedInstance{Spec: spec, VMState: lifecycle.Active})
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pl, ok := p.get("i-hp"); !ok || len(pl.nics) != 3 {
		t.Fatalf("after reconcile: plugged %v, %v", pl.nics, ok)
	}

	// Detach eth0's port: only it is unplugged; the rest is plugged again.
	rep, err = e.detach("i-hp", "port-a")
	if err != nil || !rep.Live {
		t.Fatalf("detach = %+v, %v", rep, err)
	}
	if got := p.last(); !slices.Equal(got, []string{"port-a"}) {
		t.Errorf("unplugged %v, want only port-a", got)
	}
	pl, _ = p.get("i-hp")
	if got := portIDs(pl.nics); !slices.Equal(got, []string{"port-b", "port-c"}) {
		t.Errorf("plugged after detach = %v", got)
	}

	// The conductor (its port now unbound) no longer lists it; repair
	// keeps the other two plugged and does not re-add it.
	spec.NICs = spec.NICs[1:]
	e.cond.setExpected(protocol.ExpectedInstance{Spec: spec, VMState: lifecycle.Active})
	if err := e.agent.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	pl, ok := p.get("i-hp")
	if got := portIDs(pl.nics); !ok || !slices.Equal(got, []string{"port-b", "port-c"}) {
		t.Errorf("plugged after reconcile = %v, %v", got, ok)
	}
	// Detaching again (or a port the agent does not know) is fine.
	if _, err := e.detach("i-hp", "port-a"); err != nil {
		t.Errorf("repeated detach: %v", err)
	}
	if got := p.last(); !slices.Equal(got, []string{"port-a"}) {
		t.Errorf("repeated detach unplugged %v", got)
	}
}

// A conductor answer fetched before an attach or detach must not undo it
// when it arrives after; one fetched after does apply.
func TestNICCacheIgnoresAnswersOlderThanAChange(t *testing.T) {
	c := newNICCache()
	old := testNICs()
	c.set("i-1", old)
	gens := c.generations()  // a reconcile asks the conductor...
	c.change("i-1", old[:1]) // ...a detach lands meanwhile
	c.refreshSince(gens, "i-1", old)
	if got, _ := c.get("i-1"); len(got) != 1 {
		t.Errorf("a stale answer brought back a detached NIC: %v", portIDs(got))
	}
	c.refreshSince(c.generations(), "i-1", old)
	if got, _ := c.get("i-1"); len(got) != 2 {
		t.Errorf("a fresh answer was ignored: %v", portIDs(got))
	}
	c.refreshSince(gens, "i-2", old) // instances never changed are refreshed
	if got, ok := c.get("i-2"); !ok || len(got) != 2 {
		t.Errorf("i-2 = %v, %v", got, ok)
	}
}

// A stopped server only records the NIC: it is plugged with the others
// at the next start.
func TestAttachInterfaceToStoppedServer(t *testing.T) {
	e, drv, p := startIface(t)
	e.buildNet("i-hs", "req-hs")
	e.waitReport("i-hs", 1, 5*time.Second)
	e.action("i-hs", "req-stop", lifecycle.ActStop)
	e.waitReport("i-hs", 2, 5*time.Second)
	drv.resetCalls()
	rep, err := e.attach("i-hs", thirdNIC())
	if err != nil || rep.Live {
		t.Fatalf("attach = %+v, %v", rep, err)
	}
	if got := drv.seq("i-hs", netOps...); len(got) != 0 {
		t.Errorf("attaching to a stopped server touched it: %v", got)
	}
	e.action("i-hs", "req-start", lifecycle.ActStart)
	if r := e.waitReport("i-hs", 3, 5*time.Second); !r.OK {
		t.Fatalf("start: %+v", r)
	}
	wantJoined(t, drv, p.fakePlumber, "i-hs")
	pl, _ := p.get("i-hs")
	if got := portIDs(pl.nics); !slices.Equal(got, []string{"port-a", "port-b", "port-c"}) {
		t.Errorf("plugged at start = %v", got)
	}
}

// A failed plug answers the error and the NIC is not remembered; a
// server without NICs has no sandbox to plug into.
func TestAttachInterfaceFailures(t *testing.T) {
	e, drv, _ := startIface(t)
	e.buildNet("i-hf", "req-hf")
	e.waitReport("i-hf", 1, 5*time.Second)
	drv.setFail("plug", "i-hf", errors.New("ovs-vsctl: transaction error"))
	if _, err := e.attach("i-hf", thirdNIC()); err == nil || !strings.Contains(err.Error(), "transaction error") {
		t.Errorf("attach with a failing plug: %v", err)
	}
	if nics, _ := e.agent.nics.get("i-hf"); len(nics) != 2 {
		t.Errorf("NICs after a failed attach = %v", portIDs(nics))
	}
	// A conductor answer fetched before the failure, listing the port the
	// API then rolled back, does not bring the NIC in.
	if gens := e.agent.nics.generations(); gens["i-hf"] == 0 {
		t.Error("a failed attach did not count as a change of the NIC list")
	}
	e.agent.nics.refreshSince(map[string]uint64{}, "i-hf", append(testNICs(), thirdNIC()))
	if nics, _ := e.agent.nics.get("i-hf"); len(nics) != 2 {
		t.Errorf("a stale answer brought the rolled-back NIC in: %v", portIDs(nics))
	}

	e.build("i-h0", "req-h0", fakeImage)
	e.waitReport("i-h0", 1, 5*time.Second)
	_, err := e.attach("i-h0", thirdNIC())
	if err == nil || !strings.Contains(err.Error(), "no network sandbox") {
		t.Errorf("attach to a server without network: %v", err)
	}
	if _, err := e.attach("", thirdNIC()); err == nil {
		t.Error("attach without an instance id succeeded")
	}
}
