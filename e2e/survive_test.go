package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// testDockerd is a dockerd of the test's own, started the way
// deploy/lib.sh starts Capsule's (cap_dockerd_args: its own socket, data
// and exec roots, pid file and containerd namespace, no bridge, no
// iptables, live-restore), under a temporary directory, so the test can
// stop, kill and restart it without touching the dockerds other tests use.
type testDockerd struct {
	dir  string // everything of it lives under dir
	name string
	host string // unix://... socket
	args []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startTestDockerd starts a dockerd of the test's own with the base image
// pulled from the test registry, and removes it all at cleanup (its
// containers, the dockerd and what it left running or mounted, its
// directory), whatever the test did to it.
func startTestDockerd(t *testing.T) *testDockerd { t.Helper(); return startTestDockerdOn(t, nil) }

// startTestDockerdOn is startTestDockerd with prepare run on the empty
// data root before dockerd starts (e.g. to mount a filesystem there; what
// it mounts under the test's directory, loop devices included, is
// undone at cleanup). prepare may skip the test.
func startTestDockerdOn(t *testing.T, prepare func(dataRoot string)) *testDockerd {
	t.Helper()
	img := testenv.Image(t)
	testenv.DockerHost(t) // the shared dockerds run: Docker is installed and usable
	// A short path: containerd's sockets live under the exec root.
	dir, err := os.MkdirTemp("/tmp", "capsule-dk-")
	if err != nil {
		t.Fatal(err)
	}
	d := &testDockerd{dir: dir, name: "e2e-" + uuid.NewString()[:8], log: filepath.Join(dir, "dockerd.log")}
	t.Cleanup(func() { d.remove(t) })
	lib, err := filepath.Abs("../deploy/lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	// The flags come from deploy/lib.sh, after prepare: the data root's
	// filesystem picks the storage driver (btrfs there).
	dockerdArgs := func() {
		cmd := exec.Command("bash", "-c", `. "$1" && cap_dockerd_args "$2" && cap_dockerd_host "$2"`, "bash", lib, d.name)
		cmd.Env = append(os.Environ(), "CAPSULE_RUN="+filepath.Join(dir, "run"), "CAPSULE_LIB="+filepath.Join(dir, "lib"),
			"CAPSULE_LOG="+filepath.Join(dir, "log"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cap_dockerd_args from deploy/lib.sh: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], "--live-restore") {
			t.Fatalf("cap_dockerd_args printed %q, want the flags (with --live-restore) then the host", out)
		}
		d.args, d.host = strings.Fields(lines[0]), lines[1]
	}
	dockerdArgs()
	for _, sub := range []string{"run", "lib"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if prepare != nil {
		dataRoot := d.dataRoot(t)
		if err := os.MkdirAll(dataRoot, 0o700); err != nil {
			t.Fatal(err)
		}
		prepare(dataRoot)
		dockerdArgs()
	}
	d.start(t)
	if out, err := d.docker("pull", "-q", img); err != nil {
		t.Fatalf("pull %s into the test's dockerd: %v\n%s", img, err, out)
	}
	return d
}

// start runs dockerd and waits until it answers.
func (d *testDockerd) start(t *testing.T) {
	t.Helper()
	d.forgetZombieContainerd(t)
	d.mu.Lock()
	logf, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.mu.Unlock()
		t.Fatal(err)
	}
	cmd := exec.Command("dockerd", d.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: a signal to the test's process group is not one
	// to dockerd, and dockerd's children (containerd) are its own.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.mu.Unlock()
		t.Fatalf("start dockerd: %v", err)
	}
	logf.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	eventually(t, 60*time.Second, "the test's dockerd answers", func() bool {
		select {
		case <-done:
			t.Fatalf("dockerd exited at start-up; log:\n%s", tailFile(d.log, 1500))
		default:
		}
		_, err := d.docker("version")
		return err == nil
	})
}

// forgetZombieContainerd removes the pid file of a containerd that died
// with a killed dockerd but was never reaped. On a host, init reaps it;
// where PID 1 does not (this test machine's), dockerd takes the zombie for
// a live containerd, waits for its socket and gives up. dockerd starts its
// containerd with a parent-death SIGKILL, so right after dockerd is killed
// its containerd may still be dying (not yet a zombie) on a loaded machine:
// wait until it either is gone or answers on its socket.
func (d *testDockerd) forgetZombieContainerd(t *testing.T) {
	t.Helper()
	var execRoot string
	for i, a := range d.args {
		if a == "--exec-root" && i+1 < len(d.args) {
			execRoot = d.args[i+1]
		}
	}
	pidfile := filepath.Join(execRoot, "containerd", "containerd.pid")
	sock := filepath.Join(execRoot, "containerd", "containerd.sock")
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(pidfile)
		if err != nil {
			return
		}
		stat, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(string(b)), "stat"))
		// The state follows the command name in parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		dead := err != nil || i < 0 || strings.HasPrefix(string(stat[i+1:]), " Z") || strings.HasPrefix(string(stat[i+1:]), " X")
		if dead {
			if err := os.Remove(pidfile); err != nil && !os.IsNotExist(err) {
				t.Fatalf("remove the pid file of a dead containerd: %v", err)
			}
			return
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return // alive and serving: the new dockerd reconnects to it
		}
		if time.Now().After(deadline) {
			t.Logf("containerd %s neither exited nor answers on %s after 15s", strings.TrimSpace(string(b)), sock)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends sig to dockerd and waits until it exited (SIGKILL after 30 s).
func (d *testDockerd) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("dockerd did not exit within 30s of %v; killing it", sig)
		_ = cmd.Process.Kill()
		<-done
	}
}

// docker runs the docker CLI against this dockerd.
func (d *testDockerd) docker(args ...string) (string, error) {
	out, err := exec.Command("docker", append([]string{"-H", d.host}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// remove removes every container, stops dockerd, kills what it left
// running under its directory (containerd, shims) and in its containers'
// cgroups, unmounts and deletes the directory.
func (d *testDockerd) remove(t *testing.T) {
	d.mu.Lock()
	running := d.cmd != nil
	d.mu.Unlock()
	if running {
		if ids, err := d.docker("ps", "-aq"); err == nil && ids != "" {
			_, _ = d.docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
	}
	// What docker rm could not end (dockerd stopped by the test, a
	// removal that failed): killed in its cgroups while its shim still
	// holds it, before it is reparented to PID 1.
	d.killContainerProcs(t)
	if running {
		d.stop(t, syscall.SIGTERM)
	}
	// Shims and their containers (live-restore keeps them), a containerd
	// left by a killed dockerd: their command lines name the directory.
	for range 3 {
		killed := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && strings.Contains(string(b), d.dir+"/") {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed++
			}
		}
		if killed == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	d.killContainerProcs(t)
	if b, err := os.ReadFile("/proc/mounts"); err == nil {
		lines := strings.Split(string(b), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if f := strings.Fields(lines[i]); len(f) > 1 && strings.HasPrefix(f[1], d.dir+"/") {
				_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
	}
	detachLoopsUnder(d.dir)
	if t.Failed() {
		t.Logf("test dockerd log (last 4 KiB):\n%s", tailFile(d.log, 4096))
	}
	if err := os.RemoveAll(d.dir); err != nil {
		t.Errorf("remove the test dockerd's directory: %v", err)
	}
}

// killContainerProcs SIGKILLs every process in the cgroups of this
// dockerd's containers, whether dockerd and their shims run or not: their
// IDs are the directories of its data root's containers/, their cgroups
// Docker's (cgroupfs: docker/<id> in each v1 hierarchy or in the unified
// one; systemd: system.slice/docker-<id>.scope). A frozen (paused) one is
// thawed first, or the kill would wait for a thaw.
func (d *testDockerd) killContainerProcs(t *testing.T) {
	var root string
	for i, a := range d.args {
		if a == "--data-root" && i+1 < len(d.args) {
			root = d.args[i+1]
		}
	}
	entries, err := os.ReadDir(filepath.Join(root, "containers"))
	if root == "" || err != nil {
		return
	}
	var cgroups []string
	for _, e := range entries {
		id := e.Name()
		if len(id) != 64 {
			continue
		}
		for _, pat := range []string{"/sys/fs/cgroup/*/docker/" + id, "/sys/fs/cgroup/docker/" + id,
			"/sys/fs/cgroup/*/system.slice/docker-" + id + ".scope", "/sys/fs/cgroup/system.slice/docker-" + id + ".scope"} {
			m, _ := filepath.Glob(pat)
			cgroups = append(cgroups, m...)
		}
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(filepath.Join(cg, "freezer.state")); err == nil {
			_ = os.WriteFile(filepath.Join(cg, "freezer.state"), []byte("THAWED"), 0o644)
		}
		if _, err := os.Stat(filepath.Join(cg, "cgroup.freeze")); err == nil {
			_ = os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0o644)
		}
	}
	for range 10 {
		left := 0
		for _, cg := range cgroups {
			b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					left++
				}
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("processes still in the test dockerd's container cgroups after SIGKILLs: %v", cgroups)
}

// dataRoot is the dockerd's --data-root.
func (d *testDockerd) dataRoot(t *testing.T) string {
	for i, a := range d.args {
		if a == "--data-root" && i+1 < len(d.args) {
			return d.args[i+1]
		}
	}
	t.Fatalf("no --data-root in %v", d.args)
	return ""
}

// detachLoopsUnder detaches the loop devices backed by files under dir
// (a mount's autoclear normally does it once the lazy unmount is done).
func detachLoopsUnder(dir string) {
	out, err := exec.Command("losetup", "-n", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && strings.HasPrefix(f[1], dir+"/") {
			_ = exec.Command("losetup", "-d", f[0]).Run()
		}
	}
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	return tail(string(b), n)
}

// onDockerd runs a one-host cloud's agent, in a process of its own, on
// dockerd d.
func onDockerd(d *testDockerd) cloudOption {
	return func(t *testing.T, c *cloud) {
		c.dockerHost = d.host
		c.ownAgent = true
	}
}

// statusWatch polls servers' statuses until stopped and keeps every
// status other than want it saw.
type statusWatch struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	bad   []string
	polls int
}

func watchStatus(cc *gophercloud.ServiceClient, want string, ids ...string) *statusWatch {
	w := &statusWatch{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for _, id := range ids {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				s, err := servers.Get(ctx, cc, id).Extract()
				cancel()
				w.mu.Lock()
				switch {
				case err != nil:
					w.bad = append(w.bad, fmt.Sprintf("%s: %v", id, err))
				case s.Status != want:
					w.bad = append(w.bad, fmt.Sprintf("%s: %s (task %q)", id, s.Status, s.TaskState))
				}
				w.polls++
				w.mu.Unlock()
			}
			select {
			case <-w.stopc:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *statusWatch) stop() (bad []string, polls int) {
	close(w.stopc)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad, w.polls
}

// tcpStream is a TCP connection from one server to another carrying a
// counter line every 100 ms (busybox nc both ends), to tell whether it
// lives on.
type tcpStream struct {
	from, to *netServer
}

func startTCPStream(t *testing.T, from, to *netServer) *tcpStream {
	t.Helper()
	// The first frames between them set up ARP and MAC learning.
	eventually(t, 15*time.Second, from.name+" pings "+to.name, func() bool { return from.ping(t, to.ip) })
	// The listener's input never ends: busybox nc closes the connection
	// at the end of its input.
	if out, err := to.host.docker("exec", "-d", to.workload(), "sh", "-c", "sleep 100000 | nc -l -p 9000 > /tmp/rx 2>/tmp/nc.err"); err != nil {
		t.Fatalf("listen in %s: %v %s", to.name, err, out)
	}
	time.Sleep(300 * time.Millisecond)
	if out, err := from.host.docker("exec", "-d", from.workload(), "sh", "-c",
		"i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done | nc "+to.ip+" 9000 2>/tmp/nc.err"); err != nil {
		t.Fatalf("connect from %s: %v %s", from.name, err, out)
	}
	s := &tcpStream{from: from, to: to}
	deadline := time.Now().Add(15 * time.Second)
	for s.received(t) <= 3 {
		if time.Now().After(deadline) {
			ps1, _ := from.exec("sh", "-c", "ps; cat /tmp/nc.err")
			ps2, _ := to.exec("sh", "-c", "ps; cat /tmp/nc.err")
			t.Fatalf("no data over TCP from %s to %s within 15s; processes in %s:\n%s\nin %s:\n%s", from.name, to.name, from.name, ps1, to.name, ps2)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return s
}

// received is the last counter the receiving end got, checking that
// every line before it arrived, in order.
func (s *tcpStream) received(t *testing.T) int {
	t.Helper()
	out, err := s.to.exec("cat", "/tmp/rx")
	if err != nil {
		t.Fatalf("read the stream in %s: %v %s", s.to.name, err, out)
	}
	lines := strings.Fields(out)
	for i, l := range lines {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("the TCP stream lost or reordered data: line %d is %q", i+1, l)
		}
	}
	return len(lines)
}

// ncPID is the PID of the nc process in the server: the same PID means
// the same connection (nc exits when its connection ends).
func ncPID(t *testing.T, s *netServer) string {
	t.Helper()
	out, err := s.exec("pidof", "nc")
	if err != nil || out == "" {
		t.Fatalf("no nc running in %s (its TCP connection ended): %v %q", s.name, err, out)
	}
	return out
}

// sandboxPID is the PID of the server's sandbox (its network namespace);
// in network mode netns, which has none, its workload container's.
func (s *netServer) sandboxPID(t *testing.T) int {
	t.Helper()
	name := s.workload() + "-sandbox"
	if containersPerServer() == 1 {
		name = s.workload()
	}
	out, err := s.host.docker("inspect", "-f", "{{.State.Pid}}", name)
	if err != nil {
		t.Fatalf("inspect sandbox of %s: %v %s", s.name, err, out)
	}
	pid, _ := strconv.Atoi(out)
	return pid
}

// TestServersSurviveDockerdRestartAndHostReboot is issue 14's proof on a
// dockerd of the test's own: (a) dockerd stopped with SIGTERM, then killed
// with SIGKILL, and started again each time, under three running servers:
// the same PIDs, a TCP connection between two of them never breaks, the
// servers ACTIVE throughout, the agent reconciles with the new daemon and
// still drives it; (b) a "host reboot" (agent gone, every container
// killed, dockerd restarted, the agent started again): the ACTIVE servers
// run again within 30 s, pingable on their fixed IPs with their cgroup
// limits, the stopped one stays SHUTOFF; deleting them leaves nothing.
func TestServersSurviveDockerdRestartAndHostReboot(t *testing.T) {
	t.Parallel()
	d := startTestDockerd(t)
	c := startCloud(t, withBridge, onDockerd(d))
	agent := c.proc(t, "agent-"+c.host)
	h := c.hosts[0]
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	netID, _ := vlanNetwork(t, nc, "surv", 200+rand.IntN(800), "10.77.0.0/24", true)

	names := []string{"surv-0", "surv-1", "surv-2"}
	ids := make([]string, len(names))
	for i, n := range names {
		ids[i] = c.bootOn(t, admin, n, h, netID, "")
	}
	srv := make([]*netServer, len(names))
	for i, n := range names {
		srv[i] = activeServer(t, admin, nc, n, ids[i], h)
	}
	pids := func() []int {
		var p []int
		for _, s := range srv {
			p = append(p, s.pid(t), s.sandboxPID(t))
		}
		return p
	}

	// (a) dockerd restarts under running servers.
	stream := startTCPStream(t, srv[0], srv[1])
	before, sender, listener := pids(), ncPID(t, srv[0]), ncPID(t, srv[1])
	watch := watchStatus(admin, "ACTIVE", ids...)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		came, reconciled := agent.logged(t, "container runtime answers again"), agent.logged(t, agentReconciled)
		got := stream.received(t)
		began := time.Now()
		d.stop(t, sig)
		d.start(t)
		t.Logf("dockerd %v + start: answering again after %s", sig, time.Since(began).Round(time.Millisecond))
		agent.waitLogged(t, "container runtime answers again", came, 20*time.Second)
		agent.waitLogged(t, agentReconciled, reconciled, 20*time.Second)
		if after := pids(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("after dockerd %v + start: workload and sandbox PIDs %v, want %v", sig, after, before)
		}
		eventually(t, 5*time.Second, "the TCP stream carries data after the restart", func() bool { return stream.received(t) > got+5 })
		if s, l := ncPID(t, srv[0]), ncPID(t, srv[1]); s != sender || l != listener {
			t.Errorf("after dockerd %v + start: nc PIDs %s/%s, want %s/%s (the TCP connection was re-made)", sig, s, l, sender, listener)
		}
	}
	bad, polls := watch.stop()
	if len(bad) > 0 || polls == 0 {
		t.Errorf("servers not ACTIVE during the dockerd restarts (%d polls): %v", polls, bad)
	}
	// The agent drives the restarted dockerd: the owner stops surv-2.
	if err := servers.Stop(ctx, admin, ids[2]).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, admin, ids[2], "SHUTOFF", 60*time.Second)

	// (b) "host reboot": the agent goes, every container is killed,
	// dockerd stops; then dockerd and the agent start again.
	limits := map[string]string{}
	for _, s := range srv[:2] {
		limits[s.id] = fmt.Sprintf("%+v", cgroupLimits(t, s.pid(t)))
	}
	agent.kill()
	if out, err := d.docker("ps", "-q", "--filter", "label=capsule.host="+h.name); err != nil {
		t.Fatalf("docker ps: %v %s", err, out)
	} else if out, err := d.docker(append([]string{"kill"}, strings.Fields(out)...)...); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	d.stop(t, syscall.SIGTERM)
	d.start(t)
	booted := time.Now()
	agent.start(t)
	for _, s := range srv[:2] {
		eventually(t, 30*time.Second-time.Since(booted), s.name+" running again", func() bool {
			_, running, _ := c.containerOf(t, s.id)
			return running
		})
	}
	eventually(t, 30*time.Second-time.Since(booted), "surv-0 and surv-1 ping each other on their fixed IPs", func() bool {
		return srv[0].ping(t, srv[1].ip) && srv[1].ping(t, srv[0].ip)
	})
	t.Logf("host reboot: servers back and pingable %s after the agent started", time.Since(booted).Round(time.Millisecond))
	for _, s := range srv[:2] {
		waitStatus(t, admin, s.id, "ACTIVE", 5*time.Second)
		if got := fmt.Sprintf("%+v", cgroupLimits(t, s.pid(t))); got != limits[s.id] {
			t.Errorf("%s cgroup limits after the reboot %s, want %s", s.name, got, limits[s.id])
		}
	}
	if st := waitStatus(t, admin, ids[2], "SHUTOFF", 5*time.Second); st.Status != "SHUTOFF" {
		t.Errorf("the stopped server is %s after the reboot", st.Status)
	}
	if _, running, _ := c.containerOf(t, ids[2]); running {
		t.Errorf("the server its owner stopped runs again after the reboot")
	}

	// Nothing leaked: delete the servers, then no container, veth, OVS
	// port or flow of theirs is left.
	for _, id := range ids {
		if err := servers.Delete(ctx, admin, id).ExtractErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		waitGone(t, admin, id, 60*time.Second)
	}
	if out, err := d.docker("ps", "-aq"); err != nil || out != "" {
		t.Errorf("containers left on the test's dockerd: %q %v", out, err)
	}
	c.assertNoPlumbing(t, srv)
}

// A test that fails while its dockerd is down leaves no container
// process behind: remove kills them in their cgroups before their shims
// go (they would be reparented to PID 1 and run on).
func TestTestDockerdRemoveKillsContainers(t *testing.T) {
	t.Parallel()
	d := startTestDockerd(t)
	img := testenv.Image(t)
	id, err := d.docker("run", "-d", "--network", "none", img, "sleep", "inf")
	if err != nil {
		t.Fatalf("docker run: %v %s", err, id)
	}
	out, err := d.docker("inspect", "-f", "{{.State.Pid}}", id)
	pid, perr := strconv.Atoi(out)
	if err != nil || perr != nil || pid <= 1 {
		t.Fatalf("container pid %q: %v %v", out, err, perr)
	}
	d.stop(t, syscall.SIGKILL) // as a test that fails with its dockerd down
	d.remove(t)
	eventually(t, 5*time.Second, "the container's process ends", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// Gone, or a zombie its new parent has yet to reap.
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}
