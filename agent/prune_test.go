package agent

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// prunePlumber plugs the way vif does, which fakePlumber does not: Plug
// adds or updates the NICs it is given and leaves the others plugged,
// Unplug removes only the NICs it is given. It is a NICPruner.
type prunePlumber struct {
	mu     sync.Mutex
	ports  map[string]map[string]protocol.NIC // instance -> port id -> NIC
	pruned []string                           // "instance/port" per pruned NIC
}

var _ NICPruner = (*prunePlumber)(nil)

func newPrunePlumber() *prunePlumber {
	return &prunePlumber{ports: map[string]map[string]protocol.NIC{}}
}

func (p *prunePlumber) Plug(_ context.Context, id, netns string, nics []protocol.NIC) error {
	if netns == "" || len(nics) == 0 {
		return errors.New("prune plumber: empty netns or NICs")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ports[id] == nil {
		p.ports[id] = map[string]protocol.NIC{}
	}
	for _, n := range nics {
		p.ports[id][n.PortID] = n
	}
	return nil
}

func (p *prunePlumber) Unplug(_ context.Context, id string, nics []protocol.NIC) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range nics {
		delete(p.ports[id], n.PortID)
	}
	return nil
}

func (p *prunePlumber) UnplugInstance(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ports, id)
	return nil
}

func (p *prunePlumber) RemoveOrphans(_ context.Context, keep func(string) bool) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, id := range slices.Sorted(maps.Keys(p.ports)) {
		if len(p.ports[id]) > 0 && !keep(id) {
			delete(p.ports, id)
			out = append(out, id)
		}
	}
	return out, nil
}

func (p *prunePlumber) RemoveStaleNICs(_ context.Context, id string, nics []protocol.NIC) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, port := range slices.Sorted(maps.Keys(p.ports[id])) {
		if !slices.ContainsFunc(nics, func(n protocol.NIC) bool { return n.PortID == port }) {
			delete(p.ports[id], port)
			out = append(out, port)
			p.pruned = append(p.pruned, id+"/"+port)
		}
	}
	return out, nil
}

// plugged returns the port ids plugged for id, sorted.
func (p *prunePlumber) plugged(id string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.ports[id]))
}

func (p *prunePlumber) prunedNICs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.pruned)
}

func active(spec protocol.InstanceSpec) protocol.ExpectedInstance {
	return protocol.ExpectedInstance{Spec: spec, VMState: lifecycle.Active}
}

func (e *env) mustReconcile() {
	e.t.Helper()
	if err := e.agent.Reconcile(context.Background()); err != nil {
		e.t.Fatalf("reconcile: %v", err)
	}
}

func wantPlugged(t *testing.T, p *prunePlumber, id string, want ...string) {
	t.Helper()
	if got := p.plugged(id); !slices.Equal(got, want) {
		t.Errorf("plugged for %s = %v, want %v", id, got, want)
	}
}

// Drift repair removes a NIC whose port is no longer one of its server's
// (an attach the API rolled back after the agent plugged it, a detach
// that never reached the agent) and leaves every other NIC, and every NIC
// of a server with an operation in flight, plugged.
func TestReconcilePrunesNICsAServerNoLongerHas(t *testing.T) {
	drv := newFakeDriver()
	p := newPrunePlumber()
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	e.serveConductor()
	e.start()
	for _, id := range []string{"i-sn", "i-ok"} {
		e.buildNet(id, "req-"+id)
		if r := e.waitReport(id, 1, 5*time.Second); !r.OK {
			t.Fatalf("build %s: %+v", id, r)
		}
	}

	// The agent plugs port-c, but the API timed out meanwhile and rolled
	// the port back: the conductor never lists it.
	if _, err := e.attach("i-sn", thirdNIC()); err != nil {
		t.Fatal(err)
	}
	wantPlugged(t, p, "i-sn", "port-a", "port-b", "port-c")
	e.cond.setExpected(active(netSpec("i-sn")), active(netSpec("i-ok")))
	e.mustReconcile()
	wantPlugged(t, p, "i-sn", "port-a", "port-b")
	wantPlugged(t, p, "i-ok", "port-a", "port-b")
	if got, want := p.prunedNICs(), []string{"i-sn/port-c"}; !slices.Equal(got, want) {
		t.Errorf("pruned %v, want %v", got, want)
	}
	e.mustReconcile() // nothing more to prune
	if got, want := p.prunedNICs(), []string{"i-sn/port-c"}; !slices.Equal(got, want) {
		t.Errorf("pruned after a second reconcile %v, want still %v", got, want)
	}

	// port-b is detached (the API unbinds it first) but the agent never
	// hears of it.
	detached := netSpec("i-sn")
	detached.NICs = detached.NICs[:1]
	e.cond.setExpected(active(detached), active(netSpec("i-ok")))
	e.mustReconcile()
	wantPlugged(t, p, "i-sn", "port-a")
	if got, want := p.prunedNICs(), []string{"i-sn/port-c", "i-sn/port-b"}; !slices.Equal(got, want) {
		t.Errorf("pruned %v, want %v", got, want)
	}

	// An instance with an operation in flight is its operation's.
	unlock, err := e.agent.locks.lock(context.Background(), "i-ok")
	if err != nil {
		t.Fatal(err)
	}
	busy := netSpec("i-ok")
	busy.NICs = busy.NICs[1:]
	e.cond.setExpected(active(detached), active(busy))
	e.mustReconcile()
	wantPlugged(t, p, "i-ok", "port-a", "port-b")
	unlock()
	e.mustReconcile()
	wantPlugged(t, p, "i-ok", "port-b")
}

// A conductor answer fetched before an attach lands must not prune the
// NIC the attach just plugged: the NIC list's change counter makes the
// reconcile leave it to the next one, whose answer lists the port.
func TestReconcileKeepsANICAttachedWhileItAsked(t *testing.T) {
	drv := newFakeDriver()
	p := newPrunePlumber()
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	var (
		mu        sync.Mutex
		beforeAns func()
	)
	// The conductor stand-in, with a hook run after it computed its
	// answer to instances_on_host and before it sends it.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := e.bus.Consume(ctx, bus.ConductorQueue, func(ctx context.Context, m bus.Message) (any, error) {
		ans, err := e.cond.handle(ctx, m)
		mu.Lock()
		hook := beforeAns
		beforeAns = nil
		mu.Unlock()
		if m.Kind == protocol.KindInstancesOnHost && hook != nil {
			hook()
		}
		return ans, err
	}); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.buildNet("i-fa", "req-fa")
	if r := e.waitReport("i-fa", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}

	e.cond.setExpected(active(netSpec("i-fa")))
	attached := make(chan error, 1)
	mu.Lock()
	beforeAns = func() {
		_, err := e.attach("i-fa", thirdNIC())
		attached <- err
	}
	mu.Unlock()
	e.mustReconcile()
	if err := <-attached; err != nil {
		t.Fatalf("attach during the reconcile: %v", err)
	}
	wantPlugged(t, p, "i-fa", "port-a", "port-b", "port-c")
	if got := p.prunedNICs(); len(got) != 0 {
		t.Errorf("pruned %v on an answer older than the attach", got)
	}
	if nics, _ := e.agent.nics.get("i-fa"); len(nics) != 3 {
		t.Errorf("NIC list after the reconcile = %v", portIDs(nics))
	}

	// The next answer lists the port: it stays.
	spec := netSpec("i-fa")
	spec.NICs = append(spec.NICs, thirdNIC())
	e.cond.setExpected(active(spec))
	e.mustReconcile()
	wantPlugged(t, p, "i-fa", "port-a", "port-b", "port-c")
	if got := p.prunedNICs(); len(got) != 0 {
		t.Errorf("pruned %v", got)
	}
}
