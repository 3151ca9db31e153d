package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/shadowpw"
)

const shadowPath = "/etc/shadow"

// SetAdminPassword implements drivers.PasswordSetter: root's line of the
// workload's /etc/shadow gets hash, the file keeps its mode and owner. An
// image without /etc/shadow (or without root in it) cannot have a root
// password set: NotSupported, said plainly.
func (d *Driver) SetAdminPassword(ctx context.Context, id, hash string) error {
	c, err := d.inspect(ctx, "set password", id)
	if err != nil {
		return err
	}
	if err := d.setShadowRoot(ctx, c.ID, id, hash); err != nil {
		return err
	}
	d.log.Info("root password set", "instance", id)
	return nil
}

// SetRescuePassword implements drivers.RescuePasswordSetter: root's line
// of the /etc/shadow of instance id's rescue container gets hash, as
// SetAdminPassword does for the workload.
func (d *Driver) SetRescuePassword(ctx context.Context, id, hash string) error {
	c, err := d.cli.ContainerInspect(ctx, RescueName(id))
	if err != nil {
		return wrap("set rescue password", id, err)
	}
	if c.Config == nil || c.Config.Labels[LabelInstance] != id || c.Config.Labels[LabelRole] != RoleRescue {
		return fmt.Errorf("docker set rescue password %s: container %s is not its rescue container: %w", id, c.ID, drivers.ErrNotFound)
	}
	if err := d.setShadowRoot(ctx, c.ID, id, hash); err != nil {
		return err
	}
	d.log.Info("rescue root password set", "instance", id)
	return nil
}

// setShadowRoot puts hash in root's line of container cid's /etc/shadow
// (of instance id), keeping the file's mode and owner.
func (d *Driver) setShadowRoot(ctx context.Context, cid, id, hash string) error {
	rc, _, err := d.cli.CopyFromContainer(ctx, cid, shadowPath)
	if cerrdefs.IsNotFound(err) {
		return errdefs.NotSupportedf("the server's image has no %s to hold a root password", shadowPath)
	}
	if err != nil {
		return wrap("read "+shadowPath, id, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		return fmt.Errorf("docker set password %s: read %s: %w", id, shadowPath, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return errdefs.NotSupportedf("the server's %s is not a regular file", shadowPath)
	}
	old, err := io.ReadAll(io.LimitReader(tr, 4<<20))
	if err != nil {
		return fmt.Errorf("docker set password %s: read %s: %w", id, shadowPath, err)
	}
	updated, err := shadowpw.SetRoot(old, hash, time.Now().Unix()/86400)
	if errors.Is(err, shadowpw.ErrNoRoot) {
		return errdefs.NotSupportedf("the server's %s has no root entry", shadowPath)
	}
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "shadow", Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid,
		Size: int64(len(updated)), ModTime: time.Now()}); err != nil {
		return err
	}
	if _, err := tw.Write(updated); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := d.cli.CopyToContainer(ctx, cid, "/etc", &buf, container.CopyToContainerOptions{CopyUIDGID: true}); err != nil {
		return wrap("write "+shadowPath, id, err)
	}
	return nil
}

var (
	_ drivers.PasswordSetter       = (*Driver)(nil)
	_ drivers.RescuePasswordSetter = (*Driver)(nil)
)
