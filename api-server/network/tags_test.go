package network_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// addTag is PUT <path> (.../tags/{tag}) as token: Neutron's 201 with no
// body.
func (e *env) addTag(path, token string) {
	e.t.Helper()
	req, _ := http.NewRequest("PUT", e.srv.URL+path, nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("PUT %s as %s: %d, want 201", path, token, resp.StatusCode)
	}
}

func tagsOf(o obj) []string {
	var out []string
	for _, t := range o["tags"].([]any) {
		out = append(out, t.(string))
	}
	return out
}

// TestResourceTags runs standard-attr-tag on each taggable resource as
// Neutron answers it (gophercloud's TestTags): replace all, add one,
// delete one, check one, delete all; the tags are in the resource's own
// view and bump its revision_number.
func TestResourceTags(t *testing.T) {
	e := newEnv(t)
	n := e.network("alice", obj{"name": "tagged"})
	sn := e.subnet("alice", obj{"network_id": n["id"], "cidr": "10.60.0.0/24"})
	p := e.port("alice", obj{"network_id": n["id"]})
	g := e.must(http.StatusCreated, "POST", "/v2.0/security-groups", "alice", obj{"security_group": obj{"name": "web"}})["security_group"].(obj)
	for _, r := range []struct{ coll, one, id string }{{"networks", "network", n["id"].(string)},
		{"subnets", "subnet", sn["id"].(string)}, {"ports", "port", p["id"].(string)}, {"security-groups", "security_group", g["id"].(string)}} {
		base := "/v2.0/" + r.coll + "/" + r.id
		rev := e.must(http.StatusOK, "GET", base, "alice", nil)[r.one].(obj)["revision_number"].(float64)
		got := e.must(http.StatusOK, "PUT", base+"/tags", "alice", obj{"tags": []string{"c", "a", "b", "a"}})
		if fmt.Sprint(tagsOf(got)) != "[a b c]" {
			t.Fatalf("%s replace: %v", r.coll, got)
		}
		shown := e.must(http.StatusOK, "GET", base, "alice", nil)[r.one].(obj)
		if fmt.Sprint(tagsOf(shown)) != "[a b c]" || shown["revision_number"].(float64) != rev+1 {
			t.Fatalf("%s after replace: %v (revision was %v)", r.coll, shown, rev)
		}
		e.addTag(base+"/tags/d", "alice")
		e.addTag(base+"/tags/d", "alice") // again: still 201
		if code, _ := e.do("DELETE", base+"/tags/a", "alice", nil); code != http.StatusNoContent {
			t.Fatalf("%s delete tag: %d", r.coll, code)
		}
		e.fails(http.StatusNotFound, "TagNotFound", "DELETE", base+"/tags/a", "alice", nil)
		if got := e.must(http.StatusOK, "GET", base+"/tags", "alice", nil); fmt.Sprint(tagsOf(got)) != "[b c d]" {
			t.Fatalf("%s tags: %v", r.coll, got)
		}
		if code, _ := e.do("GET", base+"/tags/d", "alice", nil); code != http.StatusNoContent {
			t.Fatalf("%s check d: %d", r.coll, code)
		}
		e.fails(http.StatusNotFound, "TagNotFound", "GET", base+"/tags/a", "alice", nil)
		if code, _ := e.do("DELETE", base+"/tags", "alice", nil); code != http.StatusNoContent {
			t.Fatalf("%s delete all: %d", r.coll, code)
		}
		if got := e.must(http.StatusOK, "GET", base+"/tags", "alice", nil); len(got["tags"].([]any)) != 0 {
			t.Fatalf("%s after delete all: %v", r.coll, got)
		}
		e.fails(http.StatusBadRequest, "", "PUT", base+"/tags", "alice", obj{"tags": "a"})
		e.fails(http.StatusBadRequest, "", "PUT", base+"/tags", "alice", obj{"tags": []string{""}})
		long := make([]string, 51)
		for i := range long {
			long[i] = fmt.Sprint("t", i)
		}
		e.fails(http.StatusBadRequest, "", "PUT", base+"/tags", "alice", obj{"tags": long})
	}
}

// TestQueryByTags: tags (all of), tags-any, not-tags (not all of),
// not-tags-any (none of), comma-separated, on every taggable list
// (gophercloud's TestQueryByTags).
func TestQueryByTags(t *testing.T) {
	e := newEnv(t)
	n1 := e.network("alice", obj{"name": "n1"})
	n2 := e.network("alice", obj{"name": "n2"})
	e.network("alice", obj{"name": "untagged"})
	e.must(http.StatusOK, "PUT", "/v2.0/networks/"+n1["id"].(string)+"/tags", "alice", obj{"tags": []string{"a", "b", "c", "mine"}})
	e.must(http.StatusOK, "PUT", "/v2.0/networks/"+n2["id"].(string)+"/tags", "alice", obj{"tags": []string{"b", "c", "d", "mine"}})
	for q, want := range map[string][]string{
		"tags=a,b,c,mine":          {"n1"},
		"tags-any=a,d":             {"n1", "n2"},
		"tags=mine&not-tags=a,b":   {"n2"},
		"tags=mine&not-tags-any=d": {"n1"},
		"not-tags-any=mine":        {"untagged"},
		"tags=b&tags=d":            {"n2"},
		"tags=zzz":                 nil,
	} {
		var got []string
		for _, x := range e.must(http.StatusOK, "GET", "/v2.0/networks?"+q, "alice", nil)["networks"].([]any) {
			got = append(got, x.(obj)["name"].(string))
		}
		slices.Sort(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("networks?%s: %v, want %v", q, got, want)
		}
	}
	p := e.port("alice", obj{"network_id": n1["id"]})
	e.port("alice", obj{"network_id": n1["id"]})
	e.addTag("/v2.0/ports/"+p["id"].(string)+"/tags/blue", "alice")
	if got := ids(e.must(http.StatusOK, "GET", "/v2.0/ports?tags=blue&limit=5", "alice", nil)["ports"]); fmt.Sprint(got) != fmt.Sprint([]string{p["id"].(string)}) {
		t.Errorf("ports?tags=blue: %v", got)
	}
}

// TestResourceTagsIsolation: another project's resource is a 404 (read
// or write), a reader may read but not change tags (403), a shared
// network's tags are its owner's (403 to others, who see them), no or a
// bad token is a 401.
func TestResourceTagsIsolation(t *testing.T) {
	e := newEnv(t)
	n := e.network("alice", obj{"name": "private"})
	base := "/v2.0/networks/" + n["id"].(string) + "/tags"
	e.must(http.StatusOK, "PUT", base, "alice", obj{"tags": []string{"x"}})
	for _, c := range [][2]string{{"GET", base}, {"GET", base + "/x"}, {"PUT", base + "/y"}, {"DELETE", base + "/x"}, {"DELETE", base}} {
		e.fails(http.StatusNotFound, "NetworkNotFound", c[0], c[1], "bob", nil)
	}
	e.fails(http.StatusNotFound, "NetworkNotFound", "PUT", base, "bob", obj{"tags": []string{}})
	e.must(http.StatusOK, "GET", base, "reader", nil)
	for _, c := range [][2]string{{"PUT", base + "/y"}, {"DELETE", base + "/x"}, {"DELETE", base}} {
		e.fails(http.StatusForbidden, "PolicyNotAuthorized", c[0], c[1], "reader", nil)
	}
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "PUT", base, "reader", obj{"tags": []string{}})
	for _, tok := range []string{"", "bogus"} {
		if code, _ := e.do("GET", base, tok, nil); code != http.StatusUnauthorized {
			t.Errorf("tags with token %q: %d", tok, code)
		}
	}
	shared := e.sharedNet(501, "172.17.0.0/24")
	sbase := "/v2.0/networks/" + shared["id"].(string) + "/tags"
	e.addTag(sbase+"/public", "admin")
	if got := e.must(http.StatusOK, "GET", sbase, "bob", nil); fmt.Sprint(tagsOf(got)) != "[public]" {
		t.Errorf("bob reads the shared network's tags: %v", got)
	}
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "PUT", sbase+"/mine", "bob", nil)
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "DELETE", sbase, "bob", nil)
	// Bob's own port on the shared network is his to tag.
	p := e.port("bob", obj{"network_id": shared["id"]})
	e.addTag("/v2.0/ports/"+p["id"].(string)+"/tags/bobs", "bob")
	e.fails(http.StatusNotFound, "PortNotFound", "GET", "/v2.0/ports/"+p["id"].(string)+"/tags", "alice", nil)
	g := e.must(http.StatusCreated, "POST", "/v2.0/security-groups", "alice", obj{"security_group": obj{"name": "g"}})["security_group"].(obj)
	e.fails(http.StatusNotFound, "SecurityGroupNotFound", "PUT", "/v2.0/security-groups/"+g["id"].(string)+"/tags/x", "bob", nil)
}

// TestBindingProfileKept: an admin's binding:profile is stored, shown to
// admins (never to members) and replaced or cleared by an update; a
// member may not set one (403).
func TestBindingProfileKept(t *testing.T) {
	e := newEnv(t)
	n := e.network("admin", obj{"name": "bp"})
	e.subnet("admin", obj{"network_id": n["id"], "cidr": "10.70.0.0/24"})
	p := e.port("admin", obj{"network_id": n["id"], "binding:host_id": "localhost", "binding:profile": obj{"foo": "bar"}})
	if fmt.Sprint(p["binding:profile"]) != "map[foo:bar]" {
		t.Fatalf("created %v", p["binding:profile"])
	}
	path := "/v2.0/ports/" + p["id"].(string)
	if got := e.must(http.StatusOK, "GET", path, "admin", nil)["port"].(obj); fmt.Sprint(got["binding:profile"]) != "map[foo:bar]" {
		t.Fatalf("shown %v", got["binding:profile"])
	}
	got := e.must(http.StatusOK, "PUT", path, "admin", obj{"port": obj{"binding:profile": obj{}, "binding:host_id": "127.0.0.1"}})["port"].(obj)
	if fmt.Sprint(got["binding:profile"]) != "map[]" || got["binding:host_id"] != "127.0.0.1" {
		t.Fatalf("updated %v", got)
	}
	e.must(http.StatusOK, "PUT", path, "admin", obj{"port": obj{"binding:profile": obj{"x": "y"}}})
	got = e.must(http.StatusOK, "PUT", path, "admin", obj{"port": obj{"binding:profile": nil}})["port"].(obj)
	if fmt.Sprint(got["binding:profile"]) != "map[]" {
		t.Fatalf("after null: %v", got["binding:profile"])
	}
	own := e.network("alice", obj{"name": "own"})
	e.subnet("alice", obj{"network_id": own["id"], "cidr": "10.71.0.0/24"})
	e.fails(http.StatusForbidden, "PolicyNotAuthorized", "POST", "/v2.0/ports", "alice",
		obj{"port": obj{"network_id": own["id"], "binding:profile": obj{"a": "b"}}})
	ap := e.port("alice", obj{"network_id": own["id"]})
	if _, shown := ap["binding:profile"]; shown {
		t.Errorf("a member sees binding:profile: %v", ap)
	}
}
