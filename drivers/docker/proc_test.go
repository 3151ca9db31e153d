package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	dimage "github.com/docker/docker/api/types/image"
	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// newProcDriver is a driver that mounts the test LXCFS into servers.
func newProcDriver(t *testing.T) *docker.Driver {
	t.Helper()
	host, image, lxcfs := testenv.DockerHost(t), testenv.Image(t), testenv.LXCFS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, SandboxImage: image, LXCFS: lxcfs,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// sh runs a shell command inside instance id (docker exec, as a tenant's
// shell would) and returns its trimmed output.
func sh(t *testing.T, ctx context.Context, d *docker.Driver, id, cmd string) string {
	t.Helper()
	code, out, err := execIn(ctx, d.Client(), docker.ContainerName(id), "sh", "-c", cmd)
	if err != nil || code != 0 {
		t.Fatalf("exec %q in %s: exit %d, %v: %s", cmd, id, code, err, out)
	}
	return strings.TrimSpace(out)
}

// load1 is the 1-minute load that uptime (procps, see procpsImage) prints
// in the server.
func load1(t *testing.T, ctx context.Context, d *docker.Driver, id string) float64 {
	t.Helper()
	out := sh(t, ctx, d, id, "/usr/bin/uptime")
	_, loads, ok := strings.Cut(out, "load average:")
	f := strings.Fields(strings.ReplaceAll(loads, ",", " "))
	if !ok || len(f) == 0 {
		t.Fatalf("no load in uptime's %q", out)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("parse uptime's %q: %v", out, err)
	}
	return v
}

// meminfoMB is a /proc/meminfo field of the server, in MiB.
func meminfoMB(t *testing.T, ctx context.Context, d *docker.Driver, id, field string) float64 {
	t.Helper()
	out := sh(t, ctx, d, id, "grep '^"+field+":' /proc/meminfo")
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("no %s in /proc/meminfo of %s: %q", field, id, out)
	}
	kb, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		t.Fatalf("parse %q: %v", out, err)
	}
	return kb / 1024
}

// TestProcShowsTheServer is the container-true /proc proof: inside a
// 1-vCPU/512 MB server, nproc says 1 (its cpuset), free -m, top,
// /proc/meminfo and /proc/uptime are the server's, and the load uptime
// prints follows a CPU burner in it while an idle neighbour's stays low; a
// live resize to 2 vCPUs makes nproc say 2 in the same container (same
// PID 1).
func TestProcShowsTheServer(t *testing.T) {
	d := newProcDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	image := procpsImage(t, ctx, d, testenv.Image(t))

	boot := func() drivers.Spec {
		spec := drivertest.Spec(image)
		spec.VCPUs, spec.MemoryMB = 1, 512
		drivertest.Boot(t, d, spec)
		return spec
	}
	srv, nb := boot(), boot()
	cpusetOf := func(id string) (string, int) {
		c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(id))
		if err != nil {
			t.Fatal(err)
		}
		return c.HostConfig.CpusetCpus, c.State.Pid
	}
	set, pid1 := cpusetOf(srv.ID)
	nbSet, _ := cpusetOf(nb.ID)
	t.Logf("cpusets: server %q, neighbour %q", set, nbSet)

	if got := sh(t, ctx, d, srv.ID, "nproc"); got != "1" {
		t.Errorf("nproc in a 1-vCPU server = %q, want 1", got)
	}
	if got := sh(t, ctx, d, srv.ID, "grep -c ^processor /proc/cpuinfo"); got != "1" {
		t.Errorf("processors in /proc/cpuinfo = %q, want 1", got)
	}
	if got := sh(t, ctx, d, srv.ID, "grep -c '^cpu[0-9]' /proc/stat"); got != "1" {
		t.Errorf("CPUs in /proc/stat = %q, want 1", got)
	}
	// Each file of the view reads (a broken one fails with ENOTCONN).
	for _, f := range []string{"diskstats", "swaps", "stat", "uptime", "loadavg"} {
		sh(t, ctx, d, srv.ID, "cat /proc/"+f+" >/dev/null")
	}
	if got := sh(t, ctx, d, srv.ID, "cat /sys/devices/system/cpu/online"); strings.ContainsAny(got, ",-") {
		t.Errorf("/sys/devices/system/cpu/online = %q, want one CPU", got)
	}
	total := meminfoMB(t, ctx, d, srv.ID, "MemTotal")
	if !within(total, 512, 16) {
		t.Errorf("MemTotal = %.0f MB, want 512 ± 16", total)
	}
	free := sh(t, ctx, d, srv.ID, "/usr/bin/free -m")
	t.Logf("MEASURED free -m (procps):\n%s\nbusybox free -m (sysinfo(2), the host's totals):\n%s",
		free, sh(t, ctx, d, srv.ID, "busybox free -m"))
	var freeTotal float64
	for _, l := range strings.Split(free, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Mem:" {
			freeTotal, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if !within(freeTotal, 512, 16) {
		t.Errorf("free -m total = %.0f MB, want 512 ± 16:\n%s", freeTotal, free)
	}
	if swap := meminfoMB(t, ctx, d, srv.ID, "SwapTotal"); swap != 0 {
		t.Errorf("SwapTotal = %.0f MB, want 0 (memory+swap = memory)", swap)
	}
	// busybox top reads /proc/meminfo: used + free is the server's RAM.
	top := sh(t, ctx, d, srv.ID, "top -bn1 | head -1")
	var used, avail float64
	for _, f := range strings.Fields(strings.ReplaceAll(top, ",", "")) {
		if n, ok := strings.CutSuffix(f, "K"); ok {
			v, _ := strconv.ParseFloat(n, 64)
			switch {
			case used == 0:
				used = v
			case avail == 0:
				avail = v
			}
		}
	}
	if mb := (used + avail) / 1024; !within(mb, 512, 16) {
		t.Errorf("top's used+free = %.0f MB (%q), want 512 ± 16", mb, top)
	}
	up, err := strconv.ParseFloat(strings.Fields(sh(t, ctx, d, srv.ID, "cat /proc/uptime"))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	hostUp := hostUptime(t)
	t.Logf("MEASURED /proc/uptime: server %.1f s, host %.1f s", up, hostUp)
	if up > 120 || (hostUp > 300 && up > hostUp/2) {
		t.Errorf("server uptime %.1f s is not the server's (host: %.1f s)", up, hostUp)
	}

	// One burner run serves both load assertions. LXCFS's load is an
	// exponential average of the cgroup's runnable tasks (1 - e^(-t/60)
	// for a steady 1): above 0.5 after ~42 s.
	ex, err := d.Client().ContainerExecCreate(ctx, docker.ContainerName(srv.ID), container.ExecOptions{Cmd: []string{"sh", "-c", "while :; do :; done"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Client().ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{Detach: true}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	var l, nbMax float64
	for {
		l = load1(t, ctx, d, srv.ID)
		nbl := load1(t, ctx, d, nb.ID)
		nbMax = max(nbMax, nbl)
		if l > 0.5 || time.Now().After(deadline) {
			break
		}
		wait(ctx, t, 5*time.Second)
	}
	t.Logf("MEASURED uptime load: server %.2f after %v of a burner; idle neighbour at most %.2f; /proc/loadavg: server %q, neighbour %q",
		l, time.Since(start).Round(time.Second), nbMax, sh(t, ctx, d, srv.ID, "cat /proc/loadavg"), sh(t, ctx, d, nb.ID, "cat /proc/loadavg"))
	if l <= 0.5 {
		t.Errorf("server's 1-min load %.2f after %v of a CPU burner, want > 0.5", l, time.Since(start).Round(time.Second))
	}
	if nbMax >= 0.3 {
		t.Errorf("idle neighbour's 1-min load reached %.2f while the server burned, want < 0.3", nbMax)
	}

	// Live resize: the cpuset widens with the vCPUs.
	if err := d.Resize(ctx, srv.ID, 2, 512, limits.Limits{}); err != nil {
		t.Fatalf("resize to 2 vCPUs: %v", err)
	}
	set2, pid2 := cpusetOf(srv.ID)
	if pid2 != pid1 {
		t.Fatalf("resize restarted the server: PID %d -> %d", pid1, pid2)
	}
	if got := sh(t, ctx, d, srv.ID, "nproc"); got != "2" {
		t.Errorf("nproc after resize to 2 vCPUs = %q (cpuset %q), want 2", got, set2)
	}
	if got := sh(t, ctx, d, srv.ID, "grep -c ^processor /proc/cpuinfo"); got != "2" {
		t.Errorf("processors in /proc/cpuinfo after resize = %q, want 2", got)
	}
	// And back, as a revert does.
	if err := d.Resize(ctx, srv.ID, 1, 512, limits.Limits{}); err != nil {
		t.Fatalf("resize back to 1 vCPU: %v", err)
	}
	if got := sh(t, ctx, d, srv.ID, "nproc"); got != "1" {
		t.Errorf("nproc after resize back to 1 vCPU = %q, want 1", got)
	}
}

// TestBootsWithoutLXCFS: a configured LXCFS that is not there costs one
// warning at driver start, never a boot: the server runs with Docker's own
// /proc (and is still pinned, so nproc stays right).
func TestBootsWithoutLXCFS(t *testing.T) {
	host, image := testenv.DockerHost(t), testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logs bytes.Buffer
	d, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, SandboxImage: image,
		LXCFS: filepath.Join(t.TempDir(), "no-lxcfs"), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	// One about lxcfs, besides the one about root disks the test
	// dockerds (overlay2 on ext4) cannot cap.
	n := strings.Count(logs.String(), "level=WARN") - strings.Count(logs.String(), "root disk NOT enforced")
	if n != 1 || !strings.Contains(logs.String(), "lxcfs not available") {
		t.Errorf("driver start logged %d warnings (root disk's aside), want one about lxcfs:\n%s", n, logs.String())
	}
	spec := drivertest.Spec(image)
	drivertest.Boot(t, d, spec)
	c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Mounts) != 0 {
		t.Errorf("mounts without lxcfs: %+v", c.Mounts)
	}
	if got := sh(t, ctx, d, spec.ID, "nproc"); got != "1" {
		t.Errorf("nproc without lxcfs = %q (cpuset %q), want 1", got, c.HostConfig.CpusetCpus)
	}
}

// procpsImage builds, on the test dockerd, the base image plus this host's
// procps free and uptime with the libraries they load: a tenant image with
// the GNU tools (Debian, Ubuntu...), which read /proc where busybox's
// free and uptime ask the kernel (sysinfo(2), which no /proc view
// changes). Busybox's sh runs its own applets before PATH: the tests call
// the GNU tools by path.
func procpsImage(t *testing.T, ctx context.Context, d *docker.Driver, base string) string {
	t.Helper()
	files := map[string]bool{}
	lib := regexp.MustCompile(`(/\S+) \(0x`)
	for _, bin := range []string{"/usr/bin/free", "/usr/bin/uptime"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("procps is needed on the test host (deploy/lib.sh installs it): %v", err)
		}
		files[bin] = true
		out, err := exec.CommandContext(ctx, "ldd", bin).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", bin, err)
		}
		for _, m := range lib.FindAllStringSubmatch(string(out), -1) {
			files[m[1]] = true
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add("Dockerfile", 0o644, []byte("FROM "+base+"\nCOPY root/ /\n"))
	for f := range files {
		b, err := os.ReadFile(f) // through symlinks: the image gets the file under the name loaded
		if err != nil {
			t.Fatal(err)
		}
		add(filepath.Join("root", f), 0o755, b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	ref := "capsuletest-procps:" + uuid.NewString()[:8]
	resp, err := d.Client().ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{ref}, Remove: true, ForceRemove: true})
	if err != nil {
		t.Fatalf("build %s: %v", ref, err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Cleanup(func() {
		_, _ = d.Client().ImageRemove(context.Background(), ref, dimage.RemoveOptions{Force: true, PruneChildren: true})
	})
	if _, err := d.Client().ImageInspect(ctx, ref); err != nil {
		t.Fatalf("build %s: %v: %s", ref, err, out)
	}
	return ref
}

func hostUptime(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return v
}
