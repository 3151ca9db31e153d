package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
)

// errNoSandbox refuses to hot-plug a NIC into a server that has none: it
// was created without a sandbox (drivers/docker/sandbox.go), so there is
// no network namespace to plug into. The API maps its kind to a 409.
var errNoSandbox = errdefs.FailedPrecondition("the instance has no network sandbox (it was booted without a network)")

// generations snapshots the attach/detach counts, taken before asking the
// conductor for the instances on this host (see refreshSince).
func (c *nicCache) generations() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.gen)
}

// change records an instance's NICs after an attach or detach and counts
// it, so a conductor answer already on its way does not bring back the
// old list.
func (c *nicCache) change(id string, nics []protocol.NIC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[id] = slices.Clone(nics)
	c.gen[id]++
}

// withNIC returns nics with nic added at the end, or replacing the NIC of
// the same port (a repeated attach), without touching nics.
func withNIC(nics []protocol.NIC, nic protocol.NIC) []protocol.NIC {
	out := slices.Clone(nics)
	for i := range out {
		if out[i].PortID == nic.PortID {
			out[i] = nic
			return out
		}
	}
	return append(out, nic)
}

// interfaceContext bounds a hot-plug by the API's deadline (past it the
// API rolls the port back, so the agent must have given up and undone its
// work), or by the agent's call timeout when the request has none.
func (a *Agent) interfaceContext(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		return context.WithTimeout(ctx, a.callTimeout)
	}
	return context.WithDeadline(ctx, deadline)
}

// running reports whether id's workload runs (or is paused) here: only
// then is its sandbox up and its NICs plugged.
func (a *Agent) running(ctx context.Context, id string) (bool, error) {
	st, err := a.drv.Status(ctx, id)
	if err != nil {
		return false, fmt.Errorf("status of instance %s: %w", id, err)
	}
	return st.Power == drivers.PowerRunning || st.Power == drivers.PowerPaused, nil
}

// attachInterface adds a NIC to a server: plugged now into a running or
// paused server's sandbox (Plug is idempotent: the NICs already there keep
// their eth<i>, the new one gets the lowest free index), remembered for a
// stopped one, which gets it with its other NICs at its next start. It
// answers once done; a failed Plug has undone itself and the NIC is not
// remembered.
func (a *Agent) attachInterface(ctx context.Context, req protocol.AttachInterface) (protocol.InterfaceReply, error) {
	id, nic := req.InstanceID, req.NIC
	if id == "" || nic.PortID == "" {
		return protocol.InterfaceReply{}, errors.New("agent: attach interface request without an instance or port id")
	}
	ctx, cancel := a.interfaceContext(ctx, req.Deadline)
	defer cancel()
	fail := func(err error) (protocol.InterfaceReply, error) {
		return protocol.InterfaceReply{}, fmt.Errorf("attach port %s to instance %s on host %s: %w", nic.PortID, id, a.cfg.Host, err)
	}
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return fail(fmt.Errorf("wait for the instance's other operation: %w", err))
	}
	defer unlock()
	nics, err := a.nicsOf(ctx, id)
	if err != nil {
		return fail(err)
	}
	if len(nics) == 0 {
		return fail(errNoSandbox)
	}
	live, err := a.running(ctx, id)
	if err != nil {
		return fail(err)
	}
	next := withNIC(nics, nic)
	if live && a.refilter(ctx, id, nics, nic) {
		a.nics.change(id, next)
		a.log.Info("refiltered interface", "instance", id, "port", nic.PortID)
		return protocol.InterfaceReply{Live: live}, nil
	}
	if live {
		if err := a.plumb(ctx, id, next); err != nil {
			// The API rolls the port back; a conductor answer fetched
			// meanwhile may list it, and must not make drift repair
			// plug it: count the (non-)change.
			a.nics.change(id, nics)
			return fail(err)
		}
	}
	a.nics.change(id, next)
	a.log.Info("attached interface", "instance", id, "port", nic.PortID, "live", live, "nics", len(next))
	return protocol.InterfaceReply{Live: live}, nil
}

// detachInterface removes one NIC from a server: its flows, OVS port and
// host veth go (the namespace end goes with its peer), the other NICs
// stay as they are. A NIC this agent does not know (forgotten, or detached
// already) is unplugged as the request describes it: detach is
// idempotent. On a running server the remaining NICs are plugged again,
// which puts back the default route when it went with the detached NIC.
func (a *Agent) detachInterface(ctx context.Context, req protocol.DetachInterface) (protocol.InterfaceReply, error) {
	id := req.InstanceID
	if id == "" || req.PortID == "" {
		return protocol.InterfaceReply{}, errors.New("agent: detach interface request without an instance or port id")
	}
	ctx, cancel := a.interfaceContext(ctx, req.Deadline)
	defer cancel()
	fail := func(err error) (protocol.InterfaceReply, error) {
		return protocol.InterfaceReply{}, fmt.Errorf("detach port %s from instance %s on host %s: %w", req.PortID, id, a.cfg.Host, err)
	}
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return fail(fmt.Errorf("wait for the instance's other operation: %w", err))
	}
	defer unlock()
	nics, err := a.nicsOf(ctx, id)
	if err != nil {
		return fail(err)
	}
	nic := req.NIC
	nic.PortID = req.PortID
	rest := slices.DeleteFunc(slices.Clone(nics), func(n protocol.NIC) bool {
		if n.PortID == req.PortID {
			nic = n
			return true
		}
		return false
	})
	if a.plumber != nil {
		if err := a.plumber.Unplug(ctx, id, []protocol.NIC{nic}); err != nil {
			return fail(err)
		}
	}
	a.nics.change(id, rest)
	live, err := a.running(ctx, id)
	if err != nil && !errors.Is(err, drivers.ErrNotFound) {
		a.log.Warn("detached interface; could not tell whether the instance runs", "instance", id, "port", req.PortID, "err", err)
	}
	if live && len(rest) > 0 {
		if err := a.plumb(ctx, id, rest); err != nil {
			// The NIC is gone; the rest is drift the next reconcile repairs.
			a.log.Error("detached interface; could not re-plug the remaining NICs", "instance", id, "port", req.PortID, "err", err)
		}
	}
	a.log.Info("detached interface", "instance", id, "port", req.PortID, "live", live, "nics", len(rest))
	return protocol.InterfaceReply{Live: live}, nil
}

// refilter applies a change of only nic's filter (its security groups:
// the same port, addresses and network as the plugged NIC) by replacing
// its flows, without plugging the server again. It reports whether it
// did; false means the caller plugs the NIC whole.
func (a *Agent) refilter(ctx context.Context, id string, nics []protocol.NIC, nic protocol.NIC) bool {
	fu, ok := a.plumber.(FilterUpdater)
	if !ok {
		return false
	}
	i := slices.IndexFunc(nics, func(n protocol.NIC) bool { return n.PortID == nic.PortID })
	if i < 0 {
		return false
	}
	old, want := nics[i], nic
	old.Firewall, want.Firewall = nil, nil
	if !reflect.DeepEqual(old, want) {
		return false
	}
	if err := fu.Refilter(ctx, id, nic); err != nil {
		a.log.Warn("refilter interface; plugging it again", "instance", id, "port", nic.PortID, "error", err)
		return false
	}
	return true
}
