package network_test

import (
	"fmt"
	"testing"
)

// Allowed address pairs: stored canonical (a MAC left out is the port's),
// kept by updates that do not name them, replaced and cleared by ones
// that do; Neutron's errors for bad, duplicate, too many pairs and pairs
// without port security; only the network's owner grants them on a
// shared network; other projects see no port (404), readers may not
// write (403).
func TestAllowedAddressPairs(t *testing.T) {
	e := newEnv(t)
	nid := e.must(201, "POST", "/v2.0/networks", "alice", obj{"network": obj{"name": "n"}})["network"].(obj)["id"].(string)
	e.must(201, "POST", "/v2.0/subnets", "alice", obj{"subnet": obj{"network_id": nid, "cidr": "10.9.0.0/24", "ip_version": 4}})
	p := e.port("alice", obj{"network_id": nid, "allowed_address_pairs": []obj{
		{"ip_address": "10.9.0.77"}, {"ip_address": "10.9.1.9/24", "mac_address": "FA:16:3E:00:00:02"}}})
	mac := p["mac_address"].(string)
	want := fmt.Sprint([]any{obj{"ip_address": "10.9.0.77", "mac_address": mac}, obj{"ip_address": "10.9.1.0/24", "mac_address": "fa:16:3e:00:00:02"}})
	if got := fmt.Sprint(p["allowed_address_pairs"]); got != want {
		t.Fatalf("pairs %s, want %s", got, want)
	}
	path := "/v2.0/ports/" + p["id"].(string)
	got := e.must(200, "PUT", path, "alice", obj{"port": obj{"name": "renamed"}})["port"].(obj)
	if fmt.Sprint(got["allowed_address_pairs"]) != want {
		t.Fatalf("an update without pairs changed them: %v", got["allowed_address_pairs"])
	}
	e.fails(409, "AddressPairAndPortSecurityRequired", "PUT", path, "alice", obj{"port": obj{"port_security_enabled": false, "security_groups": []string{}}})
	e.fails(400, "InvalidInput", "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": []obj{{"ip_address": "nope"}}}})
	e.fails(400, "InvalidInput", "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": []obj{{"mac_address": mac}}}})
	e.fails(400, "InvalidInput", "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": []obj{{"ip_address": "10.9.0.5", "x": 1}}}})
	e.fails(400, "DuplicateAddressPairInRequest", "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": []obj{
		{"ip_address": "10.9.0.5"}, {"ip_address": "10.9.0.5", "mac_address": mac}}}})
	var many []obj
	for i := range 11 {
		many = append(many, obj{"ip_address": fmt.Sprintf("10.9.0.%d", 100+i)})
	}
	e.fails(400, "AllowedAddressPairExhausted", "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": many}})
	e.fails(404, "PortNotFound", "PUT", path, "bob", obj{"port": obj{"allowed_address_pairs": []obj{}}})
	e.fails(403, "PolicyNotAuthorized", "PUT", path, "reader", obj{"port": obj{"allowed_address_pairs": []obj{}}})
	got = e.must(200, "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": []obj{{"ip_address": "10.9.0.0/28"}}}})["port"].(obj)
	if fmt.Sprint(got["allowed_address_pairs"]) != fmt.Sprint([]any{obj{"ip_address": "10.9.0.0/28", "mac_address": mac}}) {
		t.Fatalf("replaced pairs %v", got["allowed_address_pairs"])
	}
	for _, clear := range []any{[]obj{}, nil} {
		got = e.must(200, "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": clear}})["port"].(obj)
		if fmt.Sprint(got["allowed_address_pairs"]) != "[]" {
			t.Fatalf("cleared pairs %v", got["allowed_address_pairs"])
		}
	}
	// Now port security may go, and pairs cannot come back without it.
	e.must(200, "PUT", path, "alice", obj{"port": obj{"port_security_enabled": false, "security_groups": []string{}}})
	e.fails(409, "AddressPairAndPortSecurityRequired", "PUT", path, "alice", obj{"port": obj{"allowed_address_pairs": []obj{{"ip_address": "10.9.0.5"}}}})
	e.fails(409, "AddressPairAndPortSecurityRequired", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": nid,
		"port_security_enabled": false, "allowed_address_pairs": []obj{{"ip_address": "10.9.0.5"}}}})

	// On an admin's shared network a member's port gets no pairs.
	shared := e.must(201, "POST", "/v2.0/networks", "admin", obj{"network": obj{"name": "s", "shared": true}})["network"].(obj)["id"].(string)
	e.must(201, "POST", "/v2.0/subnets", "admin", obj{"subnet": obj{"network_id": shared, "cidr": "10.8.0.0/24", "ip_version": 4}})
	e.fails(403, "PolicyNotAuthorized", "POST", "/v2.0/ports", "bob", obj{"port": obj{"network_id": shared, "allowed_address_pairs": []obj{{"ip_address": "10.8.0.5"}}}})
	bp := e.port("bob", obj{"network_id": shared})
	e.fails(403, "PolicyNotAuthorized", "PUT", "/v2.0/ports/"+bp["id"].(string), "bob", obj{"port": obj{"allowed_address_pairs": []obj{{"ip_address": "10.8.0.5"}}}})
}
