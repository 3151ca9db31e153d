package network_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/network"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// stubValidator maps fixed tokens to callers.
type stubValidator map[string]*auth.Credentials

func (v stubValidator) Validate(_ context.Context, tok string) (*auth.Credentials, error) {
	if c, ok := v[tok]; ok {
		return c, nil
	}
	return nil, errors.New("invalid token")
}

var callers = stubValidator{
	"admin":  {UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member"}, IsAdminProject: true},
	"alice":  {UserID: "u-alice", ProjectID: "p1", Roles: []string{"member"}},
	"bob":    {UserID: "u-bob", ProjectID: "p2", Roles: []string{"member"}},
	"reader": {UserID: "u-reader", ProjectID: "p1", Roles: []string{"reader"}},
}

var netConfig = config.Network{TenantPhysicalNetwork: "physnet1", TenantVLANMin: 100, TenantVLANMax: 102,
	PhysicalNetworks: []string{"physnet1"}, MTU: 1450}

type env struct {
	t   *testing.T
	srv *httptest.Server
	st  *store.Store
}

func newEnv(t *testing.T) *env { t.Helper(); return newEnvOn(t, storetest.SQLite(t)) }

func newEnvOn(t *testing.T, st *store.Store) *env {
	t.Helper()
	svc := network.New(callers, network.WithStore(st), network.WithConfig(netConfig))
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, st: st}
}

// obj is a decoded JSON object.
type obj = map[string]any

// do sends a request as token ("" = none) and decodes the JSON answer.
func (e *env) do(method, path, token string, body any) (int, obj) {
	e.t.Helper()
	return e.doHeader(method, path, token, body, nil)
}

// doHeader is do with extra request headers.
func (e *env) doHeader(method, path, token string, body any, header http.Header) (int, obj) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNoContent {
		if len(raw) != 0 {
			e.t.Fatalf("%s %s: 204 with body %q", method, path, raw)
		}
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Fatalf("%s %s: content type %q (%s)", method, path, ct, raw)
	}
	var out obj
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
	}
	return resp.StatusCode, out
}

// must sends a request and fails unless the status is want.
func (e *env) must(want int, method, path, token string, body any) obj {
	e.t.Helper()
	code, out := e.do(method, path, token, body)
	if code != want {
		e.t.Fatalf("%s %s as %s: %d %v, want %d", method, path, token, code, out, want)
	}
	return out
}

// fails sends a request and checks the Neutron error status and type.
func (e *env) fails(status int, typ, method, path, token string, body any) {
	e.t.Helper()
	code, out := e.do(method, path, token, body)
	ne, _ := out["NeutronError"].(obj)
	if code != status || ne == nil || (typ != "" && ne["type"] != typ) || ne["message"] == "" {
		e.t.Fatalf("%s %s as %s: %d %v, want %d %s", method, path, token, code, out, status, typ)
	}
	if _, ok := ne["detail"]; !ok {
		e.t.Fatalf("%s %s: NeutronError without detail: %v", method, path, out)
	}
}

func (e *env) network(token string, attrs obj) obj {
	e.t.Helper()
	return e.must(http.StatusCreated, "POST", "/v2.0/networks", token, obj{"network": attrs})["network"].(obj)
}

func (e *env) subnet(token string, attrs obj) obj {
	e.t.Helper()
	return e.must(http.StatusCreated, "POST", "/v2.0/subnets", token, obj{"subnet": attrs})["subnet"].(obj)
}

func (e *env) port(token string, attrs obj) obj {
	e.t.Helper()
	return e.must(http.StatusCreated, "POST", "/v2.0/ports", token, obj{"port": attrs})["port"].(obj)
}

func ids(list any) []string {
	var out []string
	for _, x := range list.([]any) {
		out = append(out, x.(obj)["id"].(string))
	}
	return out
}

func fixedIP(p obj, i int) string { return p["fixed_ips"].([]any)[i].(obj)["ip_address"].(string) }

func TestDiscoveryAndAuth(t *testing.T) {
	e := newEnv(t)
	v := e.must(200, "GET", "/", "", nil)
	ver := v["versions"].([]any)[0].(obj)
	if ver["id"] != "v2.0" || ver["status"] != "CURRENT" ||
		ver["links"].([]any)[0].(obj)["href"] != e.srv.URL+"/v2.0/" {
		t.Fatalf("versions %v", v)
	}
	res := e.must(200, "GET", "/v2.0/", "alice", nil)["resources"].([]any)
	if len(res) != 3 || res[0].(obj)["collection"] != "networks" {
		t.Fatalf("resources %v", res)
	}
	e.fails(401, "", "GET", "/v2.0/networks", "", nil)
	e.fails(401, "", "GET", "/v2.0/networks", "bogus", nil)
	exts := e.must(200, "GET", "/v2.0/extensions", "alice", nil)["extensions"].([]any)
	var aliases []string
	for _, x := range exts {
		aliases = append(aliases, x.(obj)["alias"].(string))
	}
	for _, want := range []string{"provider", "binding", "port-security", "standard-attr-description", "revision-if-match", "standard-attr-revisions", "quotas", "quota_details", "security-group", "stateful-security-group"} {
		if !strings.Contains(","+strings.Join(aliases, ",")+",", ","+want+",") {
			t.Errorf("extension %s not declared: %v", want, aliases)
		}
	}
	for _, not := range []string{"router", "external-net"} {
		if strings.Contains(","+strings.Join(aliases, ",")+",", ","+not+",") {
			t.Errorf("extension %s declared but not implemented", not)
		}
	}
	one := e.must(200, "GET", "/v2.0/extensions/provider", "alice", nil)["extension"].(obj)
	if one["name"] != "Provider Network" || one["updated"] == "" {
		t.Fatalf("provider extension %v", one)
	}
	e.fails(404, "", "GET", "/v2.0/extensions/router", "alice", nil)
	e.fails(404, "HTTPNotFound", "GET", "/v2.0/nothing", "alice", nil)
	for _, coll := range []string{"floatingips", "routers"} {
		if l := e.must(200, "GET", "/v2.0/"+coll, "alice", nil)[coll].([]any); len(l) != 0 {
			t.Fatalf("%s %v", coll, l)
		}
	}
	sgs := e.must(200, "GET", "/v2.0/security-groups?name=default", "alice", nil)["security_groups"].([]any)
	if len(sgs) != 1 || sgs[0].(obj)["project_id"] != "p1" || len(sgs[0].(obj)["security_group_rules"].([]any)) != 4 {
		t.Fatalf("default security group %v", sgs)
	}
	sgID := sgs[0].(obj)["id"].(string)
	e.must(200, "GET", "/v2.0/security-groups/"+sgID, "alice", nil)
	e.fails(404, "SecurityGroupNotFound", "GET", "/v2.0/security-groups/"+sgID, "bob", nil)
	if bobs := ids(e.must(200, "GET", "/v2.0/security-groups", "bob", nil)["security_groups"]); bobs[0] == sgID {
		t.Fatal("projects share a default group id")
	}
}

func TestNetworks(t *testing.T) {
	e := newEnv(t)
	// A tenant network gets the first tenant VLAN; its owner does not
	// see provider attributes, an admin does.
	n := e.network("alice", obj{"name": "alice-net", "admin_state_up": true})
	for k, want := range map[string]any{"name": "alice-net", "project_id": "p1", "tenant_id": "p1", "status": "ACTIVE",
		"shared": false, "router:external": false, "mtu": 1450.0, "port_security_enabled": true, "revision_number": 1.0,
		"description": "", "is_default": false} {
		if n[k] != want {
			t.Errorf("network %s = %v, want %v", k, n[k], want)
		}
	}
	for _, k := range []string{"subnets", "tags", "availability_zones", "created_at", "updated_at"} {
		if _, ok := n[k]; !ok {
			t.Errorf("network lacks %s", k)
		}
	}
	if _, ok := n["provider:network_type"]; ok {
		t.Fatalf("tenant sees provider attributes: %v", n)
	}
	id := n["id"].(string)
	an := e.must(200, "GET", "/v2.0/networks/"+id, "admin", nil)["network"].(obj)
	if an["provider:network_type"] != "vlan" || an["provider:physical_network"] != "physnet1" || an["provider:segmentation_id"] != 100.0 {
		t.Fatalf("admin view %v", an)
	}
	if !strings.HasSuffix(an["created_at"].(string), "Z") {
		t.Fatalf("created_at %v", an["created_at"])
	}

	// Provider networks: segmentation id as OSC sends it (a string).
	p := e.network("admin", obj{"name": "prov", "provider:network_type": "vlan", "provider:physical_network": "physnet1",
		"provider:segmentation_id": "1001", "shared": true})
	if p["provider:segmentation_id"] != 1001.0 || p["shared"] != true {
		t.Fatalf("provider network %v", p)
	}
	e.fails(409, "VlanIdInUse", "POST", "/v2.0/networks", "admin", obj{"network": obj{"provider:network_type": "vlan",
		"provider:physical_network": "physnet1", "provider:segmentation_id": 1001}})
	e.fails(409, "VlanIdInUse", "POST", "/v2.0/networks", "admin", obj{"network": obj{"provider:network_type": "vlan",
		"provider:segmentation_id": 100}}) // the tenant network's VLAN; physnet defaults to the only one
	if d := e.network("admin", obj{"provider:network_type": "vlan", "provider:segmentation_id": 7}); d["provider:physical_network"] != "physnet1" {
		t.Fatalf("default physnet %v", d)
	}
	flat := e.network("admin", obj{"provider:network_type": "flat", "provider:physical_network": "physnet1"})
	if flat["provider:segmentation_id"] != nil {
		t.Fatalf("flat %v", flat)
	}
	e.fails(409, "FlatNetworkInUse", "POST", "/v2.0/networks", "admin", obj{"network": obj{"provider:network_type": "flat"}})
	for _, bad := range []obj{
		{"provider:network_type": "vlan", "provider:segmentation_id": 5000},
		{"provider:network_type": "vlan", "provider:segmentation_id": "abc"},
		{"provider:network_type": "vxlan", "provider:segmentation_id": 5},
		{"provider:network_type": "vlan", "provider:physical_network": "physnet9", "provider:segmentation_id": 5},
		{"provider:network_type": "flat", "provider:segmentation_id": 5},
		{"provider:segmentation_id": 5},
		{"name": "x", "router:external": true},
		{"name": "x", "mtu": 9000},
	} {
		e.fails(400, "InvalidInput", "POST", "/v2.0/networks", "admin", obj{"network": bad})
	}
	e.fails(400, "HTTPBadRequest", "POST", "/v2.0/networks", "admin", obj{"network": obj{"bogus": 1}})
	e.fails(400, "HTTPBadRequest", "POST", "/v2.0/networks", "admin", obj{"nope": obj{}})
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/networks", "alice", obj{"network": obj{"provider:network_type": "vlan", "provider:segmentation_id": 9}})
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/networks", "alice", obj{"network": obj{"shared": true}})
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/networks", "alice", obj{"network": obj{"tenant_id": "p2"}})
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/networks", "reader", obj{"network": obj{}})

	// Tenant range 100-102: 100 is alice's; two more, then exhausted.
	e.network("bob", obj{"name": "bob-1"})
	b2 := e.network("bob", obj{"name": "bob-2"})
	e.fails(503, "NoNetworkAvailable", "POST", "/v2.0/networks", "bob", obj{"network": obj{"name": "bob-3"}})

	// Visibility: own and shared networks; admins see all.
	e.fails(404, "NetworkNotFound", "GET", "/v2.0/networks/"+id, "bob", nil)
	e.must(200, "GET", "/v2.0/networks/"+p["id"].(string), "bob", nil)
	bobSees := ids(e.must(200, "GET", "/v2.0/networks", "bob", nil)["networks"])
	if len(bobSees) != 3 {
		t.Fatalf("bob sees %v", bobSees)
	}
	if all := ids(e.must(200, "GET", "/v2.0/networks", "admin", nil)["networks"]); len(all) != 6 {
		t.Fatalf("admin sees %d networks", len(all))
	}

	// Filters, fields, paging.
	got := e.must(200, "GET", "/v2.0/networks?name=alice-net&fields=id&fields=name", "alice", nil)["networks"].([]any)
	if len(got) != 1 || len(got[0].(obj)) != 2 || got[0].(obj)["id"] != id {
		t.Fatalf("name filter with fields: %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/networks?shared=True", "bob", nil)["networks"]); len(got) != 1 || got[0] != p["id"] {
		t.Fatalf("shared=True: %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/networks?name=bob-1&name=bob-2", "bob", nil)["networks"]); len(got) != 2 {
		t.Fatalf("repeated filter is OR: %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/networks?router:external=False&shared=false", "bob", nil)["networks"]); len(got) != 2 {
		t.Fatalf("router:external=False: %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/networks?provider:segmentation_id=1001", "admin", nil)["networks"]); len(got) != 1 {
		t.Fatalf("provider filter: %v", got)
	}
	e.fails(400, "HTTPBadRequest", "GET", "/v2.0/networks?bogus=1", "alice", nil)
	e.fails(400, "HTTPBadRequest", "GET", "/v2.0/networks?provider:segmentation_id=1001", "bob", nil)
	page := e.must(200, "GET", "/v2.0/networks?limit=2&sort_key=name&sort_dir=asc", "admin", nil)
	links := page["networks_links"].([]any)
	next := links[0].(obj)["href"].(string)
	if len(page["networks"].([]any)) != 2 || links[0].(obj)["rel"] != "next" || !strings.Contains(next, "marker=") {
		t.Fatalf("page 1 %v", page)
	}
	seen := len(page["networks"].([]any))
	for next != "" {
		pg := e.must(200, "GET", strings.TrimPrefix(next, e.srv.URL), "admin", nil)
		seen += len(pg["networks"].([]any))
		next = ""
		if l, ok := pg["networks_links"].([]any); ok {
			next = l[0].(obj)["href"].(string)
		}
	}
	if seen != 6 {
		t.Fatalf("paged through %d networks", seen)
	}
	if l := e.must(200, "GET", "/v2.0/networks?limit=10", "admin", nil); l["networks_links"] != nil {
		t.Fatalf("next link on the last page: %v", l["networks_links"])
	}
	e.fails(404, "NetworkNotFound", "GET", "/v2.0/networks?marker=gone", "admin", nil)

	// Update.
	u := e.must(200, "PUT", "/v2.0/networks/"+id, "alice", obj{"network": obj{"name": "renamed", "description": "d"}})["network"].(obj)
	if u["name"] != "renamed" || u["description"] != "d" || u["revision_number"] != 2.0 {
		t.Fatalf("update %v", u)
	}
	e.fails(403, "PolicyNotAuthorized", "PUT", "/v2.0/networks/"+p["id"].(string), "bob", obj{"network": obj{"name": "mine"}})
	e.fails(404, "NetworkNotFound", "PUT", "/v2.0/networks/"+id, "bob", obj{"network": obj{"name": "mine"}})
	e.fails(400, "InvalidInput", "PUT", "/v2.0/networks/"+p["id"].(string), "admin", obj{"network": obj{"provider:segmentation_id": 5}})
	e.must(200, "PUT", "/v2.0/networks/"+p["id"].(string), "admin", obj{"network": obj{"provider:segmentation_id": "1001"}})
	e.fails(403, "PolicyNotAuthorized", "PUT", "/v2.0/networks/"+id, "alice", obj{"network": obj{"shared": true}})
	e.fails(403, "PolicyNotAuthorized", "PUT", "/v2.0/networks/"+id, "reader", obj{"network": obj{"name": "r"}})

	// Delete frees the VLAN for the next tenant network.
	e.fails(403, "PolicyNotAuthorized", "DELETE", "/v2.0/networks/"+p["id"].(string), "bob", nil)
	e.must(204, "DELETE", "/v2.0/networks/"+b2["id"].(string), "bob", nil)
	e.fails(404, "NetworkNotFound", "DELETE", "/v2.0/networks/"+b2["id"].(string), "bob", nil)
	b3 := e.network("bob", obj{"name": "bob-3"})
	if v := e.must(200, "GET", "/v2.0/networks/"+b3["id"].(string), "admin", nil)["network"].(obj)["provider:segmentation_id"]; v != 102.0 {
		t.Fatalf("reused VLAN %v", v)
	}

	// Bulk create is all or nothing.
	bulk := e.must(201, "POST", "/v2.0/networks", "admin", obj{"networks": []obj{
		{"name": "bulk-1", "provider:network_type": "vlan", "provider:segmentation_id": 301},
		{"name": "bulk-2", "provider:network_type": "vlan", "provider:segmentation_id": 302}}})
	if len(bulk["networks"].([]any)) != 2 {
		t.Fatalf("bulk %v", bulk)
	}
	e.fails(409, "VlanIdInUse", "POST", "/v2.0/networks", "admin", obj{"networks": []obj{
		{"name": "bulk-3", "provider:network_type": "vlan", "provider:segmentation_id": 303},
		{"name": "bulk-4", "provider:network_type": "vlan", "provider:segmentation_id": 301}}})
	if got := ids(e.must(200, "GET", "/v2.0/networks?name=bulk-3", "admin", nil)["networks"]); len(got) != 0 {
		t.Fatalf("failed bulk left %v", got)
	}
}

func TestSubnets(t *testing.T) {
	e := newEnv(t)
	n := e.network("alice", obj{"name": "net"})
	nid := n["id"].(string)
	sn := e.subnet("alice", obj{"name": "sub", "network_id": nid, "cidr": "10.254.101.0/24", "ip_version": 4,
		"allocation_pools": []obj{{"start": "10.254.101.2", "end": "10.254.101.200"}}})
	for k, want := range map[string]any{"gateway_ip": "10.254.101.1", "cidr": "10.254.101.0/24", "ip_version": 4.0,
		"enable_dhcp": true, "project_id": "p1", "tenant_id": "p1", "revision_number": 0.0, "subnetpool_id": nil} {
		if sn[k] != want {
			t.Errorf("subnet %s = %v, want %v", k, sn[k], want)
		}
	}
	if pools := fmt.Sprint(sn["allocation_pools"]); pools != "[map[end:10.254.101.200 start:10.254.101.2]]" {
		t.Fatalf("pools %s", pools)
	}
	def := e.subnet("alice", obj{"network_id": e.network("alice", obj{})["id"], "cidr": "10.254.102.0/24"})
	if pools := fmt.Sprint(def["allocation_pools"]); pools != "[map[end:10.254.102.254 start:10.254.102.2]]" || def["gateway_ip"] != "10.254.102.1" {
		t.Fatalf("default pools %s", pools)
	}
	sid := sn["id"].(string)
	if got := e.must(200, "GET", "/v2.0/networks/"+nid, "alice", nil)["network"].(obj)["subnets"].([]any); len(got) != 1 || got[0] != sid {
		t.Fatalf("network subnets %v", got)
	}
	// gateway_ip null, explicit pools, DNS, routes, no DHCP.
	n2 := e.network("alice", obj{"name": "net2"})
	s2 := e.subnet("alice", obj{"network_id": n2["id"], "cidr": "10.1.0.0/24", "gateway_ip": nil, "enable_dhcp": false,
		"allocation_pools": []obj{{"start": "10.1.0.100", "end": "10.1.0.199"}}, "dns_nameservers": []string{"10.0.0.53"},
		"host_routes": []obj{{"destination": "10.2.0.0/16", "nexthop": "10.1.0.254"}}})
	if s2["gateway_ip"] != nil || s2["enable_dhcp"] != false || fmt.Sprint(s2["dns_nameservers"]) != "[10.0.0.53]" ||
		fmt.Sprint(s2["host_routes"]) != "[map[destination:10.2.0.0/16 nexthop:10.1.0.254]]" {
		t.Fatalf("subnet 2 %v", s2)
	}
	for _, bad := range []obj{
		{"network_id": n2["id"], "cidr": "10.1.0.0/25"},                           // overlaps
		{"network_id": n2["id"], "cidr": "10.3.0.0/33"},                           // not a CIDR
		{"network_id": n2["id"], "cidr": "10.3.0.1/24"},                           // host bits
		{"network_id": n2["id"], "cidr": "fd00::/64", "ip_version": 6},            // IPv6
		{"network_id": n2["id"], "cidr": "10.3.0.0/24", "gateway_ip": "10.4.0.1"}, // gateway outside
		{"network_id": n2["id"], "cidr": "10.3.0.0/24", "allocation_pools": []obj{{"start": "10.3.0.5", "end": "10.3.1.5"}}},
		{"network_id": n2["id"], "cidr": "10.3.0.0/24", "allocation_pools": []obj{{"start": "10.3.0.5", "end": "10.3.0.9"}, {"start": "10.3.0.8", "end": "10.3.0.20"}}},
	} {
		e.fails(400, "InvalidInput", "POST", "/v2.0/subnets", "alice", obj{"subnet": bad})
	}
	e.fails(409, "GatewayConflictWithAllocationPools", "POST", "/v2.0/subnets", "alice", obj{"subnet": obj{"network_id": n2["id"],
		"cidr": "10.3.0.0/24", "gateway_ip": "10.3.0.7", "allocation_pools": []obj{{"start": "10.3.0.5", "end": "10.3.0.9"}}}})
	e.fails(400, "HTTPBadRequest", "POST", "/v2.0/subnets", "alice", obj{"subnet": obj{"cidr": "10.3.0.0/24"}})
	e.fails(404, "NetworkNotFound", "POST", "/v2.0/subnets", "bob", obj{"subnet": obj{"network_id": nid, "cidr": "10.9.0.0/24"}})
	e.fails(404, "SubnetNotFound", "GET", "/v2.0/subnets/"+sid, "bob", nil)

	// Subnets of a shared network are visible to everyone, writable only
	// by the network owner.
	shared := e.network("admin", obj{"name": "shared", "shared": true, "provider:network_type": "flat"})
	ss := e.subnet("admin", obj{"network_id": shared["id"], "cidr": "192.168.50.0/24"})
	e.must(200, "GET", "/v2.0/subnets/"+ss["id"].(string), "bob", nil)
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/subnets", "bob", obj{"subnet": obj{"network_id": shared["id"], "cidr": "192.168.51.0/24"}})
	if got := ids(e.must(200, "GET", "/v2.0/subnets", "bob", nil)["subnets"]); len(got) != 1 {
		t.Fatalf("bob sees subnets %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/subnets?network_id="+nid, "alice", nil)["subnets"]); len(got) != 1 || got[0] != sid {
		t.Fatalf("network_id filter %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/subnets?cidr=10.1.0.0/24&enable_dhcp=False", "alice", nil)["subnets"]); len(got) != 1 {
		t.Fatalf("cidr filter %v", got)
	}

	// Update gateway, DNS, host routes, DHCP, name (Tempest's
	// test_update_subnet_gw_dns_host_routes_dhcp).
	u := e.must(200, "PUT", "/v2.0/subnets/"+sid, "alice", obj{"subnet": obj{"name": "sub2", "gateway_ip": "10.254.101.254",
		"dns_nameservers": []string{"1.1.1.1", "8.8.8.8"}, "host_routes": []obj{{"destination": "10.20.0.0/16", "nexthop": "10.254.101.3"}},
		"enable_dhcp": false}})["subnet"].(obj)
	if u["gateway_ip"] != "10.254.101.254" || u["name"] != "sub2" || u["enable_dhcp"] != false || len(u["dns_nameservers"].([]any)) != 2 ||
		u["revision_number"] != 1.0 {
		t.Fatalf("updated subnet %v", u)
	}
	e.fails(409, "GatewayConflictWithAllocationPools", "PUT", "/v2.0/subnets/"+sid, "alice", obj{"subnet": obj{"gateway_ip": "10.254.101.50"}})
	e.fails(400, "InvalidInput", "PUT", "/v2.0/subnets/"+sid, "alice", obj{"subnet": obj{"gateway_ip": "10.9.9.9"}})
	e.fails(400, "HTTPBadRequest", "PUT", "/v2.0/subnets/"+sid, "alice", obj{"subnet": obj{"cidr": "10.0.0.0/8"}})
	if g := e.must(200, "PUT", "/v2.0/subnets/"+sid, "alice", obj{"subnet": obj{"gateway_ip": nil}})["subnet"].(obj)["gateway_ip"]; g != nil {
		t.Fatalf("gateway cleared: %v", g)
	}

	// Deleting a network deletes its subnets.
	e.must(204, "DELETE", "/v2.0/networks/"+nid, "alice", nil)
	e.fails(404, "SubnetNotFound", "GET", "/v2.0/subnets/"+sid, "alice", nil)
	e.must(204, "DELETE", "/v2.0/subnets/"+s2["id"].(string), "alice", nil)
	e.fails(404, "SubnetNotFound", "DELETE", "/v2.0/subnets/"+s2["id"].(string), "alice", nil)
}

func TestPorts(t *testing.T) {
	e := newEnv(t)
	n := e.network("alice", obj{"name": "net"})
	nid := n["id"].(string)
	sn := e.subnet("alice", obj{"network_id": nid, "cidr": "10.254.101.0/24",
		"allocation_pools": []obj{{"start": "10.254.101.10", "end": "10.254.101.100"}}})
	sid := sn["id"].(string)

	p := e.port("alice", obj{"network_id": nid, "name": "p1", "fixed_ips": []obj{{"subnet_id": sid, "ip_address": "10.254.101.50"}}})
	for k, want := range map[string]any{"status": "DOWN", "project_id": "p1", "tenant_id": "p1", "device_owner": "",
		"port_security_enabled": true, "admin_state_up": true, "revision_number": 1.0} {
		if p[k] != want {
			t.Errorf("port %s = %v, want %v", k, p[k], want)
		}
	}
	if _, ok := p["binding:host_id"]; ok {
		t.Fatalf("tenant sees binding attributes: %v", p)
	}
	if fixedIP(p, 0) != "10.254.101.50" || !strings.HasPrefix(p["mac_address"].(string), "fa:16:3e:") {
		t.Fatalf("port %v", p)
	}
	pid := p["id"].(string)
	e.fails(409, "IpAddressInUse", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "fixed_ips": []obj{{"ip_address": "10.254.101.50"}}}})
	e.fails(409, "MacAddressInUse", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "mac_address": p["mac_address"]}})
	e.fails(400, "InvalidIpForSubnet", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "fixed_ips": []obj{{"subnet_id": sid, "ip_address": "10.254.101.200"}}}})
	e.fails(400, "InvalidIpForSubnet", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "fixed_ips": []obj{{"subnet_id": sid, "ip_address": "10.9.0.1"}}}})
	e.fails(400, "InvalidIpForNetwork", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "fixed_ips": []obj{{"ip_address": "10.9.0.1"}}}})
	e.fails(400, "InvalidInput", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "mac_address": "zz:16:3e:00:00:01"}})
	e.fails(400, "InvalidInput", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "allowed_address_pairs": []obj{{"ip_address": "1.2.3.400"}}}})
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "binding:host_id": "host-a"}})
	e.fails(404, "NetworkNotFound", "POST", "/v2.0/ports", "bob", obj{"port": obj{"network_id": nid}})
	e.fails(404, "SubnetNotFound", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid, "fixed_ips": []obj{{"subnet_id": "nope"}}}})

	// An admin may take an address outside the pools and bind a port.
	srv := e.port("admin", obj{"network_id": nid, "fixed_ips": []obj{{"ip_address": "10.254.101.200"}}, "device_id": "server-1",
		"device_owner": "compute:nova", "binding:host_id": "host-a", "mac_address": "FA:16:3E:AA:BB:CC", "tenant_id": "p1"})
	if srv["status"] != "ACTIVE" || srv["binding:host_id"] != "host-a" || srv["binding:vif_type"] != "ovs" || srv["mac_address"] != "fa:16:3e:aa:bb:cc" {
		t.Fatalf("bound port %v", srv)
	}
	auto := e.port("alice", obj{"network_id": nid, "port_security_enabled": false})
	if len(auto["fixed_ips"].([]any)) != 1 || auto["port_security_enabled"] != false {
		t.Fatalf("auto port %v", auto)
	}
	none := e.port("alice", obj{"network_id": nid, "fixed_ips": []obj{}})
	if len(none["fixed_ips"].([]any)) != 0 {
		t.Fatalf("no-address port %v", none)
	}

	// What `openstack port list --server` sends.
	got := e.must(200, "GET", "/v2.0/ports?fields=id&fields=name&fields=mac_address&fields=fixed_ips&fields=status&device_id=server-1", "alice", nil)["ports"].([]any)
	if len(got) != 1 || len(got[0].(obj)) != 5 || got[0].(obj)["id"] != srv["id"] || fixedIP(got[0].(obj), 0) != "10.254.101.200" {
		t.Fatalf("ports of server-1: %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/ports?fixed_ips=ip_address%3D10.254.101.50", "alice", nil)["ports"]); len(got) != 1 || got[0] != pid {
		t.Fatalf("fixed_ips filter %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/ports?fixed_ips=subnet_id%3D"+sid+"&fixed_ips=ip_address%3D10.254.101.200", "alice", nil)["ports"]); len(got) != 1 {
		t.Fatalf("fixed_ips AND filter %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/ports?binding:host_id=host-a&device_owner=compute:nova", "admin", nil)["ports"]); len(got) != 1 {
		t.Fatalf("binding filter %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/ports?network_id="+nid, "alice", nil)["ports"]); len(got) != 4 {
		t.Fatalf("alice (network owner) sees %v", got)
	}
	if got := ids(e.must(200, "GET", "/v2.0/ports", "bob", nil)["ports"]); len(got) != 0 {
		t.Fatalf("bob sees %v", got)
	}
	e.fails(404, "PortNotFound", "GET", "/v2.0/ports/"+pid, "bob", nil)

	// Update: add a second address on the subnet (Tempest), rename.
	u := e.must(200, "PUT", "/v2.0/ports/"+pid, "alice", obj{"port": obj{"name": "renamed", "fixed_ips": []obj{
		{"subnet_id": sid, "ip_address": "10.254.101.50"}, {"subnet_id": sid}}}})["port"].(obj)
	if u["name"] != "renamed" || len(u["fixed_ips"].([]any)) != 2 || u["revision_number"] != 2.0 {
		t.Fatalf("updated port %v", u)
	}
	e.fails(409, "IpAddressInUse", "PUT", "/v2.0/ports/"+pid, "alice", obj{"port": obj{"fixed_ips": []obj{{"ip_address": fixedIP(auto, 0)}}}})
	e.fails(403, "PolicyNotAuthorized", "PUT", "/v2.0/ports/"+pid, "alice", obj{"port": obj{"binding:host_id": "host-b"}})
	e.fails(400, "HTTPBadRequest", "PUT", "/v2.0/ports/"+pid, "alice", obj{"port": obj{"network_id": "x"}})
	b := e.must(200, "PUT", "/v2.0/ports/"+pid, "admin", obj{"port": obj{"binding:host_id": "host-b", "device_id": "server-2", "device_owner": "compute:nova"}})["port"].(obj)
	if b["status"] != "ACTIVE" || b["binding:host_id"] != "host-b" {
		t.Fatalf("bound by update %v", b)
	}

	// In-use rules.
	e.fails(409, "SubnetInUse", "DELETE", "/v2.0/subnets/"+sid, "alice", nil)
	e.fails(409, "NetworkInUse", "DELETE", "/v2.0/networks/"+nid, "alice", nil)
	// Ports owned by compute:nova can be deleted, as in Neutron.
	for _, id := range []string{pid, srv["id"].(string), auto["id"].(string), none["id"].(string)} {
		e.must(204, "DELETE", "/v2.0/ports/"+id, "alice", nil)
	}
	e.fails(404, "PortNotFound", "DELETE", "/v2.0/ports/"+pid, "alice", nil)
	// The released address is free again.
	if again := e.port("alice", obj{"network_id": nid, "fixed_ips": []obj{{"ip_address": "10.254.101.50"}}}); fixedIP(again, 0) != "10.254.101.50" {
		t.Fatalf("reused address %v", again)
	} else {
		e.must(204, "DELETE", "/v2.0/ports/"+again["id"].(string), "alice", nil)
	}
	e.must(204, "DELETE", "/v2.0/subnets/"+sid, "alice", nil)
	e.must(204, "DELETE", "/v2.0/networks/"+nid, "alice", nil)
}

// TestPortsOnSharedNetwork: other projects may attach to a shared network
// but not choose its addresses.
func TestPortsOnSharedNetwork(t *testing.T) {
	e := newEnv(t)
	n := e.network("admin", obj{"name": "public", "shared": true, "provider:network_type": "vlan", "provider:segmentation_id": 500})
	e.subnet("admin", obj{"network_id": n["id"], "cidr": "172.16.0.0/24"})
	p := e.port("bob", obj{"network_id": n["id"]})
	if p["project_id"] != "p2" || len(p["fixed_ips"].([]any)) != 1 {
		t.Fatalf("bob's port %v", p)
	}
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/ports", "bob", obj{"port": obj{"network_id": n["id"], "fixed_ips": []obj{{"ip_address": "172.16.0.9"}}}})
	if got := ids(e.must(200, "GET", "/v2.0/ports", "alice", nil)["ports"]); len(got) != 0 {
		t.Fatalf("alice sees bob's port: %v", got)
	}
	e.fails(409, "NetworkInUse", "DELETE", "/v2.0/networks/"+n["id"].(string), "admin", nil)
}

// TestConcurrentPortCreates: 50 simultaneous POST /ports on one subnet
// get 50 distinct addresses from the pools, on SQLite and PostgreSQL.
func TestConcurrentPortCreates(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		e := newEnvOn(t, st)
		n := e.network("alice", obj{"name": "busy"})
		e.subnet("alice", obj{"network_id": n["id"], "cidr": "10.30.0.0/24",
			"allocation_pools": []obj{{"start": "10.30.0.10", "end": "10.30.0.80"}}})
		const N = 50
		addrs := make([]string, N)
		var wg sync.WaitGroup
		for i := 0; i < N; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				code, out := e.do("POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": n["id"], "device_id": fmt.Sprint("srv-", i)}})
				if code != http.StatusCreated {
					t.Errorf("port %d: %d %v", i, code, out)
					return
				}
				addrs[i] = fixedIP(out["port"].(obj), 0)
			}(i)
		}
		wg.Wait()
		seen := map[string]bool{}
		for _, a := range addrs {
			var last int
			if _, err := fmt.Sscanf(a, "10.30.0.%d", &last); err != nil || last < 10 || last > 80 || seen[a] {
				t.Fatalf("address %q duplicated or outside the pool (%v)", a, addrs)
			}
			seen[a] = true
		}
	})
}
