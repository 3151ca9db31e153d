package vif

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/ovs/ovstest"
	"github.com/capsule-cloud/capsule/protocol"
)

// spawnCounter counts the ovs client's debug line per ovs-vsctl/ovs-ofctl
// run ("ovs command"), i.e. the processes a plug costs.
type spawnCounter struct{ n *atomic.Int64 }

func (s spawnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (s spawnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "ovs command" {
		s.n.Add(1)
	}
	return nil
}
func (s spawnCounter) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s spawnCounter) WithGroup(string) slog.Handler      { return s }

// BenchmarkPlugUnplug plugs and unplugs one NIC of a booting server as the
// agent does (a VLAN port with port security, a security group and the
// metadata service) into a fresh namespace, and reports the OVS processes
// each plug and unplug runs: the host-side share of a networked boot
// (issue 15). go test ./vif -run X -bench PlugUnplug -benchtime 20x
func BenchmarkPlugUnplug(b *testing.B) {
	var spawns atomic.Int64
	c := ovs.New(ovs.Options{Logger: slog.New(spawnCounter{&spawns})})
	br := ovstest.Bridge(b, ovstest.Client(b))
	p := New(c, map[string]string{"physnet1": br}, slog.New(slog.DiscardHandler)).WithMetadata()
	fw := &protocol.Firewall{Rules: []protocol.FirewallRule{
		{Direction: "egress", EtherType: "IPv4", Protocol: -1, RemoteAny: true, Stateful: true},
		{Direction: "ingress", EtherType: "IPv4", Protocol: -1, Remotes: []string{"10.99.0.0/24"}, Stateful: true},
	}}
	var plugT, unplugT time.Duration
	var plugSpawns, unplugSpawns int64
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		ns := fmt.Sprintf("capsule-b-%s", uuid.NewString()[:8])
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			b.Fatalf("ip netns add: %v: %s", err, out)
		}
		id := uuid.NewString()
		nic := protocol.NIC{PortID: uuid.NewString(), NetworkID: "n", MAC: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i>>8&0xff, i&0xff),
			IPs: []protocol.IP{{Address: fmt.Sprintf("10.99.%d.%d", i/200, 2+i%200), PrefixLen: 16}}, Gateway: "10.99.0.1",
			MTU: 1450, PhysicalNetwork: "physnet1", NetworkType: "vlan", SegmentationID: 100, PortSecurity: true, Firewall: fw}
		s0, t0 := spawns.Load(), time.Now()
		err := p.Plug(ctx, id, "/var/run/netns/"+ns, []protocol.NIC{nic})
		plugT += time.Since(t0)
		s1, t1 := spawns.Load(), time.Now()
		uerr := p.Unplug(ctx, id, []protocol.NIC{nic})
		unplugT += time.Since(t1)
		plugSpawns += s1 - s0
		unplugSpawns += spawns.Load() - s1
		_ = exec.Command("ip", "netns", "del", ns).Run()
		if err != nil || uerr != nil {
			b.Fatalf("plug: %v; unplug: %v", err, uerr)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(plugT.Milliseconds())/n, "plug-ms")
	b.ReportMetric(float64(unplugT.Milliseconds())/n, "unplug-ms")
	b.ReportMetric(float64(plugSpawns)/n, "plug-ovs-procs")
	b.ReportMetric(float64(unplugSpawns)/n, "unplug-ovs-procs")
}

// BenchmarkPlugUnplugConcurrent is BenchmarkPlugUnplug with 10 goroutines
// plugging and unplugging at once (a compute host at C=10, issue 15): it
// reports the OVS processes per plug-and-unplug, and the CPU (user+sys) of
// this process with its children (the ovs-ofctl runs) and of ovs-vswitchd
// per plug-and-unplug. go test ./vif -run X -bench PlugUnplugConcurrent -benchtime 50x
func BenchmarkPlugUnplugConcurrent(b *testing.B) {
	const workers = 10
	var spawns atomic.Int64
	c := ovs.New(ovs.Options{Logger: slog.New(spawnCounter{&spawns})})
	br := ovstest.Bridge(b, ovstest.Client(b))
	p := New(c, map[string]string{"physnet1": br}, slog.New(slog.DiscardHandler)).WithMetadata()
	fw := &protocol.Firewall{Rules: []protocol.FirewallRule{
		{Direction: "egress", EtherType: "IPv4", Protocol: -1, RemoteAny: true, Stateful: true},
		{Direction: "ingress", EtherType: "IPv4", Protocol: -1, Remotes: []string{"10.98.0.0/24"}, Stateful: true},
	}}
	ctx := context.Background()
	var next atomic.Int64
	errs := make(chan error, workers)
	s0, cpu0, vs0 := spawns.Load(), cpuSelfAndChildren(), vswitchdCPU()
	b.ResetTimer()
	for w := 0; w < workers; w++ {
		go func() {
			var err error
			defer func() { errs <- err }()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				ns := fmt.Sprintf("capsule-b-%s", uuid.NewString()[:8])
				if out, e := exec.Command("ip", "netns", "add", ns).CombinedOutput(); e != nil {
					err = fmt.Errorf("ip netns add: %v: %s", e, out)
					return
				}
				id := uuid.NewString()
				nic := protocol.NIC{PortID: uuid.NewString(), NetworkID: "n", MAC: fmt.Sprintf("fa:16:3e:01:%02x:%02x", i>>8&0xff, i&0xff),
					IPs: []protocol.IP{{Address: fmt.Sprintf("10.98.%d.%d", i/200, 2+i%200), PrefixLen: 16}}, Gateway: "10.98.0.1",
					MTU: 1450, PhysicalNetwork: "physnet1", NetworkType: "vlan", SegmentationID: 100, PortSecurity: true, Firewall: fw}
				perr := p.Plug(ctx, id, "/var/run/netns/"+ns, []protocol.NIC{nic})
				uerr := p.Unplug(ctx, id, []protocol.NIC{nic})
				_ = exec.Command("ip", "netns", "del", ns).Run()
				if perr != nil || uerr != nil {
					err = fmt.Errorf("plug: %v; unplug: %v", perr, uerr)
					return
				}
			}
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(spawns.Load()-s0)/n, "ovs-procs/op")
	b.ReportMetric(float64((cpuSelfAndChildren()-cpu0).Milliseconds())/n, "cpu-ms/op")
	if vs := vswitchdCPU(); vs >= 0 && vs0 >= 0 {
		b.ReportMetric(float64((vs-vs0).Milliseconds())/n, "vswitchd-cpu-ms/op")
	}
}

// cpuSelfAndChildren is the user+sys CPU of this process and its waited-for
// children.
func cpuSelfAndChildren() time.Duration {
	var sum time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err == nil {
			sum += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return sum
}

// vswitchdCPU is ovs-vswitchd's user+sys CPU (-1 when it cannot be read).
func vswitchdCPU() time.Duration {
	pid, err := os.ReadFile("/var/run/openvswitch/ovs-vswitchd.pid")
	if err != nil {
		return -1
	}
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the command name (which ends with ')'): utime and stime
	// are the 14th and 15th of the whole line, in clock ticks (100 Hz).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
