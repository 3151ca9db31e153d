package conductor

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
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

// setMetadataPassword stores the password a server posted to its host's
// metadata service (Nova's password endpoint): only for a server placed
// on the posting host, and only once — a server that has one gets a
// Conflict until its owner clears it (os-server-password DELETE).
func (c *Conductor) setMetadataPassword(ctx context.Context, r protocol.SetMetadataPassword) error {
	if len(r.Password) > protocol.MaxMetadataPassword {
		return errdefs.InvalidArgument("Request is too large.")
	}
	inst, err := c.loadInstance(ctx, r.InstanceID)
	if err != nil {
		return fmt.Errorf("password of %s: %w", r.InstanceID, err)
	}
	if r.Host == "" || inst.Host != r.Host || inst.DeletedAt != nil {
		return errdefs.NotFoundf("server %s is not on host %s", r.InstanceID, r.Host)
	}
	res := c.st.WithContext(ctx).Model(&store.Instance{}).
		Where("id = ? AND host = ? AND deleted_at IS NULL AND metadata_password = ''", inst.ID, r.Host).
		Update("metadata_password", r.Password)
	if res.Error != nil {
		return fmt.Errorf("password of %s: %w", r.InstanceID, res.Error)
	}
	if res.RowsAffected == 0 {
		return errdefs.Conflictf("server %s already has a password", r.InstanceID)
	}
	return nil
}
