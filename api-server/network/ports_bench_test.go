package network_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/network"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// BenchmarkPortsList: GET /v2.0/ports?limit=1000 over 10,000 ports of
// one project (each with an address and a security group), as the
// network's owner and as an admin, read a page at a time in the database
// ("paged") and by the in-memory path a boolean filter still takes
// ("in-memory", what every list did before: load every visible port, cut
// the page in Go). Reports p50/p99 of the requests; docs/benchmarks.md.
//
//	go test ./api-server/network -run '^$' -bench PortsList -benchtime 30x
func BenchmarkPortsList(b *testing.B) {
	for _, db := range []struct {
		name string
		open func(testing.TB) *store.Store
	}{{"sqlite", storetest.SQLite}, {"postgres", storetest.Postgres}} {
		b.Run(db.name, func(b *testing.B) {
			st := db.open(b)
			srv := httptest.NewServer(network.New(callers, network.WithStore(st), network.WithConfig(netConfig)).Handler())
			b.Cleanup(srv.Close)
			call := func(method, path, token string, body any) obj {
				var rd io.Reader
				if body != nil {
					raw, _ := json.Marshal(body)
					rd = bytes.NewReader(raw)
				}
				req, _ := http.NewRequest(method, srv.URL+path, rd)
				req.Header.Set("X-Auth-Token", token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				defer resp.Body.Close()
				var out obj
				if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode >= 300 {
					b.Fatalf("%s %s: %d %v %v", method, path, resp.StatusCode, out, err)
				}
				return out
			}
			nid := call("POST", "/v2.0/networks", "alice", obj{"network": obj{"name": "big"}})["network"].(obj)["id"].(string)
			sid := call("POST", "/v2.0/subnets", "alice", obj{"subnet": obj{"network_id": nid, "cidr": "10.40.0.0/16"}})["subnet"].(obj)["id"].(string)
			gid := call("POST", "/v2.0/security-groups", "alice", obj{"security_group": obj{"name": "web"}})["security_group"].(obj)["id"].(string)
			const n = 10000
			base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			ports := make([]store.Port, 0, n)
			var ips []store.IPAllocation
			var groups []store.PortSecurityGroup
			for i := range n {
				id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
				at := base.Add(time.Duration(i) * time.Millisecond)
				ports = append(ports, store.Port{ID: id, NetworkID: nid, ProjectID: "p1", Name: "p",
					MACAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256), Status: "DOWN", AdminStateUp: true,
					PortSecurityEnabled: true, AllowedAddressPairs: "[]", CreatedAt: at, UpdatedAt: at})
				ips = append(ips, store.IPAllocation{SubnetID: sid, IPAddress: fmt.Sprintf("10.40.%d.%d", 1+i/250, 1+i%250),
					PortID: id, NetworkID: nid})
				groups = append(groups, store.PortSecurityGroup{PortID: id, SecurityGroupID: gid})
			}
			for _, rows := range []any{ports, ips, groups} {
				if err := st.DB.Omit("FixedIPs", "Subnet").CreateInBatches(rows, 500).Error; err != nil {
					b.Fatal(err)
				}
			}
			for _, c := range []struct{ name, token, query string }{
				{"member/paged", "alice", ""},
				{"member/in-memory", "alice", "&admin_state_up=true"},
				{"admin/paged", "admin", ""},
				{"admin/in-memory", "admin", "&admin_state_up=true"},
			} {
				b.Run(c.name, func(b *testing.B) {
					// A walk over every page lists each port once.
					seen, path := 0, "/v2.0/ports?limit=1000"+c.query
					for {
						body := call("GET", path, c.token, nil)
						seen += len(body["ports"].([]any))
						links, _ := body["ports_links"].([]any)
						if len(links) == 0 {
							break
						}
						href := links[0].(obj)["href"].(string)
						path = href[len(srv.URL):]
					}
					if seen != n {
						b.Fatalf("a walk listed %d ports, want %d", seen, n)
					}
					var took []time.Duration
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						marker := ""
						if i%10 != 0 {
							marker = fmt.Sprintf("&marker=00000000-0000-4000-8000-%012d", (i%10)*1000-1)
						}
						start := time.Now()
						if got := len(call("GET", "/v2.0/ports?limit=1000"+c.query+marker, c.token, nil)["ports"].([]any)); got != 1000 {
							b.Fatalf("a page of %d ports", got)
						}
						took = append(took, time.Since(start))
					}
					slices.Sort(took)
					b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "p50-ms")
					b.ReportMetric(float64(took[(len(took)*99)/100].Milliseconds()), "p99-ms")
				})
			}
		})
	}
}
