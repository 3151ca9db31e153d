package agent

import (
	"context"
	"fmt"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
)

// EventSnapshot is the instance-action event of a createImage (Nova's).
const EventSnapshot = "compute_snapshot_instance"

// handleSnapshot commits the instance and pushes it to req.Ref, then
// reports the outcome to the conductor, which activates (or kills) the
// image. Failures are reported, not retried: the image row waits for
// exactly one answer.
func (a *Agent) handleSnapshot(ctx context.Context, req protocol.SnapshotInstance) error {
	id := req.InstanceID
	if id == "" || req.ImageID == "" || req.Ref == "" {
		return fmt.Errorf("agent: snapshot request %s without instance id, image id or ref", req.RequestID)
	}
	log := a.log.With("instance", id, "request_id", req.RequestID, "image", req.ImageID, "ref", req.Ref)
	unlock, err := a.locks.lock(ctx, id)
	if err != nil {
		return bus.Retry(err)
	}
	defer unlock()

	rep := protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: req.ImageID, Host: a.cfg.Host,
		Ref: req.Ref, Backup: req.Backup, Event: EventSnapshot, Started: a.now().UTC()}
	digest, size, err := a.snapshot(ctx, id, req.Ref)
	if err != nil {
		log.Error("snapshot failed", "err", err)
		rep.Error, rep.ErrorMessage = err.Error(), errdefs.Message(err)
	} else {
		rep.OK, rep.Digest, rep.Size = true, digest, size
		log.Info("snapshot pushed", "digest", digest, "size", size)
	}
	rep.Finished = a.now().UTC()
	return a.publish(ctx, protocol.KindSnapshotReport, rep)
}

// snapshot runs the driver's Snapshot, if it has one. A push can take
// long, so it gets no call timeout; the message's context bounds it.
func (a *Agent) snapshot(ctx context.Context, id, ref string) (string, int64, error) {
	sn, ok := a.drv.(drivers.Snapshotter)
	if !ok {
		return "", 0, fmt.Errorf("snapshot instance %s: driver %s cannot snapshot: %w", id, a.drv.Name(), drivers.ErrNotSupported)
	}
	var last int64
	digest, size, err := sn.Snapshot(ctx, id, ref, func(n int64) { last = n })
	if err != nil {
		return "", 0, fmt.Errorf("snapshot instance %s to %s (%d bytes pushed): %w", id, ref, last, err)
	}
	return digest, size, nil
}
