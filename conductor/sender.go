package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// agentKinds are the messages a compute host may send the conductor; a
// host's broker user sending anything else (migrate.KindMigrationAdvance,
// which only the control plane sends, say) is refused.
var agentKinds = map[string]bool{
	protocol.KindHostReport: true, protocol.KindInstanceReport: true, protocol.KindPowerSync: true,
	protocol.KindInstancesOnHost: true, protocol.KindSnapshotReport: true, protocol.KindHostEvent: true,
	protocol.KindMigrationReport: true, protocol.KindMigrationProgress: true, protocol.KindMigrationCheck: true,
	protocol.KindInstanceMetadata: true, protocol.KindVolumeReport: true, protocol.KindVolumesOnHost: true,
	protocol.KindSetMetadataPassword: true, protocol.KindServerUsage: true,
}

// senderHost says which compute host's broker user sent m: the host
// named after conductor.agent_user_prefix in the broker-checked user_id
// (capsule-agent-host-a sent from host-a). agent is false for any other
// user, a control-plane role trusted with every host. The AMQP bus
// delivers no message without a user_id (see bus.Message.Sender); an
// empty Sender is an in-process caller.
func (c *Conductor) senderHost(m bus.Message) (host string, agent bool) {
	p := c.cfg.AgentUserPrefix
	if p == "" || !strings.HasPrefix(m.Sender, p) {
		return "", false
	}
	return strings.TrimPrefix(m.Sender, p), true
}

// checkSender refuses a message a compute host's user sent about another
// host or about a server another host owns: a compromised host must not
// report (state, power, faults, snapshots, events) for, or learn the
// servers of, any host but its own. Migration reports need only name the
// sender: the migration engine checks the host is the one its step waits
// for.
func (c *Conductor) checkSender(ctx context.Context, m bus.Message) error {
	host, agent := c.senderHost(m)
	if !agent {
		return nil
	}
	if !agentKinds[m.Kind] {
		return errdefs.Forbiddenf("conductor: host %s (user %s) may not send %s", host, m.Sender, m.Kind)
	}
	var about struct {
		Host       string `json:"host"`
		InstanceID string `json:"instance_id"`
	}
	if err := json.Unmarshal(m.Body, &about); err != nil {
		return err // Handle's decode says the same
	}
	if about.Host != host {
		return errdefs.Forbiddenf("conductor: user %s of host %s sent a %s for host %q", m.Sender, host, m.Kind, about.Host)
	}
	switch m.Kind {
	case protocol.KindInstanceReport, protocol.KindSnapshotReport, protocol.KindHostEvent:
	default:
		return nil
	}
	if about.InstanceID == "" {
		return nil
	}
	inst, err := c.loadInstance(ctx, about.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the handler ignores it too
	}
	if err != nil {
		return bus.Retry(err)
	}
	// A server being scheduled has no host yet: its build failure report
	// is checked against the hosts tried (onBuildReport).
	if inst.Host != "" && inst.Host != host {
		return errdefs.Forbiddenf("conductor: host %s sent a %s about server %s of host %s", host, m.Kind, inst.ID, inst.Host)
	}
	return nil
}
