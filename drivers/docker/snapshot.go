package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/capsule-cloud/capsule/drivers"
)

var _ drivers.Snapshotter = (*Driver)(nil)

// Snapshot implements drivers.Snapshotter: it commits the workload
// container (Docker pauses a running one for the commit, as Zun does, so
// the image is consistent, and unpauses it after) straight to ref, pushes
// ref and drops the local tag, so the only copy is the registry's and
// hosts pull it like any image.
func (d *Driver) Snapshot(ctx context.Context, id, ref string, progress func(bytes int64)) (string, int64, error) {
	res, err := d.commitPush(ctx, id, ref, "capsule snapshot of instance "+id, progress)
	if err != nil {
		return "", 0, err
	}
	d.log.Info("instance snapshot pushed", "instance", id, "ref", ref, "digest", res.digest, "size", res.size)
	return res.digest, res.size, nil
}

// pushResult is what commitPush did.
type pushResult struct {
	digest  string   // manifest digest pushed
	size    int64    // the image's (uncompressed) size
	diffIDs []string // the image's layers, base first
	// uploaded holds the layers (by shortID) the registry did not have,
	// and sent the uncompressed bytes read for them.
	uploaded map[string]bool
	sent     int64
}

// commitPush commits instance id's workload container to ref, pushes ref
// and drops the local tag (Snapshot and ExportMigration).
func (d *Driver) commitPush(ctx context.Context, id, ref, comment string, progress func(bytes int64)) (pushResult, error) {
	return d.commitPushWith(ctx, id, ref, comment, true, nil, progress)
}

// commitPushWith is commitPush with the commit's pause chosen, and
// afterCommit (when set) run on the committed image before the push.
func (d *Driver) commitPushWith(ctx context.Context, id, ref, comment string, pause bool,
	afterCommit func(ctx context.Context, imageID string) error, progress func(bytes int64)) (pushResult, error) {
	c, err := d.inspect(ctx, "snapshot", id)
	if err != nil {
		return pushResult{}, err
	}
	res, err := d.cli.ContainerCommit(ctx, c.ID, container.CommitOptions{
		Reference: ref,
		Comment:   comment,
		Pause:     pause,
		Config:    &container.Config{Labels: blankCapsuleLabels(c.Config.Labels)},
	})
	if err != nil {
		return pushResult{}, wrap("snapshot commit", id, err)
	}
	// The tag goes whatever happens next: a failed push must not leave
	// a local image behind.
	defer func() {
		if _, rerr := d.cli.ImageRemove(context.WithoutCancel(ctx), ref, image.RemoveOptions{}); rerr != nil {
			d.log.Warn("could not remove the local snapshot tag", "instance", id, "ref", ref, "err", rerr)
		}
	}()
	if afterCommit != nil {
		if err := afterCommit(ctx, res.ID); err != nil {
			return pushResult{}, err
		}
	}
	var out pushResult
	if ii, err := d.cli.ImageInspect(ctx, res.ID); err == nil {
		out.size = ii.Size
		if ii.RootFS.Type == "layers" {
			out.diffIDs = ii.RootFS.Layers
		}
	}
	enc, err := d.encodedAuth()
	if err != nil {
		return pushResult{}, err
	}
	rc, err := d.cli.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: enc})
	if err != nil {
		return pushResult{}, fmt.Errorf("docker snapshot %s: push %s: %w", id, ref, err)
	}
	defer rc.Close()
	pl, err := drainPush(rc, progress)
	if err != nil {
		return pushResult{}, fmt.Errorf("docker snapshot %s: push %s: %w", id, ref, err)
	}
	out.digest, out.uploaded, out.sent = pl.digest, pl.uploaded, pl.sent
	return out, nil
}

// blankCapsuleLabels maps every capsule.* label of a container to "": a
// commit keeps the container's labels (Docker can only override them),
// and Capsule's (the server's instance, project, host, CPU policy) must
// not travel with an image another server boots from or a tenant
// downloads.
func blankCapsuleLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k := range labels {
		if strings.HasPrefix(k, labelPrefix) {
			out[k] = ""
		}
	}
	return out
}

// pushLog is what a push's progress stream told.
type pushLog struct {
	digest   string
	uploaded map[string]bool // layers "Pushed", not "Layer already exists" nor "Mounted from"
	sent     int64           // uncompressed bytes read for the uploaded layers
}

// drainPush reads a push's JSON progress stream to its end, reporting the
// bytes pushed (summed over layers) and returning the manifest digest the
// daemon announces in its final aux message and which layers it uploaded.
func drainPush(r io.Reader, progress func(int64)) (pushLog, error) {
	dec := json.NewDecoder(r)
	layers := map[string]int64{}
	out := pushLog{uploaded: map[string]bool{}}
	sum := func() int64 {
		var total int64
		for _, n := range layers {
			total += n
		}
		return total
	}
	for {
		var msg jsonMessage
		if err := dec.Decode(&msg); err == io.EOF {
			if out.digest == "" {
				return pushLog{}, errors.New("push ended without a manifest digest")
			}
			for id, n := range layers {
				if out.uploaded[id] {
					out.sent += n
				}
			}
			return out, nil
		} else if err != nil {
			return pushLog{}, fmt.Errorf("read push progress: %w", err)
		}
		if err := msg.err(); err != nil {
			return pushLog{}, err
		}
		if msg.Aux != nil && msg.Aux.Digest != "" {
			out.digest = msg.Aux.Digest
		}
		switch {
		case msg.ID == "":
		case msg.Status == "Pushing":
			layers[msg.ID] = msg.ProgressDetail.Current
			if progress != nil {
				progress(sum())
			}
		case msg.Status == "Pushed":
			out.uploaded[msg.ID] = true
		}
	}
}
