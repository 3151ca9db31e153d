package fake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/capsule-cloud/capsule/drivers"
)

// OpSnapshot counts (and can fail) Snapshot calls.
const OpSnapshot Op = "snapshot"

var _ drivers.Snapshotter = (*Driver)(nil)

// Snapshot implements drivers.Snapshotter: the instance's files are
// pushed to the driver's in-memory registry under ref (see migrate.go);
// the digest is derived from the instance and ref so repeated calls
// agree, and the instance's state is left as it was (as the docker
// driver's pause and unpause around its commit does).
func (d *Driver) Snapshot(ctx context.Context, id, ref string, progress func(int64)) (string, int64, error) {
	if err := d.begin(ctx, OpSnapshot, id); err != nil {
		return "", 0, err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpSnapshot, id)
	if err != nil {
		return "", 0, err
	}
	if ref == "" {
		return "", 0, fmt.Errorf("fake snapshot %s: empty ref: %w", id, drivers.ErrInvalidState)
	}
	const size = 4 << 20
	if progress != nil {
		progress(size)
	}
	sum := sha256.Sum256([]byte(id + "\x00" + ref))
	digest := "sha256:" + hex.EncodeToString(sum[:])
	d.registry.put(ref, Image{Digest: digest, Size: size, Base: in.Spec.Image, Files: copyMap(in.Files)})
	return digest, size, nil
}
