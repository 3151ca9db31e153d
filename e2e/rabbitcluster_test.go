package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// rabbitServerBin and rabbitCtlBin are the RabbitMQ scripts run as the
// current user (the /usr/sbin wrappers switch to the rabbitmq user and its
// cookie, the system broker's).
const (
	rabbitServerBin = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	rabbitCtlBin    = "/usr/lib/rabbitmq/bin/rabbitmqctl"
)

// rabbitCluster is a three-node RabbitMQ cluster of the test's own on this
// machine (own node names, ports, data directories and Erlang cookie)
// behind a TCP proxy that spreads connections over the nodes that accept
// them, as a load balancer in front of a cluster does.
type rabbitCluster struct {
	dir   string // the test's directory: data, logs, crash dumps
	home  string // HOME of the nodes and of rabbitmqctl: the cookie
	nodes []*rabbitNode
	proxy net.Listener
	next  atomic.Uint64
}

type rabbitNode struct {
	name string // node@localhost
	port int    // AMQP
	cmd  *exec.Cmd
	mu   sync.Mutex
}

// startRabbitCluster starts the three nodes side by side, joins the second
// and the third to the first, and the proxy; all of it is stopped at
// cleanup. It never touches the machine's shared broker: its nodes have
// names, ports, data and an Erlang cookie of their own, and the Erlang VMs
// (nodes and rabbitmqctl) run in the test's temporary directory, where
// any crash dump goes.
func startRabbitCluster(t *testing.T) *rabbitCluster {
	t.Helper()
	for _, bin := range []string{rabbitServerBin, rabbitCtlBin} {
		if _, err := os.Stat(bin); err != nil {
			testenv.Require(t, false, "RabbitMQ server not installed (%s)", bin)
		}
	}
	dir := t.TempDir()
	rc := &rabbitCluster{dir: dir, home: filepath.Join(dir, "home")}
	if err := os.MkdirAll(rc.home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rc.home, ".erlang.cookie"), []byte(strings.ReplaceAll(uuid.NewString(), "-", "")), 0o400); err != nil {
		t.Fatal(err)
	}
	plugins := filepath.Join(dir, "enabled_plugins")
	if err := os.WriteFile(plugins, []byte("[].\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()[:8]
	t.Cleanup(func() {
		for _, n := range rc.nodes {
			n.kill()
		}
	})
	for i := 1; i <= 3; i++ {
		n := &rabbitNode{name: fmt.Sprintf("e2e%s%d@localhost", id, i), port: freePort(t)}
		base := filepath.Join(dir, fmt.Sprintf("node%d", i))
		logf, err := os.Create(base + ".log")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(rabbitServerBin)
		cmd.Dir = dir
		cmd.Env = append(rc.env(), "RABBITMQ_NODENAME="+n.name,
			fmt.Sprintf("RABBITMQ_NODE_PORT=%d", n.port), fmt.Sprintf("RABBITMQ_DIST_PORT=%d", freePort(t)),
			"RABBITMQ_MNESIA_BASE="+base+"-mnesia", "RABBITMQ_LOG_BASE="+base+"-log",
			"RABBITMQ_ENABLED_PLUGINS_FILE="+plugins, "RABBITMQ_CONFIG_FILE="+base+"-none",
			"RABBITMQ_ADVANCED_CONFIG_FILE="+base+"-none.config", "RABBITMQ_PID_FILE="+base+".pid")
		cmd.Stdout, cmd.Stderr = logf, logf
		// Its own process group: the kill takes the Erlang VM the script
		// started, not only the script.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("start RabbitMQ node %s: %v", n.name, err)
		}
		logf.Close()
		n.cmd = cmd
		rc.nodes = append(rc.nodes, n)
	}
	// await_startup fails until the node registered with epmd (after its
	// prelaunch phase): asked again until it answers.
	for _, n := range rc.nodes {
		deadline := time.Now().Add(90 * time.Second)
		for {
			out, err := rc.run(n, "await_startup")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("RabbitMQ node %s did not start: %v\n%s", n.name, err, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	for _, n := range rc.nodes[1:] {
		rc.ctl(t, n, "stop_app")
		rc.ctl(t, n, "join_cluster", rc.nodes[0].name)
		rc.ctl(t, n, "start_app")
	}
	out := rc.ctl(t, rc.nodes[0], "cluster_status")
	for _, n := range rc.nodes {
		if !strings.Contains(out, n.name) {
			t.Fatalf("node %s not in the cluster:\n%s", n.name, out)
		}
	}
	rc.startProxy(t)
	return rc
}

// ctl runs rabbitmqctl against node n.
func (rc *rabbitCluster) ctl(t *testing.T, n *rabbitNode, args ...string) string {
	t.Helper()
	out, err := rc.run(n, args...)
	if err != nil {
		t.Fatalf("rabbitmqctl -n %s %v: %v\n%s", n.name, args, err, out)
	}
	return out
}

func (rc *rabbitCluster) run(n *rabbitNode, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rabbitCtlBin, append([]string{"-n", n.name}, args...)...)
	cmd.Dir = rc.dir
	cmd.Env = rc.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// env is the environment of the cluster's Erlang VMs: the cookie's HOME,
// and crash dumps in the test's directory (never the working directory,
// the repository's e2e/).
func (rc *rabbitCluster) env() []string {
	return append(os.Environ(), "HOME="+rc.home, "ERL_CRASH_DUMP="+filepath.Join(rc.dir, "erl_crash.dump"))
}

// kill stops the node abruptly (SIGKILL to its process group), as a
// machine lost would.
func (n *rabbitNode) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	_ = n.cmd.Wait()
	n.cmd = nil
}

// url is the AMQP URL of the cluster, through the proxy.
func (rc *rabbitCluster) url() string {
	return fmt.Sprintf("amqp://guest:guest@%s/", rc.proxy.Addr())
}

// startProxy accepts AMQP connections and pipes each to the next node
// that accepts it (round robin, a refused node skipped).
func (rc *rabbitCluster) startProxy(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	rc.proxy = ln
	var conns sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				rc.pipe(c, done)
			}()
		}
	}()
}

func (rc *rabbitCluster) pipe(client net.Conn, done <-chan struct{}) {
	defer client.Close()
	var backend net.Conn
	start := rc.next.Add(1)
	for i := range uint64(len(rc.nodes)) {
		n := rc.nodes[(start+i)%uint64(len(rc.nodes))]
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			backend = c
			break
		}
	}
	if backend == nil {
		return
	}
	defer backend.Close()
	closed := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(backend, client); closed <- struct{}{} }()
	go func() { _, _ = io.Copy(client, backend); closed <- struct{}{} }()
	select {
	case <-closed:
	case <-done:
	}
}

// leaderOf is the node that leads the quorum queue (the first node when
// rabbitmqctl does not say).
func (rc *rabbitCluster) leaderOf(t *testing.T, queue string) *rabbitNode {
	t.Helper()
	out := rc.ctl(t, rc.nodes[0], "list_queues", "-q", "--no-table-headers", "name", "leader")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
			for _, n := range rc.nodes {
				if n.name == f[1] {
					return n
				}
			}
		}
	}
	t.Logf("no leader of queue %s in rabbitmqctl list_queues:\n%s", queue, out)
	return rc.nodes[0]
}
