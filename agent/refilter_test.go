package agent

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/protocol"
)

// refilterPlumber is a fake plumber that can replace a NIC's flows alone.
type refilterPlumber struct {
	*fakePlumber
	refiltered []protocol.NIC
	fail       error
}

func (r *refilterPlumber) Refilter(_ context.Context, id string, nic protocol.NIC) error {
	if err := r.drv.note("refilter", id); err != nil {
		return err
	}
	if r.fail != nil {
		return r.fail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refiltered = append(r.refiltered, nic)
	return nil
}

// A security group change re-sent for a plugged NIC (same port, addresses
// and network, another filter) replaces its flows only: the server's
// namespace is not plugged again (a Plug would put back addresses the
// guest changed). Any other change, or a failed refilter, plugs it whole.
func TestAttachSameNICOnlyRefilters(t *testing.T) {
	drv := newFakeDriver()
	p := &refilterPlumber{fakePlumber: newFakePlumber(drv)}
	e := newEnv(t, drv, testConfig(), WithPlumber(p))
	e.serveConductor()
	e.start()
	e.buildNet("i-rf", "req-rf")
	if r := e.waitReport("i-rf", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	if _, err := e.attach("i-rf", thirdNIC()); err != nil {
		t.Fatal(err)
	}
	plugs := len(drv.callsOf("plug"))

	filtered := thirdNIC()
	filtered.Firewall = &protocol.Firewall{Rules: []protocol.FirewallRule{{Direction: "ingress", EtherType: "IPv4"}}}
	if rep, err := e.attach("i-rf", filtered); err != nil || !rep.Live {
		t.Fatalf("attach with a new filter = %+v, %v", rep, err)
	}
	if n := len(drv.callsOf("plug")); n != plugs {
		t.Errorf("a filter change plugged the server again (%d plugs, want %d)", n, plugs)
	}
	if len(p.refiltered) != 1 || p.refiltered[0].Firewall == nil {
		t.Fatalf("refiltered = %+v, want the NIC with its new filter", p.refiltered)
	}

	// Another address is a re-plug.
	moved := filtered
	moved.IPs = []protocol.IP{{Address: "10.2.0.6", PrefixLen: 24, SubnetID: "sub-3"}}
	if _, err := e.attach("i-rf", moved); err != nil {
		t.Fatal(err)
	}
	if n := len(drv.callsOf("plug")); n != plugs+1 {
		t.Errorf("an address change: %d plugs, want %d", n, plugs+1)
	}
	pl, _ := p.get("i-rf")
	if i := slices.IndexFunc(pl.nics, func(n protocol.NIC) bool { return n.PortID == "port-c" }); i < 0 || pl.nics[i].IPs[0].Address != "10.2.0.6" {
		t.Errorf("plugged after the address change = %+v", pl.nics)
	}

	// A refilter that fails (the OVS port is gone) falls back to a plug.
	p.fail = errors.New("OVS port is not open")
	moved.Firewall = nil
	if _, err := e.attach("i-rf", moved); err != nil {
		t.Fatal(err)
	}
	if n := len(drv.callsOf("plug")); n != plugs+2 {
		t.Errorf("after a failed refilter: %d plugs, want %d", n, plugs+2)
	}
}
