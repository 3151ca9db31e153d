package docker

import (
	"context"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
)

// InitPID implements drivers.VolumeHost: the host PID of the running
// workload's init (not the sandbox's: volumes go where the server's
// processes see them).
func (d *Driver) InitPID(ctx context.Context, id string) (int, error) {
	c, err := d.inspect(ctx, "find the init of", id)
	if err != nil {
		return 0, err
	}
	if c.State == nil || !c.State.Running || c.State.Pid <= 0 {
		return 0, fmt.Errorf("instance %s does not run: %w", id, drivers.ErrInvalidState)
	}
	return c.State.Pid, nil
}

// ExportImage implements drivers.ImageExporter: a container of ref is
// created (never started) and exported; closing the stream removes it.
func (d *Driver) ExportImage(ctx context.Context, ref string) (io.ReadCloser, error) {
	if err := d.ensureImage(ctx, ref); err != nil {
		return nil, err
	}
	resp, err := d.cli.ContainerCreate(ctx, &container.Config{Image: ref, Cmd: []string{"/capsule-export"},
		Labels: map[string]string{LabelRole: "image-export"}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		return nil, fmt.Errorf("export image %s: create: %w", ref, err)
	}
	remove := func() {
		if err := d.cli.ContainerRemove(context.WithoutCancel(ctx), resp.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			d.log.Error("could not remove the container of an image export", "container", resp.ID, "err", err)
		}
	}
	rc, err := d.cli.ContainerExport(ctx, resp.ID)
	if err != nil {
		remove()
		return nil, fmt.Errorf("export image %s: %w", ref, err)
	}
	return &exportStream{ReadCloser: rc, done: remove}, nil
}

type exportStream struct {
	io.ReadCloser
	done func()
}

func (e *exportStream) Close() error {
	err := e.ReadCloser.Close()
	e.done()
	return err
}
