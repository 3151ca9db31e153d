package network_test

import (
	"net/http"
	"testing"
)

// sharedNet makes an admin's shared VLAN network with a subnet.
func (e *env) sharedNet(vlan int, cidr string) obj {
	e.t.Helper()
	n := e.network("admin", obj{"name": "public", "shared": true, "provider:network_type": "vlan", "provider:segmentation_id": vlan})
	e.subnet("admin", obj{"network_id": n["id"], "cidr": cidr})
	return n
}

// Port security (the anti-spoofing flows) on a shared network is its
// owner's and the admins' to turn off, as in Neutron's policy: another
// project's member gets 403 PolicyNotAuthorized on create and update,
// and its port keeps port security; it may still ask for it on.
func TestPortSecurityOffOnSharedNetworkIsTheOwners(t *testing.T) {
	e := newEnv(t)
	n := e.sharedNet(500, "172.16.0.0/24")
	for _, v := range []any{false, "False"} {
		e.fails(http.StatusForbidden, "PolicyNotAuthorized", "POST", "/v2.0/ports", "bob",
			obj{"port": obj{"network_id": n["id"], "port_security_enabled": v}})
	}
	p := e.port("bob", obj{"network_id": n["id"], "port_security_enabled": true})
	path := "/v2.0/ports/" + p["id"].(string)
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "PUT", path, "bob", obj{"port": obj{"port_security_enabled": false}})
	if got := e.must(http.StatusOK, "GET", path, "bob", nil)["port"].(obj); got["port_security_enabled"] != true {
		t.Fatalf("bob's port after the refused update: %v", got)
	}
	e.must(http.StatusOK, "PUT", path, "bob", obj{"port": obj{"port_security_enabled": true, "name": "p"}})

	// The network's owner (here an admin) may; so may a project on its
	// own network.
	adm := e.port("admin", obj{"network_id": n["id"], "port_security_enabled": false})
	if adm["port_security_enabled"] != false {
		t.Fatalf("admin's port %v", adm)
	}
	if got := e.must(http.StatusOK, "PUT", path, "admin", obj{"port": obj{"port_security_enabled": false}})["port"].(obj); got["port_security_enabled"] != false {
		t.Fatalf("admin's update of bob's port: %v", got)
	}
	own := e.network("alice", obj{"name": "own"})
	e.subnet("alice", obj{"network_id": own["id"], "cidr": "10.50.0.0/24"})
	if p := e.port("alice", obj{"network_id": own["id"], "port_security_enabled": false}); p["port_security_enabled"] != false {
		t.Fatalf("alice's port on her own network: %v", p)
	}
}
