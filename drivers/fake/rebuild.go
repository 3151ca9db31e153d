package fake

import (
	"context"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
)

// OpRebuild counts (and can fail) rebuilds.
const OpRebuild Op = "rebuild"

// Rebuild implements drivers.Driver as the docker driver does: the
// workload is replaced by one made from spec (the new image's files,
// nothing of the old disk), left stopped; the sandbox and its namespace
// stay. A missing instance is created.
func (d *Driver) Rebuild(ctx context.Context, spec drivers.Spec, grace time.Duration) error {
	if err := d.begin(ctx, OpRebuild, spec.ID); err != nil {
		return err
	}
	if err := validate(spec); err != nil {
		d.mu.Unlock()
		return err
	}
	old, had := d.instances[spec.ID]
	delete(d.instances, spec.ID)
	d.mu.Unlock()
	if err := d.Create(ctx, spec); err != nil {
		return err
	}
	if had {
		d.mu.Lock()
		in := d.instances[spec.ID]
		in.SandboxRunning, in.SandboxGen = old.SandboxRunning, old.SandboxGen
		d.mu.Unlock()
	}
	return nil
}
