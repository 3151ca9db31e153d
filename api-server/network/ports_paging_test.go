package network_test

import (
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// walkPorts follows ports_links from path as token and returns the ids of
// every page in order.
func walkPorts(e *env, path, token string) []string {
	e.t.Helper()
	var got []string
	for page := 0; ; page++ {
		body := e.must(200, "GET", path, token, nil)
		got = append(got, ids(body["ports"])...)
		links, _ := body["ports_links"].([]any)
		if len(links) == 0 {
			return got
		}
		next, err := url.Parse(links[0].(obj)["href"].(string))
		if err != nil {
			e.t.Fatal(err)
		}
		path = next.RequestURI()
		if page > 100 {
			e.t.Fatalf("paging does not end: %v", got)
		}
	}
}

// TestListPortsPagesInDatabase: limit/marker paging of the ports list,
// read a page at a time from the database, lists every port the caller
// may see exactly once in creation order (ties by id), for a member (own
// ports and those on its networks, not another project's on a shared
// network) and an admin, with filters and fields, on SQLite and
// PostgreSQL; unknown or invisible markers are PortNotFound, and the
// in-memory path (sort_key, fixed_ips) still pages.
func TestListPortsPagesInDatabase(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		e := newEnvOn(t, st)
		nid := e.network("alice", obj{"name": "net"})["id"].(string)
		e.subnet("alice", obj{"network_id": nid, "cidr": "10.254.102.0/24"})
		shared := e.network("admin", obj{"name": "public", "shared": true})["id"].(string)
		e.subnet("admin", obj{"network_id": shared, "cidr": "172.16.5.0/24"})
		var alice []string
		for range 11 {
			alice = append(alice, e.port("alice", obj{"network_id": nid, "name": "a"})["id"].(string))
		}
		// Another project's port on alice's network: she sees it.
		alice = append(alice, e.port("admin", obj{"network_id": nid, "tenant_id": "p2", "name": "b"})["id"].(string))
		bobs := e.port("bob", obj{"network_id": shared})["id"].(string)
		// Three ports share each second: the id breaks the tie.
		base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		all := append(slices.Clone(alice), bobs)
		for i, id := range all {
			if err := st.DB.Model(&store.Port{}).Where("id = ?", id).Update("created_at", base.Add(time.Duration(i/3)*time.Second)).Error; err != nil {
				t.Fatal(err)
			}
		}
		inOrder := func(list []string) []string {
			pos := map[string]int{}
			for i, id := range all {
				pos[id] = i / 3
			}
			out := slices.Clone(list)
			slices.SortFunc(out, func(a, b string) int {
				if pos[a] != pos[b] {
					return pos[a] - pos[b]
				}
				return strings.Compare(a, b)
			})
			return out
		}
		check := func(name string, got, want []string) {
			t.Helper()
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s: %v\nwant %v", name, got, want)
			}
		}
		want := inOrder(alice)
		check("alice, limit 5", walkPorts(e, "/v2.0/ports?limit=5", "alice"), want)
		check("alice, limit 1, fields", walkPorts(e, "/v2.0/ports?limit=1&fields=id", "alice"), want)
		check("alice, no limit", walkPorts(e, "/v2.0/ports", "alice"), want)
		check("alice after a marker", walkPorts(e, "/v2.0/ports?limit=4&marker="+want[3], "alice"), want[4:])
		check("admin, limit 4", walkPorts(e, "/v2.0/ports?limit=4", "admin"), inOrder(all))
		// bob (p2) sees his own ports: the one on the shared network and the one
		// an admin made for p2 on alice's network.
		check("bob", walkPorts(e, "/v2.0/ports?limit=1", "bob"), inOrder([]string{alice[len(alice)-1], bobs}))
		check("project filter", walkPorts(e, "/v2.0/ports?limit=2&tenant_id=p2", "alice"), alice[len(alice)-1:])
		var named []string
		for _, id := range want {
			if id != alice[len(alice)-1] {
				named = append(named, id)
			}
		}
		check("name filter", walkPorts(e, "/v2.0/ports?limit=3&name=a&name=zz", "alice"), named)
		// The in-memory path (a sort key) pages as before.
		byID := slices.Clone(alice)
		slices.Sort(byID)
		check("sort_key=id", walkPorts(e, "/v2.0/ports?limit=5&sort_key=id", "alice"), byID)
		if got := walkPorts(e, "/v2.0/ports?limit=5&tags=x", "alice"); len(got) != 0 {
			t.Errorf("tags filter lists %v", got)
		}
		e.fails(404, "PortNotFound", "GET", "/v2.0/ports?limit=2&marker=nope", "alice", nil)
		e.fails(404, "PortNotFound", "GET", "/v2.0/ports?limit=2&marker="+bobs, "alice", nil)
		e.fails(404, "PortNotFound", "GET", "/v2.0/ports?limit=2&name=zz&marker="+want[0], "alice", nil)
		e.fails(400, "InvalidInput", "GET", "/v2.0/ports?limit=x", "alice", nil)
		e.fails(400, "HTTPBadRequest", "GET", "/v2.0/ports?binding:host_id=h", "alice", nil)
	})
}

// TestPortsListQueriesDoNotGrowWithPorts: a page of the ports list costs
// the same number of database queries for 3 ports as for 12 (its fixed
// IPs and security groups are loaded for the whole page at once).
func TestPortsListQueriesDoNotGrowWithPorts(t *testing.T) {
	e := newEnv(t)
	nid := e.network("alice", obj{"name": "net"})["id"].(string)
	e.subnet("alice", obj{"network_id": nid, "cidr": "10.254.103.0/24"})
	var queries atomic.Int64
	count := func(*gorm.DB) { queries.Add(1) }
	for _, err := range []error{
		e.st.DB.Callback().Query().After("gorm:query").Register("test:count_query", count),
		e.st.DB.Callback().Row().After("gorm:row").Register("test:count_row", count),
		e.st.DB.Callback().Raw().After("gorm:raw").Register("test:count_raw", count),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	listed := func(path, token string) (int, int64) {
		t.Helper()
		queries.Store(0)
		body := e.must(200, "GET", path, token, nil)
		ports := body["ports"].([]any)
		for _, p := range ports {
			if len(p.(obj)["fixed_ips"].([]any)) != 1 {
				t.Fatalf("listed port without its address: %v", p)
			}
		}
		return len(ports), queries.Load()
	}
	add := func(n int) {
		for range n {
			e.port("alice", obj{"network_id": nid})
		}
	}
	add(3)
	paths := []string{"/v2.0/ports", "/v2.0/ports?limit=20", "/v2.0/ports?network_id=" + nid}
	var few []int64
	for _, p := range paths {
		for _, tok := range []string{"alice", "admin"} {
			n, q := listed(p, tok)
			if n != 3 {
				t.Fatalf("%s as %s lists %d ports, want 3", p, tok, n)
			}
			few = append(few, q)
		}
	}
	add(9)
	i := 0
	for _, p := range paths {
		for _, tok := range []string{"alice", "admin"} {
			n, q := listed(p, tok)
			if n != 12 {
				t.Fatalf("%s as %s lists %d ports, want 12", p, tok, n)
			}
			if q != few[i] {
				t.Errorf("%s as %s: %d queries for 12 ports, %d for 3", p, tok, q, few[i])
			}
			i++
		}
	}
}
