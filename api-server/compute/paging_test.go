package compute

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// addListedServer stores a server of project p-demo created at at.
func addListedServer(t *testing.T, st *store.Store, id string, at time.Time) {
	t.Helper()
	inst := store.Instance{ID: id, Name: "srv-" + id, ProjectID: "p-demo", UserID: "u-demo", VMState: lifecycle.Active,
		Metadata: "{}", ExtraSpecs: "{}", CreatedAt: at, UpdatedAt: at}
	if err := st.DB.Create(&inst).Error; err != nil {
		t.Fatal(err)
	}
}

// walkServers follows servers_links from path and returns the ids of every
// page in order; between pages it calls between (may be nil).
func walkServers(t *testing.T, f *fixture, path string, between func(page int)) []string {
	t.Helper()
	var ids []string
	for page := 0; ; page++ {
		resp, body := f.do("GET", path, "demo", "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, body)
		}
		for _, s := range body["servers"].([]any) {
			ids = append(ids, s.(map[string]any)["id"].(string))
		}
		links, _ := body["servers_links"].([]any)
		if len(links) == 0 {
			return ids
		}
		next, err := url.Parse(links[0].(map[string]any)["href"].(string))
		if err != nil {
			t.Fatal(err)
		}
		path = next.RequestURI()
		if between != nil {
			between(page)
		}
		if page > 100 {
			t.Fatalf("paging does not end: %v", ids)
		}
	}
}

// TestListServersPagesInDatabase: marker/limit paging, done in the
// database, lists every server exactly once in Nova's order (newest first,
// ties by id), also when servers are created while a client pages, on
// SQLite and PostgreSQL, for /servers and /servers/detail.
func TestListServersPagesInDatabase(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		f := newFixtureOn(t, st)
		base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		var want []string // newest first
		for i := 22; i >= 0; i-- {
			// Three servers share each second: the id breaks the tie.
			addListedServer(t, st, fmt.Sprintf("s%02d", i), base.Add(time.Duration(i/3)*time.Second))
		}
		// Expected order: created_at DESC, id DESC.
		for i := 22; i >= 0; i-- {
			want = append(want, fmt.Sprintf("s%02d", i))
		}
		for _, coll := range []string{"/v2.1/servers", "/v2.1/servers/detail"} {
			got := walkServers(t, f, coll+"?limit=5", nil)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s pages: %v\nwant %v", coll, got, want)
			}
			if got := walkServers(t, f, coll+"?limit=5&marker="+want[6], nil); strings.Join(got, ",") != strings.Join(want[7:], ",") {
				t.Errorf("%s after marker %s: %v", coll, want[6], got)
			}
		}
		// Servers created while a client pages are newer than every marker:
		// the walk neither repeats nor skips any server it started with.
		n := 0
		got := walkServers(t, f, "/v2.1/servers/detail?limit=4", func(page int) {
			for range 2 {
				n++
				addListedServer(t, st, fmt.Sprintf("new%02d", n), time.Now().UTC())
			}
		})
		seen := map[string]int{}
		for _, id := range got {
			seen[id]++
		}
		for _, id := range want {
			if seen[id] != 1 {
				t.Errorf("server %s listed %d times while servers were created (walk %v)", id, seen[id], got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("walk during creates listed %d servers, want the %d it started with: %v", len(got), len(want), got)
		}
		resp, body := f.do("GET", "/v2.1/servers/detail?marker=nope", "demo", "")
		expectFault(t, resp, body, 400, "badRequest")
		resp, body = f.do("GET", "/v2.1/servers?limit=x", "demo", "")
		expectFault(t, resp, body, 400, "badRequest")
		// A marker of another project's server is not found either.
		addOther := store.Instance{ID: "theirs", ProjectID: "p-other", VMState: lifecycle.Active, Metadata: "{}", ExtraSpecs: "{}"}
		if err := st.DB.Create(&addOther).Error; err != nil {
			t.Fatal(err)
		}
		resp, body = f.do("GET", "/v2.1/servers?marker=theirs", "demo", "")
		expectFault(t, resp, body, 400, "badRequest")
	})
}

// TestListHypervisorsPages: from 2.33 os-hypervisors takes limit and
// marker (an id as the microversion shows it: integer below 2.53, UUID
// from it) and links the next page; every host comes exactly once, in id
// order; an unknown marker and paging with a hostname pattern are 400s;
// below 2.33 both parameters are ignored.
func TestListHypervisorsPages(t *testing.T) {
	f := newFixture(t)
	var want []string
	for i := range 7 {
		svc := store.Service{UUID: fmt.Sprintf("0b3b4f4e-2222-4a4a-8b8b-%012d", i), Host: fmt.Sprintf("hv%d", i),
			Binary: store.ComputeBinary, Zone: "nova", VCPUs: 4, MemoryMB: 4096, DiskGB: 40}
		if err := f.st.DB.Create(&svc).Error; err != nil {
			t.Fatal(err)
		}
		want = append(want, svc.Host)
	}
	walk := func(path string, v apiVersion) []string {
		var hosts []string
		for page := 0; page < 20; page++ {
			resp, body := f.do("GET", path, "admin", "", mv(v)...)
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s at %s: %d %v", path, v, resp.StatusCode, body)
			}
			for _, h := range body["hypervisors"].([]any) {
				hosts = append(hosts, h.(map[string]any)["hypervisor_hostname"].(string))
			}
			links, _ := body["hypervisors_links"].([]any)
			if len(links) == 0 {
				return hosts
			}
			next, err := url.Parse(links[0].(map[string]any)["href"].(string))
			if err != nil {
				t.Fatal(err)
			}
			path = next.RequestURI()
		}
		t.Fatalf("paging %s does not end", path)
		return nil
	}
	for _, v := range []apiVersion{{2, 33}, {2, 53}, {2, maxVersion.Minor}} {
		for _, coll := range []string{"/v2.1/os-hypervisors", "/v2.1/os-hypervisors/detail"} {
			if got := walk(coll+"?limit=3", v); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s at %s: pages list %v, want %v", coll, v, got, want)
			}
		}
		resp, body := f.do("GET", "/v2.1/os-hypervisors?marker=nope", "admin", "", mv(v)...)
		expectFault(t, resp, body, 400, "badRequest")
	}
	if got := walk("/v2.1/os-hypervisors?limit=3&marker=nope", apiVersion{2, 32}); len(got) != len(want) {
		t.Errorf("below 2.33 limit and marker are ignored: %v", got)
	}
	resp, body := f.do("GET", "/v2.1/os-hypervisors?limit=2&hypervisor_hostname_pattern=hv", "admin", "", mv(apiVersion{2, 53})...)
	expectFault(t, resp, body, 400, "badRequest")
}
