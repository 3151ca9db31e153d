package vif

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"sync/atomic"
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
