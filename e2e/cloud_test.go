// Package e2e runs a whole Capsule cloud (the capsuled binary, in
// all-in-one mode) against the real RabbitMQ, dockerd and registry that
// deploy/test.sh starts, and drives it with real clients: gophercloud and
// the Debian openstack CLI.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// cloud is one running capsuled all-in-one with its own SQLite database,
// ports and compute host name (so its bus queues are its own).
type cloud struct {
	dir        string
	bin        string
	configPath string
	host       string
	identity   int
	compute    int
	image      int
	network    int
	adminPass  string
	demoPass   string
	dockerHost string
	dbDriver   string
	dbDSN      string
	cmd        *exec.Cmd
	logPath    string
	mu         sync.Mutex
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var buildOnce sync.Once
var builtBin string
var buildErr error

// buildCapsuled compiles the binary once per test run.
func buildCapsuled(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "capsule-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "capsuled")
		cmd := exec.Command("go", "build", "-o", builtBin, "../cmd/capsuled")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// cloudOption changes how a test cloud is set up.
type cloudOption func(t *testing.T, c *cloud)

// onPostgres puts the cloud's database on PostgreSQL (a fresh database,
// dropped at cleanup) instead of SQLite, as a multi-host cloud runs.
func onPostgres(t *testing.T, c *cloud) {
	dsn := testenv.PostgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("bad CAPSULE_TEST_POSTGRES_DSN: %v", err)
	}
	name := "capsule_e2e_" + strings.ReplaceAll(c.host, "-", "_")
	if out, err := exec.Command("psql", dsn, "-qc", "CREATE DATABASE "+name).CombinedOutput(); err != nil {
		t.Fatalf("create database: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("psql", dsn, "-qc", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)").Run()
	})
	u.Path = "/" + name
	c.dbDriver, c.dbDSN = "postgres", u.String()
}

// startCloud boots a cloud for the test and tears it down (deleting every
// container it made) at cleanup.
func startCloud(t *testing.T, opts ...cloudOption) *cloud {
	t.Helper()
	amqp := testenv.AMQPURL(t)
	dockerHost := testenv.DockerHost(t)
	img := testenv.Image(t)
	c := &cloud{dir: t.TempDir(), bin: buildCapsuled(t), host: "e2e-" + uuid.NewString()[:8],
		identity: freePort(t), compute: freePort(t), image: freePort(t), network: freePort(t),
		adminPass: "admin-" + uuid.NewString()[:8], demoPass: "demo-" + uuid.NewString()[:8], dockerHost: dockerHost}
	amqp = c.ownVhost(t, amqp)
	c.dbDriver, c.dbDSN = "sqlite", filepath.Join(c.dir, "capsule.db")
	for _, o := range opts {
		o(t, c)
	}
	c.configPath = filepath.Join(c.dir, "capsule.yaml")
	cfg := fmt.Sprintf(`region: RegionOne
database:
  driver: %s
  dsn: %q
bus:
  url: %s
api:
  public_host: 127.0.0.1
  listen: 127.0.0.1
  identity_port: %d
  compute_port: %d
  image_port: %d
  network_port: %d
  portal_port: %d
scheduler:
  service_down_time: 30s
agent:
  host: %s
  docker_host: %s
  heartbeat_interval: 2s
  stop_timeout: 5s
  bridge_mappings: {}
`, c.dbDriver, c.dbDSN, amqp, c.identity, c.compute, c.image, c.network, freePort(t), c.host, dockerHost)
	if err := os.WriteFile(c.configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(c.bin, "-config", c.configPath, "bootstrap", "-admin-password", c.adminPass,
		"-demo-password", c.demoPass, "-image", "busybox="+img).CombinedOutput()
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	c.logPath = filepath.Join(c.dir, "capsuled.log")
	c.start(t)
	t.Cleanup(func() {
		c.stop()
		c.removeContainers(t)
		if t.Failed() {
			if b, err := os.ReadFile(c.logPath); err == nil {
				t.Logf("capsuled log (last 8 KiB):\n%s", tail(string(b), 8192))
			}
		}
	})
	c.waitReady(t)
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ownVhost gives the cloud a RabbitMQ virtual host of its own, as separate
// clouds sharing a broker have: queue names ("conductor", "scheduler")
// would otherwise be shared between the clouds of concurrent tests.
func (c *cloud) ownVhost(t *testing.T, amqpURL string) string {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("bad CAPSULE_TEST_AMQP_URL: %v", err)
	}
	vhost := "capsule-" + c.host
	user := u.User.Username()
	for _, args := range [][]string{{"add_vhost", vhost}, {"set_permissions", "-p", vhost, user, ".*", ".*", ".*"}} {
		if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "delete_vhost", vhost).Run() })
	u.Path = "/" + vhost
	return u.String()
}

// start runs capsuled all; it can be called again after stop.
func (c *cloud) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(c.bin, "-config", c.configPath, "-log-level", "debug", "all")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.cmd = cmd
	c.mu.Unlock()
}

func (c *cloud) stop() {
	c.mu.Lock()
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// kill stops capsuled abruptly (SIGKILL), as a crash would.
func (c *cloud) kill() {
	c.mu.Lock()
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

func (c *cloud) docker(args ...string) (string, error) {
	out, err := exec.Command("docker", append([]string{"-H", c.dockerHost}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// containersOfCloud lists the containers of this cloud's instances.
func (c *cloud) removeContainers(t *testing.T) {
	ids, _ := c.docker("ps", "-aq", "--filter", "label=capsule.host="+c.host)
	for _, id := range strings.Fields(ids) {
		_, _ = c.docker("rm", "-f", id)
	}
}

func (c *cloud) authURL() string { return fmt.Sprintf("http://127.0.0.1:%d/v3", c.identity) }

func (c *cloud) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ok := c.computeUp(); ok {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("cloud did not become ready within 60s (compute service %s never reported up)", c.host)
}

func (c *cloud) computeUp() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pc, err := c.provider(ctx, "admin", c.adminPass, "admin")
	if err != nil {
		return false
	}
	cc, err := openstack.NewComputeV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		return false
	}
	var body struct {
		Services []struct {
			Host, State string
		} `json:"services"`
	}
	if _, err := cc.Get(ctx, cc.ServiceURL("os-services"), &body, nil); err != nil {
		return false
	}
	for _, s := range body.Services {
		if s.Host == c.host && s.State == "up" {
			return true
		}
	}
	return false
}

func (c *cloud) provider(ctx context.Context, user, pass, project string) (*gophercloud.ProviderClient, error) {
	return openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: c.authURL(), Username: user, Password: pass, DomainName: "Default", TenantName: project,
	})
}

func (c *cloud) computeClient(t *testing.T, user, pass, project string) *gophercloud.ServiceClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := c.provider(ctx, user, pass, project)
	if err != nil {
		t.Fatalf("authenticate %s: %v", user, err)
	}
	cc, err := openstack.NewComputeV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// env returns OS_* variables for the openstack CLI.
func (c *cloud) env(user, pass, project string) []string {
	return append(os.Environ(), "OS_AUTH_URL="+c.authURL(), "OS_USERNAME="+user, "OS_PASSWORD="+pass,
		"OS_PROJECT_NAME="+project, "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default",
		"OS_IDENTITY_API_VERSION=3", "OS_REGION_NAME=RegionOne", "OS_INTERFACE=public")
}
