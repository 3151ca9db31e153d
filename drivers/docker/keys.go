package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
)

// Where the keypair's key goes: root's authorized_keys, as cloud-init
// would write it for a Nova server's default user. There is no metadata
// service, so the driver puts it on the disk before the first boot.
const (
	authorizedKeysPath = "/root/.ssh/authorized_keys"
	sshDirMode         = 0o700
	authorizedKeysMode = 0o600
)

// writeAuthorizedKeys copies keys into the created, never started
// container cid as /root/.ssh/authorized_keys (dir 0700, file 0600, both
// 0:0). /root is created (0700) only when the image lacks it, so an
// image's own /root keeps its mode.
func (d *Driver) writeAuthorizedKeys(ctx context.Context, cid string, keys string) error {
	_, err := d.cli.ContainerStatPath(ctx, cid, "/root")
	withRoot := cerrdefs.IsNotFound(err)
	if err != nil && !withRoot {
		return fmt.Errorf("stat /root: %w", err)
	}
	archive, err := authorizedKeysTar(keys, withRoot, time.Now())
	if err != nil {
		return err
	}
	// CopyUIDGID false: Docker owns the files by the container's root
	// (0:0, or the remapped root with user namespaces).
	if err := d.cli.CopyToContainer(ctx, cid, "/", archive, container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("copy %s: %w", authorizedKeysPath, err)
	}
	return nil
}

// authorizedKeysTar is the tar stream of root/.ssh/authorized_keys
// holding keys (one key per line, newline terminated), with root/ itself
// when withRoot.
func authorizedKeysTar(keys string, withRoot bool, now time.Time) (*bytes.Reader, error) {
	body := strings.TrimRight(keys, "\n") + "\n"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var hdrs []*tar.Header
	if withRoot {
		hdrs = append(hdrs, &tar.Header{Typeflag: tar.TypeDir, Name: "root/", Mode: sshDirMode, ModTime: now})
	}
	hdrs = append(hdrs,
		&tar.Header{Typeflag: tar.TypeDir, Name: "root/.ssh/", Mode: sshDirMode, ModTime: now},
		&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(authorizedKeysPath, "/"), Mode: authorizedKeysMode,
			Size: int64(len(body)), ModTime: now})
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
	}
	if _, err := tw.Write([]byte(body)); err != nil {
		return nil, fmt.Errorf("tar %s: %w", authorizedKeysPath, err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar %s: %w", authorizedKeysPath, err)
	}
	return bytes.NewReader(buf.Bytes()), nil
}

// diskFile is one regular file written into a container: its absolute
// path, permission bits, owner (the container's IDs) and content.
type diskFile struct {
	path     string
	mode     int64
	uid, gid int
	content  []byte
}

// filesOf is files as diskFiles, owned by root.
func filesOf(files []drivers.File) []diskFile {
	out := make([]diskFile, 0, len(files))
	for _, f := range files {
		out = append(out, diskFile{path: f.Path, mode: f.Mode, content: f.Content})
	}
	return out
}

// writeDiskFiles copies files into container cid as one tar stream of
// regular files only, owned as each says (CopyUIDGID false: dockerd
// keeps the tar's owners, mapped as the container's IDs): Docker makes a
// missing parent directory 0755 root-owned and leaves an existing one as
// it is (a tar entry for /var, say, would change the image's own
// directory).
func (d *Driver) writeDiskFiles(ctx context.Context, cid string, files []diskFile) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, f := range files {
		name := strings.TrimPrefix(path.Clean(f.path), "/")
		if !path.IsAbs(f.path) || name == "" || name == "." {
			return fmt.Errorf("write files: %q is not an absolute file path", f.path)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: f.mode & 0o7777,
			Uid: f.uid, Gid: f.gid, Size: int64(len(f.content)), ModTime: now}); err != nil {
			return fmt.Errorf("tar %s: %w", f.path, err)
		}
		if _, err := tw.Write(f.content); err != nil {
			return fmt.Errorf("tar %s: %w", f.path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tar files: %w", err)
	}
	if err := d.cli.CopyToContainer(ctx, cid, "/", bytes.NewReader(buf.Bytes()), container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("copy %d files: %w", len(files), err)
	}
	return nil
}
