package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// withMetricsOn restarts the cloud's all-in-one capsuled with its agent's
// /metrics on a free port (the default port would be shared by concurrent
// test clouds) and returns the endpoint's URL.
func withMetricsOn(t *testing.T, c *cloud) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b, err := os.ReadFile(c.configPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "\nagent:\n", "\nagent:\n  metrics_listen: "+addr+"\n", 1)
	if cfg == string(b) {
		t.Fatal("the cloud's config has no agent section")
	}
	p := c.proc(t, "capsuled")
	p.stop()
	if err := os.WriteFile(c.configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.start(t)
	c.waitReady(t)
	return "http://" + addr + "/metrics"
}

// scrapeLines returns the sample lines of a /metrics scrape, or an error
// while the endpoint does not answer.
func scrapeLines(url string) ([]string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}

// TestMetrics: the agent's /metrics carries a booted server's cgroup
// series labelled with its UUID, its project and its host, and the
// host's own series.
func TestMetrics(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	url := withMetricsOn(t, c)
	ctx := context.Background()
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	images := c.imageIDs(t, "demo", c.demoPass, "demo")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "metrics", ImageRef: images["busybox"], FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)
	got, err := servers.Get(ctx, demo, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if got.TenantID == "" {
		t.Fatal("server has no tenant_id")
	}
	labels := fmt.Sprintf(`{host=%q,instance=%q,project=%q}`, c.host, srv.ID, got.TenantID)
	want := []string{
		"capsule_server_cpu_usage_seconds_total" + labels,
		"capsule_server_memory_usage_bytes" + labels,
		"capsule_server_memory_limit_bytes" + labels,
		"capsule_server_oom_kills_total" + labels,
		"capsule_server_pids" + labels,
		"capsule_server_pids_max" + labels,
		"capsule_server_disk_read_bytes_total" + labels,
		fmt.Sprintf(`capsule_host_docker_up{host=%q} 1`, c.host),
		fmt.Sprintf(`capsule_host_running_servers{host=%q}`, c.host),
		fmt.Sprintf(`capsule_host_pid_max{host=%q}`, c.host),
	}
	var lines []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines, err = scrapeLines(url)
		if err == nil && missing(lines, want) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape %s: err %v, missing %v; got:\n%s", url, err, missing(lines, want), strings.Join(lines, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	// m1.tiny's 128 MiB is the cgroup's limit.
	if limit := "capsule_server_memory_limit_bytes" + labels + " 1.34217728e+08"; missing(lines, []string{limit}) != nil {
		t.Errorf("no %s in:\n%s", limit, strings.Join(lines, "\n"))
	}
}

// missing returns the prefixes of want no line starts with.
func missing(lines, want []string) []string {
	var out []string
	for _, w := range want {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, w) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, w)
		}
	}
	return out
}
