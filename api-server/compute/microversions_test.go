package compute

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Tests of the steps above 2.60: each step's new behaviour at its
// microversion and the old one just below it. The responses are checked
// against Tempest's schemas by the contract tests, which run every
// microversion served.

// TestFlavorExtraSpecsInView261: from 2.61 a flavor carries its extra
// specs (detail, show, create, update), to members too.
func TestFlavorExtraSpecsInView261(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	if resp, body := f.do("POST", "/v2.1/flavors/1/os-extra_specs", "admin", `{"extra_specs":{"quota:cpu_shares":"512"}}`); resp.StatusCode != 200 {
		t.Fatalf("set specs: %d %v", resp.StatusCode, body)
	}
	for _, v := range []apiVersion{{2, 60}, {2, 61}} {
		body := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/flavors/1", "", "flavors", "create_update_get_flavor_details"})
		specs, has := body["flavor"].(map[string]any)["extra_specs"]
		if has != v.AtLeast(61) {
			t.Fatalf("%s: extra_specs shown %v", v, has)
		}
		if has && fmt.Sprint(specs) != "map[quota:cpu_shares:512]" {
			t.Errorf("%s: extra_specs %v", v, specs)
		}
		body = f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/flavors/detail", "", "flavors", "list_flavors_details"})
		for _, fl := range body["flavors"].([]any) {
			if _, has := fl.(map[string]any)["extra_specs"]; has != v.AtLeast(61) {
				t.Errorf("%s: detail extra_specs shown %v", v, has)
			}
		}
		created := f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/flavors",
			`{"flavor":{"name":"f` + v.String() + `","ram":64,"vcpus":1,"disk":1}}`, "flavors", "create_update_get_flavor_details"})
		if s, has := created["flavor"].(map[string]any)["extra_specs"]; has != v.AtLeast(61) || (has && len(s.(map[string]any)) != 0) {
			t.Errorf("%s: created flavor extra_specs %v %v", v, has, s)
		}
	}
}

// TestInstanceActionEventHost262And284: from 2.62 events carry hostId
// (all) and host (admins); from 2.84 their details (members too).
func TestInstanceActionEventHost262And284(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	now := time.Now().UTC()
	err := f.st.RecordEvent(context.Background(), store.Event{InstanceID: w.active, RequestID: w.createReq,
		Name: "compute_resize", Host: "h1", Start: now, Finish: now, OK: false, Detail: "trace", Message: "Disk full."})
	if err != nil {
		t.Fatal(err)
	}
	path := "/v2.1/servers/" + w.active + "/os-instance-actions/" + w.createReq
	for _, v := range []apiVersion{{2, 61}, {2, 62}} {
		for _, tok := range []string{"demo", "admin"} {
			body := f.check(t, ts, v, contractCall{tok, "GET", path, "", "servers", "show_instance_action"})
			for _, e := range body["instanceAction"].(map[string]any)["events"].([]any) {
				ev := e.(map[string]any)
				if _, has := ev["hostId"]; has != v.AtLeast(62) {
					t.Errorf("%s %s: hostId shown %v", tok, v, has)
				}
				if v.AtLeast(62) && ev["hostId"] != hostID("p-demo", "h1") {
					t.Errorf("%s %s: hostId %v", tok, v, ev["hostId"])
				}
				if host, has := ev["host"]; has != (v.AtLeast(62) && tok == "admin") || (has && host != "h1") {
					t.Errorf("%s %s: host %v %v", tok, v, has, host)
				}
				if _, has := ev["details"]; has {
					t.Errorf("%s %s: details before 2.84", tok, v)
				}
			}
		}
	}
	future := f.future(apiVersion{2, 84})
	_, body := future.do("GET", path, "demo", "", mv(apiVersion{2, 84})...)
	found := false
	for _, e := range body["instanceAction"].(map[string]any)["events"].([]any) {
		ev := e.(map[string]any)
		if ev["event"] == "compute_resize" {
			found = ev["details"] == "Disk full."
		} else if d, has := ev["details"]; !has || d != nil {
			t.Errorf("a successful event's details: %v %v", has, d)
		}
	}
	if !found {
		t.Errorf("2.84: the failed event's details are not shown to the member: %v", body)
	}
}

// TestTrustedImageCertificates263: Capsule verifies no image signature,
// so from 2.63 servers show trusted_image_certificates null and a create
// or rebuild asking for certificates is refused; below 2.63 the key is
// unknown (400 as Nova's schema).
func TestTrustedImageCertificates263(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	for _, v := range []apiVersion{{2, 62}, {2, 63}} {
		_, body := f.do("GET", "/v2.1/servers/"+id, "demo", "", mv(v)...)
		tic, has := body["server"].(map[string]any)["trusted_image_certificates"]
		if has != v.AtLeast(63) || tic != nil {
			t.Errorf("%s: trusted_image_certificates %v %v", v, has, tic)
		}
		create := `{"server":{"name":"t","imageRef":"` + imageID + `","flavorRef":"1","networks":"none","trusted_image_certificates":["0b5d2c72-12cc-4ba6-a8d7-3ff5cc1d8cb8"]}}`
		resp, body := f.do("POST", "/v2.1/servers", "demo", create, mv(v)...)
		expectFault(t, resp, body, 400, "badRequest")
		resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo",
			`{"rebuild":{"imageRef":"`+imageID+`","trusted_image_certificates":["x"]}}`, mv(v)...)
		expectFault(t, resp, body, 400, "badRequest")
	}
	resp, body := f.do("POST", "/v2.1/servers", "demo",
		`{"server":{"name":"t","imageRef":"`+imageID+`","flavorRef":"1","networks":"none","trusted_image_certificates":null}}`, mv(apiVersion{2, 63})...)
	if resp.StatusCode != 202 {
		t.Errorf("null certificates at 2.63: %d %v", resp.StatusCode, body)
	}
}

// TestServerGroupPolicyRules264: from 2.64 a group is created with
// "policy" (and "rules") and shown with policy and the rules it was given
// instead of policies and metadata.
func TestServerGroupPolicyRules264(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	v := apiVersion{2, 64}
	for _, c := range []struct{ body, rules string }{
		{`{"server_group":{"name":"a","policy":"anti-affinity"}}`, "map[]"},
		{`{"server_group":{"name":"b","policy":"anti-affinity","rules":{"max_server_per_host":1}}}`, "map[max_server_per_host:1]"},
		{`{"server_group":{"name":"c","policy":"soft-affinity","rules":{}}}`, "map[]"},
		{`{"server_group":{"name":"d","policy":"anti-affinity","rules":{"max_server_per_host":"3"}}}`, "map[max_server_per_host:3]"},
	} {
		created := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-server-groups", c.body, "server_groups", "create_show_server_group"})
		g := created["server_group"].(map[string]any)
		if _, has := g["policies"]; has || g["policy"] == nil || fmt.Sprint(g["rules"]) != c.rules {
			t.Errorf("2.64 group %v, want rules %s", g, c.rules)
		}
		shown := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-server-groups/" + g["id"].(string), "", "server_groups", "create_show_server_group"})
		if got := fmt.Sprint(shown["server_group"].(map[string]any)["rules"]); got != c.rules {
			t.Errorf("2.64 group shown with rules %s, want %s", got, c.rules)
		}
	}
	f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-server-groups", "", "server_groups", "list_server_groups"})
	// The old shape below 2.64, of the same groups.
	_, body := f.do("GET", "/v2.1/os-server-groups", "demo", "", mv(apiVersion{2, 63})...)
	for _, g := range body["server_groups"].([]any) {
		if _, has := g.(map[string]any)["policies"]; !has {
			t.Errorf("2.63 group without policies: %v", g)
		}
	}
	for _, bad := range []string{
		`{"server_group":{"name":"x","policies":["affinity"]}}`,                               // the old key
		`{"server_group":{"name":"x","policy":"affinity","rules":{"max_server_per_host":1}}}`, // rules for anti-affinity only
		`{"server_group":{"name":"x","policy":"anti-affinity","rules":{"max_server_per_host":1.5}}}`,
		`{"server_group":{"name":"x","policy":"anti-affinity","rules":{"max_server_per_host":0}}}`,
		`{"server_group":{"name":"x","policy":"anti-affinity","rules":{"other":1}}}`,
		`{"server_group":{"name":"x","policy":"nope"}}`,
		`{"server_group":{"name":"x"}}`,
	} {
		resp, body := f.do("POST", "/v2.1/os-server-groups", "demo", bad, mv(v)...)
		expectFault(t, resp, body, 400, "badRequest")
	}
	resp, body := f.do("POST", "/v2.1/os-server-groups", "demo", `{"server_group":{"name":"x","policy":"affinity"}}`, mv(apiVersion{2, 63})...)
	expectFault(t, resp, body, 400, "badRequest")
}

// TestChangesBefore266: from 2.66 servers, instance actions and
// os-migrations take changes-before (updated_at at or before it), not
// after changes-since; below 2.66 it is ignored.
func TestChangesBefore266(t *testing.T) {
	f := newFixture(t)
	old, recent := f.create("demo", "old"), f.create("demo", "recent")
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	f.st.DB.Model(&store.Instance{}).Where("id = ?", old).Update("updated_at", t0)
	f.st.DB.Model(&store.Instance{}).Where("id = ?", recent).Update("updated_at", t1)
	f.st.DB.Model(&store.InstanceAction{}).Where("instance_id = ?", old).Update("updated_at", t0)
	for _, m := range []store.Migration{{UUID: "m-old", InstanceID: old, Status: "confirmed", MigrationType: "resize", CreatedAt: t0, UpdatedAt: t0},
		{UUID: "m-new", InstanceID: recent, Status: "confirmed", MigrationType: "resize", CreatedAt: t1, UpdatedAt: t1}} {
		if err := f.st.DB.Create(&m).Error; err != nil {
			t.Fatal(err)
		}
	}
	count := func(path, token, key string, v apiVersion) int {
		t.Helper()
		resp, body := f.do("GET", path, token, "", mv(v)...)
		if resp.StatusCode != 200 {
			t.Fatalf("%s at %s: %d %v", path, v, resp.StatusCode, body)
		}
		return len(body[key].([]any))
	}
	before := "changes-before=2022-01-01T00:00:00Z"
	for _, c := range []struct {
		path, token, key string
		at265, at266     int
	}{
		{"/v2.1/servers?" + before, "demo", "servers", 2, 1},
		{"/v2.1/servers/detail?" + before + "&changes-since=2019-01-01T00:00:00Z", "demo", "servers", 2, 1},
		{"/v2.1/servers/" + old + "/os-instance-actions?" + before, "demo", "instanceActions", 1, 1},
		{"/v2.1/servers/" + recent + "/os-instance-actions?" + before, "demo", "instanceActions", 1, 0},
		{"/v2.1/os-migrations?" + before, "admin", "migrations", 2, 1},
		{"/v2.1/os-migrations?changes-since=2022-01-01T00:00:00Z", "admin", "migrations", 1, 1},
	} {
		if n := count(c.path, c.token, c.key, apiVersion{2, 65}); n != c.at265 {
			t.Errorf("%s at 2.65: %d, want %d", c.path, n, c.at265)
		}
		if n := count(c.path, c.token, c.key, apiVersion{2, 66}); n != c.at266 {
			t.Errorf("%s at 2.66: %d, want %d", c.path, n, c.at266)
		}
	}
	for _, p := range []string{"/v2.1/servers?changes-before=yesterday",
		"/v2.1/servers?changes-since=2023-01-01T00:00:00Z&changes-before=2022-01-01T00:00:00Z",
		"/v2.1/os-migrations?changes-since=2023-01-01T00:00:00Z&changes-before=2022-01-01T00:00:00Z"} {
		resp, body := f.do("GET", p, "admin", "", mv(apiVersion{2, 66})...)
		expectFault(t, resp, body, 400, "badRequest")
	}
}

// TestBDMVolumeType267: a block device mapping's volume_type (2.67) names
// a Cinder volume type; Capsule has none, so it is refused at every
// microversion (below 2.67 as an unknown key), and nothing is created.
func TestBDMVolumeType267(t *testing.T) {
	f := newFixture(t)
	for _, v := range []apiVersion{{2, 66}, {2, 67}} {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"b","imageRef":"`+imageID+`","flavorRef":"1","networks":"none",
			"block_device_mapping_v2":[{"boot_index":0,"uuid":"`+imageID+`","source_type":"image","destination_type":"volume","volume_size":1,"volume_type":"ssd"}]}}`, mv(v)...)
		expectFault(t, resp, body, 400, "badRequest")
	}
	var n int64
	f.st.DB.Model(&store.Instance{}).Count(&n)
	if n != 0 {
		t.Errorf("refused creates left %d instances", n)
	}
}

// TestForcedMoves268: 2.68 removes "force" from os-migrateLive and
// evacuate; Capsule refuses os-migrateLive at every microversion (no live
// memory move), forced or not; evacuate takes force at 2.67 only (its
// host being up is then the refusal) and refuses it as unknown at 2.68.
func TestForcedMoves268(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.placeActive(id, 4)
	for _, v := range []apiVersion{{2, 67}, {2, 68}} {
		for _, body := range []string{`{"os-migrateLive":{"host":null,"block_migration":"auto","force":true}}`,
			`{"os-migrateLive":{"host":null,"block_migration":"auto"}}`, `{"evacuate":{"force":true}}`, `{"evacuate":{}}`} {
			resp, b := f.do("POST", "/v2.1/servers/"+id+"/action", "admin", body, mv(v)...)
			expectFault(t, resp, b, 400, "badRequest")
			if strings.HasPrefix(body, `{"evacuate"`) {
				want := "Compute service of h1 is still in use."
				if v.Minor == 68 && strings.Contains(body, "force") {
					want = "('force' was unexpected)"
				}
				if !strings.Contains(faultOf(b), want) {
					t.Errorf("%s %s: %q, want %q", v, body, faultOf(b), want)
				}
			}
		}
	}
}

// TestInterfaceTag270: from 2.70 interfaces show their device tag, null
// as Capsule keeps none; a tagged attach is refused, not dropped.
func TestInterfaceTag270(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	f.addNetwork("netA", "p-demo", "10.20.0.0/24", false)
	id := f.netServer("if1")
	port := f.portsOf(id)[0].ID
	base := "/v2.1/servers/" + id + "/os-interface"
	for _, v := range []apiVersion{{2, 69}, {2, 70}} {
		body := f.check(t, ts, v, contractCall{token: "demo", method: "GET", path: base, module: "interfaces", schema: "list_interfaces"})
		item := body["interfaceAttachments"].([]any)[0].(map[string]any)
		if tag, has := item["tag"]; has != v.AtLeast(70) || tag != nil {
			t.Errorf("%s list: tag %v %v", v, has, tag)
		}
		body = f.check(t, ts, v, contractCall{token: "demo", method: "GET", path: base + "/" + port, module: "interfaces", schema: "get_create_interfaces"})
		if tag, has := body["interfaceAttachment"].(map[string]any)["tag"]; has != v.AtLeast(70) || tag != nil {
			t.Errorf("%s show: tag %v %v", v, has, tag)
		}
		f.check(t, ts, v, contractCall{token: "demo", method: "GET", path: "/v2.1/servers/" + id + "/os-volume_attachments",
			module: "servers", schema: "list_volume_attachments"})
	}
	resp, body := f.do("POST", base, "demo", `{"interfaceAttachment":{"tag":"nic2"}}`, mv(apiVersion{2, 70})...)
	expectFault(t, resp, body, 400, "badRequest")
	if n := len(f.portsOf(id)); n != 1 {
		t.Errorf("refused tagged attach left %d ports", n)
	}
}

// TestServerGroupsInServer271: from 2.71 a server's show, update and
// rebuild name the group it is in ([] when none); lists do not.
func TestServerGroupsInServer271(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	gid := f.createGroup("demo", "g", "anti-affinity")
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"m","imageRef":"`+imageID+`","flavorRef":"1"},
		"os:scheduler_hints":{"group":"`+gid+`"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create member: %d %v", resp.StatusCode, body)
	}
	member := body["server"].(map[string]any)["id"].(string)
	f.activate(member, "h1")
	loner := f.create("demo", "loner")
	f.activate(loner, "h1")
	for _, v := range []apiVersion{{2, 70}, {2, 71}} {
		for id, want := range map[string]string{member: "[" + gid + "]", loner: "[]"} {
			for _, c := range []contractCall{
				{"demo", "GET", "/v2.1/servers/" + id, "", "servers", "get_server"},
				{"demo", "PUT", "/v2.1/servers/" + id, `{"server":{"name":"n"}}`, "servers", "update_server"},
			} {
				body := f.check(t, ts, v, c)
				got, has := body["server"].(map[string]any)["server_groups"]
				if has != v.AtLeast(71) || (has && fmt.Sprint(got) != want) {
					t.Errorf("%s %s %s: server_groups %v %v, want %s", v, c.method, id, has, got, want)
				}
			}
		}
		_, body := f.do("GET", "/v2.1/servers/detail", "demo", "", mv(v)...)
		for _, s := range body["servers"].([]any) {
			if _, has := s.(map[string]any)["server_groups"]; has {
				t.Errorf("%s: server_groups in a list", v)
			}
		}
	}
}

// TestLockReason273: from 2.73 a lock may carry a reason, shown as
// locked_reason (null when none or unlocked) in show, detail, update and
// rebuild; servers filter on locked. Below 2.73 the body is not read.
func TestLockReason273(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	a, b := f.create("demo", "a"), f.create("demo", "b")
	f.activate(a, "h1")
	f.activate(b, "h1")
	v := apiVersion{2, 73}
	f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/servers/" + a + "/action", `{"lock":{"locked_reason":"maintenance"}}`,
		"servers", "server_actions_common_schema"})
	reasonOf := func(id string, v apiVersion) (any, bool) {
		body := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/" + id, "", "servers", "get_server"})
		r, has := body["server"].(map[string]any)["locked_reason"]
		return r, has
	}
	if r, has := reasonOf(a, v); !has || r != "maintenance" {
		t.Errorf("locked_reason %v %v", has, r)
	}
	if _, has := reasonOf(a, apiVersion{2, 72}); has {
		t.Error("locked_reason shown at 2.72")
	}
	if r, has := reasonOf(b, v); !has || r != nil {
		t.Errorf("unlocked server's locked_reason %v %v", has, r)
	}
	body := f.check(t, ts, v, contractCall{"demo", "PUT", "/v2.1/servers/" + a, `{"server":{"name":"a2"}}`, "servers", "update_server"})
	if body["server"].(map[string]any)["locked_reason"] != "maintenance" {
		t.Errorf("update locked_reason %v", body["server"])
	}
	body = f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/detail?locked=true", "", "servers", "list_servers_detail"})
	if got := body["servers"].([]any); len(got) != 1 || got[0].(map[string]any)["id"] != a {
		t.Errorf("locked=true lists %v", got)
	}
	_, body = f.do("GET", "/v2.1/servers?locked=false", "demo", "", mv(v)...)
	if got := body["servers"].([]any); len(got) != 1 || got[0].(map[string]any)["id"] != b {
		t.Errorf("locked=false lists %v", got)
	}
	_, body = f.do("GET", "/v2.1/servers?locked=false", "demo", "", mv(apiVersion{2, 72})...)
	if got := body["servers"].([]any); len(got) != 2 {
		t.Errorf("locked ignored below 2.73: %v", got)
	}
	resp, fault := f.do("GET", "/v2.1/servers?locked=maybe", "demo", "", mv(v)...)
	expectFault(t, resp, fault, 400, "badRequest")
	for _, bad := range []string{`{"lock":{"reason":"x"}}`, `{"lock":{"locked_reason":5}}`, `{"lock":"x"}`} {
		resp, fault := f.do("POST", "/v2.1/servers/"+b+"/action", "demo", bad, mv(v)...)
		expectFault(t, resp, fault, 400, "badRequest")
	}
	// Unlock clears the reason; a reason-less lock shows null; below
	// 2.73 the body is not read.
	f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/servers/" + a + "/action", `{"unlock":null}`, "servers", "server_actions_common_schema"})
	f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/servers/" + a + "/action", `{"lock":null}`, "servers", "server_actions_common_schema"})
	if r, _ := reasonOf(a, v); r != nil {
		t.Errorf("reason after unlock and a plain lock: %v", r)
	}
	if resp, fault := f.do("POST", "/v2.1/servers/"+b+"/action", "demo", `{"lock":{"reason":"x"}}`, mv(apiVersion{2, 72})...); resp.StatusCode != 202 {
		t.Errorf("2.72 lock body: %d %v", resp.StatusCode, fault)
	}
}

// TestCreateOnHost274: from 2.74 an admin may name the host (and/or its
// hypervisor node, the same name in Capsule) to build on; the scheduler
// still checks it (Instance.RequestedHost is a filter, not a bypass).
func TestCreateOnHost274(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	if err := f.st.DB.Create(&store.Service{UUID: "0b3b4f4e-1111-4a4a-8b8b-0000000000aa", Host: "h1", Binary: store.ComputeBinary,
		Zone: "nova", LastHeartbeat: &now}).Error; err != nil {
		t.Fatal(err)
	}
	create := func(token string, v apiVersion, extra string) (*http.Response, map[string]any) {
		return f.do("POST", "/v2.1/servers", token, `{"server":{"name":"h","imageRef":"`+imageID+`","flavorRef":"1","networks":"none"`+extra+`}}`, mv(v)...)
	}
	v := apiVersion{2, 74}
	for _, extra := range []string{`,"host":"h1"`, `,"hypervisor_hostname":"h1"`, `,"host":"h1","hypervisor_hostname":"h1"`} {
		resp, body := create("admin", v, extra)
		if resp.StatusCode != 202 {
			t.Fatalf("%s: %d %v", extra, resp.StatusCode, body)
		}
		if got := f.instance(body["server"].(map[string]any)["id"].(string)).RequestedHost; got != "h1" {
			t.Errorf("%s: requested host %q", extra, got)
		}
	}
	for _, c := range []struct {
		token, extra string
		v            apiVersion
		status       int
		fault        string
	}{
		{"demo", `,"host":"h1"`, v, 403, "forbidden"},
		{"admin", `,"host":"nope"`, v, 400, "badRequest"},
		{"admin", `,"hypervisor_hostname":"nope"`, v, 400, "badRequest"},
		{"admin", `,"host":"h1","hypervisor_hostname":"h2"`, v, 400, "badRequest"},
		{"admin", `,"host":"h1","availability_zone":"nova:h1"`, v, 400, "badRequest"},
		{"admin", `,"host":""`, v, 400, "badRequest"},
		{"admin", `,"host":"h1"`, apiVersion{2, 73}, 400, "badRequest"},
	} {
		resp, body := create(c.token, c.v, c.extra)
		expectFault(t, resp, body, c.status, c.fault)
	}
}

// TestStrictSchemas275: from 2.75 an unknown server list query key is a
// 400 (known keys Capsule does not filter on stay accepted), PUT answers
// the whole server, a flavor without swap shows 0, and a host without
// servers shows "servers": [] when asked for them.
func TestStrictSchemas275(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	now := time.Now().UTC()
	empty := store.Service{UUID: "0b3b4f4e-1111-4a4a-8b8b-0000000000e0", Host: "h-empty", Binary: store.ComputeBinary, Zone: "nova",
		LastHeartbeat: &now, HypervisorType: "docker"}
	if err := f.st.DB.Create(&empty).Error; err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"frobnicate=1", "_internal=1", "limit=1&sort_by=name"} {
		resp, body := f.do("GET", "/v2.1/servers?"+q, "demo", "", mv(apiVersion{2, 75})...)
		expectFault(t, resp, body, 400, "badRequest")
		if resp, _ := f.do("GET", "/v2.1/servers?"+q, "demo", "", mv(apiVersion{2, 74})...); resp.StatusCode != 200 && q != "_internal=1" {
			t.Errorf("%s at 2.74: %d", q, resp.StatusCode)
		}
	}
	for _, q := range []string{"key_name=k1", "vm_state=active&limit=5", "tags=a&changes-before=2030-01-01T00:00:00Z&locked=false"} {
		if resp, body := f.do("GET", "/v2.1/servers/detail?"+q, "demo", "", mv(apiVersion{2, 75})...); resp.StatusCode != 200 {
			t.Errorf("%s at 2.75: %d %v", q, resp.StatusCode, body)
		}
	}
	for _, v := range []apiVersion{{2, 74}, {2, 75}} {
		body := f.check(t, ts, v, contractCall{"demo", "PUT", "/v2.1/servers/" + w.active, `{"server":{"name":"n"}}`, "servers", "update_server"})
		if _, has := body["server"].(map[string]any)["OS-EXT-STS:vm_state"]; has != v.AtLeast(75) {
			t.Errorf("%s: PUT answers the full server: %v", v, has)
		}
		body = f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/flavors/1", "", "flavors", "create_update_get_flavor_details"})
		want := any("")
		if v.AtLeast(75) {
			want = float64(0)
		}
		if got := body["flavor"].(map[string]any)["swap"]; got != want {
			t.Errorf("%s: swap %#v, want %#v", v, got, want)
		}
		_, body = f.do("GET", "/v2.1/os-hypervisors/detail?with_servers=true", "admin", "", mv(v)...)
		seen := false
		for _, h := range body["hypervisors"].([]any) {
			hm := h.(map[string]any)
			if hm["hypervisor_hostname"] != empty.Host {
				continue // h1 and h2 have servers
			}
			seen = true
			if _, has := hm["servers"]; has != v.AtLeast(75) {
				t.Errorf("%s: an empty host's servers key shown %v: %v", v, has, hm)
			}
		}
		if !seen {
			t.Errorf("%s: host %s not listed: %v", v, empty.Host, body)
		}
	}
}

// TestServerTopology278: GET /servers/{id}/topology exists from 2.78 and
// answers Nova's shape for a server without a guest NUMA topology; it is
// the project's (other project 404, no token 401), readers may look.
func TestServerTopology278(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	path := "/v2.1/servers/" + id + "/topology"
	v := mv(apiVersion{2, 78})
	resp, body := f.do("GET", path, "demo", "", mv(apiVersion{2, 77})...)
	expectFault(t, resp, body, 404, "itemNotFound")
	for _, tok := range []string{"demo", "read", "admin"} {
		resp, body = f.do("GET", path, tok, "", v...)
		if resp.StatusCode != 200 || len(body) != 2 || fmt.Sprint(body["nodes"]) != "[]" || body["pagesize_kb"] != nil {
			t.Errorf("%s: %d %v", tok, resp.StatusCode, body)
		}
	}
	resp, body = f.do("GET", path, "other", "", v...)
	expectFault(t, resp, body, 404, "itemNotFound")
	for _, tok := range []string{"", "garbage"} {
		if resp, _ := f.do("GET", path, tok, "", v...); resp.StatusCode != 401 {
			t.Errorf("token %q: %d", tok, resp.StatusCode)
		}
	}
}

// TestMigrationOwners280: from 2.80 os-migrations shows who migrated
// (user_id, project_id) and filters on them.
func TestMigrationOwners280(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	id := f.create("demo", "m")
	now := time.Now().UTC()
	for _, m := range []store.Migration{{UUID: "5f0c8a1e-1111-4a4a-8b8b-000000000001", InstanceID: id, Status: "confirmed", MigrationType: "resize", UserID: "u-demo", ProjectID: "p-demo", CreatedAt: now, UpdatedAt: now},
		{UUID: "5f0c8a1e-1111-4a4a-8b8b-000000000002", InstanceID: id, Status: "confirmed", MigrationType: "migration", UserID: "u-admin", ProjectID: "p-admin", CreatedAt: now, UpdatedAt: now}} {
		if err := f.st.DB.Create(&m).Error; err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []apiVersion{{2, 1}, {2, 23}, {2, 59}, {2, 79}, {2, 80}} {
		body := f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-migrations", "", "migrations", "list_migrations"})
		for _, m := range body["migrations"].([]any) {
			if _, has := m.(map[string]any)["user_id"]; has != v.AtLeast(80) {
				t.Errorf("%s: user_id shown %v", v, has)
			}
		}
		body = f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-migrations?user_id=u-demo&project_id=p-demo", "", "migrations", "list_migrations"})
		want := 2
		if v.AtLeast(80) {
			want = 1
		}
		if n := len(body["migrations"].([]any)); n != want {
			t.Errorf("%s: user filter lists %d, want %d", v, n, want)
		}
	}
}

// TestMemberServerFilters283: the server's own columns filter for
// admins at every microversion and for members from 2.83 (below it Nova
// drops the filters for them).
func TestMemberServerFilters283(t *testing.T) {
	f := newFixture(t)
	a, b := f.create("demo", "a"), f.create("demo", "b")
	f.activate(a, "h1")
	f.st.DB.Model(&store.Instance{}).Where("id = ?", a).Updates(map[string]any{"key_name": "k-1", "availability_zone": "zone-a"})
	f.st.DB.Model(&store.Instance{}).Where("id = ?", b).Updates(map[string]any{"availability_zone": "zone-b"})
	for q, wantID := range map[string]string{"vm_state=active": a, "vm_state=building": b, "power_state=1": a, "key_name=k-": a,
		"availability_zone=zone-b": b, "user_id=u-demo&vm_state=active": a} {
		for _, c := range []struct {
			token string
			v     apiVersion
			all   bool
		}{{"demo", apiVersion{2, 82}, true}, {"demo", apiVersion{2, 83}, false}, {"admin", apiVersion{2, 1}, false}} {
			path := "/v2.1/servers?" + q
			if c.token == "admin" {
				path += "&all_tenants=1"
			}
			resp, body := f.do("GET", path, c.token, "", mv(c.v)...)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: %d %v", q, c.v, resp.StatusCode, body)
			}
			got := body["servers"].([]any)
			if c.all {
				if len(got) != 2 {
					t.Errorf("%s as %s at %s: %d servers, want the filter ignored", q, c.token, c.v, len(got))
				}
			} else if len(got) != 1 || got[0].(map[string]any)["id"] != wantID {
				t.Errorf("%s as %s at %s: %v, want %s only", q, c.token, c.v, got, wantID)
			}
		}
	}
	resp, body := f.do("GET", "/v2.1/servers?power_state=on", "demo", "", mv(apiVersion{2, 83})...)
	expectFault(t, resp, body, 400, "badRequest")
}

// TestUnshelveZone277: from 2.77 an offloaded server may be unshelved
// into a named availability zone (the scheduler places it there); a
// zone that does not exist is a 400, extra keys too; below 2.77 the body
// is not read.
func TestUnshelveZone277(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	if err := f.st.DB.Create(&store.Service{UUID: "0b3b4f4e-1111-4a4a-8b8b-0000000000z1", Host: "hz", Binary: store.ComputeBinary,
		Zone: "zone-b", LastHeartbeat: &now}).Error; err != nil {
		t.Fatal(err)
	}
	id := f.create("demo", "sv")
	action := "/v2.1/servers/" + id + "/action"
	f.setState(id, lifecycle.ShelvedOffloaded, lifecycle.NoTask)
	for _, bad := range []string{`{"unshelve":{"availability_zone":"nowhere"}}`, `{"unshelve":{"host":"hz"}}`, `{"unshelve":"x"}`} {
		resp, body := f.do("POST", action, "demo", bad, mv(apiVersion{2, 77})...)
		expectFault(t, resp, body, 400, "badRequest")
	}
	if got := f.instance(id); got.VMState != lifecycle.ShelvedOffloaded || got.TaskState != lifecycle.NoTask {
		t.Fatalf("refused unshelve changed the server: %s/%s", got.VMState, got.TaskState)
	}
	resp, body := f.do("POST", action, "demo", `{"unshelve":{"availability_zone":"zone-b"}}`, mv(apiVersion{2, 77})...)
	if resp.StatusCode != 202 {
		t.Fatalf("unshelve into zone-b: %d %v", resp.StatusCode, body)
	}
	if got := f.instance(id); got.RequestedZone != "zone-b" || got.TaskState != lifecycle.Unshelving {
		t.Errorf("after unshelve: zone %q task %q", got.RequestedZone, got.TaskState)
	}
	// Below 2.77 the body is not read.
	other := f.create("demo", "sv2")
	f.setState(other, lifecycle.ShelvedOffloaded, lifecycle.NoTask)
	resp, body = f.do("POST", "/v2.1/servers/"+other+"/action", "demo", `{"unshelve":{"availability_zone":"nowhere"}}`, mv(apiVersion{2, 76})...)
	if resp.StatusCode != 202 || f.instance(other).RequestedZone == "nowhere" {
		t.Errorf("2.76 unshelve: %d %v", resp.StatusCode, body)
	}
}

// TestUnshelveToHost291: from 2.91 an admin may unshelve an offloaded
// server onto a host (carried by the schedule message, not kept), and
// availability_zone null unpins it; members may not name a host.
func TestUnshelveToHost291(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	if err := f.st.DB.Create(&store.Service{UUID: "0b3b4f4e-1111-4a4a-8b8b-0000000000h9", Host: "h9", Binary: store.ComputeBinary,
		Zone: "nova", LastHeartbeat: &now}).Error; err != nil {
		t.Fatal(err)
	}
	id := f.create("demo", "sv")
	action := "/v2.1/servers/" + id + "/action"
	f.setState(id, lifecycle.ShelvedOffloaded, lifecycle.NoTask)
	f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("requested_zone", "nova")
	v := mv(apiVersion{2, 91})
	resp, body := f.do("POST", action, "demo", `{"unshelve":{"host":"h9"}}`, v...)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("POST", action, "admin", `{"unshelve":{"host":"nope"}}`, v...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", action, "admin", `{"unshelve":{"host":"h9"}}`, mv(apiVersion{2, 90})...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", action, "admin", `{"unshelve":{"host":"h9","availability_zone":null}}`, v...)
	if resp.StatusCode != 202 {
		t.Fatalf("unshelve to h9: %d %v", resp.StatusCode, body)
	}
	var req protocol.ScheduleInstance
	sent := f.bus.Sent(bus.SchedulerQueue)
	if len(sent) == 0 || sent[len(sent)-1].Decode(&req) != nil || req.Host != "h9" || req.InstanceID != id {
		t.Errorf("schedule message %+v", req)
	}
	if got := f.instance(id); got.RequestedZone != "" || got.RequestedHost != "" {
		t.Errorf("after unshelve: zone %q (want unpinned), requested host %q (want none kept)", got.RequestedZone, got.RequestedHost)
	}
}

// TestHostname290And294: from 2.90 a server's hostname may be set at
// create, update and rebuild (an RFC 1123 label; from 2.94 an FQDN) and
// everyone sees OS-EXT-SRV-ATTR:hostname; one hostname for several
// servers is refused.
func TestHostname290And294(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	create := func(v apiVersion, extra string) (*http.Response, map[string]any) {
		return f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"Web One","imageRef":"`+imageID+`","flavorRef":"1","networks":"none"`+extra+`}}`, mv(v)...)
	}
	resp, body := create(apiVersion{2, 90}, `,"hostname":"web-1"`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	f.activate(id, "h1")
	if h := f.instance(id).Hostname; h != "web-1" {
		t.Errorf("hostname %q", h)
	}
	for _, v := range []apiVersion{{2, 89}, {2, 90}} {
		body := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/" + id, "", "servers", "get_server"})
		if h, has := body["server"].(map[string]any)["OS-EXT-SRV-ATTR:hostname"]; has != v.AtLeast(90) || (has && h != "web-1") {
			t.Errorf("%s: member sees hostname %v %v", v, has, h)
		}
	}
	body = f.check(t, ts, apiVersion{2, 90}, contractCall{"demo", "PUT", "/v2.1/servers/" + id, `{"server":{"hostname":"web-2"}}`, "servers", "update_server"})
	if h := body["server"].(map[string]any)["OS-EXT-SRV-ATTR:hostname"]; h != "web-2" {
		t.Errorf("updated hostname %v", h)
	}
	body = f.check(t, ts, apiVersion{2, 94}, contractCall{"demo", "POST", "/v2.1/servers/" + id + "/action",
		`{"rebuild":{"imageRef":"` + imageID + `","hostname":"web-3.example.org"}}`, "servers", "rebuild_server_with_admin_pass"})
	if h := body["server"].(map[string]any)["OS-EXT-SRV-ATTR:hostname"]; h != "web-3.example.org" {
		t.Errorf("rebuild answers hostname %v", h)
	}
	if h := f.instance(id).Hostname; h != "web-3.example.org" {
		t.Errorf("rebuilt hostname %q", h)
	}
	for _, c := range []struct {
		v     apiVersion
		extra string
	}{
		{apiVersion{2, 89}, `,"hostname":"web"`},
		{apiVersion{2, 90}, `,"hostname":"web.example.org"`}, // an FQDN from 2.94 only
		{apiVersion{2, 90}, `,"hostname":"-web"`},
		{apiVersion{2, 90}, `,"hostname":"w"`},
		{apiVersion{2, 94}, `,"hostname":"web!"`},
		{apiVersion{2, 90}, `,"hostname":"web","max_count":2`},
	} {
		resp, body := create(c.v, c.extra)
		expectFault(t, resp, body, 400, "badRequest")
	}
	if resp, body := create(apiVersion{2, 94}, `,"hostname":"db.example.org"`); resp.StatusCode != 202 {
		t.Errorf("FQDN at 2.94: %d %v", resp.StatusCode, body)
	}
}

// TestKeypairImportOnly292: from 2.92 a keypair must be imported (no
// generated private keys) and its name may hold '@' and '.'.
func TestKeypairImportOnly292(t *testing.T) {
	f := newFixture(t)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t@capsule"
	resp, body := f.do("POST", "/v2.1/os-keypairs", "demo", `{"keypair":{"name":"gen"}}`, mv(apiVersion{2, 92})...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/os-keypairs", "demo", `{"keypair":{"name":"me@host.example","public_key":"`+key+`"}}`, mv(apiVersion{2, 92})...)
	if resp.StatusCode != 201 {
		t.Fatalf("import at 2.92: %d %v", resp.StatusCode, body)
	}
	if _, has := body["keypair"].(map[string]any)["private_key"]; has {
		t.Error("private_key in a 2.92 answer")
	}
	resp, body = f.do("POST", "/v2.1/os-keypairs", "demo", `{"keypair":{"name":"me@host2"}}`, mv(apiVersion{2, 91})...)
	expectFault(t, resp, body, 400, "badRequest") // '@' only from 2.92
	resp, body = f.do("POST", "/v2.1/os-keypairs", "demo", `{"keypair":{"name":"gen"}}`, mv(apiVersion{2, 91})...)
	if resp.StatusCode != 201 || body["keypair"].(map[string]any)["private_key"] == nil {
		t.Errorf("generated keypair at 2.91: %d %v", resp.StatusCode, body)
	}
}

// TestPinnedAvailabilityZone296: from 2.96 a server shows the zone it is
// pinned to (asked for at create), null when none, whatever zone it was
// placed in.
func TestPinnedAvailabilityZone296(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"p","imageRef":"`+imageID+`","flavorRef":"1","networks":"none","availability_zone":"nova"}}`, mv(apiVersion{2, 96})...)
	if resp.StatusCode != 202 {
		t.Fatalf("create pinned to nova: %d %v", resp.StatusCode, body)
	}
	pinned := body["server"].(map[string]any)["id"].(string)
	free := f.create("demo", "f")
	// Placed: both run in zone nova; only the first asked for it.
	f.st.DB.Model(&store.Instance{}).Where("id IN ?", []string{pinned, free}).Update("availability_zone", "nova")
	for _, v := range []apiVersion{{2, 95}, {2, 96}} {
		for id, want := range map[string]any{pinned: "nova", free: nil} {
			body := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/" + id, "", "servers", "get_server"})
			got, has := body["server"].(map[string]any)["pinned_availability_zone"]
			if has != v.AtLeast(96) || (has && got != want) {
				t.Errorf("%s %s: pinned_availability_zone %v %v, want %v", v, id, has, got, want)
			}
		}
		f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/detail", "", "servers", "list_servers_detail"})
	}
}
