package network_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// TestQuotas: what `openstack quota show` and `quota set` ask Neutron
// for, in Neutron's body form, with real counts in the details; limits an
// admin sets are shown, listed and enforced, and DELETE puts the defaults
// back. Only admins change them or read another project's.
func TestQuotas(t *testing.T) {
	e := newEnv(t)
	n := e.network("alice", obj{"name": "n1"})
	e.subnet("alice", obj{"network_id": n["id"], "cidr": "10.7.0.0/24", "ip_version": 4})
	e.port("alice", obj{"network_id": n["id"]})
	e.port("alice", obj{"network_id": n["id"]})

	want := map[string]float64{"network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50,
		"security_group": 10, "security_group_rule": 100}
	for _, path := range []string{"/v2.0/quotas/p1", "/v2.0/quotas/p1/default"} {
		q := e.must(http.StatusOK, "GET", path, "alice", nil)["quota"].(obj)
		for k, n := range want {
			if q[k] != n {
				t.Errorf("%s: %s = %v, want %v", path, k, q[k], n)
			}
		}
	}
	for _, path := range []string{"/v2.0/quotas/p1/details", "/v2.0/quotas/p1/details.json"} {
		d := e.must(http.StatusOK, "GET", path, "alice", nil)["quota"].(obj)
		for k, used := range map[string]float64{"network": 1, "subnet": 1, "port": 2, "router": 0, "security_group": 1} {
			v := d[k].(obj)
			if v["used"] != used || v["limit"] != want[k] || v["reserved"] != float64(0) {
				t.Errorf("%s %s = %v, want used %v of %v", path, k, v, used, want[k])
			}
		}
	}
	if d := e.must(http.StatusOK, "GET", "/v2.0/quotas/p2/details", "admin", nil)["quota"].(obj); d["port"].(obj)["used"] != float64(0) {
		t.Errorf("p2 details count p1's ports: %v", d["port"])
	}
	if l := e.must(http.StatusOK, "GET", "/v2.0/quotas", "admin", nil)["quotas"].([]any); len(l) != 0 {
		t.Errorf("quota list before any set = %v", l)
	}

	// What `openstack quota set --networks 2 --ports 3 p1` sends.
	q := e.must(http.StatusOK, "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"network": 2, "port": "3", "force": true}})["quota"].(obj)
	if q["network"] != float64(2) || q["port"] != float64(3) || q["subnet"] != float64(100) {
		t.Errorf("PUT answered %v", q)
	}
	if q := e.must(http.StatusOK, "GET", "/v2.0/quotas/p1", "alice", nil)["quota"].(obj); q["network"] != float64(2) || q["port"] != float64(3) {
		t.Errorf("GET after PUT = %v", q)
	}
	l := e.must(http.StatusOK, "GET", "/v2.0/quotas", "admin", nil)["quotas"].([]any)
	if len(l) != 1 || l[0].(obj)["project_id"] != "p1" || l[0].(obj)["tenant_id"] != "p1" || l[0].(obj)["network"] != float64(2) {
		t.Errorf("quota list = %v", l)
	}
	e.network("alice", obj{"name": "n2"})
	e.fails(http.StatusConflict, "OverQuota", "POST", "/v2.0/networks", "alice", obj{"network": obj{"name": "n3"}})
	e.port("alice", obj{"network_id": n["id"]})
	e.fails(http.StatusConflict, "OverQuota", "POST", "/v2.0/ports", "alice", obj{"port": obj{"network_id": n["id"]}})
	// Another project is not limited by p1's quota (the test config has 3
	// tenant VLANs: p1 holds 2).
	e.network("bob", obj{"name": "b1"})

	// check_limit refuses a limit under the usage; bad values and keys
	// are 400s.
	e.fails(http.StatusConflict, "InvalidQuotaValue", "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"port": 1, "check_limit": true}})
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"network": -2}})
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"network": "many"}})
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"volumes": 5}})
	e.fails(http.StatusBadRequest, "HTTPBadRequest", "PUT", "/v2.0/quotas/p1", "admin", obj{"network": 5})

	e.must(http.StatusNoContent, "DELETE", "/v2.0/quotas/p1", "admin", nil)
	if q := e.must(http.StatusOK, "GET", "/v2.0/quotas/p1", "alice", nil)["quota"].(obj); q["network"] != float64(100) {
		t.Errorf("after DELETE: %v", q)
	}
	e.port("alice", obj{"network_id": n["id"]})
}

// TestQuotaIsolation: a member reads only its own project's quota (403
// PolicyNotAuthorized for another's, as Neutron's get_quota), only admins
// list, set or reset quotas (a member or reader gets 403), and no or a
// garbage token is a 401.
func TestQuotaIsolation(t *testing.T) {
	e := newEnv(t)
	set := obj{"quota": obj{"network": 1}}
	for _, c := range []struct {
		method, path, token string
		body                any
	}{
		{"GET", "/v2.0/quotas/p2", "alice", nil},
		{"GET", "/v2.0/quotas/p2/default", "alice", nil},
		{"GET", "/v2.0/quotas/p2/details", "alice", nil},
		{"GET", "/v2.0/quotas/p2/details.json", "alice", nil},
		{"GET", "/v2.0/quotas", "alice", nil},
		{"PUT", "/v2.0/quotas/p2", "alice", set},
		{"PUT", "/v2.0/quotas/p1", "alice", set},
		{"DELETE", "/v2.0/quotas/p1", "alice", nil},
		{"PUT", "/v2.0/quotas/p1", "reader", set},
		{"DELETE", "/v2.0/quotas/p1", "reader", nil},
	} {
		e.fails(http.StatusForbidden, "PolicyNotAuthorized", c.method, c.path, c.token, c.body)
	}
	e.must(http.StatusOK, "GET", "/v2.0/quotas/p1", "reader", nil)
	for _, tok := range []string{"", "garbage"} {
		for _, c := range []struct{ method, path string }{{"GET", "/v2.0/quotas"}, {"GET", "/v2.0/quotas/p1"},
			{"GET", "/v2.0/quotas/p1/details.json"}, {"PUT", "/v2.0/quotas/p1"}, {"DELETE", "/v2.0/quotas/p1"}} {
			if code, _ := e.do(c.method, c.path, tok, set); code != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %d, want 401", c.method, c.path, tok, code)
			}
		}
	}
	if q := e.must(http.StatusOK, "GET", "/v2.0/quotas/p1", "alice", nil)["quota"].(obj); q["network"] != float64(100) {
		t.Errorf("a refused PUT changed the quota: %v", q)
	}
}

// race sends n POSTs to path as token at once (body(i) the i-th) and
// counts the statuses.
func (e *env) race(n int, path, token string, body func(i int) obj) map[int]int {
	e.t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	got := map[int]int{}
	start := make(chan struct{})
	for i := range n {
		b, _ := json.Marshal(body(i))
		req, _ := http.NewRequest("POST", e.srv.URL+path, bytes.NewReader(b))
		req.Header.Set("X-Auth-Token", token)
		req.Header.Set("Content-Type", "application/json")
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code := -1
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			got[code]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return got
}

// TestConcurrentCreatesHoldNetworkQuota: 40 network creates at once on a
// network quota of 10 make exactly 10 networks, and 40 port creates at
// once on a port quota of 10 exactly 10 ports, on SQLite and on
// PostgreSQL: the count and the insert commit under the project's network
// quota lock.
func TestConcurrentCreatesHoldNetworkQuota(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		e := newEnvOn(t, st)
		e.must(http.StatusOK, "PUT", "/v2.0/quotas/p-admin", "admin", obj{"quota": obj{"network": 10}})
		got := e.race(40, "/v2.0/networks", "admin", func(i int) obj {
			return obj{"network": obj{"name": fmt.Sprintf("race%d", i), "provider:network_type": "vlan",
				"provider:physical_network": "physnet1", "provider:segmentation_id": 1000 + i}}
		})
		var n int64
		st.DB.Model(&store.Network{}).Where("project_id = ?", "p-admin").Count(&n)
		if got[201] != 10 || got[409] != 30 || n != 10 {
			t.Errorf("40 network creates on a quota of 10: statuses %v, %d networks recorded", got, n)
		}

		net := e.network("alice", obj{"name": "ports"})
		e.subnet("alice", obj{"network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4})
		e.must(http.StatusOK, "PUT", "/v2.0/quotas/p1", "admin", obj{"quota": obj{"port": 10}})
		got = e.race(40, "/v2.0/ports", "alice", func(int) obj { return obj{"port": obj{"network_id": net["id"]}} })
		st.DB.Model(&store.Port{}).Where("project_id = ?", "p1").Count(&n)
		if got[201] != 10 || got[409] != 30 || n != 10 {
			t.Errorf("40 port creates on a quota of 10: statuses %v, %d ports recorded", got, n)
		}
	})
}
