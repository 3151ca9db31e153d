package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
)

// TestAgentWithDocker drives a real container through the agent: build
// (with the configured pid limit and the project label on the container),
// console output, every lifecycle action, a reconcile, and delete.
func newDockerEnv(t *testing.T, ctx context.Context) (*env, *docker.Driver, string) {
	t.Helper()
	host := testenv.DockerHost(t)
	drv, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, Logger: testLogger(t),
		SandboxImage: testenv.Image(t), NetworkMode: testenv.NetworkMode()})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { drv.Close() })
	// The Docker client negotiates its API version lazily on the first
	// request, racily when the first requests are concurrent (as the
	// agent's heartbeat and reconcile are). Settle it up front until the
	// driver does so in New.
	drv.Client().NegotiateAPIVersion(ctx)
	id := "agtest-" + uuid.NewString()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := drv.Destroy(cctx, id); err != nil {
			t.Errorf("cleanup: destroy %s: %v", id, err)
		}
	})
	cfg := testConfig()
	cfg.StopTimeout = 5 * time.Second
	e := newEnv(t, drv, cfg)
	e.serveConductor()
	e.start()
	return e, drv, id
}

func TestAgentWithDocker(t *testing.T) {
	image := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, drv, id := newDockerEnv(t, ctx)
	cfg := e.cfg

	e.build(id, "req-d1", image)
	r := e.waitReport(id, 1, 2*time.Minute)
	if !r.OK || r.PowerState != int(drivers.PowerRunning) || r.Event != EventBuild {
		t.Fatalf("build report = %+v", r)
	}
	c, err := drv.Client().ContainerInspect(ctx, docker.ContainerName(id))
	if err != nil {
		t.Fatal(err)
	}
	if c.HostConfig.PidsLimit == nil || *c.HostConfig.PidsLimit != cfg.PidsLimit {
		t.Errorf("container pids limit = %v, want %d", c.HostConfig.PidsLimit, cfg.PidsLimit)
	}
	if c.Config.Labels[LabelProject] != "proj-1" || c.Config.Labels[LabelHost] != testHost {
		t.Errorf("container labels = %v", c.Config.Labels)
	}
	if !c.State.Running {
		t.Errorf("container state = %+v, want running", c.State)
	}

	// The base image's init prints its boot lines shortly after start.
	waitFor(t, 30*time.Second, "boot lines on the console", func() bool {
		out, err := e.agent.consoleOutput(ctx, protocol.ConsoleOutputRequest{InstanceID: id, Lines: -1})
		return err == nil && strings.Count(out.Output, "\n") >= 3
	})

	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: id}, VMState: lifecycle.Active})
	if err := e.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the power sync", func() bool { return len(e.cond.powerSyncs()) >= 2 })
	ps := e.cond.powerSyncs()[1]
	if ps.States[id] != int(drivers.PowerRunning) {
		t.Errorf("power sync = %+v, want %s running", ps, id)
	}
	for _, o := range ps.Orphans { // other tests share the daemon: only ours matter
		if o == id {
			t.Errorf("the expected instance is reported as an orphan")
		}
	}

	steps := []struct {
		act   lifecycle.Action
		power drivers.PowerState
	}{
		{lifecycle.ActStop, drivers.PowerShutdown},
		{lifecycle.ActStart, drivers.PowerRunning},
		{lifecycle.ActReboot, drivers.PowerRunning},
		{lifecycle.ActRebootHard, drivers.PowerRunning},
		{lifecycle.ActPause, drivers.PowerPaused},
		{lifecycle.ActUnpause, drivers.PowerRunning},
		{lifecycle.ActDelete, drivers.PowerNoState},
	}
	for i, s := range steps {
		e.action(id, "req-da", s.act)
		r := e.waitReport(id, i+2, time.Minute)
		if !r.OK || r.Action != s.act || r.PowerState != int(s.power) {
			t.Fatalf("%s: report = %+v, want ok with power %d", s.act, r, s.power)
		}
		st, err := drv.Status(ctx, id)
		if s.act == lifecycle.ActDelete {
			if err == nil {
				t.Fatalf("container still there after delete: %+v", st)
			}
			continue
		}
		if err != nil || st.Power != s.power {
			t.Fatalf("%s: docker status = %+v, %v; want power %d", s.act, st, err, s.power)
		}
	}
}

// TestAgentWithDockerBuildFailure: an image the registry does not have
// fails the build, which is reported with Docker's reason and leaves no
// container behind.
func TestAgentWithDockerBuildFailure(t *testing.T) {
	registry := testenv.Registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, drv, id := newDockerEnv(t, ctx)
	e.build(id, "req-f1", registry+"/capsule/agtest-missing-"+uuid.NewString()[:8]+":latest")
	r := e.waitReport(id, 1, time.Minute)
	if r.OK || r.Error == "" || r.PowerState != 0 {
		t.Fatalf("report = %+v, want a failure with a reason", r)
	}
	if st, err := drv.Status(ctx, id); !errors.Is(err, drivers.ErrNotFound) {
		t.Errorf("after the failed build: status %+v, err %v; want no container", st, err)
	}
}

// nsPlumber is a Plumber for the docker tests: it plugs nothing but
// checks, at each Plug, that the namespace exists and that the workload
// does not run yet (or runs in it), and records its identity.
type nsPlumber struct {
	drv *docker.Driver

	mu    sync.Mutex
	plugs []uint64 // netns inode of each Plug
	bad   []string
}

func (p *nsPlumber) Plug(ctx context.Context, id, netns string, nics []protocol.NIC) error {
	fi, err := os.Stat(netns)
	if err != nil {
		return fmt.Errorf("netns %s: %w", netns, err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	// In network mode netns a build plugs while the container is being
	// created: it may not exist yet.
	c, err := p.drv.Client().ContainerInspect(ctx, docker.ContainerName(id))
	if err != nil && !cerrdefs.IsNotFound(err) {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && c.State.Running {
		if w := nsInode(c.State.Pid); w != ino {
			p.bad = append(p.bad, fmt.Sprintf("plug into netns %d while the workload runs in %d", ino, w))
		}
	}
	p.plugs = append(p.plugs, ino)
	return nil
}

func (p *nsPlumber) Unplug(context.Context, string, []protocol.NIC) error { return nil }
func (p *nsPlumber) UnplugInstance(context.Context, string) error         { return nil }
func (p *nsPlumber) RemoveOrphans(context.Context, func(string) bool) ([]string, error) {
	return nil, nil
}

func (p *nsPlumber) last() (uint64, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.plugs) == 0 {
		return 0, 0
	}
	return p.plugs[len(p.plugs)-1], len(p.plugs)
}

func nsInode(pid int) uint64 {
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestAgentWithDockerPlumbsTheSandbox: a build with NICs plumbs the
// sandbox's namespace before the workload starts and the workload runs in
// exactly that namespace, with the NICs' name servers; after a stop the
// start plumbs the new namespace first, and reboots keep it.
func TestAgentWithDockerPlumbsTheSandbox(t *testing.T) {
	image := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	host := testenv.DockerHost(t)
	drv, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, Logger: testLogger(t), SandboxImage: image, NetworkMode: testenv.NetworkMode()})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { drv.Close() })
	id := "agtest-" + uuid.NewString()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := drv.Destroy(cctx, id); err != nil {
			t.Errorf("cleanup: destroy %s: %v", id, err)
		}
	})
	p := &nsPlumber{drv: drv}
	cfg := testConfig()
	cfg.StopTimeout = 5 * time.Second
	e := newEnv(t, drv, cfg, WithPlumber(p))
	e.serveConductor()
	e.start()

	workloadNS := func() uint64 {
		c, err := drv.Client().ContainerInspect(ctx, docker.ContainerName(id))
		if err != nil || !c.State.Running {
			t.Fatalf("workload not running: %v", err)
		}
		return nsInode(c.State.Pid)
	}

	spec := netSpec(id)
	spec.ImageRef = image
	e.publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-p1", Attempt: 1, Spec: spec})
	if r := e.waitReport(id, 1, 2*time.Minute); !r.OK {
		t.Fatalf("build report = %+v", r)
	}
	plugged, n := p.last()
	if n != 1 {
		t.Fatalf("%d plugs during the build, want 1", n)
	}
	if w := workloadNS(); w != plugged {
		t.Errorf("workload runs in netns %d, the plumbed one is %d", w, plugged)
	}
	code, out, err := execInContainer(ctx, drv, docker.ContainerName(id), "cat", "/etc/resolv.conf")
	if err != nil || code != 0 || !strings.Contains(out, "nameserver 10.0.0.53") || !strings.Contains(out, "nameserver 10.1.0.53") {
		t.Errorf("resolv.conf = %q (%d, %v), want the NICs' name servers", out, code, err)
	}

	steps := []lifecycle.Action{lifecycle.ActReboot, lifecycle.ActRebootHard, lifecycle.ActStop, lifecycle.ActStart}
	for i, act := range steps {
		e.action(id, "req-p2", act)
		if r := e.waitReport(id, i+2, time.Minute); !r.OK {
			t.Fatalf("%s report = %+v", act, r)
		}
		if act == lifecycle.ActStop {
			continue
		}
		ns, _ := p.last()
		if w := workloadNS(); w != ns {
			t.Errorf("after %s the workload runs in netns %d, the last plumbed is %d", act, w, ns)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.bad) > 0 {
		t.Errorf("plumbing mistakes: %v", p.bad)
	}
}

// execInContainer runs cmd in a container and returns its exit code and
// output.
func execInContainer(ctx context.Context, drv *docker.Driver, name string, cmd ...string) (int, string, error) {
	cli := drv.Client()
	ex, err := cli.ContainerExecCreate(ctx, name, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, "", err
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, "", err
	}
	defer att.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, att.Reader); err != nil {
		return 0, "", err
	}
	ins, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return 0, "", err
	}
	return ins.ExitCode, buf.String(), nil
}
