package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/capsule-cloud/capsule/drivers"
)

var _ drivers.Snapshotter = (*Driver)(nil)

// Snapshot implements drivers.Snapshotter: it commits the workload
// container (Docker pauses a running one for the commit, as Zun does, so
// the image is consistent, and unpauses it after) straight to ref, pushes
// ref and drops the local tag, so the only copy is the registry's and
// hosts pull it like any image.
func (d *Driver) Snapshot(ctx context.Context, id, ref string, progress func(bytes int64)) (string, int64, error) {
	c, err := d.inspect(ctx, "snapshot", id)
	if err != nil {
		return "", 0, err
	}
	res, err := d.cli.ContainerCommit(ctx, c.ID, container.CommitOptions{
		Reference: ref,
		Comment:   "capsule snapshot of instance " + id,
		Pause:     true,
	})
	if err != nil {
		return "", 0, wrap("snapshot commit", id, err)
	}
	// The tag goes whatever happens next: a failed push must not leave
	// a local image behind.
	defer func() {
		if _, rerr := d.cli.ImageRemove(context.WithoutCancel(ctx), ref, image.RemoveOptions{}); rerr != nil {
			d.log.Warn("could not remove the local snapshot tag", "instance", id, "ref", ref, "err", rerr)
		}
	}()
	var size int64
	if ii, err := d.cli.ImageInspect(ctx, res.ID); err == nil {
		size = ii.Size
	}
	var popts image.PushOptions
	if a := d.opts.RegistryAuth; a != nil {
		enc, err := registry.EncodeAuthConfig(registry.AuthConfig{
			Username: a.Username, Password: a.Password, ServerAddress: a.ServerAddress,
		})
		if err != nil {
			return "", 0, fmt.Errorf("encode registry auth: %w", err)
		}
		popts.RegistryAuth = enc
	} else {
		// The daemon requires an X-Registry-Auth header even for an
		// anonymous push; "{}" base64-encoded is the empty login.
		popts.RegistryAuth = "e30="
	}
	rc, err := d.cli.ImagePush(ctx, ref, popts)
	if err != nil {
		return "", 0, fmt.Errorf("docker snapshot %s: push %s: %w", id, ref, err)
	}
	defer rc.Close()
	digest, err := drainPush(rc, progress)
	if err != nil {
		return "", 0, fmt.Errorf("docker snapshot %s: push %s: %w", id, ref, err)
	}
	d.log.Info("instance snapshot pushed", "instance", id, "ref", ref, "digest", digest, "size", size)
	return digest, size, nil
}

// drainPush reads a push's JSON progress stream to its end, reporting the
// bytes pushed (summed over layers) and returning the manifest digest the
// daemon announces in its final aux message.
func drainPush(r io.Reader, progress func(int64)) (string, error) {
	dec := json.NewDecoder(r)
	layers := map[string]int64{}
	var digest string
	for {
		var msg struct {
			ID             string `json:"id"`
			Status         string `json:"status"`
			ProgressDetail struct {
				Current int64 `json:"current"`
			} `json:"progressDetail"`
			Aux *struct {
				Digest string `json:"Digest"`
			} `json:"aux"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			if digest == "" {
				return "", errors.New("push ended without a manifest digest")
			}
			return digest, nil
		} else if err != nil {
			return "", fmt.Errorf("read push progress: %w", err)
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			return "", errors.New(msg.ErrorDetail.Message)
		}
		if msg.Error != "" {
			return "", errors.New(msg.Error)
		}
		if msg.Aux != nil && msg.Aux.Digest != "" {
			digest = msg.Aux.Digest
		}
		if msg.Status == "Pushing" && msg.ID != "" && progress != nil {
			layers[msg.ID] = msg.ProgressDetail.Current
			var total int64
			for _, n := range layers {
				total += n
			}
			progress(total)
		}
	}
}
