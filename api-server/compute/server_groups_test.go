package compute

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/store"
)

func groupBody(name string, policies ...any) string {
	b, _ := json.Marshal(map[string]any{"server_group": map[string]any{"name": name, "policies": policies}})
	return string(b)
}

// createGroup creates a group as token and returns its id.
func (f *fixture) createGroup(token, name, policy string) string {
	f.t.Helper()
	resp, body := f.do("POST", "/v2.1/os-server-groups", token, groupBody(name, policy), mv(apiVersion{2, 60})...)
	if resp.StatusCode != 200 {
		f.t.Fatalf("create server group: %d %v", resp.StatusCode, body)
	}
	return body["server_group"].(map[string]any)["id"].(string)
}

// groupMembers is the members the API shows for group id (as admin).
func (f *fixture) groupMembers(id string) []any {
	f.t.Helper()
	resp, body := f.do("GET", "/v2.1/os-server-groups/"+id, "admin", "")
	if resp.StatusCode != 200 {
		f.t.Fatalf("show server group %s: %d %v", id, resp.StatusCode, body)
	}
	return body["server_group"].(map[string]any)["members"].([]any)
}

// TestContractServerGroups runs Tempest's test_server_group flows (create
// with each policy, show equals create, list contains it, delete, gone
// from the list) through Tempest's schemas where the API changes.
func TestContractServerGroups(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	for _, v := range []apiVersion{{2, 1}, {2, 12}, {2, 13}, {2, 15}, {2, 60}} {
		t.Run(v.String(), func(t *testing.T) {
			policies := []string{"affinity", "anti-affinity"}
			if v.AtLeast(15) {
				policies = append(policies, "soft-affinity", "soft-anti-affinity")
			}
			for _, p := range policies {
				created := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/os-server-groups", groupBody("sg-"+p, p),
					"server_groups", "create_show_server_group"})
				g := created["server_group"].(map[string]any)
				if g["name"] != "sg-"+p || fmt.Sprint(g["policies"]) != "["+p+"]" || len(g["members"].([]any)) != 0 {
					t.Errorf("created %v", g)
				}
				if _, has := g["project_id"]; has != v.AtLeast(13) {
					t.Errorf("project_id shown at %s: %v", v, has)
				}
				if v.AtLeast(13) && (g["project_id"] != "p-demo" || g["user_id"] != "u-demo") {
					t.Errorf("owner of %v, want p-demo/u-demo", g)
				}
				id := g["id"].(string)
				shown := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-server-groups/" + id, "", "server_groups", "create_show_server_group"})
				if fmt.Sprint(shown) != fmt.Sprint(created) {
					t.Errorf("show %v, want the created %v", shown, created)
				}
				list := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-server-groups", "", "server_groups", "list_server_groups"})
				if !slices.ContainsFunc(list["server_groups"].([]any), func(x any) bool { return fmt.Sprint(x) == fmt.Sprint(g) }) {
					t.Errorf("list %v lacks %v", list, g)
				}
				f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/os-server-groups/" + id, "", "server_groups", "delete_server_group"})
				list = f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-server-groups", "", "server_groups", "list_server_groups"})
				if strings.Contains(fmt.Sprint(list), id) {
					t.Errorf("deleted group %s still listed: %v", id, list)
				}
			}
		})
	}
}

func TestServerGroupBadRequests(t *testing.T) {
	f := newFixture(t)
	v214, v215 := mv(apiVersion{2, 14}), mv(apiVersion{2, 15})
	for _, c := range []struct {
		body string
		hdr  []string
	}{
		{`{"server_group":{"policies":["affinity"]}}`, nil},
		{`{"server_group":{"name":"g"}}`, nil},
		{groupBody("g", "affinity", "anti-affinity"), nil},
		{groupBody("g"), nil},
		{groupBody("g", "together"), nil},
		{groupBody("g", "soft-affinity"), v214},
		{groupBody("g", 7), v215},
		{groupBody("", "affinity"), nil},
		{groupBody(" g", "affinity"), nil},
		{groupBody(strings.Repeat("n", 256), "affinity"), nil},
		{`{"server_group":{"name":"g","policies":"affinity"}}`, nil},
		{`{"server_group":{"name":"g","policies":["affinity"],"rules":{}}}`, nil},
		{`{"server_group":{"name":"g","policies":["affinity"]},"extra":1}`, nil},
		{`{"server_group":{"name":3,"policies":["affinity"]}}`, nil},
		{`{"server_group":`, nil},
	} {
		resp, body := f.do("POST", "/v2.1/os-server-groups", "demo", c.body, c.hdr...)
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d %v, want 400", c.body, resp.StatusCode, body)
			continue
		}
		expectFault(t, resp, body, 400, "badRequest")
	}
	resp, body := f.do("POST", "/v2.1/os-server-groups", "read", groupBody("g", "affinity"))
	expectFault(t, resp, body, 403, "forbidden")
	for _, q := range []string{"limit=x", "limit=-1", "offset=-2", "offset=a"} {
		resp, body := f.do("GET", "/v2.1/os-server-groups?"+q, "demo", "")
		expectFault(t, resp, body, 400, "badRequest")
	}
}

func TestServerGroupVisibilityAndPaging(t *testing.T) {
	f := newFixture(t)
	mine := []string{f.createGroup("demo", "a", "affinity"), f.createGroup("demo", "b", "anti-affinity"),
		f.createGroup("demo", "c", "soft-affinity")}
	theirs := f.createGroup("other", "x", "affinity")

	for _, call := range [][2]string{{"GET", ""}, {"DELETE", ""}} {
		resp, body := f.do(call[0], "/v2.1/os-server-groups/"+theirs, "demo", "")
		expectFault(t, resp, body, 404, "itemNotFound")
	}
	if resp, _ := f.do("GET", "/v2.1/os-server-groups/"+theirs, "admin", ""); resp.StatusCode != 200 {
		t.Errorf("admin show of another project's group: %d", resp.StatusCode)
	}
	ids := func(token, query string) []string {
		t.Helper()
		resp, body := f.do("GET", "/v2.1/os-server-groups"+query, token, "")
		if resp.StatusCode != 200 {
			t.Fatalf("list %s as %s: %d %v", query, token, resp.StatusCode, body)
		}
		var out []string
		for _, g := range body["server_groups"].([]any) {
			out = append(out, g.(map[string]any)["id"].(string))
		}
		return out
	}
	if got := ids("demo", ""); !slices.Equal(got, mine) {
		t.Errorf("demo's list %v, want %v", got, mine)
	}
	if got := ids("admin", ""); len(got) != 0 {
		t.Errorf("admin's own list %v, want none (no all_projects)", got)
	}
	if got := ids("admin", "?all_projects=True"); !slices.Equal(got, append(slices.Clone(mine), theirs)) {
		t.Errorf("all_projects list %v, want every group", got)
	}
	if got := ids("demo", "?limit=1&offset=1"); !slices.Equal(got, mine[1:2]) {
		t.Errorf("limit=1 offset=1: %v, want %v", got, mine[1:2])
	}
	if got := ids("demo", "?offset=5"); len(got) != 0 {
		t.Errorf("offset past the end: %v", got)
	}
	resp, body := f.do("GET", "/v2.1/os-server-groups?all_projects=True", "demo", "")
	expectFault(t, resp, body, 403, "forbidden")
	if resp, _ := f.do("DELETE", "/v2.1/os-server-groups/"+theirs, "admin", ""); resp.StatusCode != 204 {
		t.Errorf("admin delete of another project's group: %d", resp.StatusCode)
	}
	resp, body = f.do("DELETE", "/v2.1/os-server-groups/"+theirs, "other", "")
	expectFault(t, resp, body, 404, "itemNotFound")
}

func TestServerGroupQuotas(t *testing.T) {
	f := newFixture(t)
	for res, n := range map[string]int{"server_groups": 1, "server_group_members": 2} {
		if err := f.st.DB.Create(&store.QuotaLimit{ProjectID: "p-demo", Resource: res, HardLimit: n}).Error; err != nil {
			t.Fatal(err)
		}
	}
	g := f.createGroup("demo", "one", "affinity")
	resp, body := f.do("POST", "/v2.1/os-server-groups", "demo", groupBody("two", "affinity"))
	expectFault(t, resp, body, 403, "forbidden")
	if msg := body["forbidden"].(map[string]any)["message"]; msg != "Quota exceeded, too many server groups." {
		t.Errorf("message %q", msg)
	}
	f.createGroup("other", "theirs", "affinity") // another project's count is its own

	boot := func(extra string) (int, map[string]any) {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"m","imageRef":"`+f.image+
			`","flavorRef":"1"`+extra+`},"os:scheduler_hints":{"group":"`+g+`"}}`)
		return resp.StatusCode, body
	}
	if code, body := boot(`,"min_count":3`); code != 403 || !strings.Contains(fmt.Sprint(body), "too many servers in group") {
		t.Errorf("3 servers into a group of at most 2: %d %v", code, body)
	}
	for range 2 {
		if code, body := boot(""); code != 202 {
			t.Fatalf("boot into the group: %d %v", code, body)
		}
	}
	if code, body := boot(""); code != 403 || !strings.Contains(fmt.Sprint(body), "too many servers in group") {
		t.Errorf("3rd member: %d %v, want 403", code, body)
	}
	var n int64
	f.st.DB.Model(&store.Instance{}).Count(&n)
	if n != 2 {
		t.Errorf("%d servers recorded, want the 2 that fit", n)
	}
}

func TestCreateServerWithSchedulerHints(t *testing.T) {
	f := newFixture(t)
	g := f.createGroup("demo", "g", "anti-affinity")
	theirs := f.createGroup("other", "x", "affinity")
	boot := func(hints string) (int, map[string]any) {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"s","imageRef":"`+f.image+
			`","flavorRef":"1"},"os:scheduler_hints":`+hints+`}`)
		return resp.StatusCode, body
	}
	code, body := boot(`{"group":"` + g + `","same_host":"` + imageID + `","different_host":["` + g + `"],"query":"x"}`)
	if code != 202 {
		t.Fatalf("create with hints: %d %v", code, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	var inst store.Instance
	f.st.DB.First(&inst, "id = ?", id)
	if h := inst.Hints(); h.Group != g || !slices.Equal(h.SameHost, []string{imageID}) || !slices.Equal(h.DifferentHost, []string{g}) {
		t.Errorf("stored hints %+v (%s)", h, inst.SchedulerHints)
	}
	if m := f.groupMembers(g); len(m) != 1 || m[0] != id {
		t.Errorf("members %v, want [%s]", m, id)
	}
	// The pre-2.1 name of the key works too.
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"s2","imageRef":"`+f.image+
		`","flavorRef":"1"},"OS-SCH-HNT:scheduler_hints":{"group":"`+strings.ToUpper(g)+`"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("legacy hints key: %d %v", resp.StatusCode, body)
	}
	id2 := body["server"].(map[string]any)["id"].(string)
	if m := f.groupMembers(g); len(m) != 2 {
		t.Errorf("members %v, want both servers", m)
	}

	for _, bad := range []string{`{"group":"` + theirs + `"}`, `{"group":"` + newUUID() + `"}`, `{"group":"nope"}`,
		`{"group":5}`, `{"same_host":"nope"}`, `{"different_host":[1]}`, `{"same_host":{}}`, `[]`} {
		code, body := boot(bad)
		if code != 400 {
			t.Errorf("hints %s: %d %v, want 400", bad, code, body)
		}
	}

	// Deleting a server takes it out of the group.
	if err := instance.MarkDeleted(context.Background(), f.st, id, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if m := f.groupMembers(g); len(m) != 1 || m[0] != id2 {
		t.Errorf("members after deleting %s: %v, want [%s]", id, m, id2)
	}
}
