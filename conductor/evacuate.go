package conductor

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// onEvacuateReport ends an evacuation (instance/evacuate.go): the new
// host rebuilt the server (active, or stopped as it was asked), or its
// build failed there and the server is in ERROR on its dead host again,
// the fault saying why, so another evacuate may be tried. Guarded on the
// evacuation still spawning on the reporting host.
func (c *Conductor) onEvacuateReport(ctx context.Context, inst *store.Instance, r protocol.InstanceReport) error {
	if inst.DeletedAt != nil || inst.Host != r.Host {
		return nil
	}
	now := c.now()
	db := c.st.WithContext(ctx)
	if r.OK {
		ok, err := instance.Evacuated(db, inst.ID, r.Host, lifecycle.PowerState(r.PowerState), now)
		if err == nil && ok {
			c.log.Info("instance evacuated", "instance", inst.ID, "host", r.Host, "power_state", r.PowerState)
		}
		return err
	}
	ok, err := instance.EvacuationFailed(db, inst.ID, r.Host, instance.Fault{Code: 500, At: now, Details: r.Error,
		Message: failedBecause(fmt.Sprintf("Evacuation of instance %s to host %s failed", inst.ID, r.Host), r)})
	if err == nil && ok {
		c.log.Error("evacuation failed", "instance", inst.ID, "host", r.Host, "error", r.Error)
	}
	return err
}
