package compute

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// TestContractServerTags runs Tempest's server tag flows at 2.26 and 2.60
// against its schemas: add (201, then 204 for the same tag, both with a
// Location), check, list, replace all, delete one, delete all; tags show
// in the server view and filter the list.
func TestContractServerTags(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	for _, v := range []apiVersion{{2, 26}, {2, 60}} {
		id := f.create("demo", "tagged-"+v.String())
		f.activate(id, "h1")
		base := "/v2.1/servers/" + id + "/tags"
		f.check(t, ts, v, contractCall{"demo", "PUT", base + "/blue", "", "servers", "update_tag"})
		resp, _ := f.raw("PUT", base+"/blue", "demo", "", "X-OpenStack-Nova-API-Version", v.String())
		if resp.StatusCode != 204 || !strings.HasSuffix(resp.Header.Get("Location"), "/servers/"+id+"/tags/blue") {
			t.Errorf("adding a present tag: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		f.check(t, ts, v, contractCall{"demo", "GET", base + "/blue", "", "servers", "check_tag_existence"})
		got := f.check(t, ts, v, contractCall{"demo", "PUT", base, `{"tags":["z","a","z"]}`, "servers", "update_all_tags"})
		if fmt.Sprint(got["tags"]) != "[a z]" {
			t.Errorf("replace all answered %v, want [a z]", got["tags"])
		}
		got = f.check(t, ts, v, contractCall{"demo", "GET", base, "", "servers", "list_tags"})
		if fmt.Sprint(got["tags"]) != "[a z]" {
			t.Errorf("list = %v", got["tags"])
		}
		srv := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/servers/" + id, "", "servers", "get_server"})
		if fmt.Sprint(srv["server"].(map[string]any)["tags"]) != "[a z]" {
			t.Errorf("server view tags = %v", srv["server"].(map[string]any)["tags"])
		}
		f.check(t, ts, v, contractCall{"demo", "DELETE", base + "/a", "", "servers", "delete_tag"})
		f.check(t, ts, v, contractCall{"demo", "DELETE", base, "", "servers", "delete_all_tags"})
		got = f.check(t, ts, v, contractCall{"demo", "GET", base, "", "servers", "list_tags"})
		if tags := got["tags"].([]any); len(tags) != 0 {
			t.Errorf("after delete all: %v", tags)
		}
	}
}

// TestServerTagRules: Nova's refusals and the list filters.
func TestServerTagRules(t *testing.T) {
	f := newFixture(t)
	mv := func(v string) []string { return []string{"X-OpenStack-Nova-API-Version", v} }
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	base := "/v2.1/servers/" + id + "/tags"

	resp, body := f.do("GET", base, "demo", "", mv("2.25")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	for _, bad := range []string{"a,b", strings.Repeat("x", 61)} {
		resp, body = f.do("PUT", base+"/"+bad, "demo", "", mv("2.26")...)
		expectFault(t, resp, body, 400, "badRequest")
	}
	resp, body = f.do("PUT", base, "demo", `{"tags":[""]}`, mv("2.26")...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("PUT", base, "demo", `{}`, mv("2.26")...)
	expectFault(t, resp, body, 400, "badRequest")
	many := make([]string, store.MaxServerTags+1)
	for i := range many {
		many[i] = fmt.Sprintf("t%d", i)
	}
	b, _ := json.Marshal(map[string]any{"tags": many})
	resp, body = f.do("PUT", base, "demo", string(b), mv("2.26")...)
	expectFault(t, resp, body, 400, "badRequest")
	// 50 tags, then one more by PUT of a single tag: over the limit.
	b, _ = json.Marshal(map[string]any{"tags": many[:store.MaxServerTags]})
	if resp, body := f.do("PUT", base, "demo", string(b), mv("2.26")...); resp.StatusCode != 200 {
		t.Fatalf("50 tags: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do("PUT", base+"/one-more", "demo", "", mv("2.26")...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("DELETE", base+"/absent", "demo", "", mv("2.26")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("GET", base+"/absent", "demo", "", mv("2.26")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("GET", base, "other", "", mv("2.26")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("PUT", base+"/x", "read", "", mv("2.26")...)
	if resp.StatusCode != 403 {
		t.Errorf("a reader tagging: %d %v", resp.StatusCode, body)
	}
	// A building server cannot be tagged (Nova's valid states).
	building := f.create("demo", "building")
	resp, body = f.do("PUT", "/v2.1/servers/"+building+"/tags/x", "demo", "", mv("2.26")...)
	expectFault(t, resp, body, 409, "conflictingRequest")

	// Create with tags: 2.52 on, refused before.
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"t","imageRef":"`+f.image+`","flavorRef":"1","networks":"none","tags":["x"]}}`, mv("2.51")...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"t","imageRef":"`+f.image+`","flavorRef":"1","networks":"none","tags":["a/b"]}}`, mv("2.52")...)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"t","imageRef":"`+f.image+`","flavorRef":"1","networks":"none","tags":["web","prod"]}}`, mv("2.52")...)
	if resp.StatusCode != 202 {
		t.Fatalf("create with tags: %d %v", resp.StatusCode, body)
	}
	web := body["server"].(map[string]any)["id"].(string)

	// List filters.
	other := f.create("demo", "db")
	f.activate(other, "h1")
	f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{"tags": store.EncodeTags([]string{"db", "prod"}),
		"vm_state": string(lifecycle.Active)})
	f.st.DB.Model(&store.Instance{}).Where("id = ?", other).Update("tags", "")
	names := func(query string) string {
		t.Helper()
		resp, body := f.do("GET", "/v2.1/servers?"+query, "demo", "", mv("2.26")...)
		if resp.StatusCode != 200 {
			t.Fatalf("list %s: %d %v", query, resp.StatusCode, body)
		}
		var out []string
		for _, s := range body["servers"].([]any) {
			out = append(out, s.(map[string]any)["id"].(string))
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	sorted := func(ids ...string) string { slices.Sort(ids); return strings.Join(ids, ",") }
	for q, want := range map[string]string{
		"tags=prod":              sorted(id, web),
		"tags=prod,web":          web,
		"tags-any=web,db":        sorted(id, web),
		"not-tags=prod,web":      sorted(id, other, building),
		"not-tags-any=prod":      sorted(other, building),
		"tags=prod&not-tags=web": id,
	} {
		if got := names(q); got != want {
			t.Errorf("servers?%s = %s, want %s", q, got, want)
		}
	}
}
