// Package e2e runs a whole Capsule cloud (the capsuled binary, in
// all-in-one mode or as a control plane plus one agent per simulated
// compute host) against the real RabbitMQ, dockerd and registry that
// deploy/test.sh starts, and drives it with real clients: gophercloud and
// the Debian openstack CLI.
//
// Tests run side by side (t.Parallel; go test -parallel sets how many):
// each test's cloud has its own database, RabbitMQ vhost, ports, compute
// host names (its containers are labelled with them), OVS bridges and
// registry tags, and a test checks only what its own cloud made. A test
// stays serial when it measures a time or a rate, or when it disrupts
// something clouds share (RabbitMQ, a dockerd, the test registry,
// PostgreSQL, Open vSwitch); go test runs the serial tests first, before
// any parallel one starts.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/netnsfile"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/ovs/ovstest"
	"github.com/capsule-cloud/capsule/vif"
)

// cloud is one running Capsule cloud with its own database, RabbitMQ
// vhost, ports and compute host names (so its bus queues are its own). By
// default it is one `capsuled all` process on one host; twoHosts makes it a
// control-plane process plus one agent process per simulated compute host.
type cloud struct {
	dir        string
	bin        string
	configPath string // the control plane's (or the all-in-one's) config
	host       string // the cloud's name; the compute host of a one-process cloud
	identity   int
	compute    int
	image      int
	network    int
	adminPass  string
	demoPass   string
	dockerHost string // the first compute host's dockerd
	dbDriver   string
	dbDSN      string
	amqp       string // the bus URL: a vhost of its own on the shared broker unless an option set one
	vhost      string // that vhost ("" when an option set the URL)

	// Set by options before the cloud starts.
	twoHosts    bool     // control plane + two agents on bridges joined by a trunk
	ownAgent    bool     // a one-host cloud's agent runs in a process of its own
	bridge      bool     // a one-process cloud maps physnet1 to a real bridge
	agentDriver string   // agent.driver ("" = docker)
	extraConfig string   // YAML appended to the control plane's config
	registry    string   // the registry section of every config ("" = the default, the test registry)
	baseImage   string   // the base image's registry reference (the servers' image, the sandboxes')
	procEnv     []string // extra environment of the capsuled processes (KEY=value)
	replicas    int      // >0: each control-plane role in this many processes of its own
	agentExtra  string   // YAML appended to every agent: section
	queueType   string   // bus.queue_type of every process ("" = the default)

	// apis are the API processes' identity ports, in order (the one of
	// c.identity first).
	apis []int

	hosts []*computeHost // the compute hosts, in order
	procs []*proc        // the capsuled processes, control plane first
	trunk string         // the trunk bridge of a two-host cloud
}

// computeHost is one compute host of the cloud: its agent's host name,
// dockerd and the OVS bridge physnet1 maps to ("" = no mapping).
type computeHost struct {
	name       string
	dockerHost string
	bridge     string
}

// proc is one capsuled process: the roles it runs, its config and log.
type proc struct {
	bin    string
	name   string
	roles  string
	config string
	log    string
	env    []string
	mu     sync.Mutex
	cmd    *exec.Cmd
}

// handedOut is every port freePort has returned in this test process. A
// port is free when freePort checks it but bound only later, by the
// process the test starts: without this record two tests running side by
// side could be handed the same port in between.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePort returns a port free on 127.0.0.1 for a process the test starts
// next, never one it returned before. It is picked below the kernel's
// ephemeral range (32768 up), not with :0: an ephemeral port handed out
// and closed here can be taken by any outbound connection (to RabbitMQ,
// dockerd, the registry) before the process binds it, which failed a run
// with "address already in use".
func freePort(t *testing.T) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 200 {
		port := 20000 + mathrand.IntN(12000)
		if handedOut.ports[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		handedOut.ports[port] = true
		return port
	}
	t.Fatal("no free port in 20000-31999")
	return 0
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

// twoHosts makes the cloud multi-host, as deploy/allinone.sh --hosts 2
// does (docs/multihost.md): one process runs api,scheduler,conductor and
// two agent processes play compute hosts <cloud>-a and <cloud>-b, each
// with its own dockerd (CAPSULE_TEST_DOCKER_HOST_A/_B) and its own OVS
// bridge for physnet1; the two bridges are joined through a trunk bridge
// by patch ports that carry every VLAN (the data-centre switch).
func twoHosts(t *testing.T, c *cloud) { c.twoHosts = true }

// withBridge gives a one-process cloud's agent a real OVS bridge for
// physnet1, so servers get NICs.
func withBridge(t *testing.T, c *cloud) { c.bridge = true }

// fakeAgents runs the agents with the fake driver (no containers, no
// plumbing): the control plane's behaviour at a scale 2 cores cannot run.
func fakeAgents(t *testing.T, c *cloud) { c.agentDriver = "fake" }

// withQuota raises the default project quotas to n instances.
func withQuota(n int) cloudOption {
	return func(t *testing.T, c *cloud) {
		c.extraConfig += fmt.Sprintf("quota:\n  instances: %d\n  cores: %d\n  ram_mb: %d\n", n, 4*n, 1024*n)
	}
}

// startCloud boots a cloud for the test and tears it down (deleting every
// container it made, its bridges) at cleanup.
func startCloud(t *testing.T, opts ...cloudOption) *cloud {
	t.Helper()
	dockerHost := testenv.DockerHost(t)
	img := testenv.Image(t)
	c := &cloud{dir: t.TempDir(), bin: buildCapsuled(t), host: "e2e-" + uuid.NewString()[:8],
		identity: freePort(t), compute: freePort(t), image: freePort(t), network: freePort(t),
		adminPass: "admin-" + uuid.NewString()[:8], demoPass: "demo-" + uuid.NewString()[:8], dockerHost: dockerHost,
		baseImage: img}
	c.dbDriver, c.dbDSN = "sqlite", filepath.Join(c.dir, "capsule.db")
	for _, o := range opts {
		o(t, c)
	}
	if c.amqp == "" { // not a broker of the test's own (startRabbitCluster)
		c.amqp = c.ownVhost(t, testenv.AMQPURL(t))
	}
	suffix := strings.TrimPrefix(c.host, "e2e-") // 8 hex digits
	if c.twoHosts {
		c.hosts = []*computeHost{
			{name: c.host + "-a", dockerHost: testenv.Env(t, "CAPSULE_TEST_DOCKER_HOST_A", "the dockerd of test host A"), bridge: "bt" + suffix + "a"},
			{name: c.host + "-b", dockerHost: testenv.Env(t, "CAPSULE_TEST_DOCKER_HOST_B", "the dockerd of test host B"), bridge: "bt" + suffix + "b"},
		}
		c.trunk = "bt" + suffix + "t"
		c.dockerHost = c.hosts[0].dockerHost
	} else {
		h := &computeHost{name: c.host, dockerHost: c.dockerHost}
		if c.bridge {
			h.bridge = "bt" + suffix + "s"
		}
		c.hosts = []*computeHost{h}
	}
	c.makeBridges(t)

	c.configPath = filepath.Join(c.dir, "capsule.yaml")
	// Credential blobs (/v3/credentials, OS-EC2) are encrypted at rest
	// with a key of the cloud's own.
	credKey := make([]byte, 32)
	if _, err := rand.Read(credKey); err != nil {
		t.Fatal(err)
	}
	credKeyPath := filepath.Join(c.dir, "credential.key")
	if err := os.WriteFile(credKeyPath, []byte(base64.StdEncoding.EncodeToString(credKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// render is the control plane's config with the API on the given
	// identity, compute, image, network and portal ports.
	render := func(identity, compute, image, network, portal int) string {
		cfg := fmt.Sprintf(`region: RegionOne
database:
  driver: %s
  dsn: %q
bus:
  url: %s
%sapi:
  public_host: 127.0.0.1
  listen: 127.0.0.1
  identity_port: %d
  compute_port: %d
  image_port: %d
  network_port: %d
  portal_port: %d
  volume_port: %d
  password_hash_rounds: 4 # bcrypt's cheapest cost: a test cloud's logins and users
  credential_key_file: %s
scheduler:
  service_down_time: 30s
`, c.dbDriver, c.dbDSN, c.amqp, c.queueTypeLine(), identity, compute, image, network, portal, freePort(t), credKeyPath)
		if !c.twoHosts && !c.ownAgent {
			cfg += c.agentSection(c.hosts[0])
		}
		return cfg + c.registry + c.extraConfig
	}
	c.apis = []int{c.identity}
	if err := os.WriteFile(c.configPath, []byte(render(c.identity, c.compute, c.image, c.network, freePort(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	// The passwords go in the environment, as deploy's bootstrap passes
	// them (a command line is visible to every user of the host in ps).
	boot := exec.Command(c.bin, "-config", c.configPath, "bootstrap", "-image", "busybox="+img)
	boot.Env = append(os.Environ(), "CAPSULE_ADMIN_PASSWORD="+c.adminPass, "CAPSULE_DEMO_PASSWORD="+c.demoPass)
	out, err := boot.CombinedOutput()
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	if c.twoHosts || c.ownAgent {
		if c.replicas > 0 {
			c.procs = append(c.procs, c.controlReplicas(t, render)...)
		} else {
			c.procs = append(c.procs, c.newProc("control", "api,scheduler,conductor", c.configPath))
		}
		for _, h := range c.hosts {
			// An agent's config has no database section: agents hold no
			// database credentials, they talk to the conductor.
			p := filepath.Join(c.dir, "agent-"+h.name+".yaml")
			acfg := fmt.Sprintf("region: RegionOne\nbus:\n  url: %s\n%s", c.amqp, c.queueTypeLine()) + c.agentSection(h) + c.registry
			if err := os.WriteFile(p, []byte(acfg), 0o600); err != nil {
				t.Fatal(err)
			}
			c.procs = append(c.procs, c.newProc("agent-"+h.name, "agent", p))
		}
	} else {
		c.procs = append(c.procs, c.newProc("capsuled", "all", c.configPath))
	}
	// Registered before the start, so a start that fails half-way stops
	// what did start.
	t.Cleanup(func() {
		c.stop()
		c.removeContainers(t)
		c.removeNetns(t)
		c.unmountVolumes(t)
		if t.Failed() {
			kept := c.keepLogs(t)
			for _, p := range c.procs {
				if b, err := os.ReadFile(p.log); err == nil {
					path := p.log
					if kept != "" {
						path = filepath.Join(kept, filepath.Base(p.log))
					}
					t.Logf("%s log (%s, last 8 KiB):\n%s", p.name, path, tail(string(b), 8192))
				}
			}
		}
	})
	c.start(t)
	c.waitReady(t)
	return c
}

// keepLogs copies the processes' logs of a failed test out of its
// temporary directory (removed when the test ends) into
// $CAPSULE_E2E_LOG_DIR (default <tmp>/capsule-e2e-logs)/<test>-<cloud>/
// and returns that directory ("" when nothing could be kept).
func (c *cloud) keepLogs(t *testing.T) string {
	root := os.Getenv("CAPSULE_E2E_LOG_DIR")
	if root == "" {
		root = filepath.Join(os.TempDir(), "capsule-e2e-logs")
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-"+strings.TrimPrefix(c.host, "e2e-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keep logs: %v", err)
		return ""
	}
	for _, p := range c.procs {
		if b, err := os.ReadFile(p.log); err == nil {
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(p.log)), b, 0o644); err != nil {
				t.Logf("keep logs: %v", err)
			}
		}
	}
	t.Logf("full logs of the cloud's processes kept in %s", dir)
	return dir
}

// unmountVolumes takes down the host mounts the cloud's agents left
// under /run/capsule/volumes/<host> (a volume still attached, or given
// back available, when the test ended: the agent's reconcile would have
// unmounted the latter later). Their image files go with the test's
// directory; the mounts and loop devices would stay on the machine.
func (c *cloud) unmountVolumes(t *testing.T) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	for _, h := range c.hosts {
		dir := "/run/capsule/volumes/" + h.name
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				if out, err := exec.Command("umount", "-l", f[1]).CombinedOutput(); err != nil {
					t.Logf("cleanup: umount %s: %v %s", f[1], err, out)
					continue
				}
				_ = os.Remove(f[1]) // the empty mount point
			}
		}
		_ = os.Remove(dir)
	}
}

// agentSection is the agent: part of a config for compute host h.
func (c *cloud) agentSection(h *computeHost) string {
	mappings := "{}"
	if h.bridge != "" {
		mappings = "{physnet1: " + h.bridge + "}"
	}
	driver := c.agentDriver
	if driver == "" {
		driver = "docker"
	}
	return fmt.Sprintf(`agent:
  host: %s
  docker_host: %s
  driver: %s
  heartbeat_interval: 2s
  stop_timeout: 5s
  bridge_mappings: %s
  sandbox_image: %s
  volume_dir: %s
  shared_volume_dir: %s
`, h.name, h.dockerHost, driver, mappings, c.baseImage,
		filepath.Join(c.dir, "volumes", h.name), filepath.Join(c.dir, "shared-volumes")) + networkModeLine() + c.agentExtra
}

// networkModeLine is the agent's network_mode line: the driver's default,
// or CAPSULE_TEST_NETWORK_MODE's (the e2e gate runs in both modes).
func networkModeLine() string {
	if m := testenv.NetworkMode(); m != "" {
		return "  network_mode: " + m + "\n"
	}
	return ""
}

// queueTypeLine is the bus: section's queue_type line ("" for the
// default).
func (c *cloud) queueTypeLine() string {
	if c.queueType == "" {
		return ""
	}
	return "  queue_type: " + c.queueType + "\n"
}

// controlReplicas are the processes of a scaled-out control plane:
// c.replicas processes of each role (api-N, scheduler-N, conductor-N),
// API replica N>1 on ports of its own with a config of its own.
func (c *cloud) controlReplicas(t *testing.T, render func(identity, compute, image, network, portal int) string) []*proc {
	t.Helper()
	var procs []*proc
	for i := 1; i <= c.replicas; i++ {
		config := c.configPath
		if i > 1 {
			identity := freePort(t)
			config = filepath.Join(c.dir, fmt.Sprintf("capsule-api-%d.yaml", i))
			cfg := render(identity, freePort(t), freePort(t), freePort(t), freePort(t))
			if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			c.apis = append(c.apis, identity)
		}
		procs = append(procs, c.newProc(fmt.Sprintf("api-%d", i), "api", config))
	}
	for _, role := range []string{"scheduler", "conductor"} {
		for i := 1; i <= c.replicas; i++ {
			procs = append(procs, c.newProc(fmt.Sprintf("%s-%d", role, i), role, c.configPath))
		}
	}
	return procs
}

// makeBridges creates the hosts' OVS bridges (as the agents' EnsureBridges
// would: userspace datapath, fail_mode=secure, a NORMAL fallback flow) and,
// for two hosts, the trunk joining them, and removes them at cleanup. The
// deletion is registered first so that it runs last, after the processes
// and containers are gone.
func (c *cloud) makeBridges(t *testing.T) {
	t.Helper()
	var bridges []string
	for _, h := range c.hosts {
		if h.bridge != "" {
			bridges = append(bridges, h.bridge)
		}
	}
	if len(bridges) == 0 {
		return
	}
	o := ovstest.Client(t)
	if c.trunk != "" {
		bridges = append(bridges, c.trunk)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, br := range bridges {
			if err := o.DeleteBridge(ctx, br); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, br := range bridges {
		if err := o.EnsureBridge(ctx, br); err != nil {
			t.Fatalf("create bridge: %v", err)
		}
	}
	if c.trunk == "" {
		return
	}
	// Patch ports with no tag and no trunks list: each uplink carries
	// every VLAN, tagged, like a switch's trunk port.
	for _, h := range c.hosts {
		if err := o.AddPatchPair(ctx, h.bridge, uplinkPort(h.bridge), c.trunk, "tk"+h.bridge); err != nil {
			t.Fatalf("trunk: %v", err)
		}
	}
}

// uplinkPort is the patch port joining bridge to the trunk bridge.
func uplinkPort(bridge string) string { return bridge + "-up" }

// bridgePort says whether OVS port p belongs to bridge itself rather than
// to a server: the uplink the test made, and the metadata port an agent
// keeps on every bridge it maps.
func bridgePort(bridge, p string) bool {
	return p == uplinkPort(bridge) || p == vif.MetadataIfName(bridge)
}

func (c *cloud) newProc(name, roles, config string) *proc {
	return &proc{bin: c.bin, name: name, roles: roles, config: config, log: filepath.Join(c.dir, name+".log"), env: c.procEnv}
}

// sideBySide runs each of parts as a subtest of t (named by its key), all
// at once, and returns when all have ended. They run in t's own slot of
// go test -parallel: subtests started from goroutines rather than
// parallel subtests, which would wait for slots behind every test not yet
// started while t's cloud sits idle. Each part may fail (t.Fatal) on its
// own.
func sideBySide(t *testing.T, parts map[string]func(*testing.T)) {
	t.Helper()
	var wg sync.WaitGroup
	for name, part := range parts {
		wg.Go(func() { t.Run(name, part) })
	}
	wg.Wait()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ownVhost gives the cloud a RabbitMQ virtual host of its own, as separate
// clouds sharing a broker have: queue names ("conductor", "scheduler")
// would otherwise be shared between the clouds of concurrent tests. The
// host comes from rabbitVhosts (made and deleted in batches) and is
// given back at the test's cleanup.
func (c *cloud) ownVhost(t *testing.T, amqpURL string) string {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("bad CAPSULE_TEST_AMQP_URL: %v", err)
	}
	vhost, err := rabbitVhosts.take(u.User.Username())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rabbitVhosts.release(vhost) })
	c.vhost = vhost
	u.Path = "/" + vhost
	return u.String()
}

// queueDepth is the number of messages of the cloud's queue that are
// waiting or delivered but not yet acknowledged (the bus acknowledges
// once the handler returned).
func (c *cloud) queueDepth(t *testing.T, queue string) int {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "list_queues", "-q", "--no-table-headers", "-p", c.vhost,
		"name", "messages").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_queues: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("rabbitmqctl list_queues: %q", line)
			}
			return n
		}
	}
	t.Fatalf("no queue %s in the cloud's vhost: %s", queue, out)
	return 0
}

// proc finds a process by name ("capsuled", "control", "agent-<host>"),
// to start, stop or kill it alone.
func (c *cloud) proc(t *testing.T, name string) *proc {
	t.Helper()
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	t.Fatalf("cloud has no process %q", name)
	return nil
}

// start runs every process of the cloud; it can be called again after
// stop or kill.
func (c *cloud) start(t *testing.T) {
	t.Helper()
	for _, p := range c.procs {
		p.start(t)
	}
}

// stop stops every process (SIGINT, then SIGKILL after 15s), agents first.
func (c *cloud) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop()
	}
}

// kill stops every process abruptly (SIGKILL), as a crash would.
func (c *cloud) kill() {
	for _, p := range c.procs {
		p.kill()
	}
}

// start runs the process unless it runs.
func (p *proc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.bin, "-config", p.config, "-log-level", "debug", p.roles)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	// The child has its own copy of the descriptor.
	logf.Close()
	p.cmd = cmd
}

// pid is the process's PID, 0 when it does not run.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) take() *exec.Cmd {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := p.cmd
	p.cmd = nil
	return cmd
}

func (p *proc) stop() {
	cmd := p.take()
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

func (p *proc) kill() {
	cmd := p.take()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// logged counts the lines of the process's log (kept across restarts)
// that contain s.
func (p *proc) logged(t *testing.T, s string) int {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// logLines are the lines of the process's log that contain s.
func (p *proc) logLines(t *testing.T, s string) []string {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// agentReconciled is the agent's (debug) log line of a finished
// reconcile: the power sync sent, the network and limits repaired.
const agentReconciled = "msg=reconciled "

// waitLogged waits until the process's log holds more than n lines with s:
// what the process logged since n was counted.
func (p *proc) waitLogged(t *testing.T, s string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s logs %q", p.name, s), func() bool { return p.logged(t, s) > n })
}

// docker runs the docker CLI against the first compute host's dockerd.
func (c *cloud) docker(args ...string) (string, error) { return c.hosts[0].docker(args...) }

// docker runs the docker CLI against the host's dockerd.
func (h *computeHost) docker(args ...string) (string, error) {
	out, err := exec.Command("docker", append([]string{"-H", h.dockerHost}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// removeContainers removes what the agents left on every host's dockerd.
func (c *cloud) removeContainers(t *testing.T) {
	for _, h := range c.hosts {
		ids, _ := h.docker("ps", "-aq", "--filter", "label=capsule.host="+h.name)
		for _, id := range strings.Fields(ids) {
			_, _ = h.docker("rm", "-f", id)
		}
	}
}

// removeNetns removes the network namespaces the agents kept in network
// mode netns (drivers/docker/netns.go) for servers still there at the
// end, and their map entries: removeContainers took their containers.
func (c *cloud) removeNetns(t *testing.T) {
	maps, _ := netnsfile.Maps(netnsfile.MapDir)
	for _, h := range c.hosts {
		dir := filepath.Join(docker.DefaultNetnsDir, h.name)
		for cid, p := range maps {
			if filepath.Dir(p) == dir {
				_ = netnsfile.RemoveMap(netnsfile.MapDir, cid)
			}
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if err := netnsfile.Remove(filepath.Join(dir, e.Name())); err != nil {
				t.Logf("cleanup: %v", err)
			}
		}
		_ = os.Remove(dir)
	}
}

func (c *cloud) authURL() string { return fmt.Sprintf("http://127.0.0.1:%d/v3", c.identity) }

// waitReady waits until every compute host's service reports up.
func (c *cloud) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var down []string
	for time.Now().Before(deadline) {
		if down = c.computeDown(); len(down) == 0 {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("cloud did not become ready within 60s (compute services %v never reported up)", down)
}

// computeDown lists the compute hosts whose service is not up (all of
// them while the API does not answer).
func (c *cloud) computeDown() []string {
	all := make([]string, len(c.hosts))
	for i, h := range c.hosts {
		all[i] = h.name
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pc, err := c.provider(ctx, "admin", c.adminPass, "admin")
	if err != nil {
		return all
	}
	cc, err := openstack.NewComputeV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		return all
	}
	var body struct {
		Services []struct {
			Host, State string
		} `json:"services"`
	}
	if _, err := cc.Get(ctx, cc.ServiceURL("os-services"), &body, nil); err != nil {
		return all
	}
	up := map[string]bool{}
	for _, s := range body.Services {
		if s.State == "up" {
			up[s.Host] = true
		}
	}
	var down []string
	for _, h := range all {
		if !up[h] {
			down = append(down, h)
		}
	}
	return down
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
