package docker

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	cerrdefs "github.com/containerd/errdefs"

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
// (of instance id), keeping the file's mode and owner: a copy out of the
// container and one into it, the file as the guest has it now (never
// the shadow cache's: changePassword and rescue).
func (d *Driver) setShadowRoot(ctx context.Context, cid, id, hash string) error {
	sh, err := d.readShadow(ctx, cid, id)
	if err != nil {
		return err
	}
	f, err := rootPasswordFile(sh, hash)
	if err != nil {
		return err
	}
	if err := d.writeDiskFiles(ctx, cid, []diskFile{f}); err != nil {
		return wrap("write "+shadowPath, id, err)
	}
	return nil
}

// readShadow reads container cid's /etc/shadow (of instance id): one
// that is missing or not a regular file is an imageShadow not present,
// with why; err is for a read that failed.
func (d *Driver) readShadow(ctx context.Context, cid, id string) (imageShadow, error) {
	rc, _, err := d.cli.CopyFromContainer(ctx, cid, shadowPath)
	if cerrdefs.IsNotFound(err) {
		return imageShadow{reason: fmt.Sprintf("the server's image has no %s to hold a root password", shadowPath)}, nil
	}
	if err != nil {
		return imageShadow{}, wrap("read "+shadowPath, id, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		return imageShadow{}, fmt.Errorf("docker set password %s: read %s: %w", id, shadowPath, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return imageShadow{reason: fmt.Sprintf("the server's %s is not a regular file", shadowPath)}, nil
	}
	content, err := io.ReadAll(io.LimitReader(tr, 4<<20))
	if err != nil {
		return imageShadow{}, fmt.Errorf("docker set password %s: read %s: %w", id, shadowPath, err)
	}
	return imageShadow{present: true, content: content, mode: hdr.Mode, uid: hdr.Uid, gid: hdr.Gid}, nil
}

// rootPasswordFile is /etc/shadow sh with hash in root's line (changed
// today), with sh's mode and owner; NotSupported when sh cannot hold it.
func rootPasswordFile(sh imageShadow, hash string) (diskFile, error) {
	if !sh.present {
		return diskFile{}, errdefs.NotSupported(sh.reason)
	}
	updated, err := shadowpw.SetRoot(sh.content, hash, time.Now().Unix()/86400)
	if errors.Is(err, shadowpw.ErrNoRoot) {
		return diskFile{}, errdefs.NotSupportedf("the server's %s has no root entry", shadowPath)
	}
	if err != nil {
		return diskFile{}, err
	}
	return diskFile{path: shadowPath, mode: sh.mode, uid: sh.uid, gid: sh.gid, content: updated}, nil
}

// setReplayedPassword sets spec.AdminPassHash in container cid, which a
// create of spec found made already (a replayed build): in its
// /etc/shadow as it is, never the cache's, as the agent set a build's
// password after any create; a failure is logged, as for a new disk.
func (d *Driver) setReplayedPassword(ctx context.Context, cid string, spec drivers.Spec) {
	if spec.AdminPassHash == "" {
		return
	}
	if err := d.setShadowRoot(ctx, cid, spec.ID, spec.AdminPassHash); err != nil {
		d.log.Warn("adminPass not set in the new disk", "instance", spec.ID, "error", err)
		return
	}
	d.log.Info("root password set", "instance", spec.ID)
}

// newDiskShadow is the /etc/shadow with hash in root's line that the
// created, never started container cid of spec (spec.AdminPassHash is
// hash) gets, from the shadow cache when image imageID is in it, else
// read from the container once and remembered. runImageID is the image
// the container must be running for what it has to be remembered as
// imageID's (the image ID, or its volume-free copy's: the same layers);
// a tag moved between the image's inspect and the container's create
// leaves the cache alone. (A hit does not check it: a tag moved in those
// milliseconds would give this one container the inspected image's file,
// the window create already accepts for the image's labels.) A boot
// volume's /etc is the volume's: read from the container, never cached.
func (d *Driver) newDiskShadow(ctx context.Context, cid string, spec drivers.Spec, imageID, runImageID string) (diskFile, error) {
	if spec.RootVolume != "" || imageID == "" {
		sh, err := d.readShadow(ctx, cid, spec.ID)
		if err != nil {
			return diskFile{}, err
		}
		return rootPasswordFile(sh, spec.AdminPassHash)
	}
	sh, ok := d.shadows.get(imageID)
	if !ok {
		var err error
		if sh, err = d.readShadow(ctx, cid, spec.ID); err != nil {
			return diskFile{}, err
		}
		c, err := d.cli.ContainerInspect(ctx, cid)
		switch {
		case err != nil:
			d.log.Warn("shadow cache: cannot inspect a new container; its image's /etc/shadow is not remembered", "instance", spec.ID, "err", err)
		case c.Image != runImageID:
			d.log.Warn("shadow cache: the new container runs another image than the one inspected (its tag moved); not remembered",
				"instance", spec.ID, "image", spec.Image, "inspected", runImageID, "running", c.Image)
		default:
			d.shadows.put(imageID, sh)
		}
	}
	return rootPasswordFile(sh, spec.AdminPassHash)
}

var (
	_ drivers.PasswordSetter       = (*Driver)(nil)
	_ drivers.RescuePasswordSetter = (*Driver)(nil)
)
