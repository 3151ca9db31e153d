package network_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsecurity"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	"github.com/gophercloud/gophercloud/v2/openstack/utils"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// netClient is a gophercloud network client on e's server as token,
// built the way openstack.NewNetworkV2 builds it from an unversioned
// catalog endpoint.
func (e *env) netClient(token string) *gophercloud.ServiceClient {
	e.t.Helper()
	pc, err := openstack.NewClient(e.srv.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	pc.SetToken(token)
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: e.srv.URL + "/", ResourceBase: e.srv.URL + "/v2.0/", Type: "network"}
}

type fullNetwork struct {
	networks.Network
	provider.NetworkProviderExt
	portsecurity.PortSecurityExt
}

type fullPort struct {
	ports.Port
	portsbinding.PortsBindingExt
	portsecurity.PortSecurityExt
}

// TestGophercloud drives networks, subnets and ports with the provider,
// binding and port-security extensions through gophercloud, which
// decodes strictly: a wrong JSON type anywhere fails the call.
func TestGophercloud(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	vers, err := utils.GetServiceVersions(ctx, e.netClient("").ProviderClient, e.srv.URL+"/", false)
	if err != nil || len(vers) != 1 || vers[0].Major != 2 || vers[0].Minor != 0 {
		t.Fatalf("discovery: %+v %v", vers, err)
	}
	admin, alice := e.netClient("admin"), e.netClient("alice")

	ext, err := extensions.Get(ctx, admin, "binding").Extract()
	if err != nil || ext.Alias != "binding" {
		t.Fatalf("extension: %+v %v", ext, err)
	}

	// An admin's provider network, shared.
	up, shared := true, true
	var pn fullNetwork
	err = networks.Create(ctx, admin, provider.CreateOptsExt{
		CreateOptsBuilder: networks.CreateOpts{Name: "prov", AdminStateUp: &up, Shared: &shared},
		Segments:          []provider.Segment{{NetworkType: "vlan", PhysicalNetwork: "physnet1", SegmentationID: 101}},
	}).ExtractInto(&pn)
	if err != nil {
		t.Fatalf("create provider network: %v", err)
	}
	if pn.NetworkType != "vlan" || pn.PhysicalNetwork != "physnet1" || pn.SegmentationID != "101" || !pn.Shared ||
		!pn.PortSecurityEnabled || pn.CreatedAt.IsZero() || pn.ProjectID != "p-admin" {
		t.Fatalf("provider network %+v", pn)
	}
	var flat fullNetwork
	err = networks.Create(ctx, admin, provider.CreateOptsExt{CreateOptsBuilder: networks.CreateOpts{Name: "flat"},
		Segments: []provider.Segment{{NetworkType: "flat", PhysicalNetwork: "physnet1"}}}).ExtractInto(&flat)
	if err != nil || flat.NetworkType != "flat" || flat.SegmentationID != "" {
		t.Fatalf("flat network %+v %v", flat, err)
	}
	if err := networks.Create(ctx, admin, provider.CreateOptsExt{CreateOptsBuilder: networks.CreateOpts{Name: "dup"},
		Segments: []provider.Segment{{NetworkType: "vlan", PhysicalNetwork: "physnet1", SegmentationID: 101}}}).Err; !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Fatalf("duplicate VLAN: %v", err)
	}

	// A tenant network and its subnet.
	tn, err := networks.Create(ctx, alice, networks.CreateOpts{Name: "alice-net"}).Extract()
	if err != nil {
		t.Fatalf("tenant network: %v", err)
	}
	gw := "10.10.0.1"
	sn, err := subnets.Create(ctx, alice, subnets.CreateOpts{NetworkID: tn.ID, CIDR: "10.10.0.0/24", IPVersion: gophercloud.IPv4,
		Name: "alice-sub", GatewayIP: &gw, AllocationPools: []subnets.AllocationPool{{Start: "10.10.0.10", End: "10.10.0.99"}},
		DNSNameservers: []string{"10.0.0.53"}}).Extract()
	if err != nil {
		t.Fatalf("subnet: %v", err)
	}
	if sn.GatewayIP != gw || len(sn.AllocationPools) != 1 || sn.AllocationPools[0].End != "10.10.0.99" || sn.IPVersion != 4 {
		t.Fatalf("subnet %+v", sn)
	}
	got, err := subnets.Get(ctx, alice, sn.ID).Extract()
	if err != nil || got.Name != "alice-sub" || got.DNSNameservers[0] != "10.0.0.53" {
		t.Fatalf("get subnet %+v %v", got, err)
	}
	if tnet, err := networks.Get(ctx, alice, tn.ID).Extract(); err != nil || len(tnet.Subnets) != 1 || tnet.Subnets[0] != sn.ID {
		t.Fatalf("network subnets %+v %v", tnet, err)
	}

	// Ports: a requested address, bound by an admin like Nova would.
	var p fullPort
	err = ports.Create(ctx, admin, portsbinding.CreateOptsExt{CreateOptsBuilder: ports.CreateOpts{NetworkID: tn.ID, Name: "nic0",
		DeviceID: "server-1", DeviceOwner: "compute:nova", ProjectID: "p1",
		FixedIPs: []ports.IP{{SubnetID: sn.ID, IPAddress: "10.10.0.42"}}}, HostID: "host-a"}).ExtractInto(&p)
	if err != nil {
		t.Fatalf("create port: %v", err)
	}
	if p.HostID != "host-a" || p.VIFType != "ovs" || p.Status != "ACTIVE" || len(p.FixedIPs) != 1 ||
		p.FixedIPs[0].IPAddress != "10.10.0.42" || !p.PortSecurityEnabled {
		t.Fatalf("port %+v", p)
	}
	if err := ports.Create(ctx, alice, ports.CreateOpts{NetworkID: tn.ID, FixedIPs: []ports.IP{{IPAddress: "10.10.0.42"}}}).Err; !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Fatalf("taken address: %v", err)
	}
	off := false
	var q fullPort
	err = ports.Create(ctx, alice, portsecurity.PortCreateOptsExt{CreateOptsBuilder: ports.CreateOpts{NetworkID: tn.ID},
		PortSecurityEnabled: &off}).ExtractInto(&q)
	if err != nil || q.PortSecurityEnabled || len(q.FixedIPs) != 1 {
		t.Fatalf("port without port security %+v %v", q, err)
	}

	// Listing by device, by address, and paging.
	pages, err := ports.List(alice, ports.ListOpts{DeviceID: "server-1"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byDevice, err := ports.ExtractPorts(pages)
	if err != nil || len(byDevice) != 1 || byDevice[0].ID != p.ID {
		t.Fatalf("ports of server-1 %+v %v", byDevice, err)
	}
	pages, err = ports.List(alice, ports.ListOpts{FixedIPs: []ports.FixedIPOpts{{IPAddress: "10.10.0.42", SubnetID: sn.ID}}}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if byIP, err := ports.ExtractPorts(pages); err != nil || len(byIP) != 1 {
		t.Fatalf("ports by address %+v %v", byIP, err)
	}
	n, count := 0, 0
	err = networks.List(admin, networks.ListOpts{Limit: 1}).EachPage(ctx, func(_ context.Context, pg pagination.Page) (bool, error) {
		var nets []fullNetwork
		if err := networks.ExtractNetworksInto(pg, &nets); err != nil {
			return false, err
		}
		n++
		count += len(nets)
		return true, nil
	})
	if err != nil || n != 3 || count != 3 {
		t.Fatalf("paged %d networks in %d pages: %v", count, n, err)
	}

	// Update: a second address on the subnet.
	ips := []ports.IP{{SubnetID: sn.ID, IPAddress: "10.10.0.42"}, {SubnetID: sn.ID}}
	name := "nic0-renamed"
	up2, err := ports.Update(ctx, admin, p.ID, ports.UpdateOpts{Name: &name, FixedIPs: ips}).Extract()
	if err != nil || len(up2.FixedIPs) != 2 || up2.Name != name {
		t.Fatalf("update port %+v %v", up2, err)
	}

	// In-use deletes, then clean up.
	if err := subnets.Delete(ctx, alice, sn.ID).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Fatalf("delete used subnet: %v", err)
	}
	if err := networks.Delete(ctx, alice, tn.ID).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Fatalf("delete used network: %v", err)
	}
	for _, id := range []string{p.ID, q.ID} {
		if err := ports.Delete(ctx, alice, id).ExtractErr(); err != nil {
			t.Fatalf("delete port: %v", err)
		}
	}
	if err := networks.Delete(ctx, alice, tn.ID).ExtractErr(); err != nil {
		t.Fatalf("delete network: %v", err)
	}
	if _, err := subnets.Get(ctx, alice, sn.ID).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Fatalf("subnet after network delete: %v", err)
	}
}
