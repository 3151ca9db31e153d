package drivers

import (
	"context"
	"time"
)

// Rescuer is implemented by drivers that can boot a rescue system beside a
// server (Nova's rescue): the server's workload stops, and a rescue
// container from image, in the same network namespace (same NICs and
// addresses), gets the server's root filesystem read-write at /mnt;
// Unrescue removes the rescue container and starts nothing (the agent
// starts the workload again), every change made under /mnt kept. Both are
// idempotent. A server whose filesystem the driver cannot expose is
// refused with an error wrapping ErrNotSupported.
type Rescuer interface {
	Rescue(ctx context.Context, id, image string, grace time.Duration) error
	Unrescue(ctx context.Context, id string, grace time.Duration) error
}
