//go:build bench

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"golang.org/x/sys/unix"

	capreg "github.com/capsule-cloud/capsule/registry"
)

// TestMigrationBench is issue 15's P4 benchmark: a networked server
// running a TCP service (busybox httpd, started by its user data's
// bootcmd at every boot) with 100 MiB of random data written is
// cold-migrated to the other host, CAPSULE_BENCH_MIGRATIONS times (default
// 3, back and forth, each with a new 100 MiB file replacing the one
// before). Per migration it logs
// the time from the API call to VERIFY_RESIZE (status polled every
// 100 ms), the downtime (the service's port polled every 100 ms by a TCP
// connect from a neighbour server's network namespace on the other host:
// the longest run of failed connects, from the last success before to the
// first after), and the bytes moved (the compressed sizes in the registry
// of the layers the migration added: its pre-copy's and its final
// layer) against the 100 MiB delta. After each, the raw baseline on the same two
// dockerds and registry, with the docker CLI: stop + commit + push + pull
// + run of a container holding the same 100 MiB. A benchmark, not a timed
// test: it fails only when something fails.
// CAPSULE_BENCH_LOG copies the capsuled logs there.
// go test -tags bench -run TestMigrationBench -v ./e2e
func TestMigrationBench(t *testing.T) {
	c, reg := migrationCloud(t)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "bench-mig-net", 314, "10.31.4.0/24", true)
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	boot := func(name string, h *computeHost, userData string) *netServer {
		t.Helper()
		srv, err := servers.Create(ctx, cc, servers.CreateOpts{Name: name, ImageRef: img, FlavorRef: "1",
			AvailabilityZone: "nova:" + h.name, Networks: []servers.Network{{UUID: netID}}, UserData: []byte(userData)}, nil).Extract()
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return activeServer(t, cc, nc, name, srv.ID, h)
	}
	s := boot("bench-mig", ha, "#cloud-config\nbootcmd:\n  - mkdir -p /tmp/www && echo ok > /tmp/www/f && httpd -p 8080 -h /tmp/www\n")
	nb := boot("bench-neighbour", hb, "")
	addr := net.JoinHostPort(s.ip, "8080")
	probe := newTCPProbe(t, nb.pid(t), addr)
	eventually(t, 60*time.Second, "the server's service reachable from its neighbour", probe.once)

	runs := 3
	if n, err := strconv.Atoi(os.Getenv("CAPSULE_BENCH_MIGRATIONS")); err == nil && n > 0 {
		runs = n
	}
	regc := capreg.Remote(reg.addr, reg.user, reg.pass)
	const delta = 100 << 20
	var report []string
	// The raw baseline: the docker CLI on the same two dockerds and
	// registry (logged in), a container of the same image with 100 MiB.
	cfgDir := t.TempDir()
	dockerCLI := func(h *computeHost, args ...string) (string, time.Duration) {
		t.Helper()
		t0 := time.Now()
		out, err := exec.Command("docker", append([]string{"--config", cfgDir, "-H", h.dockerHost}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), time.Since(t0)
	}
	login := exec.Command("docker", "--config", cfgDir, "-H", ha.dockerHost, "login", "-u", reg.user, "--password-stdin", reg.addr)
	login.Stdin = strings.NewReader(reg.pass)
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	base := os.Getenv("CAPSULE_TEST_IMAGE")
	raw := func(i int) time.Duration {
		name := fmt.Sprintf("bench-raw-%d-%d", os.Getpid(), i)
		ref := fmt.Sprintf("%s/bench/raw:%s", reg.addr, name)
		dockerCLI(ha, "run", "-d", "--name", name, base)
		dockerCLI(ha, "exec", name, "sh", "-c", "head -c 104857600 /dev/urandom > /root/data")
		time.Sleep(time.Second)
		_, stop := dockerCLI(ha, "stop", name)
		_, commit := dockerCLI(ha, "commit", name, ref)
		_, push := dockerCLI(ha, "push", ref)
		_, pull := dockerCLI(hb, "pull", ref)
		_, run := dockerCLI(hb, "run", "-d", "--name", name, ref)
		total := stop + commit + push + pull + run
		line := fmt.Sprintf("raw %d: stop %.2f + commit %.2f + push %.2f + pull %.2f + run %.2f = %.2f s",
			i, stop.Seconds(), commit.Seconds(), push.Seconds(), pull.Seconds(), run.Seconds(), total.Seconds())
		t.Log(line)
		report = append(report, line)
		for _, h := range []*computeHost{ha, hb} {
			_, _ = h.docker("rm", "-f", name)
			_, _ = h.docker("rmi", ref)
		}
		_ = regc.DeleteImage(ctx, ref, "")
		return total
	}
	for i := 0; i < runs; i++ {
		to := hb
		if s.host == hb {
			to = ha
		}
		// The server's change stays 100 MiB: each migration's file
		// replaces the one before (deleted), as the target's "a server
		// with a 100 MiB change" says; what a migration then moves
		// beyond it is what its image still carries of deleted data.
		if i > 0 {
			if out, err := s.exec("rm", "-f", fmt.Sprintf("/root/data-%d", i-1)); err != nil {
				t.Fatalf("delete the previous data: %v %s", err, out)
			}
		}
		file := fmt.Sprintf("/root/data-%d", i)
		writeData(t, s, file, 100)
		time.Sleep(time.Second) // as a user would: the data is there before the migration is asked for
		probe.start()
		start := time.Now()
		if err := servers.Migrate(ctx, cc, s.id).ExtractErr(); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		for {
			srv, err := servers.Get(ctx, cc, s.id).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if srv.Status == "VERIFY_RESIZE" {
				break
			}
			if srv.Status == "ERROR" || (srv.Status == "ACTIVE" && time.Since(start) > 5*time.Second) {
				t.Fatalf("migration %d ended %s", i, srv.Status)
			}
			if time.Since(start) > 5*time.Minute {
				t.Fatalf("migration %d: still %s after 5 minutes", i, srv.Status)
			}
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(start)
		eventually(t, 60*time.Second, "service back after the migration", probe.upSinceDown)
		time.Sleep(300 * time.Millisecond)
		down, samples := probe.stop()
		ms := migrations(t, cc, s.id)
		uuid := fmt.Sprint(ms[0]["uuid"])
		for _, m := range ms {
			if m["status"] == "finished" {
				uuid = fmt.Sprint(m["uuid"])
			}
		}
		row := c.migrationRow(t, uuid)
		final, err := regc.Manifest(ctx, migrationRepo, uuid)
		if err != nil {
			t.Fatalf("manifest of migration %s: %v", uuid, err)
		}
		pre, err := regc.Manifest(ctx, migrationRepo, uuid+"-pre")
		var moved int64
		var layers []int64
		for _, l := range final.Layers {
			layers = append(layers, l.Size)
		}
		if err == nil && len(final.Layers) == len(pre.Layers)+1 {
			moved = pre.Layers[len(pre.Layers)-1].Size + final.Layers[len(final.Layers)-1].Size + pre.Config.Size + final.Config.Size
		} else {
			moved = final.Layers[len(final.Layers)-1].Size + final.Config.Size
		}
		line := fmt.Sprintf("migration %d %s -> %s: API call -> VERIFY_RESIZE %.2f s; downtime %.2f s (%d probes); "+
			"bytes moved %d (%.3f x the %d-byte delta; engine's count %d); final image layers %v",
			i, s.host.name, to.name, took.Seconds(), down.Seconds(), samples, moved, float64(moved)/delta, delta, row.ImageBytes, layers)
		t.Log(line)
		report = append(report, line)
		if err := servers.ConfirmResize(ctx, cc, s.id).ExtractErr(); err != nil {
			t.Fatalf("confirm: %v", err)
		}
		waitStatus(t, cc, s.id, "ACTIVE", time.Minute)
		s = s.moved(to)
		// The raw baseline right after, under the same load.
		rawTotal := raw(i)
		load, _ := os.ReadFile("/proc/loadavg")
		line = fmt.Sprintf("migration %d: %.2f x raw (load average %s)", i, took.Seconds()/rawTotal.Seconds(), strings.TrimSpace(string(load)))
		t.Log(line)
		report = append(report, line)
	}
	if dst := os.Getenv("CAPSULE_BENCH_LOG"); dst != "" {
		// The capsuled logs (control plane and both agents), for reading
		// where each migration's time went.
		logs, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
		var all []byte
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			all = append(all, b...)
		}
		if err := os.WriteFile(dst, all, 0o644); err != nil {
			t.Errorf("copy the logs to %s: %v", dst, err)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("summary (load average %s):\n%s", strings.TrimSpace(string(load)), strings.Join(report, "\n"))
}

// tcpProbe connects to addr every 100 ms from the network namespace of
// process pid (a neighbour server) and keeps the longest outage.
type tcpProbe struct {
	t    *testing.T
	pid  int
	addr string

	mu       sync.Mutex
	running  bool
	done     chan struct{}
	wg       sync.WaitGroup
	lastOK   time.Time
	sawDown  bool
	upAgain  bool
	longest  time.Duration
	downFrom time.Time
	samples  int
}

func newTCPProbe(t *testing.T, pid int, addr string) *tcpProbe {
	return &tcpProbe{t: t, pid: pid, addr: addr}
}

// inNetns runs f on a thread moved into the neighbour's network
// namespace; the thread is discarded after (never unlocked).
func (p *tcpProbe) inNetns(f func()) {
	ready := make(chan error, 1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		runtime.LockOSThread()
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", p.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		ready <- err
		if err == nil {
			f()
		}
	}()
	if err := <-ready; err != nil {
		p.t.Fatalf("enter the neighbour's network namespace: %v", err)
	}
}

func (p *tcpProbe) dial() bool {
	conn, err := net.DialTimeout("tcp", p.addr, 90*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// once is one connect from the neighbour.
func (p *tcpProbe) once() bool {
	var ok bool
	p.inNetns(func() { ok = p.dial() })
	p.wg.Wait()
	return ok
}

func (p *tcpProbe) start() {
	p.mu.Lock()
	p.running, p.done = true, make(chan struct{})
	p.lastOK, p.sawDown, p.upAgain, p.longest, p.samples = time.Now(), false, false, 0, 0
	done := p.done
	p.mu.Unlock()
	p.inNetns(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			ok := p.dial()
			now := time.Now()
			p.mu.Lock()
			p.samples++
			if ok {
				if p.sawDown {
					if d := now.Sub(p.lastOK); d > p.longest {
						p.longest = d
					}
					p.upAgain = true
				}
				p.lastOK = now
			} else {
				p.sawDown = true
				p.upAgain = false
			}
			p.mu.Unlock()
		}
	})
}

// upSinceDown: the service went down and is back.
func (p *tcpProbe) upSinceDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sawDown && p.upAgain
}

// stop ends the polling and returns the longest outage (last success
// before it to first success after) and the number of probes.
func (p *tcpProbe) stop() (time.Duration, int) {
	p.mu.Lock()
	close(p.done)
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.longest, p.samples
}
