package network

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/internal/fuzzhttp"
	"github.com/capsule-cloud/capsule/internal/storetest"
)

// Native fuzz targets for the Neutron API's request decoders and
// validators (networks, subnets, ports, quotas, list filters). Their seeds
// run as ordinary tests; deploy/test.sh runs each for a few seconds with
// -fuzz. A rejected input is a 4xx NeutronError, never a 5xx or a panic.

type fuzzCallers map[string]*auth.Credentials

func (v fuzzCallers) Validate(_ context.Context, tok string) (*auth.Credentials, error) {
	if c, ok := v[tok]; ok {
		return c, nil
	}
	return nil, errors.New("invalid token")
}

// fuzzNet is a network service on SQLite with one network, subnet and
// port of project p1, built once per fuzz target.
type fuzzNet struct {
	h                     http.Handler
	network, subnet, port string
}

func newFuzzNet(tb testing.TB) *fuzzNet {
	tb.Helper()
	callers := fuzzCallers{
		"admin": {UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member"}, IsAdminProject: true},
		"alice": {UserID: "u-alice", ProjectID: "p1", Roles: []string{"member"}},
	}
	svc := New(callers, WithStore(storetest.SQLite(tb)), WithConfig(config.Network{TenantPhysicalNetwork: "physnet1",
		TenantVLANMin: 100, TenantVLANMax: 199, PhysicalNetworks: []string{"physnet1"}, MTU: 1500}))
	n := &fuzzNet{h: svc.Handler()}
	create := func(path, body string) string {
		rec := fuzzhttp.Do(n.h, "POST", path, "alice", []byte(body))
		if rec.Code != http.StatusCreated {
			tb.Fatalf("POST %s: %d %s", path, rec.Code, rec.Body)
		}
		var out map[string]map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			tb.Fatal(err)
		}
		for _, v := range out {
			return v["id"].(string)
		}
		return ""
	}
	n.network = create("/v2.0/networks", `{"network":{"name":"n"}}`)
	n.subnet = create("/v2.0/subnets", `{"subnet":{"network_id":"`+n.network+`","cidr":"10.9.0.0/24","ip_version":4}}`)
	n.port = create("/v2.0/ports", `{"port":{"network_id":"`+n.network+`"}}`)
	return n
}

func FuzzNetworkBody(f *testing.F) {
	for _, s := range []string{`{"network":{"name":"a","admin_state_up":true,"shared":false,"mtu":1400,"port_security_enabled":false}}`,
		`{"network":{"provider:network_type":"vlan","provider:physical_network":"physnet1","provider:segmentation_id":4095}}`,
		`{"network":{"provider:network_type":"flat","provider:segmentation_id":1e400}}`, `{"networks":[{"name":"a"},{"name":"b"}]}`,
		`{"network":{"router:external":true,"segments":[]}}`, `{"network":null}`, `{"networks":[]}`, `{"network":{"mtu":-1,"name":1}}`,
		`{"network":{"description":"` + "\xed\xa0\x80" + `","tags":["a"]}}`} {
		f.Add([]byte(s), true)
	}
	n := newFuzzNet(f)
	f.Fuzz(func(t *testing.T, body []byte, admin bool) {
		tok := "alice"
		if admin {
			tok = "admin"
		}
		// 503 NoNetworkAvailable is Neutron's answer once the tenant
		// VLAN range is used up (the fuzzer creates many networks).
		fuzzhttp.Check(t, fuzzhttp.Do(n.h, "POST", "/v2.0/networks", tok, body), "create network", http.StatusServiceUnavailable)
		fuzzhttp.Check(t, fuzzhttp.Do(n.h, "PUT", "/v2.0/networks/"+n.network, tok, body), "update network")
	})
}

func FuzzSubnetBody(f *testing.F) {
	for _, s := range []string{`{"subnet":{"network_id":"NET","cidr":"10.10.0.0/24","ip_version":4,"gateway_ip":"10.10.0.1","allocation_pools":[{"start":"10.10.0.10","end":"10.10.0.20"}],"dns_nameservers":["8.8.8.8"],"host_routes":[{"destination":"0.0.0.0/0","nexthop":"10.10.0.2"}],"enable_dhcp":false}}`,
		`{"subnet":{"network_id":"NET","cidr":"fd00::/64","ip_version":6,"ipv6_address_mode":"slaac"}}`,
		`{"subnet":{"network_id":"NET","cidr":"10.0.0.0/0","ip_version":4}}`, `{"subnet":{"network_id":"NET","cidr":"10.0.0.0/33"}}`,
		`{"subnet":{"network_id":"NET","cidr":"1.2.3.4/32","gateway_ip":null}}`, `{"subnet":{"network_id":"NET","cidr":"10.1.0.0/8","allocation_pools":[{"start":"10.1.0.20","end":"10.1.0.10"}]}}`,
		`{"subnet":{"network_id":"NET","subnetpool_id":"x","prefixlen":24}}`, `{"subnets":[{"network_id":"NET","cidr":"::/0","ip_version":6}]}`,
		`{"subnet":{"name":"x","dns_nameservers":["x"],"allocation_pools":[{"start":"10.9.0.100","end":"10.9.0.200"}]}}`} {
		f.Add([]byte(s))
	}
	n := newFuzzNet(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		body = []byte(strings.ReplaceAll(string(body), "NET", n.network))
		fuzzhttp.Check(t, fuzzhttp.Do(n.h, "POST", "/v2.0/subnets", "alice", body), "create subnet")
		fuzzhttp.Check(t, fuzzhttp.Do(n.h, "PUT", "/v2.0/subnets/"+n.subnet, "alice", body), "update subnet")
	})
}

func FuzzPortBody(f *testing.F) {
	for _, s := range []string{`{"port":{"network_id":"NET","fixed_ips":[{"subnet_id":"SUB","ip_address":"10.9.0.50"}],"mac_address":"fa:16:3e:00:00:01","port_security_enabled":false,"allowed_address_pairs":[{"ip_address":"10.9.0.0/24","mac_address":"fa:16:3e:00:00:02"}],"device_id":"d","device_owner":"compute:nova","binding:host_id":"h","admin_state_up":false,"name":"p"}}`,
		`{"port":{"network_id":"NET","fixed_ips":[{"ip_address":"::1"},{"subnet_id":"x"}]}}`, `{"port":{"network_id":"NET","mac_address":"ff:ff:ff:ff:ff:ff"}}`,
		`{"ports":[{"network_id":"NET"},{"network_id":"NET","fixed_ips":[]}]}`, `{"port":{"network_id":"NET","security_groups":["x"],"binding:profile":{}}}`,
		`{"port":{"name":"x","fixed_ips":[{"subnet_id":"SUB","ip_address":"10.9.0.255"}]}}`} {
		f.Add([]byte(s), false)
	}
	n := newFuzzNet(f)
	f.Fuzz(func(t *testing.T, body []byte, admin bool) {
		tok := "alice"
		if admin {
			tok = "admin"
		}
		body = []byte(strings.ReplaceAll(strings.ReplaceAll(string(body), "NET", n.network), "SUB", n.subnet))
		fuzzhttp.Check(t, fuzzhttp.Do(n.h, "POST", "/v2.0/ports", tok, body), "create port")
		fuzzhttp.Check(t, fuzzhttp.Do(n.h, "PUT", "/v2.0/ports/"+n.port, tok, body), "update port")
	})
}

func FuzzQuotaBody(f *testing.F) {
	for _, s := range []string{`{"quota":{"network":10,"subnet":-1,"port":"5"}}`, `{"quota":{"network":1e400}}`, `{"quota":null}`,
		`{"quota":{"floatingip":1,"router":2,"security_group":3}}`} {
		f.Add([]byte(s))
	}
	n := newFuzzNet(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzhttp.Check(t, fuzzhttp.Do(n.h, "PUT", "/v2.0/quotas/p1", "admin", body), "update quota")
	})
}

// FuzzListQuery: filters, fields, sorting and paging of the list routes.
func FuzzListQuery(f *testing.F) {
	for _, q := range []string{"name=n&fields=id&fields=name", "limit=-1&marker=x", "sort_key=name&sort_dir=up", "shared=maybe",
		"fixed_ips=ip_address%3D10.9.0.5", "fixed_ips=subnet_id%3D", "admin_state_up=1", "id=a&id=b", "page_reverse=true&limit=1",
		"mac_address=zz", "cidr=10.0.0.0/33", "ip_version=7"} {
		f.Add(q)
	}
	n := newFuzzNet(f)
	f.Fuzz(func(t *testing.T, q string) {
		if _, err := url.ParseQuery(q); err != nil {
			return
		}
		for _, coll := range []string{"networks", "subnets", "ports"} {
			fuzzhttp.Check(t, fuzzhttp.Do(n.h, "GET", "/v2.0/"+coll+"?"+q, "alice", nil), "list "+coll)
		}
	})
}
