package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// shapedPair boots two servers on a new VLAN network of cidr: one from a
// flavor shaping its NIC to kbps KB/s each way (quota:vif_*_average), one
// unshaped (flavor 1). Names are prefixed with prefix.
func (c *cloud) shapedPair(t *testing.T, prefix string, kbps int, cidr string) (shaped, plain *netServer) {
	t.Helper()
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	fl, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: prefix + "-shaped", RAM: 128, VCPUs: 1,
		Disk: gophercloud.IntToPointer(0)}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	rate := fmt.Sprint(kbps)
	if _, err := flavors.CreateExtraSpecs(ctx, admin, fl.ID, flavors.ExtraSpecsOpts{
		"quota:vif_inbound_average": rate, "quota:vif_outbound_average": rate}).Extract(); err != nil {
		t.Fatalf("set extra specs: %v", err)
	}
	netID, _ := vlanNetwork(t, nc, prefix+"net", 200+rand.IntN(800), cidr, true)
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	boot := func(name, flavor string) *netServer {
		srv, err := servers.Create(ctx, admin, servers.CreateOpts{Name: name, ImageRef: img, FlavorRef: flavor,
			Networks: []servers.Network{{UUID: netID}}}, nil).Extract()
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return activeServer(t, admin, nc, name, srv.ID, c.hosts[0])
	}
	return boot(prefix+"-shaped", fl.ID), boot(prefix+"-plain", "1")
}
