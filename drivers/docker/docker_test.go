package docker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	dimage "github.com/docker/docker/api/types/image"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

func newDriver(t *testing.T) *docker.Driver {
	t.Helper()
	return newDriverMode(t, testenv.NetworkMode())
}

// newDriverMode is newDriver in network mode mode ("" the default).
func newDriverMode(t *testing.T, mode string) *docker.Driver {
	t.Helper()
	host := testenv.DockerHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := docker.New(ctx, docker.Options{
		Host:         host,
		StopTimeout:  5 * time.Second,
		SandboxImage: testenv.Image(t),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		NetworkMode:  mode,
	})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	image := testenv.Image(t)
	drivertest.Run(t, func(t *testing.T) drivers.Driver { return newDriver(t) }, image,
		drivertest.WithFileReader(func(t *testing.T, d drivers.Driver, id, path string) string {
			return readContainerFile(t, d.(*docker.Driver), id, path).body
		}))
}

// TestLimitsAndSecurity checks what the kernel enforces on a running
// instance, not just what was asked of Docker.
func TestLimitsAndSecurity(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	spec.VCPUs = 2
	spec.MemoryMB = 96
	spec.PidsLimit = 77
	spec.Labels = map[string]string{"capsule.project": "p1", docker.LabelInstance: "spoofed"}
	drivertest.Boot(t, d, spec)

	ctx := drivertest.Ctx(t)
	c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(spec.ID))
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	hc := c.HostConfig
	if hc.Privileged {
		t.Error("container is privileged")
	}
	for _, cp := range []string{"MKNOD", "NET_ADMIN", "SYS_ADMIN", "SYSLOG", "AUDIT_WRITE"} {
		// Docker normalises names to CAP_*.
		if !slices.Contains(hc.CapDrop, cp) && !slices.Contains(hc.CapDrop, "CAP_"+cp) {
			t.Errorf("CapDrop %v lacks %s", hc.CapDrop, cp)
		}
	}
	if len(hc.CapAdd) != 0 {
		t.Errorf("CapAdd = %v, want none", hc.CapAdd)
	}
	for _, o := range hc.SecurityOpt {
		if strings.Contains(o, "unconfined") {
			t.Errorf("security option %q disables confinement", o)
		}
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
		t.Errorf("SecurityOpt %v lacks no-new-privileges", hc.SecurityOpt)
	}
	// A server without NICs is one container with no network at all
	// (sandboxes are for networked servers: sandbox_test.go).
	if hc.NetworkMode != "none" {
		t.Errorf("NetworkMode = %q, want none", hc.NetworkMode)
	}
	if hc.RestartPolicy.Name != "no" {
		t.Errorf("RestartPolicy = %q, want no", hc.RestartPolicy.Name)
	}
	if hc.LogConfig.Type != "json-file" || hc.LogConfig.Config["max-size"] == "" {
		t.Errorf("LogConfig = %+v, want json-file with max-size", hc.LogConfig)
	}
	if hc.Init != nil && *hc.Init {
		t.Error("docker init enabled; the image has its own PID 1")
	}
	if hc.CPUShares != 2048 {
		t.Errorf("CPUShares = %d, want 2048", hc.CPUShares)
	}
	if got := c.Config.Labels; got[docker.LabelInstance] != spec.ID || got[docker.LabelManaged] != "true" || got["capsule.project"] != "p1" {
		t.Errorf("labels = %v", got)
	}
	if c.Name != "/capsule-"+spec.ID {
		t.Errorf("container name = %q", c.Name)
	}

	// The seccomp profile is really in force: the process's Seccomp mode
	// is 2 (filter).
	if c.State.Pid <= 0 {
		t.Fatalf("no pid for running container: %+v", c.State)
	}
	lim, err := cgroup.LimitsOf(c.State.Pid)
	if err != nil {
		t.Fatalf("cgroup limits of pid %d: %v", c.State.Pid, err)
	}
	t.Logf("cgroup limits: %+v", lim)
	if lim.CPUPeriodUS != 100000 || lim.CPUQuotaUS != 2*100000 {
		t.Errorf("cpu quota/period = %d/%d, want 200000/100000", lim.CPUQuotaUS, lim.CPUPeriodUS)
	}
	if lim.MemoryBytes != 96<<20 {
		t.Errorf("memory limit = %d, want %d", lim.MemoryBytes, 96<<20)
	}
	if lim.PidsMax != 77 {
		t.Errorf("pids.max = %d, want 77", lim.PidsMax)
	}
	if lim.CgroupVersion == 1 && lim.CPUShares != 2048 {
		t.Errorf("cpu.shares = %d, want 2048", lim.CPUShares)
	}
	if lim.Cpuset == "" || lim.Disk != nil {
		t.Errorf("cpuset %q, disk throttles %+v: want a cpuset and no throttle", lim.Cpuset, lim.Disk)
	}
	status, err := readProcStatus(c.State.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if status["Seccomp"] != "2" {
		t.Errorf("PID 1 Seccomp mode = %q, want 2 (filter)", status["Seccomp"])
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("PID 1 NoNewPrivs = %q, want 1", status["NoNewPrivs"])
	}
	// CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21), CAP_MKNOD (27) must be absent
	// from the bounding set (NET_RAW, 13, is kept on purpose: see CapDrop).
	bnd, err := parseHex(status["CapBnd"])
	if err != nil {
		t.Fatalf("CapBnd %q: %v", status["CapBnd"], err)
	}
	for _, bit := range []uint{12, 21, 27} {
		if bnd&(1<<bit) != 0 {
			t.Errorf("capability %d present in bounding set %x", bit, bnd)
		}
	}
}

// TestTenantCannotBuildNetworkDevices: what a tenant who installs Docker
// in their server would try (the lesson: a bridge made inside a container
// crashed the host) must fail, whether directly or through a user
// namespace that would give them capabilities of their own.
func TestTenantCannotBuildNetworkDevices(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	for _, cmd := range [][]string{
		{"ip", "link", "add", "b0", "type", "bridge"},
		{"brctl", "addbr", "b1"},
		{"unshare", "-n", "true"},
		{"unshare", "-U", "-r", "-n", "ip", "link", "add", "b2", "type", "bridge"},
		{"mknod", "/tmp/mem", "c", "1", "1"},
	} {
		code, out, err := execIn(ctx, d.Client(), docker.ContainerName(spec.ID), cmd...)
		if err != nil {
			t.Fatalf("exec %v: %v", cmd, err)
		}
		if code == 0 {
			t.Errorf("%v succeeded inside the container: %s", cmd, out)
		}
	}
	// The limits apply inside too: more tasks than PidsLimit cannot start.
	code, out, err := execIn(ctx, d.Client(), docker.ContainerName(spec.ID), "sh", "-c",
		"i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done 2>&1 | head -1; wait")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "can't fork") && !strings.Contains(out, "Resource temporarily unavailable") {
		t.Errorf("forking 200 tasks under pids limit %d: exit %d, output %q", spec.PidsLimit, code, out)
	}
}

func TestRefusesUnlimitedSpecs(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	for name, mut := range map[string]func(*drivers.Spec){
		"no vcpus":  func(s *drivers.Spec) { s.VCPUs = 0 },
		"no memory": func(s *drivers.Spec) { s.MemoryMB = 0 },
		"no pids":   func(s *drivers.Spec) { s.PidsLimit = -1 },
	} {
		spec := drivertest.Spec(image)
		mut(&spec)
		t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
		if err := d.Create(drivertest.Ctx(t), spec); !errors.Is(err, drivers.ErrInvalidState) {
			t.Errorf("%s: create = %v, want ErrInvalidState", name, err)
		}
	}
}

func TestPullFailureIsReported(t *testing.T) {
	registry := testenv.Registry(t)
	d := newDriver(t)
	spec := drivertest.Spec(registry + "/capsule/does-not-exist-" + drivertest.Spec("").ID[:8] + ":latest")
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	if err := d.Create(drivertest.Ctx(t), spec); err == nil {
		t.Fatal("create with a missing image succeeded")
	}
	_, err := d.Status(drivertest.Ctx(t), spec.ID)
	drivertest.WantNotFound(t, "Status after failed pull", err)
}

// TestListReportsCreated: a created, never started instance is listed as
// shut down.
func TestListReportsCreated(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	drivertest.Create(t, d, spec)
	list, err := d.List(drivertest.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range list {
		if st.ID == spec.ID {
			found = true
			if !strings.HasPrefix(st.Description, "created") || st.Power != drivers.PowerShutdown {
				t.Errorf("created instance status = %+v", st)
			}
		}
	}
	if !found {
		t.Errorf("list lacks %s", spec.ID)
	}
}

// TestCrashedInitIsCrashed: a PID 1 that exits on its own with an error is
// a crash, not a shutdown. The container is made by hand (the base image's
// init cannot be made to fail) with the labels the driver uses, as an
// orphan left by an older agent would be.
func TestCrashedInitIsCrashed(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	drivertest.Create(t, d, spec) // pulls the image; replaced below
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	name := docker.ContainerName(spec.ID)
	if err := cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	_, err := cli.ContainerCreate(ctx, &container.Config{
		Image:  image,
		Cmd:    []string{"sh", "-c", "echo boom; exit 3"},
		Labels: map[string]string{docker.LabelInstance: spec.ID, docker.LabelManaged: "true"},
	}, &container.HostConfig{NetworkMode: "none"}, nil, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	st := drivertest.WantPower(t, d, spec.ID, drivers.PowerCrashed)
	if st.ExitCode != 3 || !strings.Contains(st.Description, "exited (3)") {
		t.Errorf("crashed status = %+v", st)
	}
	out, err := d.ConsoleOutput(ctx, spec.ID, -1)
	if err != nil || out != "boom\n" {
		t.Errorf("console = %q, %v", out, err)
	}
	list, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list, func(s drivers.Status) bool { return s.ID == spec.ID && s.Power == drivers.PowerCrashed }) {
		t.Errorf("list %+v lacks the crashed instance", list)
	}
}

// TestForeignContainerIsNotAnInstance: a container with our name but
// without our label is not reported, not destroyed and not adopted.
func TestForeignContainerIsNotAnInstance(t *testing.T) {
	image := testenv.Image(t)
	d := newDriver(t)
	spec := drivertest.Spec(image)
	drivertest.Create(t, d, spec) // pulls the image; replaced below
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	name := docker.ContainerName(spec.ID)
	if err := cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.ContainerCreate(ctx, &container.Config{Image: image}, &container.HostConfig{NetworkMode: "none"}, nil, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true}) })
	_, err = d.Status(ctx, spec.ID)
	drivertest.WantNotFound(t, "Status of a foreign container", err)
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := cli.ContainerInspect(ctx, resp.ID); err != nil {
		t.Errorf("foreign container was removed: %v", err)
	}
	if err := d.Create(ctx, spec); err == nil {
		t.Error("create adopted a foreign container")
	}
}

// TestPullsMissingImage: an image absent from the daemon is pulled. The
// base image is referenced through another registry name (localhost
// instead of 127.0.0.1) so the shared image is not touched; removing the
// new tag afterwards only untags, the layers are shared.
func TestPullsMissingImage(t *testing.T) {
	image := testenv.Image(t)
	ref, ok := strings.CutPrefix(image, "127.0.0.1:")
	if !ok {
		t.Skipf("base image %s is not in a 127.0.0.1 registry", image)
	}
	ref = "localhost:" + ref
	d := newDriver(t)
	ctx := drivertest.Ctx(t)
	cli := d.Client()
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		t.Skipf("%s already present; cannot test the pull", ref)
	}
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), ref, dimage.RemoveOptions{}) })
	spec := drivertest.Spec(ref)
	drivertest.Boot(t, d, spec)
	if _, err := cli.ImageInspect(ctx, ref); err != nil {
		t.Fatalf("image %s not present after create: %v", ref, err)
	}
}
