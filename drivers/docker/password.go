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
	rc, _, err := d.cli.CopyFromContainer(ctx, c.ID, shadowPath)
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
	if err := d.cli.CopyToContainer(ctx, c.ID, "/etc", &buf, container.CopyToContainerOptions{CopyUIDGID: true}); err != nil {
		return wrap("write "+shadowPath, id, err)
	}
	d.log.Info("root password set", "instance", id)
	return nil
}

var _ drivers.PasswordSetter = (*Driver)(nil)
