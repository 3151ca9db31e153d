package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// startCappedDockerd starts a test dockerd on the data root the
// all-in-one would make (deploy/lib.sh: XFS with project quotas for
// overlay2 where the kernel has XFS quotas, else btrfs with quota groups
// and the btrfs storage driver), or skips when this machine can make
// neither.
func startCappedDockerd(t *testing.T, gb int) *testDockerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	d := startTestDockerdOn(t, func(dataRoot string) {
		xout, ok := xfsDataRoot(t, dataRoot, dataRoot+".xfs", gb)
		if ok {
			return
		}
		_ = os.Remove(dataRoot + ".xfs")
		if bout, ok := btrfsDataRoot(t, dataRoot, dataRoot+".btrfs", gb); !ok {
			t.Skipf("neither an XFS data root with pquota nor a btrfs one on this machine:\n%s\n%s", xout, bout)
		}
	})
	drv, err := d.docker("info", "-f", "{{.Driver}}")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test dockerd's storage driver: %s", drv)
	if fs, _ := mountOf(t, d.dataRoot(t)); fs == "btrfs" && drv != "btrfs" {
		t.Fatalf("dockerd on a btrfs data root uses %q, want btrfs (cap_dockerd_args)", drv)
	}
	return d
}

// TestRootDiskResize: a resize to a flavor with a bigger disk on a host
// that caps root disks gives the server the bigger cap, as a user sees it
// through the openstack CLI: its container is made again (stop, commit,
// create with the new storage-opt size, start) keeping its data, NIC
// (IP, MAC) and command; it waits in VERIFY_RESIZE; confirm keeps the new
// cap and the data, revert brings the old container back (the data as of
// the resize, the old cap). Nothing is left behind: no kept container, no
// resize commit beyond the one the server runs from. The confirm and the
// revert are two servers of the one cloud, run side by side (subtests):
// each checks only its own server's container, commits and caps, and the
// 8 GiB data root holds both (at most about 2.6 GiB and 1.5 GiB).
func TestRootDiskResize(t *testing.T) {
	t.Parallel()
	d := startCappedDockerd(t, 8)
	c := startCloud(t, onDockerd(d), withBridge)
	adm := c.openstack(t, "admin", c.adminPass, "admin")
	vlan := 101 + rand.IntN(800)
	adm.run("network", "create", "--provider-network-type", "vlan", "--provider-physical-network", "physnet1",
		"--provider-segment", fmt.Sprint(vlan), "--share", "rdnet")
	adm.run("subnet", "create", "--network", "rdnet", "--subnet-range", "10.84.0.0/24", "rdnet-sub")
	adm.run("flavor", "create", "--vcpus", "1", "--ram", "128", "--disk", "1", "rd.1g")
	adm.run("flavor", "create", "--vcpus", "1", "--ram", "128", "--disk", "2", "rd.2g")

	full := func(out string, err error) bool {
		return err != nil && (strings.Contains(out, "No space left on device") || strings.Contains(out, "Disk quota exceeded"))
	}
	type server struct {
		netServer
		sum  string
		t    *testing.T
		demo *openstackCLI
	}
	boot := func(t *testing.T, name string, keepMB int) *server {
		t.Helper()
		demo := c.openstack(t, "demo", c.demoPass, "demo")
		demo.run("server", "create", "--image", "busybox", "--flavor", "rd.1g", "--nic", "net-id=rdnet", "--wait", name)
		var m map[string]any
		demo.json(&m, "server", "show", name)
		s := &server{netServer: netServer{name: name, id: m["id"].(string), host: c.hosts[0]}, t: t, demo: demo}
		if out, err := s.exec("dd", "if=/dev/urandom", "of=/keep", "bs=1M", "count="+strconv.Itoa(keepMB)); err != nil {
			t.Fatalf("%s: write %d MiB: %v %s", name, keepMB, err, out)
		}
		s.sum = s.md5(t, "/keep")
		return s
	}
	dd := func(s *server, file string, mb int) (string, error) {
		out, err := s.exec("dd", "if=/dev/zero", "of="+file, "bs=1M", "count="+strconv.Itoa(mb))
		if _, serr := s.exec("sync"); serr != nil {
			s.t.Logf("sync in %s: %v", s.name, serr)
		}
		return out, err
	}
	status := func(s *server) map[string]any {
		var m map[string]any
		s.demo.json(&m, "server", "show", s.name)
		return m
	}
	resize := func(s *server, flavor string) time.Duration {
		t := s.t
		t.Helper()
		addrs, mac := s.eth0(t)
		cmd, err := d.docker("inspect", "-f", "{{json .Config.Cmd}}", s.workload())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		s.demo.run("server", "resize", "--flavor", flavor, "--wait", s.name)
		took := time.Since(start)
		if m := status(s); m["status"] != "VERIFY_RESIZE" {
			t.Fatalf("%s after resize --wait: status %v, fault %v", s.name, m["status"], m["fault"])
		}
		if a, m := s.eth0(t); strings.Join(a, ",") != strings.Join(addrs, ",") || m != mac {
			t.Errorf("%s: eth0 %v %s after the resize, was %v %s", s.name, a, m, addrs, mac)
		}
		if got, _ := d.docker("inspect", "-f", "{{json .Config.Cmd}}", s.workload()); got != cmd {
			t.Errorf("%s: command %s after the resize, was %s", s.name, got, cmd)
		}
		if got := s.md5(t, "/keep"); got != s.sum {
			t.Errorf("%s: /keep changed in the resize: md5 %s, was %s", s.name, got, s.sum)
		}
		return took
	}
	leftovers := func(s *server, wantImages int) {
		t := s.t
		t.Helper()
		eventually(t, time.Minute, s.name+"'s kept container removed", func() bool {
			out, err := d.docker("ps", "-a", "-q", "--filter", "name="+docker.ContainerName(s.id)+".pre-resize")
			return err == nil && out == ""
		})
		out, err := d.docker("images", "-q", "capsule-rootdisk/"+s.id)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(strings.Fields(out)); n != wantImages {
			t.Errorf("%s: %d resize commits left (%q), want %d", s.name, n, out, wantImages)
		}
	}

	// Confirm: the new cap stays, with the data.
	confirm := func(t *testing.T) {
		g := boot(t, "grower", 500)
		if out, err := dd(g, "/fill", 600); !full(out, err) {
			t.Errorf("grower (1 GB disk, 500 MiB kept): 600 MiB more: err %v %q, want ENOSPC or EDQUOT", err, out)
		}
		if _, err := g.exec("rm", "-f", "/fill"); err != nil {
			t.Fatal(err)
		}
		took := resize(g, "rd.2g")
		t.Logf("root disk resize 1 GB -> 2 GB of a server holding 500 MiB: %s (openstack server resize --wait)", took.Round(10*time.Millisecond))
		if out, _ := d.docker("ps", "-a", "-q", "--filter", "name="+docker.ContainerName(g.id)+".pre-resize"); out == "" {
			t.Errorf("grower in VERIFY_RESIZE has no kept pre-resize container")
		}
		if out, err := dd(g, "/fill", 800); err != nil {
			t.Errorf("grower (2 GB disk now): 800 MiB beyond the old cap: %v %s", err, out)
		}
		if out, err := dd(g, "/more", 900); !full(out, err) {
			t.Errorf("grower (2 GB disk, 1300 MiB used): 900 MiB more: err %v %q, want ENOSPC or EDQUOT", err, out)
		}
		g.demo.run("server", "resize", "confirm", g.name)
		eventually(t, time.Minute, "grower ACTIVE", func() bool { return status(g)["status"] == "ACTIVE" })
		if m := status(g); !strings.Contains(fmt.Sprint(m["flavor"]), "rd.2g") {
			t.Errorf("grower's flavor after confirm: %v", m["flavor"])
		}
		if got := g.md5(t, "/keep"); got != g.sum {
			t.Errorf("grower: /keep changed after confirm: md5 %s, was %s", got, g.sum)
		}
		leftovers(g, 1) // the commit the server now runs from
		if out, err := d.docker("inspect", "-f", `{{index .Config.Labels "capsule.root_disk_gb"}}`, g.workload()); err != nil || out != "2" {
			t.Errorf("grower's container root disk label %q (err %v), want 2", out, err)
		}
		g.demo.run("server", "delete", "--wait", g.name)
		if out, _ := d.docker("images", "-q", "capsule-rootdisk/"+g.id); out != "" {
			t.Errorf("grower deleted: its resize commit is left: %q", out)
		}
	}

	// Revert: the old container comes back, with the data as of the
	// resize and the old cap.
	revert := func(t *testing.T) {
		r := boot(t, "reverter", 200)
		resize(r, "rd.2g")
		if out, err := dd(r, "/extra", 900); err != nil {
			t.Errorf("reverter (2 GB disk now): 900 MiB: %v %s", err, out)
		}
		r.demo.run("server", "resize", "revert", r.name)
		eventually(t, 2*time.Minute, "reverter ACTIVE", func() bool {
			m := status(r)
			if m["status"] == "ERROR" {
				t.Fatalf("reverter in ERROR: %v", m["fault"])
			}
			return m["status"] == "ACTIVE" && m["OS-EXT-STS:task_state"] == nil
		})
		if m := status(r); !strings.Contains(fmt.Sprint(m["flavor"]), "rd.1g") {
			t.Errorf("reverter's flavor after revert: %v", m["flavor"])
		}
		if got := r.md5(t, "/keep"); got != r.sum {
			t.Errorf("reverter: /keep changed by the revert: md5 %s, was %s", got, r.sum)
		}
		if out, err := r.exec("ls", "/extra"); err == nil {
			t.Errorf("reverter: /extra, written in VERIFY_RESIZE, is still there after the revert (the old disk must come back): %s", out)
		}
		if out, err := dd(r, "/fill", 900); !full(out, err) {
			t.Errorf("reverter (1 GB disk again, 200 MiB kept): 900 MiB more: err %v %q, want ENOSPC or EDQUOT", err, out)
		}
		leftovers(r, 0)
		r.demo.run("server", "delete", "--wait", r.name)
		if out, err := d.docker("ps", "-a", "-q", "--filter", "label=capsule.instance="+r.id); err != nil || out != "" {
			t.Errorf("reverter deleted: containers left: %q (err %v)", out, err)
		}
	}
	sideBySide(t, map[string]func(*testing.T){"confirm": confirm, "revert": revert})
}

// md5 is the md5sum of file in the server.
func (s *netServer) md5(t *testing.T, file string) string {
	t.Helper()
	out, err := s.exec("md5sum", file)
	if err != nil {
		t.Fatalf("md5sum %s in %s: %v %s", file, s.name, err, out)
	}
	return strings.Fields(out)[0]
}

// TestRootDiskResizeResumes: the docker driver's root disk resize on a
// capped dockerd finishes what an agent restart cut short, and changes
// nothing when done already: a remake that died after its commit and
// rename (no container under the server's name), a redelivery of a
// finished one, a revert that died after removing the resized container.
// No resize commit is left once the old container is back.
func TestRootDiskResizeResumes(t *testing.T) {
	t.Parallel()
	d := startCappedDockerd(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img := testenv.Image(t)
	drv, err := docker.New(ctx, docker.Options{Host: d.host, StopTimeout: time.Second, SandboxImage: img,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	id := uuid.NewString()
	name := docker.ContainerName(id)
	if err := drv.Create(ctx, drivers.Spec{ID: id, Name: "resumer", Image: img, VCPUs: 1, MemoryMB: 64, PidsLimit: 100, DiskGB: 1,
		Command: []string{"sleep", "600"}}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drv.Destroy(context.Background(), id) }()
	if err := drv.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if out, err := d.docker("exec", name, "dd", "if=/dev/urandom", "of=/keep", "bs=1M", "count=50"); err != nil {
		t.Fatalf("write: %v %s", err, out)
	}
	sum := func() string {
		t.Helper()
		out, err := d.docker("exec", name, "md5sum", "/keep")
		if err != nil {
			t.Fatalf("md5sum: %v %s", err, out)
		}
		return strings.Fields(out)[0]
	}
	want := sum()
	if err := drv.Stop(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	orig, err := d.docker("inspect", "-f", "{{.Id}}", name)
	if err != nil {
		t.Fatal(err)
	}
	// What a remake leaves when the agent dies after its commit and
	// its rename.
	if out, err := d.docker("commit", name, "capsule-rootdisk/"+id+":"+orig[:12]); err != nil {
		t.Fatalf("commit: %v %s", err, out)
	}
	if out, err := d.docker("rename", name, name+".pre-resize"); err != nil {
		t.Fatalf("rename: %v %s", err, out)
	}
	if change, err := drv.RootDiskChange(ctx, id, 2); err != nil || !change {
		t.Fatalf("RootDiskChange of a remake cut short = %v, %v; want true", change, err)
	}
	if err := drv.ResizeRootDisk(ctx, id, 2); err != nil {
		t.Fatalf("finish the remake: %v", err)
	}
	remade, err := d.docker("inspect", "-f", `{{.Id}} {{index .Config.Labels "capsule.root_disk_gb"}} {{.Config.Image}}`, name)
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(remade); len(f) != 3 || f[0] == orig || f[1] != "2" || f[2] != "capsule-rootdisk/"+id+":"+orig[:12] {
		t.Errorf("the remade container: %q; want a new one, root disk 2, from the commit", remade)
	}
	if err := drv.ResizeRootDisk(ctx, id, 2); err != nil {
		t.Fatalf("a redelivered remake: %v", err)
	}
	if again, _ := d.docker("inspect", "-f", `{{.Id}}`, name); again != strings.Fields(remade)[0] {
		t.Errorf("a redelivered remake made the container again: %s -> %s", strings.Fields(remade)[0], again)
	}
	if kept, err := drv.KeptRootDisks(ctx); err != nil || len(kept) != 1 || kept[0] != id {
		t.Errorf("KeptRootDisks = %v, %v; want [%s]", kept, err, id)
	}
	if sts, err := drv.List(ctx); err != nil || len(sts) != 1 {
		t.Errorf("List = %+v, %v; want the one instance (not its kept container)", sts, err)
	}
	if err := drv.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := sum(); got != want {
		t.Errorf("/keep after the remake: md5 %s, want %s", got, want)
	}
	if err := drv.Stop(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	// A revert that died after removing the resized container.
	if out, err := d.docker("rm", "-f", name); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	if err := drv.ResizeRootDisk(ctx, id, 1); err != nil {
		t.Fatalf("finish the revert: %v", err)
	}
	if back, _ := d.docker("inspect", "-f", `{{.Id}} {{.HostConfig.StorageOpt}}`, name); back != orig+" map[size:1G]" {
		t.Errorf("after the revert: %q, want the original container %s with size 1G", back, orig)
	}
	if out, err := d.docker("images", "-q", "capsule-rootdisk/"+id); err != nil || out != "" {
		t.Errorf("resize commits left after the revert: %q (err %v)", out, err)
	}
	if kept, err := drv.KeptRootDisks(ctx); err != nil || len(kept) != 0 {
		t.Errorf("KeptRootDisks after the revert = %v, %v", kept, err)
	}
	if err := drv.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := sum(); got != want {
		t.Errorf("/keep after the revert: md5 %s, want %s", got, want)
	}
}
