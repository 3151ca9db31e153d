package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// TestFlavorShapesServerNICs: a flavor with quota:vif_inbound_average and
// quota:vif_outbound_average of 1250 KB/s (10 Mbit/s) shapes TCP into and
// out of a server booted from it to that rate (±15%), measured between two
// real servers on one VLAN. Not parallel: a rate measured against a
// tolerance needs a quiet machine.
func TestFlavorShapesServerNICs(t *testing.T) {
	c := startCloud(t, withBridge)
	shaped, plain := c.shapedPair(t, "shape", 1250, "10.79.0.0/24")

	const size = 5_000_000 // bytes served; 4 s at 1250 KB/s
	serve := func(s *netServer) {
		t.Helper()
		if out, err := s.exec("sh", "-c", fmt.Sprintf("mkdir -p /tmp/w && dd if=/dev/zero of=/tmp/w/f bs=1000 count=%d 2>/dev/null && httpd -p 8080 -h /tmp/w", size/1000)); err != nil {
			t.Fatalf("serve on %s: %v %s", s.name, err, out)
		}
	}
	// fetch downloads the file from "from" into "to" and returns the rate
	// in KB/s (1 KB = 1000 B, Nova's and libvirt's unit for vif rates).
	fetch := func(to, from *netServer) float64 {
		t.Helper()
		start := time.Now()
		out, err := to.exec("sh", "-c", fmt.Sprintf("timeout 30 wget -qO /tmp/got http://%s:8080/f && wc -c < /tmp/got", from.ip))
		took := time.Since(start)
		if err != nil || out != fmt.Sprint(size) {
			t.Fatalf("%s fetching from %s: %v %q", to.name, from.name, err, out)
		}
		return float64(size) / 1000 / took.Seconds()
	}
	serve(shaped)
	serve(plain)
	in := fetch(shaped, plain)  // into the shaped server
	out := fetch(plain, shaped) // out of it
	t.Logf("shaped server: into %.0f KB/s, out of %.0f KB/s (limit 1250 each way)", in, out)
	for _, m := range []struct {
		dir  string
		rate float64
	}{{"into", in}, {"out of", out}} {
		if m.rate < 1250*0.85 || m.rate > 1250*1.15 {
			t.Errorf("TCP %s the shaped server at %.0f KB/s, want 1250 ± 15%%", m.dir, m.rate)
		}
	}
}

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
