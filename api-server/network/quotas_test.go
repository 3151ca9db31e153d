package network_test

import (
	"net/http"
	"testing"
)

// TestQuotasReadOnly: what `openstack quota show` asks Neutron for, in
// Neutron's body form, with real counts in the details; changes refused
// except the "force" alone that `openstack quota set --force` sends.
func TestQuotasReadOnly(t *testing.T) {
	e := newEnv(t)
	n := e.network("alice", obj{"name": "n1"})
	e.subnet("alice", obj{"network_id": n["id"], "cidr": "10.7.0.0/24", "ip_version": 4})
	e.port("alice", obj{"network_id": n["id"]})
	e.port("alice", obj{"network_id": n["id"]})

	want := map[string]float64{"network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50,
		"security_group": 10, "security_group_rule": 100}
	for _, path := range []string{"/v2.0/quotas/p1", "/v2.0/quotas/p1/default"} {
		q := e.must(http.StatusOK, "GET", path, "alice", nil)["quota"].(obj)
		for k, n := range want {
			if q[k] != n {
				t.Errorf("%s: %s = %v, want %v", path, k, q[k], n)
			}
		}
	}
	d := e.must(http.StatusOK, "GET", "/v2.0/quotas/p1/details", "alice", nil)["quota"].(obj)
	for k, used := range map[string]float64{"network": 1, "subnet": 1, "port": 2, "router": 0, "security_group": 1} {
		v := d[k].(obj)
		if v["used"] != used || v["limit"] != want[k] || v["reserved"] != float64(0) {
			t.Errorf("details %s = %v, want used %v of %v", k, v, used, want[k])
		}
	}
	if d := e.must(http.StatusOK, "GET", "/v2.0/quotas/p2/details", "admin", nil)["quota"].(obj); d["port"].(obj)["used"] != float64(0) {
		t.Errorf("p2 details count p1's ports: %v", d["port"])
	}

	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "GET", "/v2.0/quotas/p2", "alice", nil)
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "GET", "/v2.0/quotas", "alice", nil)
	if l := e.must(http.StatusOK, "GET", "/v2.0/quotas", "admin", nil)["quotas"].([]any); len(l) != 0 {
		t.Errorf("quota list = %v", l)
	}
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "PUT", "/v2.0/quotas/p1", "alice", obj{"quota": obj{"force": true}})
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"network": 5}})
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "PUT", "/v2.0/quotas/p1", "admin", obj{"network": 5})
	if q := e.must(http.StatusOK, "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"force": true}})["quota"].(obj); q["network"] != float64(100) {
		t.Errorf("PUT force answered %v", q)
	}
	e.must(http.StatusNoContent, "DELETE", "/v2.0/quotas/p1", "admin", nil)
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "DELETE", "/v2.0/quotas/p1", "alice", nil)
}
