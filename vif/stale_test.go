package vif

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/protocol"
)

// Stale finds the ports of one instance that are none of the NICs it is
// given; Remove deletes them (flows, OVS port, veth and so the namespace
// end) and leaves the instance's other NICs and other instances alone.
func TestStale(t *testing.T) {
	t.Parallel()
	c, br, p := setup(t)
	ctx := testCtx(t)
	sn, sn2 := subnet(t), subnet(t)
	nicA, nicB := vlanNIC(t, sn, 10, 170, true), vlanNIC(t, sn2, 10, 171, true)
	nicB.Gateway = ""
	n := newNetns(t)
	id := uuid.NewString()
	t.Cleanup(func() {
		if err := p.Unplug(context.Background(), id, []protocol.NIC{nicA, nicB}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := p.Plug(ctx, id, n.path, []protocol.NIC{nicA, nicB}); err != nil {
		t.Fatal(err)
	}
	nicO := vlanNIC(t, sn, 11, 170, true)
	idO, _ := plug(t, p, nicO)

	if stale, err := p.Stale(ctx, id, []protocol.NIC{nicA, nicB}); err != nil || len(stale) != 0 {
		t.Errorf("Stale with every NIC = %+v, %v; want none", stale, err)
	}
	// A port named after a NIC (same first 11 characters of the port id)
	// is that NIC's: Plug takes it over.
	sameName := nicB
	sameName.PortID = nicB.PortID[:11] + strings.Repeat("f", len(nicB.PortID)-11)
	if sameName.PortID == nicB.PortID {
		sameName.PortID = nicB.PortID[:11] + strings.Repeat("e", len(nicB.PortID)-11)
	}
	if stale, err := p.Stale(ctx, id, []protocol.NIC{nicA, sameName}); err != nil || len(stale) != 0 {
		t.Errorf("Stale with a NIC of the same host name = %+v, %v; want none", stale, err)
	}
	if _, err := p.Stale(ctx, "", nil); err == nil {
		t.Error("Stale without an instance id succeeded")
	}

	stale, err := p.Stale(ctx, id, []protocol.NIC{nicA})
	if err != nil {
		t.Fatal(err)
	}
	want := Port{Bridge: br, Name: HostIfName(nicB.PortID), InstanceID: id, PortID: nicB.PortID}
	if len(stale) != 1 || stale[0] != want {
		t.Fatalf("Stale = %+v, want [%+v]", stale, want)
	}
	if err := p.Remove(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if hostLinkExists(t, want.Name) {
		t.Error("stale veth left")
	}
	if _, ok, err := c.PortByName(ctx, want.Name); err != nil || ok {
		t.Errorf("stale OVS port left: %v %v", ok, err)
	}
	if f := flowsWithCookie(t, c, br, nicB.PortID); len(f) != 0 {
		t.Errorf("stale flows left: %v", f)
	}
	links := n.ip(t, "-o", "link", "show")
	if strings.Contains(links, "eth1") || !strings.Contains(links, "eth0") {
		t.Errorf("namespace links after removing the stale NIC: %s", links)
	}
	if addrs := n.ip(t, "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, sn+"10/24") {
		t.Errorf("eth0 addresses: %s", addrs)
	}
	for _, nic := range []protocol.NIC{nicA, nicO} {
		if _, ok, err := c.PortByIfaceID(ctx, nic.PortID); err != nil || !ok {
			t.Errorf("port %s gone: %v %v", nic.PortID, ok, err)
		}
		if f := flowsWithCookie(t, c, br, nic.PortID); len(f) == 0 {
			t.Errorf("flows of port %s gone", nic.PortID)
		}
	}
	if stale, err := p.Stale(ctx, idO, nil); err != nil || len(stale) != 1 || stale[0].PortID != nicO.PortID {
		t.Errorf("Stale of the other instance with no NICs = %+v, %v; want its one port", stale, err)
	}
}
