package docker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// netnsInode is the identity of a network namespace path.
func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func pidOf(t *testing.T, ctx context.Context, d *docker.Driver, name string) int {
	t.Helper()
	c, err := d.Client().ContainerInspect(ctx, name)
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	if !c.State.Running || c.State.Pid <= 0 {
		t.Fatalf("%s is not running: %+v", name, c.State)
	}
	return c.State.Pid
}

func nsOfPid(t *testing.T, pid int) uint64 {
	t.Helper()
	return netnsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid))
}

// TestSandboxHoldsTheNetwork: the workload runs in the namespace of its
// sandbox, which exists before the workload starts (so the agent can plumb
// it first), gives it its hostname and resolv.conf, is locked down, and
// keeps the namespace across workload reboots; a stop/start makes a new
// one; destroy removes both containers.
func TestSandboxHoldsTheNetwork(t *testing.T) {
	image := testenv.Image(t)
	d := newDriverMode(t, docker.NetworkSandbox)
	ctx := drivertest.Ctx(t)
	spec := drivertest.Spec(image)
	spec.Networked = true
	spec.DNS = []string{"192.0.2.53", "198.51.100.53"}
	drivertest.Create(t, d, spec)
	cli := d.Client()
	sbName := docker.SandboxName(spec.ID)

	// Plumbing point: before the workload ever ran.
	path, err := d.Sandbox(ctx, spec.ID)
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	sbPid := pidOf(t, ctx, d, sbName)
	if path != fmt.Sprintf("/proc/%d/ns/net", sbPid) {
		t.Errorf("sandbox path = %s, want the sandbox PID 1's (%d)", path, sbPid)
	}
	before := netnsInode(t, path)
	if before == nsOfPid(t, os.Getpid()) {
		t.Fatal("the sandbox shares the host's network namespace")
	}
	w, err := cli.ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	if w.State.Running {
		t.Fatal("Sandbox started the workload")
	}

	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatalf("start: %v", err)
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerRunning)
	wPid := pidOf(t, ctx, d, docker.ContainerName(spec.ID))
	if got := nsOfPid(t, wPid); got != before {
		t.Errorf("workload netns %d, sandbox netns %d: the workload did not join the sandbox", got, before)
	}
	if p, err := d.Sandbox(ctx, spec.ID); err != nil || netnsInode(t, p) != before {
		t.Errorf("Sandbox of the running instance = %s, %v; want the same namespace", p, err)
	}

	// Hostname and resolv.conf come from the sandbox.
	code, out, err := execIn(ctx, cli, docker.ContainerName(spec.ID), "hostname")
	if err != nil || code != 0 || strings.TrimSpace(out) != spec.Hostname {
		t.Errorf("hostname in the workload = %q (exit %d, %v), want %q", out, code, err, spec.Hostname)
	}
	code, out, err = execIn(ctx, cli, docker.ContainerName(spec.ID), "cat", "/etc/resolv.conf")
	if err != nil || code != 0 || !strings.Contains(out, "nameserver 192.0.2.53") || !strings.Contains(out, "nameserver 198.51.100.53") {
		t.Errorf("resolv.conf in the workload = %q (exit %d, %v), want the spec's name servers", out, code, err)
	}
	// Only lo: Docker adds no interface of its own.
	code, out, err = execIn(ctx, cli, docker.ContainerName(spec.ID), "ls", "/sys/class/net")
	if err != nil || code != 0 || strings.Join(strings.Fields(out), " ") != "lo" {
		t.Errorf("interfaces in the workload = %q (exit %d, %v), want lo only", out, code, err)
	}

	// The sandbox is locked down and labelled.
	sb, err := cli.ContainerInspect(ctx, sbName)
	if err != nil {
		t.Fatal(err)
	}
	hc := sb.HostConfig
	if hc.NetworkMode != "none" || hc.Privileged || !hc.ReadonlyRootfs || !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
		t.Errorf("sandbox host config: network %q privileged %v readonly %v secopt %v", hc.NetworkMode, hc.Privileged, hc.ReadonlyRootfs, hc.SecurityOpt)
	}
	if !slices.Contains(hc.CapDrop, "ALL") || hc.Memory <= 0 || hc.PidsLimit == nil || *hc.PidsLimit <= 0 {
		t.Errorf("sandbox limits: capdrop %v memory %d pids %v", hc.CapDrop, hc.Memory, hc.PidsLimit)
	}
	if l := sb.Config.Labels; l[docker.LabelInstance] != spec.ID || l[docker.LabelManaged] != "true" || l[docker.LabelRole] != docker.RoleSandbox || l["capsule.test"] != "drivertest" {
		t.Errorf("sandbox labels = %v", l)
	}
	status, err := readProcStatus(sbPid)
	if err != nil {
		t.Fatal(err)
	}
	if status["Seccomp"] != "2" || status["NoNewPrivs"] != "1" || status["CapEff"] != "0000000000000000" {
		t.Errorf("sandbox PID 1: Seccomp %s NoNewPrivs %s CapEff %s", status["Seccomp"], status["NoNewPrivs"], status["CapEff"])
	}

	// Reboots of the workload keep the namespace (and so the network).
	for _, hard := range []bool{false, true} {
		if err := d.Reboot(ctx, spec.ID, hard); err != nil {
			t.Fatalf("reboot hard=%v: %v", hard, err)
		}
		drivertest.WantPower(t, d, spec.ID, drivers.PowerRunning)
		if got := nsOfPid(t, pidOf(t, ctx, d, docker.ContainerName(spec.ID))); got != before {
			t.Errorf("after reboot hard=%v the workload is in netns %d, want %d", hard, got, before)
		}
	}
	// A crash of the workload does not touch the sandbox either.
	if err := cli.ContainerKill(ctx, docker.ContainerName(spec.ID), "KILL"); err != nil {
		t.Fatal(err)
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerShutdown)
	if p, err := d.Sandbox(ctx, spec.ID); err != nil || netnsInode(t, p) != before {
		t.Errorf("after a workload crash the sandbox namespace changed: %s, %v", p, err)
	}

	// Stop stops both; the next start is a new namespace, which Sandbox
	// hands out before the workload joins it.
	if err := d.Stop(ctx, spec.ID, 0); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if sb, err := cli.ContainerInspect(ctx, sbName); err != nil || sb.State.Running {
		t.Errorf("sandbox after stop: running=%v, %v", sb.State != nil && sb.State.Running, err)
	}
	path2, err := d.Sandbox(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	// A new sandbox process, so a new namespace (nsfs may recycle the
	// old inode number, so the inodes cannot tell).
	if sb2, err := cli.ContainerInspect(ctx, sbName); err != nil || sb2.State.StartedAt == sb.State.StartedAt {
		t.Errorf("the sandbox was not restarted by Sandbox after stop: %v", err)
	}
	after := netnsInode(t, path2)
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if got := nsOfPid(t, pidOf(t, ctx, d, docker.ContainerName(spec.ID))); got != after {
		t.Errorf("after stop/start the workload is in netns %d, want the plumbed %d", got, after)
	}

	// Start after the sandbox was stopped behind the driver's back
	// (dockerd restart) restarts it first.
	if err := cli.ContainerKill(ctx, docker.ContainerName(spec.ID), "KILL"); err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerKill(ctx, sbName, "KILL"); err != nil {
		t.Fatal(err)
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerShutdown)
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatalf("start with the sandbox down: %v", err)
	}
	drivertest.WantPower(t, d, spec.ID, drivers.PowerRunning)
	if a, b := nsOfPid(t, pidOf(t, ctx, d, sbName)), nsOfPid(t, pidOf(t, ctx, d, docker.ContainerName(spec.ID))); a != b {
		t.Errorf("after start with the sandbox down: sandbox netns %d, workload %d", a, b)
	}

	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelInstance+"="+spec.ID))})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Errorf("%d containers left after destroy", len(cs))
	}
}

// TestSandboxLeftoverIsListedAndDestroyed: a sandbox whose workload is
// gone (a create cut short by a crash) is listed as its instance, not as
// a separate one, and Destroy removes it.
func TestSandboxLeftoverIsListedAndDestroyed(t *testing.T) {
	image := testenv.Image(t)
	d := newDriverMode(t, docker.NetworkSandbox)
	ctx := drivertest.Ctx(t)
	spec := drivertest.Spec(image)
	spec.Networked = true
	drivertest.Create(t, d, spec)
	if err := d.Client().ContainerRemove(ctx, docker.ContainerName(spec.ID), container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	_, err := d.Status(ctx, spec.ID)
	drivertest.WantNotFound(t, "Status without the workload", err)
	list, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine []drivers.Status
	for _, st := range list {
		if st.ID == spec.ID {
			mine = append(mine, st)
		}
	}
	if len(mine) != 1 || mine[0].Power != drivers.PowerNoState {
		t.Errorf("leftover sandbox listed as %+v, want one entry with no power state", mine)
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Client().ContainerInspect(ctx, docker.SandboxName(spec.ID)); err == nil {
		t.Error("sandbox left after destroy")
	}
}

// TestFailedCreateLeavesNoSandbox: a workload that cannot be created (its
// name is taken by a foreign container) takes its new sandbox with it.
func TestFailedCreateLeavesNoSandbox(t *testing.T) {
	image := testenv.Image(t)
	d := newDriverMode(t, docker.NetworkSandbox)
	ctx := drivertest.Ctx(t)
	spec := drivertest.Spec(image)
	spec.Networked = true
	cli := d.Client()
	resp, err := cli.ContainerCreate(ctx, &container.Config{Image: image}, &container.HostConfig{NetworkMode: "none"}, nil, nil, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true}) })
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	if err := d.Create(ctx, spec); err == nil {
		t.Fatal("create over a foreign container succeeded")
	}
	if _, err := cli.ContainerInspect(ctx, docker.SandboxName(spec.ID)); err == nil {
		t.Error("the failed create left its sandbox")
	}
	if _, err := d.Sandbox(ctx, spec.ID); !errors.Is(err, drivers.ErrNotFound) {
		t.Errorf("Sandbox of the failed create: %v, want ErrNotFound", err)
	}
}

// TestCreateStartsTheSandboxEarly: with StartSandbox (a build), Create
// returns with the sandbox running and the workload not started, so the
// agent plumbs at once; without it (an import) the sandbox stays stopped.
func TestCreateStartsTheSandboxEarly(t *testing.T) {
	image := testenv.Image(t)
	d := newDriverMode(t, docker.NetworkSandbox)
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	for _, early := range []bool{true, false} {
		spec := drivertest.Spec(image)
		spec.Networked, spec.StartSandbox = true, early
		drivertest.Create(t, d, spec)
		sb, err := cli.ContainerInspect(ctx, docker.SandboxName(spec.ID))
		if err != nil {
			t.Fatal(err)
		}
		if sb.State.Running != early {
			t.Errorf("StartSandbox %v: sandbox running after Create = %v", early, sb.State.Running)
		}
		w, err := cli.ContainerInspect(ctx, docker.ContainerName(spec.ID))
		if err != nil {
			t.Fatal(err)
		}
		if w.State.Running {
			t.Errorf("StartSandbox %v: Create started the workload", early)
		}
		path, err := d.Sandbox(ctx, spec.ID)
		if err != nil {
			t.Fatalf("sandbox: %v", err)
		}
		if want := fmt.Sprintf("/proc/%d/ns/net", pidOf(t, ctx, d, docker.SandboxName(spec.ID))); path != want {
			t.Errorf("StartSandbox %v: Sandbox = %s, want %s", early, path, want)
		}
		if err := d.Destroy(ctx, spec.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.ContainerInspect(ctx, docker.SandboxName(spec.ID)); err == nil {
			t.Errorf("StartSandbox %v: Destroy left the sandbox", early)
		}
	}
}
