package docker_test

import (
	"archive/tar"
	"io"
	"testing"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// containerFile is one tar entry copied out of a container.
type containerFile struct {
	body     string
	mode     int64
	uid, gid int
	dir      bool
}

// readContainerFile copies path out of instance id's workload container
// (created or running) and returns its first tar entry: the file, or the
// directory itself.
func readContainerFile(t *testing.T, d *docker.Driver, id, path string) containerFile {
	t.Helper()
	rc, _, err := d.Client().CopyFromContainer(drivertest.Ctx(t), docker.ContainerName(id), path)
	if err != nil {
		t.Fatalf("copy %s out of %s: %v", path, id, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		t.Fatalf("read tar of %s: %v", path, err)
	}
	body, err := io.ReadAll(tr)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return containerFile{body: string(body), mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, dir: h.Typeflag == tar.TypeDir}
}

// TestAuthorizedKeysOnDisk: the key is on the disk of the created,
// never-started container with the modes sshd insists on, and the
// running server sees the same.
func TestAuthorizedKeysOnDisk(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnDiskOnDiskOnDiskOnDiskOnDiskOnDiskOnDisk12 user@laptop"
	spec := drivertest.Spec(image)
	spec.AuthorizedKeys = key + "\n\n" // trailing newlines collapse to one
	drivertest.Create(t, d, spec)

	dir := readContainerFile(t, d, spec.ID, "/root/.ssh")
	if !dir.dir || dir.mode != 0o700 || dir.uid != 0 || dir.gid != 0 {
		t.Errorf("/root/.ssh: dir=%v mode %o owner %d:%d, want a 0700 directory of 0:0", dir.dir, dir.mode, dir.uid, dir.gid)
	}
	f := readContainerFile(t, d, spec.ID, "/root/.ssh/authorized_keys")
	if f.body != key+"\n" || f.mode != 0o600 || f.uid != 0 || f.gid != 0 {
		t.Errorf("authorized_keys: %q mode %o owner %d:%d, want %q 0600 0:0", f.body, f.mode, f.uid, f.gid, key+"\n")
	}

	ctx := drivertest.Ctx(t)
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatalf("start: %v", err)
	}
	code, out, err := execIn(ctx, d.Client(), docker.ContainerName(spec.ID),
		"stat", "-c", "%a %u %g %n", "/root/.ssh", "/root/.ssh/authorized_keys")
	if err != nil || code != 0 {
		t.Fatalf("stat in the server: %d %q %v", code, out, err)
	}
	if want := "700 0 0 /root/.ssh\n600 0 0 /root/.ssh/authorized_keys\n"; out != want {
		t.Errorf("inside the server: %q, want %q", out, want)
	}
	code, out, err = execIn(ctx, d.Client(), docker.ContainerName(spec.ID), "cat", "/root/.ssh/authorized_keys")
	if err != nil || code != 0 || out != key+"\n" {
		t.Errorf("cat authorized_keys in the server: %d %q %v", code, out, err)
	}
}

// TestNoKeyNoFile: a server without a keypair gets no authorized_keys.
func TestNoKeyNoFile(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	drivertest.Create(t, d, spec)
	_, _, err := d.Client().CopyFromContainer(drivertest.Ctx(t), docker.ContainerName(spec.ID), "/root/.ssh/authorized_keys")
	if !cerrdefs.IsNotFound(err) {
		t.Errorf("authorized_keys of a server without a key: err = %v, want not found", err)
	}
}
