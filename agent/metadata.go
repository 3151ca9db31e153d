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

// SetMetadataPassword hands the conductor the password server id on this
// host posted to the metadata service; it stores it once (a Conflict
// after that).
func (a *Agent) SetMetadataPassword(ctx context.Context, id, password string) error {
	m, err := bus.NewMessage(protocol.KindSetMetadataPassword,
		protocol.SetMetadataPassword{Host: a.cfg.Host, InstanceID: id, Password: password})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	var reply struct{}
	if err := a.bus.Call(cctx, bus.ConductorQueue, m, &reply); err != nil {
		return fmt.Errorf("agent: password of %s: %w", id, err)
	}
	return nil
}
