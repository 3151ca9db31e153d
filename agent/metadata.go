package agent

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/protocol"
)

// InstanceMetadata asks the conductor what the server id on this host is
// told about itself (the metadata service, the config drive). The
// conductor answers only about a server placed on this host.
func (a *Agent) InstanceMetadata(ctx context.Context, id string) (protocol.InstanceMetadata, error) {
	m, err := bus.NewMessage(protocol.KindInstanceMetadata, protocol.InstanceMetadataRequest{Host: a.cfg.Host, InstanceID: id})
	if err != nil {
		return protocol.InstanceMetadata{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	var reply protocol.InstanceMetadata
	if err := a.bus.Call(cctx, bus.ConductorQueue, m, &reply); err != nil {
		return reply, fmt.Errorf("agent: metadata of %s: %w", id, err)
	}
	return reply, nil
}
