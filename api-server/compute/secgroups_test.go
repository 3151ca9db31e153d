package compute

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
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

// refreshes returns the firewall refreshes the agent stand-in got.
func (ag *ifaceAgent) refreshes() []protocol.RefreshFirewall {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	return slices.Clone(ag.refresh)
}

// waitFor polls cond (the agent stand-in consumes in the background).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pendingRefreshes is how many ports wait for a firewall refresh.
func (r *fwRefresher) pendingRefreshes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// A burst of boots into one group whose rules name it (the default
// group) refreshes the filter of each of its members once per window,
// flows only (refresh_firewall, never an attach_interface re-plug), and
// none of a server still building until it is ACTIVE; a delete refreshes
// the remaining members once it is done.
func TestMembershipRefreshCoalesced(t *testing.T) {
	const existing, boots = 3, 7 // the default quota: 10 servers
	f := newFixture(t)
	f.svc.fw.delay = time.Hour // flushed by hand below
	f.addNetwork("net", "p-demo", "10.32.0.0/24", false)
	ag := f.serveInterfaces("h1")
	ctx := context.Background()
	waitPending := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for f.svc.fw.pendingRefreshes() != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d ports wait for a refresh, want %d", f.svc.fw.pendingRefreshes(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var active []string
	for i := range existing {
		id := f.create("demo", fmt.Sprintf("old-%d", i))
		f.activate(id, "h1")
		active = append(active, id)
	}
	waitPending(existing - 1) // each create marks the members before it
	before := f.svc.fw.flush(ctx)
	waitPending(0)
	waitFor(t, func() bool { return len(ag.refreshes()) == before })

	var building []string
	for i := range boots {
		building = append(building, f.create("demo", fmt.Sprintf("new-%d", i)))
	}
	// Every member but the last new one is named by a later boot.
	waitPending(existing + boots - 1)
	if sent := f.svc.fw.flush(ctx); sent != existing {
		t.Fatalf("first window sent %d refreshes, want %d (one per ACTIVE member)", sent, existing)
	}
	waitFor(t, func() bool { return len(ag.refreshes()) == before+existing })
	perPort := map[string]int{}
	for _, r := range ag.refreshes()[before:] {
		perPort[r.NIC.PortID]++
		if r.NIC.Firewall == nil || r.ComputedAt.IsZero() || !slices.Contains(active, r.InstanceID) {
			t.Fatalf("refresh %+v: want an ACTIVE server's NIC with its filter and time", r)
		}
	}
	if len(perPort) != existing {
		t.Fatalf("refreshes per port %v, want one for each of the %d ACTIVE members", perPort, existing)
	}
	// The new members' addresses are in the refreshed filters.
	newIP := f.portsOf(building[0])[0].FixedIPs[0].IPAddress
	if !slices.ContainsFunc(ag.refreshes()[before].NIC.Firewall.Rules, func(r protocol.FirewallRule) bool {
		return slices.Contains(r.Remotes, newIP+"/32")
	}) {
		t.Fatalf("refreshed filter %+v lacks the new member %s", ag.refreshes()[before].NIC.Firewall, newIP)
	}
	attached, _ := ag.calls()
	if len(attached) != 0 {
		t.Fatalf("%d attach_interface re-plugs for membership changes, want none", len(attached))
	}
	// The servers still building wait, and get theirs once ACTIVE; one
	// that failed (ERROR) waits no more and gets none.
	waitPending(boots - 1)
	for _, id := range building[1:] {
		f.activate(id, "h1")
	}
	f.activate(building[0], "h1") // placed, then failed
	f.setState(building[0], lifecycle.Error, "")
	if sent := f.svc.fw.flush(ctx); sent != boots-2 {
		t.Fatalf("second window sent %d refreshes, want %d", sent, boots-2)
	}
	waitPending(0)
	waitFor(t, func() bool { return len(ag.refreshes()) == before+existing+boots-2 })
	f.activate(building[0], "h1")

	// A delete: once done (the conductor's release, here by hand), the
	// other members get one refresh each without its address.
	gone := active[0]
	goneIP := f.portsOf(gone)[0].FixedIPs[0].IPAddress
	if resp, _ := f.do("DELETE", "/v2.1/servers/"+gone, "demo", ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	inst := f.instance(gone)
	if err := f.st.ReleaseInstancePorts(ctx, &inst); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DB.Delete(&store.Instance{}, "id = ?", gone).Error; err != nil {
		t.Fatal(err)
	}
	waitPending(existing + boots - 1)
	mark := len(ag.refreshes())
	if sent := f.svc.fw.flush(ctx); sent != existing+boots-1 {
		t.Fatalf("after the delete: %d refreshes, want %d", sent, existing+boots-1)
	}
	waitFor(t, func() bool { return len(ag.refreshes()) == mark+existing+boots-1 })
	for _, r := range ag.refreshes()[mark:] {
		for _, rule := range r.NIC.Firewall.Rules {
			if slices.Contains(rule.Remotes, goneIP+"/32") {
				t.Fatalf("refresh after the delete still admits %s: %+v", goneIP, rule)
			}
		}
	}
	if attached, _ := ag.calls(); len(attached) != 0 {
		t.Fatalf("%d attach_interface re-plugs, want none", len(attached))
	}
}
