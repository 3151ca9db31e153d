package compute

import (
	"context"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

// addNetwork makes a VLAN network with one /24 subnet owned by project.
func (f *fixture) addNetwork(name, project, cidr string, shared bool) *store.Network {
	f.t.Helper()
	ctx := context.Background()
	n := &store.Network{Name: name, ProjectID: project, Shared: shared, AdminStateUp: true, MTU: 1500,
		PortSecurityEnabled: true, NetworkType: store.NetworkTypeVLAN, PhysicalNetwork: "physnet1"}
	if err := f.st.CreateNetwork(ctx, n, store.VLANRange{PhysicalNetwork: "physnet1", Min: 100, Max: 199}); err != nil {
		f.t.Fatal(err)
	}
	sn := &store.Subnet{NetworkID: n.ID, ProjectID: project, Name: name + "-sub", IPVersion: 4, CIDR: cidr}
	if err := store.ValidateSubnet(sn, true, nil, nil, nil); err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.CreateSubnet(ctx, sn); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) portsOf(id string) []store.Port {
	f.t.Helper()
	var inst store.Instance
	if err := f.st.DB.Unscoped().Where("id = ?", id).First(&inst).Error; err != nil {
		f.t.Fatal(err)
	}
	ports, err := f.st.ServerPorts(context.Background(), id, inst.ProjectID)
	if err != nil {
		f.t.Fatal(err)
	}
	return ports
}

func TestServerWithRequestedFixedIP(t *testing.T) {
	f := newFixture(t)
	n := f.addNetwork("net1", "p-demo", "10.9.0.0/24", false)
	resp, body := f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"a","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+n.ID+`","fixed_ip":"10.9.0.20"}]}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	ports := f.portsOf(id)
	if len(ports) != 1 || ports[0].FixedIPs[0].IPAddress != "10.9.0.20" || ports[0].DeviceOwner != "compute:nova" {
		t.Fatalf("ports = %+v", ports)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	addrs := body["server"].(map[string]any)["addresses"].(map[string]any)["net1"].([]any)
	a := addrs[0].(map[string]any)
	if a["addr"] != "10.9.0.20" || a["OS-EXT-IPS:type"] != "fixed" || a["OS-EXT-IPS-MAC:mac_addr"] != ports[0].MACAddress {
		t.Errorf("addresses = %v", addrs)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id+"/ips", "demo", "")
	if ip := body["addresses"].(map[string]any)["net1"].([]any)[0].(map[string]any); len(ip) != 2 || ip["addr"] != "10.9.0.20" {
		t.Errorf("ips = %v", body)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id+"/os-interface", "demo", "")
	if ifs := body["interfaceAttachments"].([]any); len(ifs) != 1 || ifs[0].(map[string]any)["port_id"] != ports[0].ID {
		t.Errorf("os-interface = %v", body)
	}

	// The same address again (Nova's message names the holder), one
	// outside the subnet, a bad one: 400, and nothing left behind.
	resp, body = f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"b","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+n.ID+`","fixed_ip":"10.9.0.20"}]}}`)
	if msg, _ := body["badRequest"].(map[string]any)["message"].(string); msg != "Fixed IP address 10.9.0.20 is already in use on instance "+id+"." {
		t.Errorf("taken address: %d %v", resp.StatusCode, body)
	}
	for _, ip := range []string{"10.9.0.20", "10.10.0.5", "not-an-ip"} {
		resp, body := f.do("POST", "/v2.1/servers", "demo",
			`{"server":{"name":"b","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+n.ID+`","fixed_ip":"`+ip+`"}]}}`)
		expectFault(t, resp, body, 400, "badRequest")
	}
	var nInst, nPorts int64
	f.st.DB.Model(&store.Instance{}).Count(&nInst)
	f.st.DB.Model(&store.Port{}).Count(&nPorts)
	if nInst != 1 || nPorts != 1 {
		t.Errorf("rejected creates left %d instances, %d ports", nInst, nPorts)
	}

	// Deleting the (unscheduled) server frees its port and address.
	if resp, _ := f.do("DELETE", "/v2.1/servers/"+id, "demo", ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	f.st.DB.Model(&store.Port{}).Count(&nPorts)
	if nPorts != 0 {
		t.Errorf("%d ports left after delete", nPorts)
	}
}

func TestServerNetworkSelection(t *testing.T) {
	f := newFixture(t)
	// Another project's private network is invisible.
	other := f.addNetwork("theirs", "p-other", "10.8.0.0/24", false)
	resp, body := f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+other.ID+`"}]}}`)
	expectFault(t, resp, body, 400, "badRequest")
	// No network named, one usable (shared) network: the server gets it.
	shared := f.addNetwork("public", "p-admin", "10.7.0.0/24", true)
	id := f.create("demo", "auto1")
	if ports := f.portsOf(id); len(ports) != 1 || ports[0].NetworkID != shared.ID {
		t.Fatalf("ports of a server booted without networks = %+v", ports)
	}
	// Two usable networks and none named: ambiguous (409), as Nova.
	f.addNetwork("mine", "p-demo", "10.6.0.0/24", false)
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if msg := body["conflictingRequest"].(map[string]any)["message"].(string); !strings.Contains(msg, "Multiple possible networks") {
		t.Errorf("message %q", msg)
	}
	// "none" at 2.37: no NIC.
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","networks":"none"}}`,
		"X-OpenStack-Nova-API-Version", "2.37")
	if resp.StatusCode != 202 {
		t.Fatalf("networks none: %d %v", resp.StatusCode, body)
	}
	if ports := f.portsOf(body["server"].(map[string]any)["id"].(string)); len(ports) != 0 {
		t.Errorf("networks none gave ports %+v", ports)
	}
	// A fixed IP with max_count > 1 is refused.
	resp, body = f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","max_count":2,"networks":[{"uuid":"`+shared.ID+`","fixed_ip":"10.7.0.9"}]}}`)
	expectFault(t, resp, body, 400, "badRequest")
}

func TestForcedHostIsAdminOnly(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","availability_zone":"nova:h1"}}`)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("POST", "/v2.1/servers", "admin",
		`{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","availability_zone":"nova:nowhere"}}`)
	expectFault(t, resp, body, 400, "badRequest")
}

// TestListServersIPFilter: ip is Nova's regular expression matched at the
// start of each fixed IPv4 address, so one server's exact address lists
// that server only, a prefix pattern lists every server it starts, and
// the filter applies before paging.
func TestListServersIPFilter(t *testing.T) {
	f := newFixture(t)
	n := f.addNetwork("net1", "p-demo", "10.9.0.0/24", false)
	ids := map[string]string{}
	for _, ip := range []string{"10.9.0.20", "10.9.0.21", "10.9.0.30"} {
		resp, body := f.do("POST", "/v2.1/servers", "demo",
			`{"server":{"name":"s`+ip+`","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+n.ID+`","fixed_ip":"`+ip+`"}]}}`)
		if resp.StatusCode != 202 {
			t.Fatalf("create: %d %v", resp.StatusCode, body)
		}
		ids[ip] = body["server"].(map[string]any)["id"].(string)
	}
	// A server without any port never matches.
	if resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"no-net","imageRef":"`+imageID+`","flavorRef":"1","networks":"none"}}`,
		"X-OpenStack-Nova-API-Version", "2.37"); resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	listed := func(query string) []string {
		t.Helper()
		resp, body := f.do("GET", "/v2.1/servers?"+query, "demo", "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", query, resp.StatusCode, body)
		}
		var out []string
		for _, s := range body["servers"].([]any) {
			out = append(out, s.(map[string]any)["id"].(string))
		}
		return out
	}
	same := func(got []string, want ...string) bool {
		if len(got) != len(want) {
			return false
		}
		m := map[string]bool{}
		for _, g := range got {
			m[g] = true
		}
		for _, w := range want {
			if !m[w] {
				return false
			}
		}
		return true
	}
	if got := listed("ip=10.9.0.21"); !same(got, ids["10.9.0.21"]) {
		t.Errorf("ip=10.9.0.21 lists %v, want only %s", got, ids["10.9.0.21"])
	}
	if got := listed("ip=10.9.0.2"); !same(got, ids["10.9.0.20"], ids["10.9.0.21"]) {
		t.Errorf("ip=10.9.0.2 (a prefix) lists %v", got)
	}
	if got := listed(`ip=10\.9\.0\.3.*`); !same(got, ids["10.9.0.30"]) {
		t.Errorf("regex lists %v", got)
	}
	if got := listed("ip=9.0.0.20"); len(got) != 0 {
		t.Errorf("an unanchored match must not count (re.match): %v", got)
	}
	if got := listed("ip=10.9.0.2&limit=1"); len(got) != 1 {
		t.Errorf("limit after the filter: %v", got)
	}
	if got := listed("ip=10.9.0.[&name=s"); len(got) != 0 {
		t.Errorf("an invalid pattern is a literal prefix: %v", got)
	}
	// ip6: no IPv6 address here; non-admins get it from 2.5 only.
	resp, body := f.do("GET", "/v2.1/servers?ip6=fd00", "demo", "", "X-OpenStack-Nova-API-Version", "2.5")
	if resp.StatusCode != 200 || len(body["servers"].([]any)) != 0 {
		t.Errorf("ip6 at 2.5: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do("GET", "/v2.1/servers?ip6=fd00", "demo", "", "X-OpenStack-Nova-API-Version", "2.4")
	if resp.StatusCode != 200 || len(body["servers"].([]any)) != 4 {
		t.Errorf("ip6 below 2.5 for a non-admin is ignored as Nova does: %d %v", resp.StatusCode, body)
	}
}
