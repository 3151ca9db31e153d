package agent

import (
	"context"
	"fmt"
	"time"

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
		Ref: req.Ref, Backup: req.Backup, Shelve: req.Shelve, Event: EventSnapshot, Started: a.now().UTC()}
	var digest string
	var size int64
	if req.Shelve {
		// Stopped first (its sandbox and ports go with it, as for a
		// stop), so the image holds a consistent disk and nothing runs
		// on once the server is shelved. A redelivery finds it stopped.
		rep.Event = EventShelve
		err = a.stopForShelve(ctx, id)
	}
	if err == nil {
		digest, size, err = a.snapshot(ctx, id, req.Ref)
	}
	if req.Shelve {
		rep.PowerState = int(a.powerOf(ctx, id))
	}
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

// stopForShelve stops instance id (bounded like a stop action).
func (a *Agent) stopForShelve(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StopTimeout+2*time.Minute)
	defer cancel()
	if _, err := a.drv.Status(ctx, id); err != nil {
		return fmt.Errorf("shelve instance %s: status: %w", id, err)
	}
	if err := a.stop(ctx, id); err != nil {
		return fmt.Errorf("shelve instance %s: stop: %w", id, err)
	}
	return nil
}
