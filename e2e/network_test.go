package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/attachinterfaces"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsecurity"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/vif"
)

// networkClient is the Neutron endpoint of the catalog for user.
func (c *cloud) networkClient(t *testing.T, user, pass, project string) *gophercloud.ServiceClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := c.provider(ctx, user, pass, project)
	if err != nil {
		t.Fatalf("authenticate %s: %v", user, err)
	}
	nc, err := openstack.NewNetworkV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// vlanNetwork creates (as admin) a VLAN provider network on physnet1 with
// one subnet of cidr and returns the network and subnet ids. psec=false
// turns port security off for the network's ports.
func vlanNetwork(t *testing.T, nc *gophercloud.ServiceClient, name string, vlan int, cidr string, psec bool) (netID, subnetID string) {
	t.Helper()
	ctx := context.Background()
	var opts networks.CreateOptsBuilder = networks.CreateOpts{Name: name}
	if !psec {
		opts = portsecurity.NetworkCreateOptsExt{CreateOptsBuilder: opts, PortSecurityEnabled: &psec}
	}
	var n struct {
		networks.Network
		provider.NetworkProviderExt
		portsecurity.PortSecurityExt
	}
	err := networks.Create(ctx, nc, provider.CreateOptsExt{CreateOptsBuilder: opts,
		Segments: []provider.Segment{{NetworkType: "vlan", PhysicalNetwork: "physnet1", SegmentationID: vlan}}}).ExtractInto(&n)
	if err != nil {
		t.Fatalf("create network %s (VLAN %d): %v", name, vlan, err)
	}
	if n.NetworkType != "vlan" || n.PhysicalNetwork != "physnet1" || n.SegmentationID != strconv.Itoa(vlan) || n.PortSecurityEnabled != psec {
		t.Fatalf("network %s = %+v, want vlan/physnet1/%d, port security %v", name, n, vlan, psec)
	}
	sn, err := subnets.Create(ctx, nc, subnets.CreateOpts{NetworkID: n.ID, Name: name + "-sub", CIDR: cidr,
		IPVersion: gophercloud.IPv4}).Extract()
	if err != nil {
		t.Fatalf("create subnet %s on %s: %v", cidr, name, err)
	}
	return n.ID, sn.ID
}

// netServer is a booted server with one NIC, on a compute host.
type netServer struct {
	name   string
	id     string
	host   *computeHost
	ip     string
	mac    string
	portID string
}

// bootOn boots a busybox server with one NIC on network netID (fixedIP
// may be empty), pinned to host h ("nova:<host>", an admin right).
func (c *cloud) bootOn(t *testing.T, cc *gophercloud.ServiceClient, name string, h *computeHost, netID, fixedIP string) string {
	t.Helper()
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	srv, err := servers.Create(context.Background(), cc, servers.CreateOpts{Name: name, ImageRef: img, FlavorRef: "1",
		AvailabilityZone: "nova:" + h.name, Networks: []servers.Network{{UUID: netID, FixedIP: fixedIP}}}, nil).Extract()
	if err != nil {
		t.Fatalf("create server %s: %v", name, err)
	}
	return srv.ID
}

// portOf returns the one port of server id, with its binding, from the
// ports API (as admin, who sees binding:host_id).
func portOf(t *testing.T, nc *gophercloud.ServiceClient, id string) (ports.Port, string) {
	t.Helper()
	pages, err := ports.List(nc, ports.ListOpts{DeviceID: id}).AllPages(context.Background())
	if err != nil {
		t.Fatalf("list ports of %s: %v", id, err)
	}
	var ps []struct {
		ports.Port
		portsbinding.PortsBindingExt
	}
	if err := ports.ExtractPortsInto(pages, &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || len(ps[0].FixedIPs) != 1 {
		t.Fatalf("ports of server %s = %+v, want one port with one address", id, ps)
	}
	return ps[0].Port, ps[0].HostID
}

// activeServer waits for server id to be ACTIVE on host h and returns it
// with its port's address and MAC.
func activeServer(t *testing.T, cc, nc *gophercloud.ServiceClient, name, id string, h *computeHost) *netServer {
	t.Helper()
	s := waitStatus(t, cc, id, "ACTIVE", 90*time.Second)
	// ExtractInto of a server result unwraps "server" itself.
	var ext struct {
		Host string `json:"OS-EXT-SRV-ATTR:host"`
	}
	if err := servers.Get(context.Background(), cc, id).ExtractInto(&ext); err != nil {
		t.Fatal(err)
	}
	if ext.Host != h.name {
		t.Fatalf("server %s runs on %q, want %s", name, ext.Host, h.name)
	}
	p, binding := portOf(t, nc, id)
	if binding != h.name {
		t.Errorf("port %s of %s: binding:host_id %q, want %s", p.ID, name, binding, h.name)
	}
	ns := &netServer{name: name, id: id, host: h, ip: p.FixedIPs[0].IPAddress, mac: p.MACAddress, portID: p.ID}
	// The API's addresses carry the port's address and MAC.
	if !addressesHave(s.Addresses, ns.ip, ns.mac) {
		t.Errorf("server %s addresses %v lack %s (%s)", name, s.Addresses, ns.ip, ns.mac)
	}
	return ns
}

// addressesHave reports whether a server's "addresses" list ip with mac,
// fixed, IPv4.
func addressesHave(addrs map[string]any, ip, mac string) bool {
	for _, v := range addrs {
		list, _ := v.([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			if m["addr"] == ip && m["version"] == float64(4) && m["OS-EXT-IPS:type"] == "fixed" &&
				strings.EqualFold(fmt.Sprint(m["OS-EXT-IPS-MAC:mac_addr"]), mac) {
				return true
			}
		}
	}
	return false
}

// workload is the server's workload container (the other one, its
// sandbox, only holds the network namespace).
func (s *netServer) workload() string { return "capsule-" + s.id }

// exec runs a command inside the server's workload container.
func (s *netServer) exec(args ...string) (string, error) {
	return s.host.docker(append([]string{"exec", s.workload()}, args...)...)
}

// pid is the workload's PID on the host.
func (s *netServer) pid(t *testing.T) int {
	t.Helper()
	out, err := s.host.docker("inspect", "-f", "{{.State.Pid}}", s.workload())
	if err != nil {
		t.Fatalf("inspect %s: %v %s", s.name, err, out)
	}
	pid, err := strconv.Atoi(out)
	if err != nil || pid <= 0 {
		t.Fatalf("pid of %s: %q", s.name, out)
	}
	return pid
}

// netns runs a host command in the server's network namespace, as root
// on the host can (the workload itself has no CAP_NET_ADMIN): this is how
// the test plays a guest that changes its own address.
func (s *netServer) netns(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(s.pid(t)), "-n"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %s %v: %v\n%s", s.name, args, err, out)
	}
	return string(out)
}

// eth0 returns the IPv4 addresses (with prefix) and MAC of eth0 inside the
// workload container.
func (s *netServer) eth0(t *testing.T) (addrs []string, mac string) {
	t.Helper()
	out, err := s.exec("ip", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("ip addr in %s: %v %s", s.name, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "inet" {
			addrs = append(addrs, f[1])
		}
		if len(f) >= 2 && f[0] == "link/ether" {
			mac = f[1]
		}
	}
	return addrs, mac
}

// serve starts busybox httpd on port 8080 in the workload, serving a file
// "f" whose content names the server.
func (s *netServer) serve(t *testing.T) {
	t.Helper()
	if out, err := s.exec("sh", "-c", "mkdir -p /tmp/www && echo hello-from-"+s.name+" > /tmp/www/f && "+
		"(pidof httpd >/dev/null || httpd -p 8080 -h /tmp/www)"); err != nil {
		t.Fatalf("start httpd in %s: %v %s", s.name, err, out)
	}
}

// fetch is true when s reads to's file over TCP at ip.
func (s *netServer) fetch(to *netServer, ip string) bool {
	out, err := s.exec("timeout", "5", "wget", "-qO-", "http://"+ip+":8080/f")
	return err == nil && strings.TrimSpace(out) == "hello-from-"+to.name
}

// ping is true when s's namespace gets an echo reply from ip.
func (s *netServer) ping(t *testing.T, ip string) bool {
	t.Helper()
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(s.pid(t)), "-n", "busybox", "ping", "-c", "1", "-W", "2", ip)
	return cmd.Run() == nil
}

// expectTCP checks that from reaches to at to's address by TCP (retrying
// for a few seconds: ARP and MAC learning need the first frames) or, with
// want false, that it does not.
// whileSpoofed makes a guest spoof what (spoof), runs check, and reports
// check's failures once check ran wholly while the spoof held (held is
// true after it). The agent's periodic drift repair plugs every running
// server again and so puts its MAC and addresses back — that is its job —
// and a check that straddled a repair proves nothing either way, so it is
// run again, up to three times.
func whileSpoofed(t *testing.T, what string, spoof func(), held func() bool, check func() []string) {
	t.Helper()
	for try := 1; ; try++ {
		spoof()
		failures := check()
		if held() {
			for _, f := range failures {
				t.Error(f)
			}
			return
		}
		if try == 3 {
			t.Fatalf("spoofing %s: the agent's drift repair undid it during each of %d checks", what, try)
		}
		t.Logf("spoofing %s: the agent's drift repair undid it during the check (try %d); again", what, try)
	}
}

func expectTCP(t *testing.T, from, to *netServer, ip string, want bool, why string) {
	t.Helper()
	if !want {
		if from.fetch(to, ip) {
			t.Errorf("%s: %s reached %s at %s by TCP, want isolation", why, from.name, to.name, ip)
		}
		return
	}
	for i := 0; i < 3; i++ {
		if from.fetch(to, ip) {
			return
		}
	}
	t.Errorf("%s: %s cannot reach %s at %s by TCP", why, from.name, to.name, ip)
}

// TestNetworkTwoHosts is the networking proof on a two-host cloud: servers
// on one VLAN on different hosts talk TCP both ways across the trunk, other
// VLANs are isolated even in the same subnet, port security stops address
// and MAC spoofing, addresses survive reboots, and deleting the servers
// leaves nothing on the hosts or in the API.
func TestNetworkTwoHosts(t *testing.T) {
	t.Parallel()
	c := startCloud(t, twoHosts)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	vlan := 101 + rand.IntN(800)

	// Two networks with the same subnet on different VLANs: only L2
	// isolation keeps them apart. The second has port security off.
	net1, sub1 := vlanNetwork(t, nc, "net1", vlan, "10.77.0.0/24", true)
	net2, sub2 := vlanNetwork(t, nc, "net2", vlan+1, "10.77.0.0/24", false)

	ids := map[string]string{
		"s1": c.bootOn(t, cc, "s1", ha, net1, "10.77.0.10"),
		"s2": c.bootOn(t, cc, "s2", hb, net1, ""),
		"s3": c.bootOn(t, cc, "s3", ha, net2, "10.77.0.30"),
		"s4": c.bootOn(t, cc, "s4", hb, net2, "10.77.0.40"),
	}
	s1 := activeServer(t, cc, nc, "s1", ids["s1"], ha)
	s2 := activeServer(t, cc, nc, "s2", ids["s2"], hb)
	s3 := activeServer(t, cc, nc, "s3", ids["s3"], ha)
	s4 := activeServer(t, cc, nc, "s4", ids["s4"], hb)
	all := []*netServer{s1, s2, s3, s4}

	// The requested address is the API's and the container's.
	if s1.ip != "10.77.0.10" {
		t.Errorf("s1 address %s, want the requested 10.77.0.10", s1.ip)
	}
	for _, s := range all {
		addrs, mac := s.eth0(t)
		if !slices.Equal(addrs, []string{s.ip + "/24"}) {
			t.Errorf("%s: eth0 addresses %v, want [%s/24]", s.name, addrs, s.ip)
		}
		if !strings.EqualFold(mac, s.mac) {
			t.Errorf("%s: eth0 MAC %s, want the port's %s", s.name, mac, s.mac)
		}
	}
	if a, err := netip.ParseAddr(s2.ip); err != nil || !netip.MustParsePrefix("10.77.0.0/24").Contains(a) ||
		a.As4()[3] < 2 || a.As4()[3] > 254 {
		t.Errorf("s2 address %s is outside the pool 10.77.0.2-10.77.0.254", s2.ip)
	}

	for _, s := range all {
		s.serve(t)
	}
	// Same VLAN, different hosts: TCP both ways across the trunk, ping too.
	expectTCP(t, s1, s2, s2.ip, true, "same VLAN across the trunk")
	expectTCP(t, s2, s1, s1.ip, true, "same VLAN across the trunk")
	if !s1.ping(t, s2.ip) || !s2.ping(t, s1.ip) {
		t.Error("s1 and s2 do not ping each other")
	}
	expectTCP(t, s3, s4, s4.ip, true, "second VLAN across the trunk")
	// Other VLAN, same subnet: isolated.
	expectTCP(t, s3, s1, s1.ip, false, "other VLAN")
	expectTCP(t, s1, s3, s3.ip, false, "other VLAN")
	expectTCP(t, s4, s1, s1.ip, false, "other VLAN, other host")
	expectTCP(t, s2, s3, s3.ip, false, "other VLAN, other host")
	if s3.ping(t, s1.ip) {
		t.Error("s3 pings s1 across VLANs")
	}

	// Port security: a guest that takes another address, or another MAC,
	// reaches nobody; put back, it works again.
	t.Run("spoofed address", func(t *testing.T) {
		whileSpoofed(t, "address 10.77.0.99", func() {
			s1.netns(t, "ip", "-4", "addr", "flush", "dev", "eth0")
			s1.netns(t, "ip", "addr", "add", "10.77.0.99/24", "dev", "eth0")
		}, func() bool {
			out := s1.netns(t, "ip", "-4", "addr", "show", "dev", "eth0")
			return strings.Contains(out, "10.77.0.99/24") && !strings.Contains(out, s1.ip+"/")
		}, func() []string {
			var got []string
			if s1.fetch(s2, s2.ip) {
				got = append(got, "s1 spoofing 10.77.0.99 reached s2 by TCP, want isolation")
			}
			if s1.ping(t, s2.ip) {
				got = append(got, "s1 spoofing 10.77.0.99 pings s2")
			}
			// Not even its ARP requests got through: s2 would have
			// learnt the asker's address.
			if out := s2.netns(t, "ip", "neigh", "show", "10.77.0.99"); strings.TrimSpace(out) != "" {
				got = append(got, "s2 learnt the spoofed address from s1's ARP: "+out)
			}
			return got
		})
		s1.netns(t, "ip", "addr", "flush", "dev", "eth0", "to", "10.77.0.99/24")
		if out := s1.netns(t, "ip", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, s1.ip+"/") {
			s1.netns(t, "ip", "addr", "add", s1.ip+"/24", "dev", "eth0")
		}
		expectTCP(t, s1, s2, s2.ip, true, "s1 with its own address again")
	})
	t.Run("spoofed MAC", func(t *testing.T) {
		const spoofed = "02:00:5e:10:00:99"
		whileSpoofed(t, "MAC "+spoofed, func() {
			s1.netns(t, "ip", "link", "set", "eth0", "address", spoofed)
		}, func() bool {
			return strings.Contains(strings.ToLower(s1.netns(t, "ip", "link", "show", "dev", "eth0")), spoofed)
		}, func() []string {
			var got []string
			if s1.fetch(s2, s2.ip) {
				got = append(got, "s1 spoofing MAC "+spoofed+" reached s2 by TCP, want isolation")
			}
			if s1.ping(t, s2.ip) {
				got = append(got, "s1 spoofing a MAC pings s2")
			}
			if out := s2.netns(t, "ip", "neigh", "show", s1.ip); strings.Contains(strings.ToLower(out), spoofed) {
				got = append(got, "s2 learnt the spoofed MAC for s1's address: "+out)
			}
			return got
		})
		s1.netns(t, "ip", "link", "set", "eth0", "address", s1.mac)
		expectTCP(t, s1, s2, s2.ip, true, "s1 with its own MAC again")
		expectTCP(t, s2, s1, s1.ip, true, "s2 to s1 with its own MAC again")
	})
	// Without port security a changed address passes: the check above is
	// the flows' doing, not an artefact of the test.
	t.Run("port security off", func(t *testing.T) {
		// Deleting the primary address first: it would take a secondary
		// in the same subnet with it.
		s3.netns(t, "ip", "addr", "del", s3.ip+"/24", "dev", "eth0")
		s3.netns(t, "ip", "addr", "add", "10.77.0.98/24", "dev", "eth0")
		expectTCP(t, s3, s4, s4.ip, true, "s3 with a changed address, port security off")
		// ...and its ARP taught s4 the new address (the control for the
		// neighbour checks above).
		if out := s4.netns(t, "ip", "neigh", "show", "10.77.0.98"); !strings.Contains(strings.ToLower(out), strings.ToLower(s3.mac)) {
			t.Errorf("s4 did not learn s3's changed address from its ARP: %q", out)
		}
		s3.netns(t, "ip", "addr", "del", "10.77.0.98/24", "dev", "eth0")
		s3.netns(t, "ip", "addr", "add", s3.ip+"/24", "dev", "eth0")
	})

	// A workload restart keeps the address and the connectivity.
	for _, kind := range []servers.RebootMethod{servers.SoftReboot, servers.HardReboot} {
		pid := s1.pid(t)
		if err := servers.Reboot(ctx, cc, s1.id, servers.RebootOpts{Type: kind}).ExtractErr(); err != nil {
			t.Fatalf("%s reboot: %v", kind, err)
		}
		waitStatus(t, cc, s1.id, "ACTIVE", 60*time.Second)
		if s1.pid(t) == pid {
			t.Errorf("%s reboot did not restart s1's workload (pid %d)", kind, pid)
		}
		if addrs, mac := s1.eth0(t); !slices.Equal(addrs, []string{s1.ip + "/24"}) || !strings.EqualFold(mac, s1.mac) {
			t.Errorf("after a %s reboot s1's eth0 has %v %s, want %s/24 %s", kind, addrs, mac, s1.ip, s1.mac)
		}
		s1.serve(t)
		expectTCP(t, s2, s1, s1.ip, true, string(kind)+" reboot")
		expectTCP(t, s1, s2, s2.ip, true, string(kind)+" reboot")
	}

	// Drift repair: what a host reboot or a stray command leaves (s1's
	// veth, OVS port and port-security flows gone) is put back by the
	// agent's reconcile when it starts again.
	o := ovs.New(ovs.Options{})
	t.Run("drift repair after an agent restart", func(t *testing.T) {
		agentA := c.proc(t, "agent-"+ha.name)
		agentA.stop()
		tap := vif.HostIfName(s1.portID)
		if err := o.DeletePort(ctx, tap); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ip", "link", "del", tap).CombinedOutput(); err != nil {
			t.Fatalf("ip link del %s: %v %s", tap, err, out)
		}
		if err := o.DeleteFlows(ctx, ha.bridge, ovs.CookieMatch(vif.Cookie(s1.portID))); err != nil {
			t.Fatal(err)
		}
		expectTCP(t, s2, s1, s1.ip, false, "s1 unplugged")
		agentA.start(t)
		c.waitReady(t)
		deadline := time.Now().Add(45 * time.Second)
		for {
			port, ok, err := o.PortByName(ctx, tap)
			flows, ferr := o.DumpFlows(ctx, ha.bridge, ovs.CookieMatch(vif.Cookie(s1.portID)))
			repaired := err == nil && ok && port.Tag == vlan && ferr == nil && len(flows) > 0
			if repaired && s2.fetch(s1, s1.ip) && s1.fetch(s2, s2.ip) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("s1's plumbing not repaired 45s after the agent restart: port %+v (found %v, %v), %d flows (%v)",
					port, ok, err, len(flows), ferr)
			}
			time.Sleep(time.Second)
		}
		if addrs, mac := s1.eth0(t); !slices.Equal(addrs, []string{s1.ip + "/24"}) || !strings.EqualFold(mac, s1.mac) {
			t.Errorf("after the repair s1's eth0 has %v %s, want %s/24 %s", addrs, mac, s1.ip, s1.mac)
		}
	})

	// The port in the API: bound to host A, with the requested address;
	// os-interface lists it.
	p, binding := portOf(t, nc, s1.id)
	if binding != ha.name || p.FixedIPs[0].IPAddress != "10.77.0.10" || p.FixedIPs[0].SubnetID != sub1 ||
		p.NetworkID != net1 || p.DeviceOwner != "compute:nova" || p.Status != "ACTIVE" {
		t.Errorf("s1's port = %+v (binding:host_id %q)", p, binding)
	}
	pages, err := attachinterfaces.List(cc, s1.id).AllPages(ctx)
	if err != nil {
		t.Fatalf("os-interface: %v", err)
	}
	ifs, err := attachinterfaces.ExtractInterfaces(pages)
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].PortID != s1.portID || ifs[0].NetID != net1 || !strings.EqualFold(ifs[0].MACAddr, s1.mac) ||
		len(ifs[0].FixedIPs) != 1 || ifs[0].FixedIPs[0].IPAddress != s1.ip {
		t.Errorf("os-interface of s1 = %+v", ifs)
	}

	// On each host: one tagged access port per NIC, with its VLAN.
	for _, s := range all {
		port, ok, err := o.PortByName(ctx, vif.HostIfName(s.portID))
		if err != nil || !ok {
			t.Fatalf("OVS port of %s: %v %v", s.name, ok, err)
		}
		want := vlan
		if s == s3 || s == s4 {
			want = vlan + 1
		}
		if port.Bridge != s.host.bridge || port.Tag != want || port.IfaceID() != s.portID || port.VMUUID() != s.id {
			t.Errorf("OVS port of %s = %+v, want on %s with tag %d", s.name, port, s.host.bridge, want)
		}
	}

	// Delete everything: nothing left on the hosts or in the API.
	for _, s := range all {
		if err := servers.Delete(ctx, cc, s.id).ExtractErr(); err != nil {
			t.Fatalf("delete %s: %v", s.name, err)
		}
	}
	for _, s := range all {
		waitGone(t, cc, s.id, 60*time.Second)
	}
	c.assertNoPlumbing(t, all)
	assertNoPorts(t, nc, net1, net2)
	for _, path := range []string{"subnets/" + sub1, "subnets/" + sub2, "networks/" + net1, "networks/" + net2} {
		if code, body := raw(t, nc, "DELETE", path, ""); code != 204 {
			t.Errorf("DELETE %s: %d %v, want 204", path, code, body)
		}
	}
}

// assertNoPlumbing checks the hosts once servers are deleted: no host-end
// veth of their ports, no OVS port on the test bridges but the trunk's, no
// flow but each bridge's NORMAL fallback.
func (c *cloud) assertNoPlumbing(t *testing.T, gone []*netServer) {
	t.Helper()
	ctx := context.Background()
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v %s", err, links)
	}
	for _, s := range gone {
		if tap := vif.HostIfName(s.portID); strings.Contains(string(links), " "+tap+"@") || strings.Contains(string(links), " "+tap+":") {
			t.Errorf("veth %s of deleted server %s is still on the host", tap, s.name)
		}
	}
	o := ovs.New(ovs.Options{})
	for _, h := range c.hosts {
		if h.bridge == "" {
			continue
		}
		out, err := o.Vsctl(ctx, "list-ports", h.bridge)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range strings.Fields(out) {
			if !bridgePort(h.bridge, p) {
				t.Errorf("OVS port %s left on %s", p, h.bridge)
			}
		}
		flows, err := o.DumpFlows(ctx, h.bridge, "")
		if err != nil {
			t.Fatal(err)
		}
		fallback := 0
		for _, f := range flows {
			if f.Cookie == ovs.BaseCookie {
				fallback++
				continue
			}
			if f.Cookie == vif.DispatchCookie() {
				continue // the security groups' bridge-wide dispatch fallback (table 72)
			}
			if f.Cookie == vif.MetadataBridgeCookie(h.bridge) {
				continue // the bridge's metadata port's own flows
			}
			t.Errorf("flow left on %s: %s", h.bridge, f)
		}
		if fallback != 1 {
			t.Errorf("%s has %d fallback flows, want 1: %v", h.bridge, fallback, flows)
		}
	}
}

// assertNoPorts checks that the networks have no port left.
func assertNoPorts(t *testing.T, nc *gophercloud.ServiceClient, netIDs ...string) {
	t.Helper()
	for _, id := range netIDs {
		pages, err := ports.List(nc, ports.ListOpts{NetworkID: id}).AllPages(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ps, err := ports.ExtractPorts(pages)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 0 {
			t.Errorf("network %s still has ports after its servers were deleted: %+v", id, ps)
		}
	}
}
