package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/protocol"
)

// Plumber wires servers' NICs on the host: veths into the namespace the
// driver's sandbox holds, OVS ports with their VLAN tag, anti-spoofing
// flows. Every method is idempotent (Plug repairs drift); Plug undoes
// itself when it fails. The vif package implements it (adapted in
// cmd/capsuled).
type Plumber interface {
	// Plug wires nics of instance id into the namespace at netnsPath.
	Plug(ctx context.Context, id, netnsPath string, nics []protocol.NIC) error
	// Unplug removes what Plug made for nics of id.
	Unplug(ctx context.Context, id string, nics []protocol.NIC) error
	// UnplugInstance removes everything plugged for id, for when its NICs
	// are not known (after an agent restart).
	UnplugInstance(ctx context.Context, id string) error
	// RemoveOrphans removes what is plugged for every instance keep
	// refuses and returns those instance ids.
	RemoveOrphans(ctx context.Context, keep func(id string) bool) ([]string, error)
}

// NICPruner is implemented by a Plumber that can find what is plugged for
// an instance beyond the NICs it is told of (vif tags every OVS port with
// its instance). Drift repair uses it to remove NICs a server no longer
// has (see pruneNICs); with a Plumber that lacks it they stay plugged.
type NICPruner interface {
	// RemoveStaleNICs removes what is plugged for instance id that is not
	// one of nics (flows, OVS port, veth) and returns those port ids.
	RemoveStaleNICs(ctx context.Context, id string, nics []protocol.NIC) ([]string, error)
}

// FilterUpdater is implemented by a Plumber that can replace a plugged
// NIC's flows alone (vif.Plumber.Refilter): a security group change then
// leaves the server's namespace untouched. Without it the NIC is plugged
// again whole.
type FilterUpdater interface {
	// Refilter replaces the anti-spoofing and security-group flows of
	// instance id's plugged NIC nic.
	Refilter(ctx context.Context, id string, nic protocol.NIC) error
}

// DriftChecker is implemented by a Plumber that can tell, reading only,
// how a plugged server differs from what Plug makes of its NICs
// (vif.Plumber.Drift): drift repair then plugs again only a server that
// drifted. Without it every running server is plugged again at every
// reconcile (Plug is idempotent).
type DriftChecker interface {
	// Drift names what differs ("" when nothing does).
	Drift(ctx context.Context, id, netnsPath string, nics []protocol.NIC) (string, error)
}

// WithPlumber gives the agent its network plumbing. Without one, a build
// with NICs fails: a server never runs without its network.
func WithPlumber(p Plumber) Option { return func(a *Agent) { a.plumber = p } }

// errNoPlumber fails a build or start of a server with NICs on an agent
// that cannot plumb them.
var errNoPlumber = errors.New("this agent has no network plumbing (Open vSwitch) configured")

// nicCache remembers the NICs of the instances on this host: the agent has
// no database, and stop, start and delete messages carry only the id.
// Builds fill it, reconciles refresh it from the conductor, deletes empty
// it. An entry with no NICs means "known to have none".
type nicCache struct {
	mu sync.Mutex
	m  map[string][]protocol.NIC
	// gen counts interface attaches and detaches per instance, so a
	// conductor answer fetched before one does not undo it (see
	// refreshSince in interfaces.go).
	gen map[string]uint64
}

func newNICCache() *nicCache {
	return &nicCache{m: map[string][]protocol.NIC{}, gen: map[string]uint64{}}
}

func (c *nicCache) get(id string) ([]protocol.NIC, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[id]
	return n, ok
}

func (c *nicCache) has(id string) bool {
	_, ok := c.get(id)
	return ok
}

func (c *nicCache) set(id string, nics []protocol.NIC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[id] = slices.Clone(nics)
}

// refreshSince records what the conductor says, except that an empty list
// does not erase NICs a build brought (a conductor that does not send NICs
// must not make the agent start servers without their network), and an
// answer fetched before an interface attach or detach (gens taken before
// asking, see generations) does not undo it.
func (c *nicCache) refreshSince(gens map[string]uint64, id string, nics []protocol.NIC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(nics) == 0 && len(c.m[id]) > 0 {
		return
	}
	if c.gen[id] != gens[id] {
		return
	}
	c.m[id] = slices.Clone(nics)
}

// since returns id's NICs and whether the list is still the one a
// reconcile refreshed from the conductor's answer (gens taken before
// asking): false once an attach or detach changed it since, so a decision
// taken on that answer (pruning NICs) waits for the next reconcile.
func (c *nicCache) since(gens map[string]uint64, id string) ([]protocol.NIC, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id], c.gen[id] == gens[id]
}

func (c *nicCache) del(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
	delete(c.gen, id)
}

// dnsOf gathers the name servers of nics, in order, without repeats.
func dnsOf(nics []protocol.NIC) []string {
	var out []string
	for _, n := range nics {
		for _, s := range n.DNS {
			if s != "" && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// nicsOf returns the NICs of instance id: from memory, else from the
// conductor (after an agent restart, before the first reconcile). An
// instance the conductor does not place here has none.
func (a *Agent) nicsOf(ctx context.Context, id string) ([]protocol.NIC, error) {
	if nics, ok := a.nics.get(id); ok || a.plumber == nil {
		return nics, nil
	}
	gens := a.nics.generations()
	expected, err := a.instancesOnHost(ctx)
	if err != nil {
		return nil, fmt.Errorf("NICs of instance %s: %w", id, err)
	}
	for _, e := range expected {
		a.nics.refreshSince(gens, e.Spec.ID, e.Spec.NICs)
	}
	nics, ok := a.nics.get(id)
	if !ok {
		a.log.Warn("instance not placed here by the conductor; treating it as having no NICs", "instance", id)
	}
	return nics, nil
}

// plumb wires nics of id into its sandbox's namespace, starting the
// sandbox if needed; the workload may start once it returns nil.
func (a *Agent) plumb(ctx context.Context, id string, nics []protocol.NIC) error {
	if len(nics) == 0 {
		return nil
	}
	if a.plumber == nil {
		return fmt.Errorf("plug %d NICs of instance %s: %w", len(nics), id, errNoPlumber)
	}
	if !a.drv.Capabilities().Networking {
		return fmt.Errorf("plug %d NICs of instance %s: driver %s has no sandbox networking: %w",
			len(nics), id, a.drv.Name(), drivers.ErrNotSupported)
	}
	netns, err := a.drv.Sandbox(ctx, id)
	if err != nil {
		return fmt.Errorf("sandbox of instance %s: %w", id, err)
	}
	if err := a.plumber.Plug(ctx, id, netns, nics); err != nil {
		return fmt.Errorf("plug NICs of instance %s into %s: %w", id, netns, err)
	}
	return nil
}

// unplug removes what is plugged for id: its known NICs, or everything
// tagged with its id when they are not known.
func (a *Agent) unplug(ctx context.Context, id string) error {
	if a.plumber == nil {
		return nil
	}
	nics, ok := a.nics.get(id)
	if ok && len(nics) == 0 {
		return nil
	}
	var err error
	if ok {
		err = a.plumber.Unplug(ctx, id, nics)
	} else {
		err = a.plumber.UnplugInstance(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("unplug NICs of instance %s: %w", id, err)
	}
	return nil
}

// repairNetwork is reconcile's drift repair: every instance with NICs
// whose workload runs here and whose plumbing drifted (see
// networkDrifted) is plugged again (Plug puts back veths, ports, tags and
// flows lost to an agent, OVS or host restart); one whose workload does not run is unplugged (its namespace
// is gone with its sandbox, see drivers/docker/sandbox.go); what is
// plugged for an instance beyond its NICs is removed (see pruneNICs), and
// so is what is plugged for instances this host does not hold. Instances
// with an operation in flight, or in a cold migration, are left to it; so
// are the ports of instances whose NICs the agent knows though the cloud
// does not place them here yet (a migration's import). gens is the NIC
// list's change counter taken before the conductor was asked. It logs and
// goes on: one broken server must not stop the repair of the others. It
// returns how many NICs it pruned.
func (a *Agent) repairNetwork(ctx context.Context, gens map[string]uint64, expected []protocol.ExpectedInstance, placed map[string]bool) int {
	if a.plumber == nil {
		return 0
	}
	pruned := 0
	for _, e := range expected {
		id := e.Spec.ID
		// A migrating instance's plumbing is the migration's: its
		// stopped source must not be "unplugged" while the target
		// plugs the same ports (by name, on hosts sharing a kernel).
		if deleting(e) || migrating(e) {
			continue
		}
		unlock, ok := a.locks.tryLock(id)
		if !ok {
			continue
		}
		// Read under the lock: attach and detach change the list under it.
		nics, fresh := a.nics.since(gens, id)
		if len(nics) > 0 {
			if fresh {
				// First, so the Plug below puts back a default route
				// that went with a pruned NIC.
				pruned += a.pruneNICs(ctx, id, nics)
			}
			a.repairInstance(ctx, id, nics)
		}
		unlock()
	}
	keep := func(id string) bool { return placed[id] || a.nics.has(id) || a.locks.busy(id) }
	removed, err := a.plumber.RemoveOrphans(ctx, keep)
	if err != nil {
		a.log.Error("reconcile: could not remove the network plumbing of instances not on this host", "err", err)
	}
	for _, id := range removed {
		a.log.Warn("reconcile: removed the network plumbing of an instance not on this host", "instance", id)
	}
	return pruned
}

// pruneNICs removes what is plugged for id beyond nics (its list as the
// conductor answered it, unchanged since): a NIC whose attach the API
// rolled back after the plug, or whose detach never reached this agent,
// would otherwise keep its veth, OVS port, flows and an address the server
// no longer owns. It returns how many NICs it removed.
func (a *Agent) pruneNICs(ctx context.Context, id string, nics []protocol.NIC) int {
	pr, ok := a.plumber.(NICPruner)
	if !ok {
		return 0
	}
	removed, err := pr.RemoveStaleNICs(ctx, id, nics)
	if err != nil {
		a.log.Error("reconcile: could not remove NICs an instance no longer has", "instance", id, "err", err)
	}
	for _, port := range removed {
		a.log.Warn("reconcile: removed a NIC its instance no longer has (attach rolled back or detach lost)",
			"instance", id, "port", port)
	}
	return len(removed)
}

func (a *Agent) repairInstance(ctx context.Context, id string, nics []protocol.NIC) {
	st, err := a.drv.Status(ctx, id)
	switch {
	case err != nil && !errors.Is(err, drivers.ErrNotFound):
		a.log.Error("reconcile: status for the network repair", "instance", id, "err", err)
	case err == nil && (st.Power == drivers.PowerRunning || st.Power == drivers.PowerPaused):
		if !a.networkDrifted(ctx, id, nics) {
			return
		}
		if err := a.plumb(ctx, id, nics); err != nil {
			a.log.Error("reconcile: could not repair the network of a running instance", "instance", id, "err", err)
		}
	default:
		if err := a.plumber.Unplug(ctx, id, nics); err != nil {
			a.log.Error("reconcile: could not unplug the network of an instance that is not running", "instance", id, "err", err)
		}
	}
}

// networkDrifted reports whether running instance id's plumbing differs
// from what Plug makes of nics, so drift repair plugs it again: true
// when the plumber cannot tell (no DriftChecker, or the check failed),
// false for a server in place, which is left untouched.
func (a *Agent) networkDrifted(ctx context.Context, id string, nics []protocol.NIC) bool {
	dc, ok := a.plumber.(DriftChecker)
	if !ok || !a.drv.Capabilities().Networking {
		return true
	}
	netns, err := a.drv.Sandbox(ctx, id)
	if err != nil {
		return true // plumb reports it
	}
	drift, err := dc.Drift(ctx, id, netns, nics)
	switch {
	case err != nil:
		a.log.Warn("reconcile: could not compare the network of an instance with its NICs; plugging it again", "instance", id, "err", err)
		return true
	case drift != "":
		a.log.Warn("reconcile: the network of an instance drifted; plugging it again", "instance", id, "drift", drift)
		return true
	}
	return false
}
