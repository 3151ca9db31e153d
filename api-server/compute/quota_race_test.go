package compute

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// raceRequests sends n requests at once (the i-th to path(i) with
// body(i)) and returns how many got each status.
func (f *fixture) raceRequests(n int, method, token string, path, body func(i int) string) map[int]int {
	f.t.Helper()
	var mu sync.Mutex
	statuses := map[int]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(method, f.srv.URL+path(i), strings.NewReader(body(i)))
			req.Header.Set("X-Auth-Token", token)
			<-start
			resp, err := http.DefaultClient.Do(req)
			code := -1
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return statuses
}

func fixed(s string) func(int) string { return func(int) string { return s } }

func (f *fixture) setQuota(project, body string) {
	f.t.Helper()
	if err := f.st.DB.FirstOrCreate(&store.Project{ID: project, Name: project, DomainID: "default", Enabled: true}).Error; err != nil {
		f.t.Fatal(err)
	}
	if resp, b := f.do("PUT", "/v2.1/os-quota-sets/"+project, "admin", `{"quota_set":`+body+`}`); resp.StatusCode != 200 {
		f.t.Fatalf("set quota %s: %d %v", body, resp.StatusCode, b)
	}
}

func (f *fixture) liveServers(project string) int64 {
	f.t.Helper()
	var n int64
	if err := f.st.DB.Model(&store.Instance{}).Where("project_id = ? AND deleted_at IS NULL", project).Count(&n).Error; err != nil {
		f.t.Fatal(err)
	}
	return n
}

// TestConcurrentCreatesHoldQuota: 40 creates at once against an
// instances quota of 10 record exactly 10 servers, on SQLite and on
// PostgreSQL (where the API's connections run transactions side by side,
// as several API processes would): the quota check and the insert commit
// under the project's quota lock.
func TestConcurrentCreatesHoldQuota(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		f := newFixtureOn(t, st)
		f.setQuota("p-demo", `{"instances":10}`)
		got := f.raceRequests(40, "POST", "demo", fixed("/v2.1/servers"), func(i int) string {
			return fmt.Sprintf(`{"server":{"name":"race-%d","imageRef":"%s","flavorRef":"1"}}`, i, f.image)
		})
		if got[202] != 10 || got[403] != 30 {
			t.Errorf("40 creates on a quota of 10: statuses %v, want 10×202 and 30×403", got)
		}
		if n := f.liveServers("p-demo"); n != 10 {
			t.Errorf("%d servers recorded on a quota of 10", n)
		}
		// Multi-creates (min_count 1, max_count 3) racing over cores: the
		// project ends at exactly its 12 cores, never over.
		f.setQuota("p-demo", `{"instances":-1,"cores":22}`)
		got = f.raceRequests(10, "POST", "demo", fixed("/v2.1/servers"), func(i int) string {
			return fmt.Sprintf(`{"server":{"name":"multi-%d","imageRef":"%s","flavorRef":"1","max_count":3}}`, i, f.image)
		})
		if n := f.liveServers("p-demo"); n != 22 {
			t.Errorf("multi-creates on a cores quota of 22 (10 used): %d servers, want 22 (statuses %v)", n, got)
		}
	})
}

// TestConcurrentResizesHoldQuota: ten servers of 1 vCPU each on a cores
// quota of 13 all ask to grow to 4 vCPUs at once: exactly one resize
// fits (10 + 3 = 13) and is accepted, the rest get Nova's 403.
func TestConcurrentResizesHoldQuota(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		f := newFixtureOn(t, st)
		if err := f.st.DB.Create(&store.Flavor{FlavorID: "4c", Name: "m1.quad", VCPUs: 4, MemoryMB: 128, RootGB: 1,
			IsPublic: true, RxtxFactor: 1}).Error; err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := range 10 {
			id := f.create("demo", fmt.Sprintf("vm%d", i))
			f.placeActive(id, 64)
			ids = append(ids, id)
		}
		f.setQuota("p-demo", `{"cores":13}`)
		got := f.raceRequests(len(ids), "POST", "demo", func(i int) string { return "/v2.1/servers/" + ids[i] + "/action" },
			fixed(`{"resize":{"flavorRef":"4c"}}`))
		if got[202] != 1 || got[403] != 9 {
			t.Errorf("10 resizes +3 cores on 3 cores left: statuses %v, want 1×202 and 9×403", got)
		}
		var cores int64
		if err := f.st.DB.Model(&store.Instance{}).Where("project_id = ? AND deleted_at IS NULL", "p-demo").
			Select("COALESCE(SUM(vcpus),0)").Scan(&cores).Error; err != nil {
			t.Fatal(err)
		}
		if cores != 13 {
			t.Errorf("project holds %d cores after the resizes, want 13", cores)
		}
	})
}

// TestConcurrentMetadataHoldsQuota: 40 requests each adding its own item
// to one server at once, on a metadata_items quota of 10: exactly 10 are
// kept (none lost, none over), the rest get Nova's 403.
func TestConcurrentMetadataHoldsQuota(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		f := newFixtureOn(t, st)
		id := f.create("demo", "vm")
		f.activate(id, "h1")
		f.setQuota("p-demo", `{"metadata_items":10}`)
		got := f.raceRequests(40, "POST", "demo", fixed("/v2.1/servers/"+id+"/metadata"), func(i int) string {
			return fmt.Sprintf(`{"metadata":{"k%d":"v"}}`, i)
		})
		if got[200] != 10 || got[403] != 30 {
			t.Errorf("40 metadata adds on a quota of 10: statuses %v, want 10×200 and 30×403", got)
		}
		if m := jsonMap(f.instance(id).Metadata); len(m) != 10 {
			t.Errorf("server keeps %d items, want 10: %v", len(m), m)
		}
	})
}

// TestServerPortsCountAgainstNetworkQuota: the port a server create makes
// on a network counts against the project's Neutron port quota; past it
// the create is Nova's 403 and leaves no server behind.
func TestServerPortsCountAgainstNetworkQuota(t *testing.T) {
	f := newFixture(t)
	n := f.addNetwork("net1", "p-demo", "10.9.0.0/24", false)
	if err := f.st.SetNetworkQuotaLimits(context.Background(), "p-demo", map[string]int{"port": 1}, nil); err != nil {
		t.Fatal(err)
	}
	create := func(name string) (*http.Response, map[string]any) {
		return f.do("POST", "/v2.1/servers", "demo",
			`{"server":{"name":"`+name+`","imageRef":"`+imageID+`","flavorRef":"1","networks":[{"uuid":"`+n.ID+`"}]}}`)
	}
	if resp, body := create("a"); resp.StatusCode != 202 {
		t.Fatalf("first server: %d %v", resp.StatusCode, body)
	}
	resp, body := create("b")
	expectFault(t, resp, body, 403, "forbidden")
	if msg := body["forbidden"].(map[string]any)["message"]; msg != "Maximum number of ports exceeded" {
		t.Errorf("message %q", msg)
	}
	if n := f.liveServers("p-demo"); n != 1 {
		t.Errorf("%d servers recorded, want 1", n)
	}
}
