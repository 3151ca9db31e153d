package compute

import (
	"context"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/store"
)

// TestServersDetailQueriesDoNotGrowWithServers: a page of the detailed
// servers list costs the same number of database queries for 2 servers
// as for 9, each with a NIC in a security group (its views load a
// page's NICs, networks and groups together). A view that queried per
// server once made ?limit=1000 over 10,000 servers take 3.5 s instead of
// 90 ms (docs/benchmarks.md, P7).
func TestServersDetailQueriesDoNotGrowWithServers(t *testing.T) {
	f := newFixture(t)
	f.addNetwork("net", "p-demo", "10.32.0.0/24", false)
	f.serveInterfaces("h1")
	web := &store.SecurityGroup{ProjectID: "p-demo", Name: "web", Stateful: true}
	if err := f.st.CreateSecurityGroup(context.Background(), web); err != nil {
		t.Fatal(err)
	}
	var queries atomic.Int64
	count := func(*gorm.DB) { queries.Add(1) }
	for _, err := range []error{
		f.st.DB.Callback().Query().After("gorm:query").Register("test:count_query", count),
		f.st.DB.Callback().Row().After("gorm:row").Register("test:count_row", count),
		f.st.DB.Callback().Raw().After("gorm:raw").Register("test:count_raw", count),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	listed := func(admin bool) (int, int64) {
		t.Helper()
		token, path := "demo", "/v2.1/servers/detail"
		if admin {
			token, path = "admin", path+"?all_tenants=1"
		}
		queries.Store(0)
		resp, body := f.do("GET", path, token, "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, body)
		}
		servers := body["servers"].([]any)
		for _, s := range servers {
			if groups, _ := s.(map[string]any)["security_groups"].([]any); len(groups) != 1 {
				t.Fatalf("a listed server's security_groups: %v, want [web]", s.(map[string]any)["security_groups"])
			}
		}
		return len(servers), queries.Load()
	}
	create := func(n int) {
		for range n {
			resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"s","imageRef":"`+imageID+
				`","flavorRef":"1","security_groups":[{"name":"web"}]}}`)
			if resp.StatusCode != 202 {
				t.Fatalf("create: %d %v", resp.StatusCode, body)
			}
			f.activate(body["server"].(map[string]any)["id"].(string), "h1")
		}
	}
	create(2)
	few, fewQ := map[bool]int{}, map[bool]int64{}
	for _, admin := range []bool{false, true} {
		few[admin], fewQ[admin] = listed(admin)
	}
	create(7) // the project's instance quota is 10
	for _, admin := range []bool{false, true} {
		n, q := listed(admin)
		if n <= few[admin] {
			t.Fatalf("listed %d then %d servers", few[admin], n)
		}
		if q > fewQ[admin] {
			t.Errorf("admin=%v: %d servers listed in %d queries, %d servers in %d: a view queries per server",
				admin, few[admin], fewQ[admin], n, q)
		}
	}
}
