package network_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/network"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

func (e *env) group(token, name string) obj {
	e.t.Helper()
	return e.must(http.StatusCreated, "POST", "/v2.0/security-groups", token,
		obj{"security_group": obj{"name": name, "description": "d"}})["security_group"].(obj)
}

func (e *env) rule(token string, attrs obj) obj {
	e.t.Helper()
	return e.must(http.StatusCreated, "POST", "/v2.0/security-group-rules", token,
		obj{"security_group_rule": attrs})["security_group_rule"].(obj)
}

// The default group: made on first use with the id the API showed before
// groups were stored, Neutron's four rules (egress v4/v6, ingress from
// the group), not deletable by members, not renamable.
func TestDefaultSecurityGroup(t *testing.T) {
	e := newEnv(t)
	sgs := e.must(http.StatusOK, "GET", "/v2.0/security-groups", "alice", nil)["security_groups"].([]any)
	if len(sgs) != 1 {
		t.Fatalf("groups %v", sgs)
	}
	def := sgs[0].(obj)
	if def["id"] != store.DefaultSecurityGroupID("p1") || def["name"] != "default" || def["stateful"] != true {
		t.Fatalf("default group %v", def)
	}
	var dirs []string
	for _, r := range def["security_group_rules"].([]any) {
		r := r.(obj)
		want := any(nil)
		if r["direction"] == "ingress" {
			want = def["id"]
		}
		if r["remote_group_id"] != want || r["protocol"] != nil || r["belongs_to_default_sg"] != true {
			t.Errorf("default rule %v", r)
		}
		dirs = append(dirs, r["direction"].(string)+"/"+r["ethertype"].(string))
	}
	slices.Sort(dirs)
	if !slices.Equal(dirs, []string{"egress/IPv4", "egress/IPv6", "ingress/IPv4", "ingress/IPv6"}) {
		t.Fatalf("default rules %v", dirs)
	}
	// Listing again makes no second one; rules list shows the same four.
	e.must(http.StatusOK, "GET", "/v2.0/security-groups", "alice", nil)
	if rules := e.must(http.StatusOK, "GET", "/v2.0/security-group-rules", "alice", nil)["security_group_rules"].([]any); len(rules) != 4 {
		t.Fatalf("rules %v", rules)
	}
	path := "/v2.0/security-groups/" + def["id"].(string)
	e.fails(http.StatusConflict, "SecurityGroupCannotUpdateDefault", "PUT", path, "alice", obj{"security_group": obj{"name": "x"}})
	e.must(http.StatusOK, "PUT", path, "alice", obj{"security_group": obj{"description": "mine"}})
	e.fails(http.StatusConflict, "SecurityGroupDefaultAlreadyExists", "POST", "/v2.0/security-groups", "alice",
		obj{"security_group": obj{"name": "default"}})
	e.fails(http.StatusConflict, "SecurityGroupCannotRemoveDefault", "DELETE", path, "alice", nil)
	// Reading the default group by id first also makes it.
	if g := e.must(http.StatusOK, "GET", "/v2.0/security-groups/"+store.DefaultSecurityGroupID("p2"), "bob", nil)["security_group"].(obj); g["name"] != "default" {
		t.Fatalf("bob's default %v", g)
	}
	e.must(http.StatusNoContent, "DELETE", path, "admin", nil)
}

// Groups and rules as Neutron validates them.
func TestSecurityGroupRules(t *testing.T) {
	e := newEnv(t)
	web := e.group("alice", "web")
	if rules := web["security_group_rules"].([]any); len(rules) != 2 || web["revision_number"] != 1.0 {
		t.Fatalf("a new group %v", web)
	}
	id := web["id"].(string)
	r := e.rule("alice", obj{"security_group_id": id, "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80,
		"remote_ip_prefix": "0.0.0.0/0"})
	if r["ethertype"] != "IPv4" || r["port_range_min"] != 80.0 || r["normalized_cidr"] != "0.0.0.0/0" || r["project_id"] != "p1" {
		t.Fatalf("rule %v", r)
	}
	// The same rule again (the protocol by number) is a duplicate.
	e.fails(http.StatusConflict, "SecurityGroupRuleExists", "POST", "/v2.0/security-group-rules", "alice",
		obj{"security_group_rule": obj{"security_group_id": id, "direction": "ingress", "protocol": "6", "port_range_min": 80,
			"port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}})
	icmp := e.rule("alice", obj{"security_group_id": id, "direction": "ingress", "protocol": 1, "port_range_min": 8, "port_range_max": 0})
	if icmp["protocol"] != "1" || icmp["port_range_max"] != 0.0 {
		t.Fatalf("icmp rule %v", icmp)
	}
	e.rule("alice", obj{"security_group_id": id, "direction": "ingress", "ethertype": "IPv6", "protocol": "ipv6-icmp"})
	e.rule("alice", obj{"security_group_id": id, "direction": "egress", "protocol": "udp", "port_range_min": "53", "port_range_max": "53",
		"remote_ip_prefix": "10.0.0.1"})
	for _, bad := range []struct {
		typ   string
		attrs obj
	}{
		{"SecurityGroupInvalidPortRange", obj{"protocol": "tcp", "port_range_min": 90, "port_range_max": 80}},
		{"SecurityGroupInvalidPortValue", obj{"protocol": "tcp", "port_range_min": 0, "port_range_max": 0}},
		{"SecurityGroupProtocolRequiredWithPorts", obj{"port_range_min": 1, "port_range_max": 2}},
		{"SecurityGroupInvalidIcmpValue", obj{"protocol": "icmp", "port_range_min": 256}},
		{"SecurityGroupMissingIcmpType", obj{"protocol": "icmp", "port_range_max": 1}},
		{"SecurityGroupInvalidProtocolForPortRange", obj{"protocol": "gre", "port_range_min": 1, "port_range_max": 1}},
		{"SecurityGroupRuleInvalidProtocol", obj{"protocol": "bogus"}},
		{"SecurityGroupRuleInvalidProtocol", obj{"protocol": 256}},
		{"SecurityGroupRuleInvalidEtherType", obj{"ethertype": "IPv5"}},
		{"SecurityGroupEthertypeConflictWithProtocol", obj{"protocol": "icmpv6"}},
		{"SecurityGroupRuleParameterConflict", obj{"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"}},
		{"SecurityGroupRemoteGroupAndRemoteIpPrefix", obj{"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": id}},
		{"InvalidInput", obj{"remote_ip_prefix": "nope"}},
		{"InvalidInput", obj{"direction": "sideways"}},
		{"HTTPBadRequest", obj{"colour": "red"}},
	} {
		a := obj{"security_group_id": id, "direction": "ingress"}
		for k, v := range bad.attrs {
			a[k] = v
		}
		e.fails(http.StatusBadRequest, bad.typ, "POST", "/v2.0/security-group-rules", "alice", obj{"security_group_rule": a})
	}
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "POST", "/v2.0/security-group-rules", "alice",
		obj{"security_group_rule": obj{"direction": "ingress"}})

	g := e.must(http.StatusOK, "GET", "/v2.0/security-groups/"+id, "alice", nil)["security_group"].(obj)
	if n := len(g["security_group_rules"].([]any)); n != 6 || g["revision_number"] != 5.0 {
		t.Fatalf("group after 4 rules: %d rules, revision %v", n, g["revision_number"])
	}
	// Filters, fields and paging as on the other collections.
	l := e.must(http.StatusOK, "GET", "/v2.0/security-group-rules?security_group_id="+id+"&direction=ingress&fields=id&fields=protocol", "alice", nil)
	if rules := l["security_group_rules"].([]any); len(rules) != 3 || len(rules[0].(obj)) != 2 {
		t.Fatalf("filtered rules %v", rules)
	}
	page := e.must(http.StatusOK, "GET", "/v2.0/security-groups?limit=1&sort_key=name&sort_dir=desc", "alice", nil)
	if gs := page["security_groups"].([]any); len(gs) != 1 || gs[0].(obj)["name"] != "web" || page["security_groups_links"] == nil {
		t.Fatalf("page %v", page)
	}
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "GET", "/v2.0/security-groups?colour=red", "alice", nil)

	e.must(http.StatusOK, "PUT", "/v2.0/security-groups/"+id, "alice", obj{"security_group": obj{"name": "www", "description": "x"}})
	e.must(http.StatusOK, "GET", "/v2.0/security-group-rules/"+r["id"].(string), "alice", nil)
	e.must(http.StatusNoContent, "DELETE", "/v2.0/security-group-rules/"+r["id"].(string), "alice", nil)
	e.fails(http.StatusNotFound, "SecurityGroupRuleNotFound", "DELETE", "/v2.0/security-group-rules/"+r["id"].(string), "alice", nil)
	e.must(http.StatusNoContent, "DELETE", "/v2.0/security-groups/"+id, "alice", nil)
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "GET", "/v2.0/security-groups/"+id, "alice", nil)
	if rules := e.must(http.StatusOK, "GET", "/v2.0/security-group-rules?security_group_id="+id, "alice", nil)["security_group_rules"].([]any); len(rules) != 0 {
		t.Fatalf("rules of a deleted group %v", rules)
	}
}

// Tenant isolation: another project's group and rules are not found,
// whether read, changed, named as remote group or attached to a port; a
// reader may not write; no or a garbage token is a 401.
func TestSecurityGroupIsolation(t *testing.T) {
	e := newEnv(t)
	web := e.group("alice", "web")
	id := web["id"].(string)
	rid := web["security_group_rules"].([]any)[0].(obj)["id"].(string)
	bobs := e.group("bob", "bobs")
	gpath, rpath := "/v2.0/security-groups/"+id, "/v2.0/security-group-rules/"+rid
	for _, c := range []struct{ method, path string }{{"GET", gpath}, {"PUT", gpath}, {"DELETE", gpath}} {
		e.fails(http.StatusNotFound, "SecurityGroupNotFound", c.method, c.path, "bob", obj{"security_group": obj{"name": "x"}})
	}
	for _, m := range []string{"GET", "DELETE"} {
		e.fails(http.StatusNotFound, "SecurityGroupRuleNotFound", m, rpath, "bob", nil)
	}
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "POST", "/v2.0/security-group-rules", "bob",
		obj{"security_group_rule": obj{"security_group_id": id, "direction": "ingress"}})
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "POST", "/v2.0/security-group-rules", "bob",
		obj{"security_group_rule": obj{"security_group_id": bobs["id"], "direction": "ingress", "remote_group_id": id}})
	// Not even an admin makes a rule of bob's name alice's group.
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "POST", "/v2.0/security-group-rules", "admin",
		obj{"security_group_rule": obj{"security_group_id": bobs["id"], "direction": "ingress", "remote_group_id": id}})
	for _, coll := range []string{"security-groups", "security-group-rules"} {
		l := e.must(http.StatusOK, "GET", "/v2.0/"+coll, "bob", nil)
		for _, v := range l[map[string]string{"security-groups": "security_groups", "security-group-rules": "security_group_rules"}[coll]].([]any) {
			if v.(obj)["project_id"] != "p2" {
				t.Fatalf("bob sees %v", v)
			}
		}
	}
	n := e.sharedNet(510, "172.18.0.0/24")
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "POST", "/v2.0/ports", "bob",
		obj{"port": obj{"network_id": n["id"], "security_groups": []string{id}}})
	bp := e.port("bob", obj{"network_id": n["id"]})
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "PUT", "/v2.0/ports/"+bp["id"].(string), "bob",
		obj{"port": obj{"security_groups": []string{id}}})

	for _, c := range []struct {
		method, path string
		body         obj
	}{
		{"POST", "/v2.0/security-groups", obj{"security_group": obj{"name": "r"}}},
		{"PUT", gpath, obj{"security_group": obj{"name": "r"}}},
		{"DELETE", gpath, nil},
		{"POST", "/v2.0/security-group-rules", obj{"security_group_rule": obj{"security_group_id": id, "direction": "ingress"}}},
		{"DELETE", rpath, nil},
	} {
		e.fails(http.StatusForbidden, "PolicyNotAuthorized", c.method, c.path, "reader", c.body)
		for _, tok := range []string{"", "garbage"} {
			e.fails(http.StatusUnauthorized, "", c.method, c.path, tok, c.body)
		}
	}
	for _, p := range []string{"/v2.0/security-groups", "/v2.0/security-group-rules", gpath, rpath} {
		e.must(http.StatusOK, "GET", p, "reader", nil)
		e.fails(http.StatusUnauthorized, "", "GET", p, "garbage", nil)
	}
	// Admins see every project's.
	e.must(http.StatusOK, "GET", gpath, "admin", nil)
}

// Ports: the project's default group when none is named, none without
// port security, Neutron's errors; a group ports are in cannot go.
func TestPortSecurityGroups(t *testing.T) {
	e := newEnv(t)
	n := e.network("alice", obj{"name": "n"})
	e.subnet("alice", obj{"network_id": n["id"], "cidr": "10.60.0.0/24"})
	def := store.DefaultSecurityGroupID("p1")
	p := e.port("alice", obj{"network_id": n["id"]})
	if sgs := p["security_groups"].([]any); len(sgs) != 1 || sgs[0] != def {
		t.Fatalf("a port's groups %v, want the default %s", sgs, def)
	}
	if off := e.port("alice", obj{"network_id": n["id"], "port_security_enabled": false}); len(off["security_groups"].([]any)) != 0 {
		t.Fatalf("a port without port security is in %v", off["security_groups"])
	}
	if none := e.port("alice", obj{"network_id": n["id"], "security_groups": []string{}}); len(none["security_groups"].([]any)) != 0 {
		t.Fatalf("a port asking for no group is in %v", none["security_groups"])
	}
	e.fails(http.StatusBadRequest, "PortSecurityAndIPRequiredForSecurityGroups", "POST", "/v2.0/ports", "alice",
		obj{"port": obj{"network_id": n["id"], "port_security_enabled": false, "security_groups": []string{def}}})
	web := e.group("alice", "web")
	path := "/v2.0/ports/" + p["id"].(string)
	got := e.must(http.StatusOK, "PUT", path, "alice", obj{"port": obj{"security_groups": []string{web["id"].(string), def}}})["port"].(obj)
	if sgs := got["security_groups"].([]any); len(sgs) != 2 {
		t.Fatalf("groups after update %v", sgs)
	}
	if l := e.must(http.StatusOK, "GET", "/v2.0/ports?security_groups="+web["id"].(string), "alice", nil)["ports"].([]any); len(l) != 1 {
		t.Fatalf("ports filtered by group %v", l)
	}
	e.fails(http.StatusConflict, "SecurityGroupInUse", "DELETE", "/v2.0/security-groups/"+web["id"].(string), "alice", nil)
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "PUT", path, "alice", obj{"port": obj{"security_groups": []string{"nope"}}})
	e.fails(http.StatusConflict, "PortSecurityPortHasSecurityGroup", "PUT", path, "alice", obj{"port": obj{"port_security_enabled": false}})
	e.fails(http.StatusBadRequest, "PortSecurityAndIPRequiredForSecurityGroups", "PUT", path, "alice",
		obj{"port": obj{"port_security_enabled": false, "security_groups": []string{def}}})
	e.must(http.StatusOK, "PUT", path, "alice", obj{"port": obj{"port_security_enabled": false, "security_groups": []string{}}})
	e.must(http.StatusNoContent, "DELETE", "/v2.0/security-groups/"+web["id"].(string), "alice", nil)
	e.must(http.StatusNoContent, "DELETE", path, "alice", nil)
}

// Quotas: the default group and its rules count; limits hold under
// concurrent creates (the project's network quota lock), on SQLite and
// PostgreSQL.
func TestSecurityGroupQuotas(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		e := newEnvOn(t, st)
		e.must(http.StatusOK, "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"security_group": 5, "security_group_rule": 12}})
		got := e.race(10, "/v2.0/security-groups", "alice", func(i int) obj {
			return obj{"security_group": obj{"name": fmt.Sprintf("g%d", i)}}
		})
		var n int64
		st.DB.Model(&store.SecurityGroup{}).Where("project_id = ?", "p1").Count(&n)
		if got[201] != 4 || got[409] != 6 || n != 5 {
			t.Fatalf("10 group creates on a quota of 5 (default included): %v, %d groups", got, n)
		}
		// 4 default rules + 2 per group = 12: no rule is left.
		g := e.must(http.StatusOK, "GET", "/v2.0/security-groups?name=g0", "alice", nil)["security_groups"].([]any)
		var gid string
		if len(g) == 1 {
			gid = g[0].(obj)["id"].(string)
		} else {
			gid = store.DefaultSecurityGroupID("p1")
		}
		e.fails(http.StatusConflict, "OverQuota", "POST", "/v2.0/security-group-rules", "alice",
			obj{"security_group_rule": obj{"security_group_id": gid, "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}})
		d := e.must(http.StatusOK, "GET", "/v2.0/quotas/p1/details", "alice", nil)["quota"].(obj)
		if d["security_group"].(obj)["used"] != 5.0 || d["security_group_rule"].(obj)["used"] != 12.0 {
			t.Fatalf("quota details %v", d)
		}
	})
}

// recorder is the notifier as a test sees it.
type recorder struct{ ports [][]string }

func (r *recorder) SecurityGroupsChanged(_ context.Context, ports []string) {
	r.ports = append(r.ports, slices.Clone(ports))
}

// A rule change reaches the group's members; a member joining a group
// reaches the ports whose rules name that group.
func TestSecurityGroupChangesNotified(t *testing.T) {
	st := storetest.SQLite(t)
	rec := &recorder{}
	svc := network.New(callers, network.WithStore(st), network.WithConfig(netConfig), network.WithSecurityGroupNotifier(rec))
	e := newEnvWith(t, st, svc)
	n := e.network("alice", obj{"name": "n"})
	e.subnet("alice", obj{"network_id": n["id"], "cidr": "10.61.0.0/24"})
	web, admin := e.group("alice", "web"), e.group("alice", "admin")
	a := e.port("alice", obj{"network_id": n["id"], "security_groups": []string{web["id"].(string)}})
	b := e.port("alice", obj{"network_id": n["id"]})
	rec.ports = nil
	e.rule("alice", obj{"security_group_id": web["id"], "direction": "ingress", "protocol": "icmp", "remote_group_id": admin["id"]})
	if len(rec.ports) != 1 || !slices.Equal(rec.ports[0], []string{a["id"].(string)}) {
		t.Fatalf("rule create notified %v, want [[A]]", rec.ports)
	}
	rec.ports = nil
	e.must(http.StatusOK, "PUT", "/v2.0/ports/"+b["id"].(string), "alice", obj{"port": obj{"security_groups": []string{admin["id"].(string)}}})
	if len(rec.ports) != 1 || !slices.Contains(rec.ports[0], a["id"].(string)) || !slices.Contains(rec.ports[0], b["id"].(string)) {
		t.Fatalf("B joining admin notified %v, want A and B", rec.ports)
	}
}

func newEnvWith(t *testing.T, st *store.Store, svc *network.Service) *env {
	t.Helper()
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, st: st}
}
