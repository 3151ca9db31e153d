package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
)

// networkPorts lists the ports of network netID.
func networkPorts(t *testing.T, nc *gophercloud.ServiceClient, netID string) []ports.Port {
	t.Helper()
	pages, err := ports.List(nc, ports.ListOpts{NetworkID: netID}).AllPages(context.Background())
	if err != nil {
		t.Fatalf("list ports: %v", err)
	}
	ps, err := ports.ExtractPorts(pages)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// tenantNetwork creates a project network (Capsule picks its VLAN) with a
// subnet of cidr and the given allocation pools.
func tenantNetwork(t *testing.T, nc *gophercloud.ServiceClient, name, cidr string, pools []subnets.AllocationPool) (netID, subnetID string) {
	t.Helper()
	ctx := context.Background()
	n, err := networks.Create(ctx, nc, networks.CreateOpts{Name: name}).Extract()
	if err != nil {
		t.Fatalf("create network %s: %v", name, err)
	}
	sn, err := subnets.Create(ctx, nc, subnets.CreateOpts{NetworkID: n.ID, Name: name + "-sub", CIDR: cidr,
		IPVersion: gophercloud.IPv4, AllocationPools: pools}).Extract()
	if err != nil {
		t.Fatalf("create subnet %s: %v", cidr, err)
	}
	return n.ID, sn.ID
}

// inPools reports whether ip is inside one of pools.
func inPools(ip string, pools []subnets.AllocationPool) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, p := range pools {
		if a.Compare(netip.MustParseAddr(p.Start)) >= 0 && a.Compare(netip.MustParseAddr(p.End)) <= 0 {
			return true
		}
	}
	return false
}

// TestConcurrentBootsDistinctAddresses: 50 servers created at once on one
// network (PostgreSQL, as a multi-host cloud runs) get 50 distinct
// addresses, all inside the subnet's pools; deleting them releases every
// port and address.
func TestConcurrentBootsDistinctAddresses(t *testing.T) {
	t.Parallel()
	concurrentBoots(t, startCloud(t, onPostgres, fakeAgents, withQuota(60)))
}

// TestConcurrentBootsDistinctAddressesOnSQLite is the same on SQLite, the
// all-in-one's database.
func TestConcurrentBootsDistinctAddressesOnSQLite(t *testing.T) {
	t.Parallel()
	concurrentBoots(t, startCloud(t, fakeAgents, withQuota(60)))
}

func concurrentBoots(t *testing.T, c *cloud) {
	const n = 50
	ctx := context.Background()
	cc := c.computeClient(t, "demo", c.demoPass, "demo")
	nc := c.networkClient(t, "demo", c.demoPass, "demo")
	// Two pools, 72 addresses for 50 servers: random picks collide often,
	// which is what the allocator must survive.
	pools := []subnets.AllocationPool{{Start: "10.79.0.10", End: "10.79.0.40"}, {Start: "10.79.0.100", End: "10.79.0.140"}}
	netID, subID := tenantNetwork(t, nc, "many", "10.79.0.0/24", pools)
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]

	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, err := servers.Create(ctx, cc, servers.CreateOpts{Name: fmt.Sprintf("many-%02d", i), ImageRef: img,
				FlavorRef: "1", Networks: []servers.Network{{UUID: netID}}}, nil).Extract()
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = s.ID
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("create many-%02d: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, id := range ids {
		waitStatus(t, cc, id, "ACTIVE", 90*time.Second)
	}

	ps := networkPorts(t, nc, netID)
	if len(ps) != n {
		t.Fatalf("%d ports on the network, want %d", len(ps), n)
	}
	byIP := map[string]string{}
	devices := map[string]bool{}
	for _, p := range ps {
		if len(p.FixedIPs) != 1 || p.FixedIPs[0].SubnetID != subID {
			t.Errorf("port %s has fixed IPs %v, want one on %s", p.ID, p.FixedIPs, subID)
			continue
		}
		ip := p.FixedIPs[0].IPAddress
		if other, dup := byIP[ip]; dup {
			t.Errorf("address %s given to two ports: %s and %s", ip, other, p.ID)
		}
		byIP[ip] = p.ID
		if !inPools(ip, pools) {
			t.Errorf("address %s of port %s is outside the pools %v", ip, p.ID, pools)
		}
		devices[p.DeviceID] = true
	}
	for i, id := range ids {
		if !devices[id] {
			t.Errorf("server many-%02d (%s) has no port on the network", i, id)
		}
	}

	for _, id := range ids {
		if err := servers.Delete(ctx, cc, id).ExtractErr(); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	for _, id := range ids {
		waitGone(t, cc, id, 60*time.Second)
	}
	if ps := networkPorts(t, nc, netID); len(ps) != 0 {
		t.Errorf("%d ports left after deleting every server", len(ps))
	}
	// No allocation left: the subnet (which Neutron refuses to delete
	// while an address of it is allocated) and the network go.
	for _, path := range []string{"subnets/" + subID, "networks/" + netID} {
		if code, body := raw(t, nc, "DELETE", path, ""); code != 204 {
			t.Errorf("DELETE %s: %d %v, want 204", path, code, body)
		}
	}
}

// TestFixedIPConflicts: a server asking for an address that is taken, or
// one outside the network's subnets, is refused with Nova's 400 body, and
// the refusal leaves no server, port or address behind.
func TestFixedIPConflicts(t *testing.T) {
	t.Parallel()
	c := startCloud(t, fakeAgents)
	ctx := context.Background()
	cc := c.computeClient(t, "demo", c.demoPass, "demo")
	nc := c.networkClient(t, "demo", c.demoPass, "demo")
	netID, _ := tenantNetwork(t, nc, "fixed", "10.80.0.0/24", nil)
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]

	first, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "holder", ImageRef: img, FlavorRef: "1",
		Networks: []servers.Network{{UUID: netID, FixedIP: "10.80.0.5"}}}, nil).Extract()
	if err != nil {
		t.Fatalf("create holder: %v", err)
	}
	waitStatus(t, cc, first.ID, "ACTIVE", 60*time.Second)

	create := func(fixed string) string {
		return fmt.Sprintf(`{"server":{"name":"intruder","imageRef":%q,"flavorRef":"1","networks":[{"uuid":%q,"fixed_ip":%q}]}}`,
			img, netID, fixed)
	}
	for _, tc := range []struct{ what, ip string }{
		{"a taken address", "10.80.0.5"},
		{"an address outside the subnet", "10.81.0.5"},
		{"the subnet's broadcast address", "10.80.0.255"},
	} {
		code, body := raw(t, cc, "POST", "servers", create(tc.ip))
		novaFault(t, tc.what, code, body, 400, "badRequest")
		if f, _ := body["badRequest"].(map[string]any); f != nil {
			t.Logf("%s: 400 %q", tc.what, f["message"])
			if !strings.Contains(fmt.Sprint(f["message"]), tc.ip) {
				t.Errorf("%s: message %q does not name %s", tc.what, f["message"], tc.ip)
			}
		}
	}
	if n := countServers(t, cc); n != 1 {
		t.Errorf("%d servers after refused creates, want 1", n)
	}
	ps := networkPorts(t, nc, netID)
	if len(ps) != 1 || ps[0].DeviceID != first.ID || ps[0].FixedIPs[0].IPAddress != "10.80.0.5" {
		t.Errorf("ports after refused creates = %+v, want only the holder's 10.80.0.5", ps)
	}

	// Released with its server, the address can be asked for again.
	if err := servers.Delete(ctx, cc, first.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, cc, first.ID, 60*time.Second)
	again, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "again", ImageRef: img, FlavorRef: "1",
		Networks: []servers.Network{{UUID: netID, FixedIP: "10.80.0.5"}}}, nil).Extract()
	if err != nil {
		t.Fatalf("create with the released address: %v", err)
	}
	waitStatus(t, cc, again.ID, "ACTIVE", 60*time.Second)
}
