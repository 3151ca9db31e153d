package agent

import (
	"context"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/protocol"
)

// A firewall refresh (a remote group's members changed) replaces only the
// plugged NIC's flows, never plugs it again; a repeat, an older refresh,
// a NIC not plugged here and a NIC that differs in more than its filter
// change nothing (drift repair plugs the last one); one that came over
// the bus is applied like a direct one.
func TestRefreshFirewallFlowsOnly(t *testing.T) {
	drv := newFakeDriver()
	p := &refilterPlumber{fakePlumber: newFakePlumber(drv)}
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	e.serveConductor()
	e.start()
	e.buildNet("i-fw", "req-fw")
	if r := e.waitReport("i-fw", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	plugs := len(drv.callsOf("plug"))
	ctx := context.Background()
	refiltered := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.refiltered)
	}
	withRemotes := func(remotes ...string) protocol.NIC {
		nic := testNICs()[0]
		nic.Firewall = &protocol.Firewall{Rules: []protocol.FirewallRule{{Direction: "ingress", EtherType: "IPv4", Remotes: remotes}}}
		return nic
	}
	t0 := time.Now()
	refresh := func(nic protocol.NIC, at time.Time) {
		t.Helper()
		if err := e.agent.refreshFirewall(ctx, protocol.RefreshFirewall{RequestID: "req-r", InstanceID: "i-fw", NIC: nic, ComputedAt: at}); err != nil {
			t.Fatal(err)
		}
	}

	refresh(withRemotes("10.0.0.6/32"), t0)
	if refiltered() != 1 {
		t.Fatalf("refiltered %d times, want 1", refiltered())
	}
	refresh(withRemotes("10.0.0.6/32"), t0.Add(time.Second))  // the same filter again
	refresh(withRemotes("10.0.0.7/32"), t0.Add(-time.Second)) // overtaken by the one above
	unknown := withRemotes("10.0.0.8/32")
	unknown.PortID = "port-z"
	refresh(unknown, t0.Add(2*time.Second))
	moved := withRemotes("10.0.0.9/32")
	moved.IPs = []protocol.IP{{Address: "10.0.0.99", PrefixLen: 24, SubnetID: "sub-1"}}
	refresh(moved, t0.Add(3*time.Second))
	if refiltered() != 1 {
		t.Fatalf("refiltered %d times, want still 1", refiltered())
	}

	e.publish(protocol.KindRefreshFirewall, protocol.RefreshFirewall{RequestID: "req-bus", InstanceID: "i-fw",
		NIC: withRemotes("10.0.0.10/32"), ComputedAt: t0.Add(4 * time.Second)})
	deadline := time.Now().Add(5 * time.Second)
	for refiltered() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the refresh over the bus was not applied: %d refilters", refiltered())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.mu.Lock()
	last := p.refiltered[len(p.refiltered)-1]
	p.mu.Unlock()
	if last.Firewall.Rules[0].Remotes[0] != "10.0.0.10/32" {
		t.Fatalf("refiltered with %+v", last.Firewall)
	}
	if n := len(drv.callsOf("plug")); n != plugs {
		t.Fatalf("a firewall refresh plugged the server (%d plugs, want %d)", n, plugs)
	}
	nics, _ := e.agent.nics.get("i-fw")
	if nics[0].Firewall == nil || nics[0].Firewall.Rules[0].Remotes[0] != "10.0.0.10/32" {
		t.Fatalf("the agent's NICs keep %+v, want the refreshed filter", nics[0].Firewall)
	}
}
