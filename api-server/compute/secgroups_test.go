package compute

import (
	"context"
	"slices"
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

// Security groups through the Compute API: server create with groups
// (by name, applied to the ports it makes; unknown names 400), the
// server view's security_groups, add/removeSecurityGroup (every NIC
// joins/leaves, the host re-plugs it with its new filter before the 202),
// GET /servers/{id}/os-security-groups, and tenant isolation.
func TestServerSecurityGroups(t *testing.T) {
	f := newFixture(t)
	f.addNetwork("net", "p-demo", "10.31.0.0/24", false)
	ag := f.serveInterfaces("h1")
	ctx := context.Background()
	web := &store.SecurityGroup{ProjectID: "p-demo", Name: "web", Stateful: true}
	adm := &store.SecurityGroup{ProjectID: "p-demo", Name: "admin", Stateful: true}
	theirs := &store.SecurityGroup{ProjectID: "p-other", Name: "theirs", Stateful: true}
	for _, g := range []*store.SecurityGroup{web, adm, theirs} {
		if err := f.st.CreateSecurityGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","security_groups":[{"name":"nope"}]}}`)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","security_groups":[{"name":"theirs"}]}}`)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"a","imageRef":"`+imageID+`","flavorRef":"1","security_groups":[{"name":"web"}]}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create in web: %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	f.activate(id, "h1")
	if p := f.portsOf(id); len(p) != 1 || !slices.Equal(p[0].SecurityGroups, []string{web.ID}) {
		t.Fatalf("the server's port is in %v, want web", p)
	}
	groupsOf := func() []string {
		_, body := f.do("GET", "/v2.1/servers/"+id, "demo", "")
		var names []string
		for _, g := range body["server"].(map[string]any)["security_groups"].([]any) {
			names = append(names, g.(map[string]any)["name"].(string))
		}
		return names
	}
	if got := groupsOf(); !slices.Equal(got, []string{"web"}) {
		t.Fatalf("server view security_groups %v", got)
	}

	attached := len(ag.attached)
	resp, _ = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"addSecurityGroup":{"name":"admin"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("addSecurityGroup: %d", resp.StatusCode)
	}
	if got := groupsOf(); len(got) != 2 {
		t.Fatalf("after addSecurityGroup: %v", got)
	}
	if len(ag.attached) != attached+1 || ag.attached[len(ag.attached)-1].NIC.Firewall == nil {
		t.Fatalf("the host did not get the NIC's new filter: %d re-plugs", len(ag.attached)-attached)
	}
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"addSecurityGroup":{"name":"admin"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"addSecurityGroup":{"name":"theirs"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "other", `{"addSecurityGroup":{"name":"theirs"}}`)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "read", `{"removeSecurityGroup":{"name":"web"}}`)
	expectFault(t, resp, body, 403, "forbidden")
	resp, _ = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"removeSecurityGroup":{"name":"web"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("removeSecurityGroup: %d", resp.StatusCode)
	}
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"removeSecurityGroup":{"name":"web"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	if got := groupsOf(); !slices.Equal(got, []string{"admin"}) {
		t.Fatalf("after removeSecurityGroup: %v", got)
	}

	_, body = f.do("GET", "/v2.1/servers/"+id+"/os-security-groups", "demo", "")
	if sgs := body["security_groups"].([]any); len(sgs) != 1 || sgs[0].(map[string]any)["name"] != "admin" {
		t.Fatalf("os-security-groups of the server: %v", body)
	}
	resp, body = f.do("GET", "/v2.1/servers/"+id+"/os-security-groups", "other", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, _ = f.do("GET", "/v2.1/servers/"+id+"/os-security-groups", "", "")
	if resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}

// Nova's os-security-groups proxy below 2.36: the project's groups, Nova's
// rule terms, isolation; 404 from 2.36.
func TestSecurityGroupProxy(t *testing.T) {
	f := newFixture(t)
	old := []string{"X-OpenStack-Nova-API-Version", "2.35"}
	resp, body := f.do("POST", "/v2.1/os-security-groups", "demo", `{"security_group":{"name":"web","description":"w"}}`, old...)
	if resp.StatusCode != 200 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	gid := body["security_group"].(map[string]any)["id"].(string)
	resp, body = f.do("POST", "/v2.1/os-security-group-rules", "demo",
		`{"security_group_rule":{"parent_group_id":"`+gid+`","ip_protocol":"tcp","from_port":80,"to_port":80,"cidr":"0.0.0.0/0"}}`, old...)
	if resp.StatusCode != 200 {
		t.Fatalf("rule: %d %v", resp.StatusCode, body)
	}
	rid := body["security_group_rule"].(map[string]any)["id"].(string)
	resp, body = f.do("POST", "/v2.1/os-security-group-rules", "demo",
		`{"security_group_rule":{"parent_group_id":"`+gid+`","ip_protocol":"tcp","from_port":80,"to_port":80,"cidr":"0.0.0.0/0"}}`, old...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/os-security-group-rules", "demo",
		`{"security_group_rule":{"parent_group_id":"`+gid+`","ip_protocol":"icmp","from_port":-1,"to_port":-1}}`, old...)
	if resp.StatusCode != 200 {
		t.Fatalf("icmp rule: %d %v", resp.StatusCode, body)
	}
	_, body = f.do("GET", "/v2.1/os-security-groups/"+gid, "demo", "", old...)
	if rules := body["security_group"].(map[string]any)["rules"].([]any); len(rules) != 2 {
		t.Fatalf("group's ingress rules %v", body)
	}
	_, body = f.do("GET", "/v2.1/os-security-groups", "demo", "", old...)
	if sgs := body["security_groups"].([]any); len(sgs) != 2 {
		t.Fatalf("groups (default and web): %v", sgs)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v2.1/os-security-groups/" + gid, ""},
		{"DELETE", "/v2.1/os-security-groups/" + gid, ""},
		{"DELETE", "/v2.1/os-security-group-rules/" + rid, ""},
		{"POST", "/v2.1/os-security-group-rules", `{"security_group_rule":{"parent_group_id":"` + gid + `","ip_protocol":"udp","from_port":1,"to_port":2}}`},
	} {
		resp, body := f.do(c.method, c.path, "other", c.body, old...)
		expectFault(t, resp, body, 404, "itemNotFound")
	}
	resp, body = f.do("DELETE", "/v2.1/os-security-groups/"+gid, "read", "", old...)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("GET", "/v2.1/os-security-groups", "demo", "", "X-OpenStack-Nova-API-Version", "2.36")
	expectFault(t, resp, body, 404, "itemNotFound")
	if resp, _ := f.do("DELETE", "/v2.1/os-security-group-rules/"+rid, "demo", "", old...); resp.StatusCode != 202 {
		t.Fatalf("delete rule: %d", resp.StatusCode)
	}
	if resp, _ := f.do("DELETE", "/v2.1/os-security-groups/"+gid, "demo", "", old...); resp.StatusCode != 202 {
		t.Fatalf("delete group: %d", resp.StatusCode)
	}
}

// TestContractSecurityGroups validates the os-security-groups proxy's
// answers (below 2.36) against Tempest's compute security_groups response
// schemas: list, show, create, update, delete, rule create and delete,
// and servers/{id}/os-security-groups (a list).
func TestContractSecurityGroups(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	for _, v := range []apiVersion{{2, 1}, {2, 35}} {
		const m = "security_groups"
		name := "sg-" + v.String()
		got := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-security-groups",
			`{"security_group":{"name":"` + name + `","description":"w"}}`, m, "create_security_group"})
		gid := got["security_group"].(map[string]any)["id"].(string)
		f.check(t, ts, v, contractCall{"demo", "PUT", "/v2.1/os-security-groups/" + gid,
			`{"security_group":{"name":"` + name + `-2","description":"w2"}}`, m, "update_security_group"})
		rule := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-security-group-rules",
			`{"security_group_rule":{"parent_group_id":"` + gid + `","ip_protocol":"tcp","from_port":80,"to_port":80,"cidr":"0.0.0.0/0"}}`,
			m, "create_security_group_rule"})
		f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-security-group-rules",
			`{"security_group_rule":{"parent_group_id":"` + gid + `","ip_protocol":"icmp","from_port":-1,"to_port":-1,"group_id":"` + gid + `"}}`,
			m, "create_security_group_rule"})
		f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-security-groups/" + gid, "", m, "get_security_group"})
		f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-security-groups", "", m, "list_security_groups"})
		rid := rule["security_group_rule"].(map[string]any)["id"].(string)
		f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/os-security-group-rules/" + rid, "", m, "delete_security_group_rule"})
		f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/os-security-groups/" + gid, "", m, "delete_security_group"})
	}
	id := f.create("demo", "sgc")
	for _, v := range []apiVersion{{2, 1}, maxVersion} {
		f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/" + id + "/os-security-groups", "", "security_groups", "list_security_groups"})
	}
}
