package drivers

import (
	"context"

	"github.com/capsule-cloud/capsule/errdefs"
)

// ErrHasVolumes refuses to migrate an instance whose data lives partly
// outside its container filesystem (Docker volumes, bind mounts): a commit
// would not carry it, and no data may be silently dropped.
// A FailedPrecondition: the instance must lose its volumes first.
var ErrHasVolumes = errdefs.FailedPrecondition("instance keeps data in volumes, which a cold migration cannot move")

// Migrator is implemented by drivers that can move an instance to another
// host cold: the source commits and pushes it (Snapshotter.Snapshot on the
// stopped instance), the target pulls it and creates the instance from it
// (Create with Spec.Image the pushed reference). Optional, like
// Snapshotter: the agent refuses migrations on drivers without it.
type Migrator interface {
	// Volumes lists the mounts of instance id whose data a commit would
	// not carry (volume names or host paths); empty when there are none.
	Volumes(ctx context.Context, id string) ([]string, error)
	// Pull fetches ref into this host's image store; progress, when
	// non-nil, is told the bytes downloaded so far. It returns the bytes
	// downloaded (0 when the image was already here).
	Pull(ctx context.Context, ref string, progress func(bytes int64)) (int64, error)
	// RemoveImage drops ref from this host's image store; a missing image
	// or one still used by a container is not an error (it goes with the
	// container's own removal later).
	RemoveImage(ctx context.Context, ref string) error
}
