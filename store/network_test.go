package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

var tenantVLANs = store.VLANRange{PhysicalNetwork: "physnet1", Min: 100, Max: 102}

// netWithSubnet creates a vlan network and a subnet on it.
func netWithSubnet(t *testing.T, st *store.Store, cidr string, pools []store.AllocationPool) (*store.Network, *store.Subnet) {
	t.Helper()
	ctx := context.Background()
	n := &store.Network{Name: "n-" + cidr, ProjectID: "p1", AdminStateUp: true, MTU: 1500, PortSecurityEnabled: true,
		NetworkType: store.NetworkTypeVLAN}
	if err := st.CreateNetwork(ctx, n, tenantVLANs); err != nil {
		t.Fatalf("create network: %v", err)
	}
	sn := &store.Subnet{NetworkID: n.ID, ProjectID: "p1", CIDR: cidr, IPVersion: 4}
	if err := store.ValidateSubnet(sn, true, pools, nil, nil); err != nil {
		t.Fatalf("validate subnet: %v", err)
	}
	if err := st.CreateSubnet(ctx, sn); err != nil {
		t.Fatalf("create subnet: %v", err)
	}
	return n, sn
}

func TestConcurrentAllocationsAreDistinct(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		pools := []store.AllocationPool{{Start: "10.9.0.10", End: "10.9.0.99"}, {Start: "10.9.0.150", End: "10.9.0.200"}}
		n, sn := netWithSubnet(t, st, "10.9.0.0/24", pools)
		const N = 50
		var wg sync.WaitGroup
		ports := make([]*store.Port, N)
		errs := make([]error, N)
		for i := 0; i < N; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				ports[i], errs[i] = st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, ProjectID: "p1",
					DeviceID: fmt.Sprintf("server-%d", i), DeviceOwner: "compute:nova", ComputeBound: true, HostID: "host-a"})
			}(i)
		}
		wg.Wait()
		seenIP, seenMAC := map[string]bool{}, map[string]bool{}
		for i := 0; i < N; i++ {
			if errs[i] != nil {
				t.Fatalf("allocation %d: %v", i, errs[i])
			}
			p := ports[i]
			if len(p.FixedIPs) != 1 || p.FixedIPs[0].SubnetID != sn.ID {
				t.Fatalf("port %d fixed IPs %+v", i, p.FixedIPs)
			}
			ip := p.FixedIPs[0].IPAddress
			if seenIP[ip] || seenMAC[p.MACAddress] {
				t.Fatalf("address %s / mac %s handed out twice", ip, p.MACAddress)
			}
			seenIP[ip], seenMAC[p.MACAddress] = true, true
			if !sn.InPools(netip.MustParseAddr(ip)) {
				t.Fatalf("address %s outside the pools", ip)
			}
			if p.Status != store.PortActive || p.BindingHostID != "host-a" || p.MACAddress[:8] != "fa:16:3e" {
				t.Fatalf("port %+v", p)
			}
		}
		got, err := st.ServerPorts(ctx, "server-7", "p1")
		if err != nil || len(got) != 1 || got[0].ID != ports[7].ID || len(got[0].FixedIPs) != 1 {
			t.Fatalf("ports of server-7: %+v %v", got, err)
		}
	})
}

func TestRequestedAddresses(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		n, sn := netWithSubnet(t, st, "10.8.0.0/24", []store.AllocationPool{{Start: "10.8.0.10", End: "10.8.0.20"}})
		req := func(ip string, admin bool) store.PortRequest {
			return store.PortRequest{NetworkID: n.ID, ProjectID: "p1", Admin: admin,
				FixedIPs: []store.FixedIPRequest{{SubnetID: sn.ID, IP: ip}}}
		}
		p, err := st.AllocatePort(ctx, req("10.8.0.15", false))
		if err != nil || p.FixedIPs[0].IPAddress != "10.8.0.15" {
			t.Fatalf("requested address: %+v %v", p, err)
		}
		if p.Status != store.PortDown || !p.PortSecurityEnabled {
			t.Fatalf("unbound port %+v", p)
		}
		cases := []struct {
			ip    string
			admin bool
			kind  error
		}{
			{"10.8.0.15", false, store.ErrIPAddressInUse},
			{"10.8.1.15", false, store.ErrInvalidIPForSubnet},  // outside the subnet
			{"10.8.0.100", false, store.ErrInvalidIPForSubnet}, // outside the pools
			{"10.8.0.255", true, store.ErrInvalidIPForSubnet},  // broadcast
			{"not-an-ip", false, store.ErrInvalidInput},        // garbage
		}
		for _, c := range cases {
			_, err := st.AllocatePort(ctx, req(c.ip, c.admin))
			if !errors.Is(err, c.kind) {
				t.Errorf("request %s (admin %v): %v, want %v", c.ip, c.admin, err, c.kind)
			}
		}
		if _, err := st.AllocatePort(ctx, req("10.8.0.15", false)); !errors.Is(err, store.ErrConflict) {
			t.Errorf("taken address is not a generic conflict: %v", err)
		}
		// An admin may take an address outside the pools.
		if p2, err := st.AllocatePort(ctx, req("10.8.0.100", true)); err != nil || p2.FixedIPs[0].IPAddress != "10.8.0.100" {
			t.Fatalf("admin out-of-pool address: %+v %v", p2, err)
		}
		// Only the IP: the subnet is found.
		p3, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, ProjectID: "p1", FixedIPs: []store.FixedIPRequest{{IP: "10.8.0.11"}}})
		if err != nil || p3.FixedIPs[0].SubnetID != sn.ID {
			t.Fatalf("IP-only request: %+v %v", p3, err)
		}
		if _, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, FixedIPs: []store.FixedIPRequest{{IP: "192.168.1.1"}}}); !errors.Is(err, store.ErrInvalidIPForNetwork) {
			t.Fatalf("address of no subnet: %v", err)
		}
		// A taken MAC.
		if _, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, MAC: p.MACAddress}); !errors.Is(err, store.ErrMACAddressInUse) {
			t.Fatalf("taken MAC: %v", err)
		}
		if p4, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, MAC: "FA:16:3E:00:00:01", FixedIPs: []store.FixedIPRequest{}}); err != nil || p4.MACAddress != "fa:16:3e:00:00:01" || len(p4.FixedIPs) != 0 {
			t.Fatalf("own MAC, no address: %+v %v", p4, err)
		}
		if _, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: "nope"}); !errors.Is(err, store.ErrNetworkNotFound) || !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing network: %v", err)
		}
		// Release, then the address is free again.
		if err := st.ReleasePort(ctx, p.ID); err != nil {
			t.Fatalf("release: %v", err)
		}
		if err := st.ReleasePort(ctx, p.ID); !errors.Is(err, store.ErrPortNotFound) {
			t.Fatalf("second release: %v", err)
		}
		if p5, err := st.AllocatePort(ctx, req("10.8.0.15", false)); err != nil || p5.FixedIPs[0].IPAddress != "10.8.0.15" {
			t.Fatalf("reuse after release: %+v %v", p5, err)
		}
	})
}

func TestPoolExhaustion(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		n, sn := netWithSubnet(t, st, "10.7.0.0/24", []store.AllocationPool{{Start: "10.7.0.2", End: "10.7.0.4"}})
		var got []string
		for i := 0; i < 3; i++ {
			p, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID})
			if err != nil {
				t.Fatalf("allocation %d: %v", i, err)
			}
			if len(p.FixedIPs) != 1 {
				t.Fatalf("allocation %d: fixed IPs %+v, want one", i, p.FixedIPs)
			}
			got = append(got, p.FixedIPs[0].IPAddress)
		}
		// The pool's three addresses, each handed out once.
		slices.Sort(got)
		if want := []string{"10.7.0.2", "10.7.0.3", "10.7.0.4"}; !slices.Equal(got, want) {
			t.Fatalf("allocated %v, want %v", got, want)
		}
		if _, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID}); !errors.Is(err, store.ErrIPGenerationFailure) {
			t.Fatalf("exhausted pool: %v", err)
		}
		if _, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, FixedIPs: []store.FixedIPRequest{{SubnetID: sn.ID}}}); !errors.Is(err, store.ErrIPGenerationFailure) {
			t.Fatalf("exhausted subnet: %v", err)
		}
		// A failed allocation leaves no port behind.
		ports, err := st.ListPorts(ctx, store.PortFilter{NetworkID: n.ID})
		if err != nil || len(ports) != 3 {
			t.Fatalf("ports after failures: %d %v", len(ports), err)
		}
		// Deletes: subnet and network are in use.
		if err := st.DeleteSubnet(ctx, sn.ID); !errors.Is(err, store.ErrSubnetInUse) {
			t.Fatalf("delete used subnet: %v", err)
		}
		if err := st.DeleteNetwork(ctx, n.ID); !errors.Is(err, store.ErrNetworkInUse) {
			t.Fatalf("delete used network: %v", err)
		}
		for _, p := range ports {
			if err := st.ReleasePort(ctx, p.ID); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.DeleteNetwork(ctx, n.ID); err != nil {
			t.Fatalf("delete network: %v", err)
		}
		if _, err := st.GetSubnet(ctx, sn.ID); !errors.Is(err, store.ErrSubnetNotFound) {
			t.Fatalf("subnet survived its network: %v", err)
		}
	})
}

func TestUpdatePortAddresses(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		n, sn := netWithSubnet(t, st, "10.6.0.0/24", nil)
		p, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, FixedIPs: []store.FixedIPRequest{{IP: "10.6.0.5"}}})
		if err != nil {
			t.Fatal(err)
		}
		// Keep .5, add a second address on the same subnet.
		ips := []store.FixedIPRequest{{SubnetID: sn.ID, IP: "10.6.0.5"}, {SubnetID: sn.ID}}
		p, err = st.UpdatePort(ctx, p.ID, store.PortUpdate{FixedIPs: &ips})
		if err != nil || len(p.FixedIPs) != 2 || p.RevisionNumber != 2 {
			t.Fatalf("add address: %+v %v", p, err)
		}
		// Replace both with .6.
		ips = []store.FixedIPRequest{{IP: "10.6.0.6"}}
		p, err = st.UpdatePort(ctx, p.ID, store.PortUpdate{FixedIPs: &ips})
		if err != nil || len(p.FixedIPs) != 1 || p.FixedIPs[0].IPAddress != "10.6.0.6" {
			t.Fatalf("replace addresses: %+v %v", p, err)
		}
		// .5 is free again.
		if _, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, FixedIPs: []store.FixedIPRequest{{IP: "10.6.0.5"}}}); err != nil {
			t.Fatalf("reuse released address: %v", err)
		}
		// Gateway conflicts: the default gateway is .1; moving it onto .6 fails.
		if _, err := st.UpdateSubnet(ctx, sn.ID, func(s *store.Subnet) error { gw := "10.6.0.6"; s.GatewayIP = &gw; return nil }); !errors.Is(err, store.ErrGatewayIPInUse) {
			t.Fatalf("gateway onto a port's address: %v", err)
		}
		bound, err := st.BindPort(ctx, p.ID, "srv-1", "compute:nova", "host-b")
		if err != nil || bound.Status != store.PortActive || bound.DeviceID != "srv-1" {
			t.Fatalf("bind: %+v %v", bound, err)
		}
		if err := st.SetPortStatus(ctx, p.ID, store.PortDown); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTenantVLANsAndSegments(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		var vids []int
		for i := 0; i < 3; i++ {
			n := &store.Network{Name: "t", NetworkType: store.NetworkTypeVLAN}
			if err := st.CreateNetwork(ctx, n, tenantVLANs); err != nil {
				t.Fatalf("tenant network %d: %v", i, err)
			}
			if n.PhysicalNetwork != "physnet1" {
				t.Fatalf("physnet %q", n.PhysicalNetwork)
			}
			vids = append(vids, n.SegmentationID)
		}
		if fmt.Sprint(vids) != "[100 101 102]" {
			t.Fatalf("tenant VLANs %v", vids)
		}
		if err := st.CreateNetwork(ctx, &store.Network{NetworkType: store.NetworkTypeVLAN}, tenantVLANs); !errors.Is(err, store.ErrNoNetworkAvailable) {
			t.Fatalf("exhausted range: %v", err)
		}
		if err := st.CreateNetwork(ctx, &store.Network{NetworkType: store.NetworkTypeVLAN, PhysicalNetwork: "physnet1", SegmentationID: 101}, tenantVLANs); !errors.Is(err, store.ErrVLANInUse) {
			t.Fatalf("taken VLAN: %v", err)
		}
		if err := st.CreateNetwork(ctx, &store.Network{NetworkType: store.NetworkTypeVLAN, PhysicalNetwork: "physnet2", SegmentationID: 101}, tenantVLANs); err != nil {
			t.Fatalf("same VLAN on another physnet: %v", err)
		}
		if err := st.CreateNetwork(ctx, &store.Network{NetworkType: store.NetworkTypeFlat, PhysicalNetwork: "physnet1"}, tenantVLANs); err != nil {
			t.Fatalf("flat: %v", err)
		}
		if err := st.CreateNetwork(ctx, &store.Network{NetworkType: store.NetworkTypeFlat, PhysicalNetwork: "physnet1"}, tenantVLANs); !errors.Is(err, store.ErrFlatNetworkInUse) {
			t.Fatalf("second flat: %v", err)
		}
	})
}

func TestValidateSubnet(t *testing.T) {
	gw := func(s string) *string { return &s }
	cases := []struct {
		name      string
		cidr      string
		gw        *string
		gwDefault bool
		pools     []store.AllocationPool
		want      string // pools JSON, or "" when an error of kind err is expected
		err       error
	}{
		{"default", "10.0.0.0/24", nil, true, nil, `[{"start":"10.0.0.2","end":"10.0.0.254"}]`, nil},
		{"no gateway", "10.0.0.0/24", nil, false, nil, `[{"start":"10.0.0.1","end":"10.0.0.254"}]`, nil},
		{"middle gateway", "10.0.0.0/29", gw("10.0.0.3"), false, nil, `[{"start":"10.0.0.1","end":"10.0.0.2"},{"start":"10.0.0.4","end":"10.0.0.6"}]`, nil},
		{"host bits", "10.0.0.1/24", nil, true, nil, "", store.ErrInvalidInput},
		{"v6", "fd00::/64", nil, true, nil, "", store.ErrInvalidInput},
		{"gateway outside", "10.0.0.0/24", gw("10.0.1.1"), false, nil, "", store.ErrInvalidInput},
		{"gateway broadcast", "10.0.0.0/24", gw("10.0.0.255"), false, nil, "", store.ErrInvalidInput},
		{"gateway in pool", "10.0.0.0/24", gw("10.0.0.5"), false, []store.AllocationPool{{Start: "10.0.0.2", End: "10.0.0.9"}}, "", store.ErrGatewayConflictWithPool},
		{"pool outside", "10.0.0.0/24", nil, true, []store.AllocationPool{{Start: "10.0.0.200", End: "10.0.1.9"}}, "", store.ErrInvalidInput},
		{"pool reversed", "10.0.0.0/24", nil, true, []store.AllocationPool{{Start: "10.0.0.20", End: "10.0.0.9"}}, "", store.ErrInvalidInput},
		{"pools overlap", "10.0.0.0/24", nil, true, []store.AllocationPool{{Start: "10.0.0.2", End: "10.0.0.9"}, {Start: "10.0.0.9", End: "10.0.0.12"}}, "", store.ErrInvalidInput},
		{"pools", "10.0.0.0/24", nil, true, []store.AllocationPool{{Start: "10.0.0.50", End: "10.0.0.60"}, {Start: "10.0.0.2", End: "10.0.0.9"}}, `[{"start":"10.0.0.2","end":"10.0.0.9"},{"start":"10.0.0.50","end":"10.0.0.60"}]`, nil},
	}
	for _, c := range cases {
		s := &store.Subnet{CIDR: c.cidr, GatewayIP: c.gw}
		err := store.ValidateSubnet(s, c.gwDefault, c.pools, nil, nil)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || s.AllocationPools != c.want {
			t.Errorf("%s: pools %s err %v, want %s", c.name, s.AllocationPools, err, c.want)
		}
	}
	if err := store.ValidateSubnet(&store.Subnet{CIDR: "10.0.0.0/24"}, true, nil, []string{"8.8.8.8", "x"}, nil); !errors.Is(err, store.ErrInvalidInput) {
		t.Errorf("bad DNS: %v", err)
	}
	if err := store.ValidateSubnet(&store.Subnet{CIDR: "10.0.0.0/24"}, true, nil, nil, []store.HostRoute{{Destination: "10.1.0.0/16", NextHop: "nope"}}); !errors.Is(err, store.ErrInvalidInput) {
		t.Errorf("bad route: %v", err)
	}
}

func TestSubnetOverlapAndDelete(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		n, sn := netWithSubnet(t, st, "10.5.0.0/24", nil)
		other := &store.Subnet{NetworkID: n.ID, CIDR: "10.5.0.128/25"}
		if err := store.ValidateSubnet(other, true, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateSubnet(ctx, other); !errors.Is(err, store.ErrInvalidInput) {
			t.Fatalf("overlapping subnet: %v", err)
		}
		if err := st.CreateSubnet(ctx, &store.Subnet{NetworkID: "missing", CIDR: "10.1.0.0/24"}); !errors.Is(err, store.ErrNetworkNotFound) {
			t.Fatalf("subnet on missing network: %v", err)
		}
		if err := st.DeleteSubnet(ctx, sn.ID); err != nil {
			t.Fatalf("delete unused subnet: %v", err)
		}
		if err := st.DeleteSubnet(ctx, sn.ID); !errors.Is(err, store.ErrSubnetNotFound) {
			t.Fatalf("delete again: %v", err)
		}
	})
}

// TestNetworkForeignKeys: the schema itself refuses rows that would be
// orphaned by a concurrent delete.
func TestNetworkForeignKeys(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		if err := st.DB.Create(&store.Port{ID: "orphan", NetworkID: "missing", MACAddress: "fa:16:3e:00:00:09"}).Error; err == nil {
			t.Fatal("port on a missing network was stored")
		}
		n, sn := netWithSubnet(t, st, "10.4.0.0/24", nil)
		if err := st.DB.Create(&store.IPAllocation{SubnetID: "missing", IPAddress: "10.4.0.9", PortID: "x", NetworkID: n.ID}).Error; err == nil {
			t.Fatal("allocation on a missing subnet was stored")
		}
		u, err := st.UpdateNetwork(ctx, n.ID, func(n *store.Network) error { n.Name = "renamed"; return nil })
		if err != nil || u.Name != "renamed" || u.RevisionNumber != n.RevisionNumber+1 {
			t.Fatalf("update network: %+v %v", u, err)
		}
		if _, err := st.UpdateNetwork(ctx, "missing", func(*store.Network) error { return nil }); !errors.Is(err, store.ErrNetworkNotFound) {
			t.Fatalf("update missing network: %v", err)
		}
		if err := st.DeleteNetwork(ctx, n.ID); err != nil {
			t.Fatalf("delete network: %v", err)
		}
		if _, err := st.GetSubnet(ctx, sn.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("subnet after network delete: %v", err)
		}
	})
}

// TestMigrationComputeBoundBackfill drops ports.compute_bound and migrates
// again, as an older database would: the ports the Compute API bound
// (compute:* owner, device a live server of the port's own project) become
// their servers' NICs; a port of another project naming a server (the
// device_id hijack) does not.
func TestMigrationComputeBoundBackfill(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		n, _ := netWithSubnet(t, st, "10.4.0.0/24", nil)
		if err := st.DB.Create(&store.Instance{ID: "vm", Name: "vm", ProjectID: "p1"}).Error; err != nil {
			t.Fatal(err)
		}
		alloc := func(project, owner string) string {
			p, err := st.AllocatePort(ctx, store.PortRequest{NetworkID: n.ID, ProjectID: project, DeviceID: "vm", DeviceOwner: owner})
			if err != nil {
				t.Fatal(err)
			}
			return p.ID
		}
		own := alloc("p1", "compute:nova")
		alloc("p2", "compute:nova")
		alloc("p1", "")
		var version int
		if err := st.DB.Model(&store.SchemaMigration{}).Where("name LIKE ?", "ports say whether the Compute API bound them%").
			Pluck("version", &version).Error; err != nil || version == 0 {
			t.Fatalf("version of the compute_bound migration: %d %v", version, err)
		}
		if err := st.DB.Migrator().DropColumn(&store.Port{}, "ComputeBound"); err != nil {
			t.Fatal(err)
		}
		if err := st.DB.Where("version >= ?", version).Delete(&store.SchemaMigration{}).Error; err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		nics, err := st.ServerPorts(ctx, "vm", "p1")
		if err != nil || len(nics) != 1 || nics[0].ID != own {
			t.Fatalf("NICs of vm after the migration = %+v %v, want only %s", nics, err, own)
		}
	})
}
