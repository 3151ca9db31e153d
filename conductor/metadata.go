package conductor

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/protocol"
)

// instanceMetadata answers an agent's metadata service (or config drive)
// asking what to tell a server about itself. Only about a server placed on
// the asking host: a host serves its own servers (checkSender made sure a
// compute host's user names its own host), and a server migrating away is
// answered for the host it is on until the move is committed.
func (c *Conductor) instanceMetadata(ctx context.Context, r protocol.InstanceMetadataRequest) (protocol.InstanceMetadata, error) {
	inst, err := c.loadInstance(ctx, r.InstanceID)
	if err != nil {
		return protocol.InstanceMetadata{}, fmt.Errorf("metadata of %s: %w", r.InstanceID, err)
	}
	if r.Host == "" || inst.Host != r.Host || inst.DeletedAt != nil {
		return protocol.InstanceMetadata{}, errdefs.NotFoundf("server %s is not on host %s", r.InstanceID, r.Host)
	}
	return instance.MetadataFor(ctx, c.st, inst)
}
