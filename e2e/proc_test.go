package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// TestServerSeesItsOwnProc: a server booted through the API on a
// 1-vCPU/512 MB flavor sees itself, not the host, as a tenant's tools
// show it: nproc prints 1 (the agent pinned it to one CPU), free -m
// (procps, which the tenant installs as on any Debian) shows ~512 MB
// total, /proc/uptime is the server's (LXCFS, agent.lxcfs at its default).
func TestServerSeesItsOwnProc(t *testing.T) {
	t.Parallel()
	if dir := testenv.LXCFS(t); dir != config.Default().Agent.LXCFS {
		t.Skipf("the test cloud's agent uses LXCFS at the default %s, the test LXCFS is at %s", config.Default().Agent.LXCFS, dir)
	}
	c := startCloud(t)
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	fl, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: "proc-1x512", RAM: 512, VCPUs: 1, Disk: gophercloud.IntToPointer(1)}).Extract()
	if err != nil {
		t.Fatalf("create flavor: %v", err)
	}
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "procview", ImageRef: img, FlavorRef: fl.ID}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)
	ctr := "capsule-" + srv.ID
	run := func(cmd string) string {
		t.Helper()
		out, err := c.docker("exec", ctr, "sh", "-c", cmd)
		if err != nil {
			t.Fatalf("exec %q: %v %s", cmd, err, out)
		}
		return out
	}

	if got := run("nproc"); got != "1" {
		cpuset, _ := c.docker("inspect", "-f", "{{.HostConfig.CpusetCpus}}", ctr)
		t.Errorf("nproc in a 1-vCPU server = %q (cpuset %q), want 1", got, cpuset)
	}
	memTotal := func(what, free string) {
		t.Helper()
		t.Logf("MEASURED %s in the server:\n%s", what, free)
		var total float64
		for _, l := range strings.Split(free, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Mem:" {
				total, _ = strconv.ParseFloat(f[1], 64)
			}
		}
		if total < 512-16 || total > 512+16 {
			t.Errorf("%s total = %.0f MB, want 512 ± 16:\n%s", what, total, free)
		}
	}
	// The base image's own free, typed in its shell (it reads
	// /proc/meminfo; deploy/images/build-base.sh), and uptime.
	memTotal("free -m (the image's)", run("free -m"))
	if up := run("uptime"); !strings.Contains(up, "up 0 min") && !strings.Contains(up, "up 1 min") {
		t.Errorf("uptime in a server booted just now = %q, want its own (0 or 1 min)", up)
	}
	// procps' free, as a tenant of a Debian image has it.
	installProcps(t, c, ctr)
	memTotal("procps free -m", run("/usr/bin/free -m"))
	up, err := strconv.ParseFloat(strings.Fields(run("cat /proc/uptime"))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	if up > 300 {
		t.Errorf("/proc/uptime in a server booted just now = %.0f s: the host's, not the server's", up)
	}
}

// installProcps copies this host's procps free, with the libraries it
// loads, into the running server (docker cp of a tar; Docker creates the
// missing directories): what a tenant's apt-get install procps gives a
// Debian server.
func installProcps(t *testing.T, c *cloud, ctr string) {
	t.Helper()
	const bin = "/usr/bin/free"
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s (procps is needed on the test host): %v", bin, err)
	}
	files := []string{bin}
	for _, m := range regexp.MustCompile(`(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		files = append(files, m[1])
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		b, err := os.ReadFile(f) // through symlinks: the file under the name the loader asks for
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(f, "/"), Mode: 0o755, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "-H", c.dockerHost, "cp", "-", ctr+":/")
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker cp procps into %s: %v %s", ctr, err, out)
	}
}
