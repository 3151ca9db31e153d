package network_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/network"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// fakeUpdater is the Compute API's re-plug as the test wants it.
type fakeUpdater struct {
	busy   error
	fail   error
	replug func(p *store.Port, drop []string)
	calls  int
}

func (f *fakeUpdater) PortPlugReady(context.Context, *store.Port) error { return f.busy }

func (f *fakeUpdater) ReplugPort(_ context.Context, p *store.Port, drop []string) error {
	f.calls++
	if f.replug != nil {
		f.replug(p, drop)
	}
	return f.fail
}

func addrsOf(p *store.Port) []string {
	var out []string
	for _, a := range p.FixedIPs {
		out = append(out, a.IPAddress)
	}
	return out
}

// A change of a server's port's addresses or port security reaches the
// host before the update answers, and the address it gives up is still
// allocated until the host has let go of it (another tenant cannot take
// it while the NIC and its anti-spoofing flows still allow it). A busy
// server is a 409 that changes nothing; a failed re-plug puts the port
// back (new address freed, old one kept) and answers in Neutron's format.
func TestUpdateOfPluggedPortReleasesTheOldAddressAfterTheHost(t *testing.T) {
	st := storetest.SQLite(t)
	up := &fakeUpdater{}
	svc := network.New(callers, network.WithStore(st), network.WithConfig(netConfig), network.WithPortUpdater(up))
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, st: st}
	ctx := context.Background()
	n := e.network("alice", obj{"name": "own"})
	netID := n["id"].(string)
	e.subnet("alice", obj{"network_id": netID, "cidr": "10.52.0.0/24"})
	e.addServer("vm", "p1")
	nic, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: netID, ProjectID: "p1", DeviceID: "vm",
		DeviceOwner: "compute:nova", ComputeBound: true, HostID: "h1", FixedIPs: []store.FixedIPRequest{{IP: "10.52.0.10"}}, Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	path := "/v2.0/ports/" + nic.ID
	takeable := func(ip string) bool {
		t.Helper()
		p, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: netID, ProjectID: "p2", Admin: true,
			FixedIPs: []store.FixedIPRequest{{IP: ip}}})
		if err != nil {
			return false
		}
		if err := st.ReleasePort(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
		return true
	}
	e.fails(http.StatusNotFound, "PortNotFound", "PUT", path, "bob", obj{"port": obj{"fixed_ips": []obj{{"ip_address": "10.52.0.20"}}}})
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "PUT", path, "reader", obj{"port": obj{"fixed_ips": []obj{{"ip_address": "10.52.0.20"}}}})
	e.fails(http.StatusUnauthorized, "", "PUT", path, "", obj{"port": obj{"fixed_ips": []obj{{"ip_address": "10.52.0.20"}}}})

	// Busy server: 409, the port as it was, the host not asked.
	up.busy = errdefs.Conflict("server busy")
	e.fails(http.StatusConflict, "PortInUse", "PUT", path, "alice", obj{"port": obj{"fixed_ips": []obj{{"ip_address": "10.52.0.20"}}}})
	if p, _ := st.GetPort(ctx, nic.ID); !slices.Equal(addrsOf(p), []string{"10.52.0.10"}) || p.RevisionNumber != nic.RevisionNumber || up.calls != 0 {
		t.Fatalf("after a busy 409: port %v rev %d (was %d), %d re-plugs", addrsOf(p), p.RevisionNumber, nic.RevisionNumber, up.calls)
	}
	up.busy = nil

	// The host confirms: while it re-plugs, the old address is still held.
	var during []string
	var dropped []string
	var oldFree bool
	up.replug = func(p *store.Port, drop []string) {
		during, dropped, oldFree = addrsOf(p), drop, takeable("10.52.0.10")
	}
	got := e.must(http.StatusOK, "PUT", path, "alice", obj{"port": obj{"fixed_ips": []obj{{"ip_address": "10.52.0.20"}}}})["port"].(obj)
	if oldFree || !slices.Contains(during, "10.52.0.10") || !slices.Contains(during, "10.52.0.20") || !slices.Equal(dropped, []string{"10.52.0.10"}) {
		t.Fatalf("during the re-plug: port %v, drop %v, old address free: %v", during, dropped, oldFree)
	}
	if ips := got["fixed_ips"].([]any); len(ips) != 1 || ips[0].(obj)["ip_address"] != "10.52.0.20" {
		t.Fatalf("answered fixed_ips %v", ips)
	}
	if !takeable("10.52.0.10") {
		t.Fatal("the old address is still held after the host let go of it")
	}

	// The agent fails: the port is rolled back, its new address freed.
	up.replug = nil
	up.fail = errdefs.Unavailable("host h1 did not answer")
	e.fails(http.StatusServiceUnavailable, "ServiceUnavailable", "PUT", path, "alice",
		obj{"port": obj{"fixed_ips": []obj{{"ip_address": "10.52.0.30"}}, "name": "renamed"}})
	if p, _ := st.GetPort(ctx, nic.ID); !slices.Equal(addrsOf(p), []string{"10.52.0.20"}) || p.Name != nic.Name {
		t.Fatalf("after a failed re-plug: port %v named %q", addrsOf(p), p.Name)
	}
	if !takeable("10.52.0.30") {
		t.Fatal("the rolled-back address stays allocated")
	}
	if up.calls != 3 {
		t.Fatalf("%d re-plugs, want 3 (update, failed update, rollback)", up.calls)
	}

	// Port security goes through the host too; a rename alone does not.
	up.fail = nil
	e.must(http.StatusOK, "PUT", path, "alice", obj{"port": obj{"port_security_enabled": false, "security_groups": []string{}}})
	e.must(http.StatusOK, "PUT", path, "alice", obj{"port": obj{"name": "eth0"}})
	if up.calls != 4 {
		t.Fatalf("%d re-plugs, want 4", up.calls)
	}
}
