package agent

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/protocol"
)

// fwClockKeep is how long the time of a port's last applied refresh is
// kept: a refresh delayed longer than that is not expected.
const fwClockKeep = 10 * time.Minute

// fwClock remembers, per port, when the last firewall refresh applied
// here was computed, so a refresh overtaken by a newer one (the bus
// delivers several at once) does not put back an older filter. Its zero
// value is ready.
type fwClock struct {
	mu sync.Mutex
	at map[string]time.Time
}

// admit reports whether a refresh of port computed at at is not older
// than the last one admitted, and records it. A zero time is always
// admitted (and not recorded).
func (c *fwClock) admit(port string, at time.Time) bool {
	if at.IsZero() {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if last, ok := c.at[port]; ok && at.Before(last) {
		return false
	}
	if c.at == nil {
		c.at = map[string]time.Time{}
	}
	c.at[port] = at
	for p, t := range c.at {
		if at.Sub(t) > fwClockKeep {
			delete(c.at, p)
		}
	}
	return true
}

// refreshFirewall applies a port's new filter after its remote groups'
// members changed: only the port's flows are replaced (vif's Refilter,
// one atomic bundle), never the NIC re-plugged. It does nothing when the
// server does not run here (a stopped one gets its filter at its next
// start), when the NIC's filter is already this one, when a newer
// refresh came first, or when the NIC differs from the plugged one in
// more than its filter (drift repair plugs it from the database's spec,
// which is also what repairs a refresh lost while this agent was down).
func (a *Agent) refreshFirewall(ctx context.Context, req protocol.RefreshFirewall) error {
	id, nic := req.InstanceID, req.NIC
	if id == "" || nic.PortID == "" {
		return errors.New("agent: firewall refresh without an instance or port id")
	}
	log := a.log.With("instance", id, "port", nic.PortID, "request_id", req.RequestID)
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()
	if !a.fwSeen.admit(nic.PortID, req.ComputedAt) {
		log.Debug("firewall refresh older than the last applied: ignored")
		return nil
	}
	nics, err := a.nicsOf(ctx, id)
	if err != nil {
		log.Warn("firewall refresh: NICs unknown (drift repair applies it)", "error", err)
		return nil
	}
	i := slices.IndexFunc(nics, func(n protocol.NIC) bool { return n.PortID == nic.PortID })
	if i < 0 {
		log.Info("firewall refresh of a NIC not plugged here: ignored")
		return nil
	}
	if reflect.DeepEqual(nics[i].Firewall, nic.Firewall) {
		return nil
	}
	live, err := a.running(ctx, id)
	if err != nil || !live {
		return nil
	}
	if !a.refilter(ctx, id, nics, nic) {
		log.Info("firewall refresh: the NIC differs from the plugged one (drift repair plugs it)")
		return nil
	}
	a.nics.change(id, withNIC(nics, nic))
	log.Info("refreshed firewall", "filtered", nic.Firewall != nil)
	return nil
}
