package drivers

import "context"

// Snapshotter is implemented by drivers that can save an instance's disk
// as an image in a registry (Nova's createImage). It is optional: the
// agent refuses snapshots with ErrNotSupported on drivers without it.
type Snapshotter interface {
	// Snapshot saves instance id (running, paused or stopped; a running
	// one is frozen during the commit so the image is consistent) and
	// pushes it to ref. progress, when non-nil, is told the bytes pushed
	// so far. It returns the pushed manifest's digest and the image's
	// size in bytes.
	Snapshot(ctx context.Context, id, ref string, progress func(bytes int64)) (digest string, size int64, err error)
}
