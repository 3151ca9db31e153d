package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
)

// The proofs that an image's VOLUME is a directory of the server's root
// disk (docs/security.md "Root disk"): capped with it, no Docker volume,
// carried by a cold migration.

// uploadVolumeImage builds, on host h's dockerd, an image of the base
// image with `VOLUME /data` (docker commit --change, as a tenant's
// Dockerfile would), saves it and uploads it through the image API as
// user/project, as the openstack CLI does; it returns the image's ID.
// Nothing of it is left on h.
func (c *cloud) uploadVolumeImage(t *testing.T, h *computeHost, user, pass, project string) string {
	t.Helper()
	ctx := context.Background()
	tag := "capsuletest/with-volume:" + uuid.NewString()[:8]
	out, err := h.docker("create", "--network", "none", c.baseImage)
	if err != nil {
		t.Fatalf("docker create: %v %s", err, out)
	}
	// The ID is the last line (dockerd may warn before it).
	fields := strings.Fields(out)
	cid := fields[len(fields)-1]
	defer func() { _, _ = h.docker("rm", "-f", "-v", cid) }()
	if out, err := h.docker("commit", "--change", "VOLUME /data", cid, tag); err != nil {
		t.Fatalf("docker commit: %v %s", err, out)
	}
	defer func() { _, _ = h.docker("rmi", tag) }()
	if out, err := h.docker("inspect", "-f", "{{json .Config.Volumes}}", tag); err != nil || !strings.Contains(out, "/data") {
		t.Fatalf("the test image declares volumes %s (%v), want /data", out, err)
	}
	tarball := filepath.Join(t.TempDir(), "with-volume.tar")
	if out, err := h.docker("save", "-o", tarball, tag); err != nil {
		t.Fatalf("docker save: %v %s", err, out)
	}
	pc, err := c.provider(ctx, user, pass, project)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	img, err := images.Create(ctx, ic, images.CreateOpts{Name: "with-volume", ContainerFormat: "docker", DiskFormat: "raw"}).Extract()
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := imagedata.Upload(ctx, ic, img.ID, f).ExtractErr(); err != nil {
		t.Fatalf("upload image: %v", err)
	}
	return img.ID
}

// noDockerVolumes fails when host h's dockerd holds a volume mounted by
// a container of server id.
func noDockerVolumes(t *testing.T, h *computeHost, id string) {
	t.Helper()
	out, err := h.docker("ps", "-aq", "--filter", "label=capsule.instance="+id)
	if err != nil {
		t.Fatalf("docker ps: %v %s", err, out)
	}
	for _, cid := range strings.Fields(out) {
		m, err := h.docker("inspect", "-f", `{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}} {{end}}`, cid)
		if err != nil {
			t.Fatalf("docker inspect: %v %s", err, m)
		}
		if strings.Contains(m, "volume:") || strings.Contains(m, ":/data") {
			t.Errorf("server %s's container %s mounts %s, want /data in its root disk", id, cid, m)
		}
	}
}

// TestImageVolumeInRootDisk: on a host capping root disks (its own
// dockerd on the data root the all-in-one makes, as TestRootDiskENOSPC),
// a server of a 1 GB disk flavor booted from an image uploaded with
// `VOLUME /data` has /data in its root disk: writing 1200 MiB there gets
// ENOSPC (EDQUOT on btrfs), the data root keeps its room, and no Docker
// volume exists (before this, Docker's anonymous volume took it all).
func TestImageVolumeInRootDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	d := startTestDockerdOn(t, func(dataRoot string) {
		xout, ok := xfsDataRoot(t, dataRoot, dataRoot+".xfs", 8)
		if ok {
			return
		}
		_ = os.Remove(dataRoot + ".xfs")
		if bout, ok := btrfsDataRoot(t, dataRoot, dataRoot+".btrfs", 8); !ok {
			t.Skipf("neither an XFS data root with pquota nor a btrfs one on this machine:\n%s\n%s", xout, bout)
		}
	})
	c := startCloud(t, onDockerd(d))
	h := c.hosts[0]
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	fl, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: "disk-1g", RAM: 128, VCPUs: 1, Disk: gophercloud.IntToPointer(1)}).Extract()
	if err != nil {
		t.Fatalf("create flavor: %v", err)
	}
	img := c.uploadVolumeImage(t, h, "demo", c.demoPass, "demo")
	s, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "vol-filler", ImageRef: img, FlavorRef: fl.ID}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, s.ID, "ACTIVE", 60*time.Second)
	if n := c.proc(t, "agent-"+c.host).logged(t, "root disk enforced"); n == 0 {
		t.Fatalf("the agent did not log that root disks are enforced")
	}
	noDockerVolumes(t, h, s.ID)
	if out, err := d.docker("volume", "ls", "-q"); err != nil || out != "" {
		t.Errorf("docker volumes on the host: %q (%v), want none", out, err)
	}
	out, err := c.docker("exec", "capsule-"+s.ID, "dd", "if=/dev/zero", "of=/data/fill", "bs=1M", "count=1200")
	if err == nil || !(strings.Contains(out, "No space left on device") || strings.Contains(out, "Disk quota exceeded")) {
		t.Errorf("dd of 1200 MiB into /data of a 1 GB disk server: err %v, output %q, want ENOSPC (or EDQUOT)", err, out)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.dataRoot(t), &st); err != nil {
		t.Fatal(err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < 5<<30 {
		t.Errorf("the host's data root has %d MiB free after the filler, want ≥ 5 GiB of its 8", free>>20)
	}
	// Deleting it leaves no volume nor image copy behind.
	if err := servers.Delete(ctx, demo, s.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, demo, s.ID, 60*time.Second)
	if out, err := d.docker("volume", "ls", "-q"); err != nil || out != "" {
		t.Errorf("docker volumes after the delete: %q (%v), want none", out, err)
	}
	if out, err := d.docker("images", "-q", "--filter", "dangling=true"); err != nil || out != "" {
		t.Errorf("untagged images after the delete: %q (%v), want none (the volume-free copy goes with its server)", out, err)
	}
}

// TestImageVolumeSurvivesColdMigration: a file a server writes into the
// VOLUME path /data of its uploaded image is in its root disk, so a cold
// migration (commit → push → pull) carries it to the other host; neither
// host holds a Docker volume of it.
func TestImageVolumeSurvivesColdMigration(t *testing.T) {
	t.Parallel()
	c, _ := migrationCloud(t)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "vol-net", 200+rand.IntN(800), "10.32.1.0/24", true)
	img := c.uploadVolumeImage(t, ha, "admin", c.adminPass, "admin")
	srv, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "vol-mig", ImageRef: img, FlavorRef: "1",
		AvailabilityZone: "nova:" + ha.name, Networks: []servers.Network{{UUID: netID}}}, nil).Extract()
	if err != nil {
		t.Fatalf("create server: %v", err)
	}
	s := activeServer(t, cc, nc, "vol-mig", srv.ID, ha)
	noDockerVolumes(t, ha, srv.ID)
	sum := writeData(t, s, "/data/kept", 4)

	if err := servers.Migrate(ctx, cc, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	waitStatus(t, cc, srv.ID, "VERIFY_RESIZE", 5*time.Minute)
	if h := serverHost(t, cc, srv.ID); h != hb.name {
		t.Fatalf("after migrate the server is on %q, want %s", h, hb.name)
	}
	moved := s.moved(hb)
	if got := sha256Of(t, moved, "/data/kept"); got != sum {
		t.Errorf("/data/kept after the migration: sha256 %s, want %s", got, sum)
	}
	noDockerVolumes(t, hb, srv.ID)
	if err := servers.ConfirmResize(ctx, cc, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cc, srv.ID, "ACTIVE", time.Minute)
	if out, err := moved.exec("sh", "-c", "echo more > /data/after && cat /data/after"); err != nil || strings.TrimSpace(out) != "more" {
		t.Errorf("write into /data after the migration: %v %q", err, out)
	}
}
