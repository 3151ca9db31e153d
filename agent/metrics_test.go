package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/metrics"
	"github.com/capsule-cloud/capsule/metrics/metricstest"
	"github.com/capsule-cloud/capsule/protocol"
)

// A running server's cgroup series carry its UUID, the project the
// conductor placed it for and the host; a stopped one has none; the host
// series count it and report the runtime and OVS health.
func TestMetricsOfServers(t *testing.T) {
	drv := newFakeDriver()
	e := newEnv(t, drv, testConfig())
	e.serveConductor()
	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: "i-m1", ProjectID: "proj-1"}})
	e.start()
	e.build("i-m1", "req-m1", fakeImage)
	if r := e.waitReport("i-m1", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	drv.put(t, "i-m2", drivers.PowerShutdown)

	ovsErr := errors.New("ovsdb-server not running")
	reg := e.agent.MetricsRegistry(func(context.Context) error { return ovsErr })
	h := metrics.Handler(reg)
	asked := e.cond.askedCount()
	got := metricstest.Scrape(t, h)

	srv := `{host="node-t1",instance="i-m1",project="proj-1"}`
	if got["capsule_server_cpu_usage_seconds_total"+srv] <= 0 {
		t.Errorf("cpu series missing: %v", got)
	}
	for name, want := range map[string]float64{
		"capsule_server_memory_limit_bytes": 64 << 20,
		"capsule_server_memory_usage_bytes": 16 << 20,
		"capsule_server_pids":               1,
		"capsule_server_pids_max":           float64(testConfig().PidsLimit),
		"capsule_server_oom_kills_total":    0,
	} {
		if v, ok := got[name+srv]; !ok || v != want {
			t.Errorf("%s%s = %v (present %v), want %v", name, srv, v, ok, want)
		}
	}
	for k := range got {
		if strings.Contains(k, `instance="i-m2"`) {
			t.Errorf("stopped server exported %s", k)
		}
	}
	host := `{host="node-t1"}`
	if got["capsule_host_running_servers"+host] != 1 || got["capsule_host_docker_up"+host] != 1 ||
		got["capsule_host_ovs_up"+host] != 0 || got["capsule_host_pid_max"+host] == 0 {
		t.Errorf("host series: running=%v docker=%v ovs=%v pid_max=%v", got["capsule_host_running_servers"+host],
			got["capsule_host_docker_up"+host], got["capsule_host_ovs_up"+host], got["capsule_host_pid_max"+host])
	}

	// Projects are cached: the next scrape does not ask the conductor.
	asked2 := e.cond.askedCount()
	if asked2 <= asked {
		t.Errorf("the first scrape did not ask the conductor (asked %d then %d)", asked, asked2)
	}
	metricstest.Scrape(t, h)
	if n := e.cond.askedCount(); n != asked2 {
		t.Errorf("second scrape asked the conductor again (%d -> %d)", asked2, n)
	}
}

func (c *conductor) askedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked
}
