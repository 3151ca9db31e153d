package network_test

import (
	"fmt"
	"net/http"
	"testing"
)

// TestIfMatchRevision: an update or delete with If-Match:
// revision_number=N succeeds only at revision N (Neutron's 412
// RevisionNumberConstraintFailed otherwise), for networks, subnets, ports
// and security groups; a malformed constraint is a 400.
func TestIfMatchRevision(t *testing.T) {
	e := newEnv(t)
	net := e.must(201, "POST", "/v2.0/networks", "alice", obj{"network": obj{"name": "n"}})["network"].(obj)
	netID := net["id"].(string)
	sub := e.must(201, "POST", "/v2.0/subnets", "alice", obj{"subnet": obj{"network_id": netID, "cidr": "10.9.0.0/24", "ip_version": 4}})["subnet"].(obj)
	port := e.must(201, "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": netID}})["port"].(obj)
	sg := e.must(201, "POST", "/v2.0/security-groups", "alice", obj{"security_group": obj{"name": "g"}})["security_group"].(obj)

	for _, c := range []struct{ kind, path string }{
		{"network", "/v2.0/networks/" + netID}, {"subnet", "/v2.0/subnets/" + sub["id"].(string)},
		{"port", "/v2.0/ports/" + port["id"].(string)}, {"security_group", "/v2.0/security-groups/" + sg["id"].(string)},
	} {
		cur := e.must(200, "GET", c.path, "alice", nil)[c.kind].(obj)
		rev := int(cur["revision_number"].(float64))
		stale := http.Header{"If-Match": {fmt.Sprintf("revision_number=%d", rev-1)}}
		code, out := e.doHeader("PUT", c.path, "alice", obj{c.kind: obj{"name": "stale"}}, stale)
		if ne, _ := out["NeutronError"].(obj); code != 412 || ne["type"] != "RevisionNumberConstraintFailed" {
			t.Fatalf("%s stale update: %d %v", c.kind, code, out)
		}
		if got := e.must(200, "GET", c.path, "alice", nil)[c.kind].(obj); got["name"] == "stale" || got["revision_number"] != cur["revision_number"] {
			t.Fatalf("%s changed by a refused update: %v", c.kind, got)
		}
		if code, out := e.doHeader("PUT", c.path, "alice", obj{c.kind: obj{"name": "x"}}, http.Header{"If-Match": {"revision_number=abc"}}); code != 400 {
			t.Fatalf("%s malformed If-Match: %d %v", c.kind, code, out)
		}
		fresh := http.Header{"If-Match": {fmt.Sprintf(`"revision_number=%d"`, rev)}}
		code, out = e.doHeader("PUT", c.path, "alice", obj{c.kind: obj{"name": "fresh"}}, fresh)
		if code != 200 || out[c.kind].(obj)["revision_number"].(float64) != float64(rev+1) {
			t.Fatalf("%s current update: %d %v", c.kind, code, out)
		}
		if code, out := e.doHeader("DELETE", c.path, "alice", nil, stale); code != 412 {
			t.Fatalf("%s stale delete: %d %v", c.kind, code, out)
		}
	}
	// Deletes at the current revision go through (ports before the
	// subnet and network they use).
	for _, c := range []struct{ kind, path string }{
		{"port", "/v2.0/ports/" + port["id"].(string)}, {"security_group", "/v2.0/security-groups/" + sg["id"].(string)},
		{"subnet", "/v2.0/subnets/" + sub["id"].(string)}, {"network", "/v2.0/networks/" + netID},
	} {
		rev := e.must(200, "GET", c.path, "alice", nil)[c.kind].(obj)["revision_number"].(float64)
		if code, out := e.doHeader("DELETE", c.path, "alice", nil, http.Header{"If-Match": {fmt.Sprintf("revision_number=%d", int(rev))}}); code != 204 {
			t.Fatalf("%s current delete: %d %v", c.kind, code, out)
		}
	}
}
