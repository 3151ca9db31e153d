package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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
	drv, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, Logger: testLogger(t)})
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
