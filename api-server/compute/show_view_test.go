package compute

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// countQueries counts the queries f's store runs from now on.
func (f *fixture) countQueries() *atomic.Int64 {
	f.t.Helper()
	var n atomic.Int64
	count := func(*gorm.DB) { n.Add(1) }
	for _, err := range []error{
		f.st.DB.Callback().Query().After("gorm:query").Register("test:count_query", count),
		f.st.DB.Callback().Row().After("gorm:row").Register("test:count_row", count),
		f.st.DB.Callback().Raw().After("gorm:raw").Register("test:count_raw", count),
	} {
		if err != nil {
			f.t.Fatal(err)
		}
	}
	return &n
}

// richServers makes two servers of p-demo on host h1 with all a view
// shows: several NICs on several networks (one NIC with two fixed IPs),
// two security groups, metadata, tags, two volumes attached, locked with
// a reason; the second is in ERROR with a fault. It returns their ids.
func (f *fixture) richServers() []string {
	f.t.Helper()
	ctx := context.Background()
	netA := f.addNetwork("net-a", "p-demo", "10.32.0.0/24", false)
	netB := f.addNetwork("net-b", "p-demo", "10.33.0.0/24", false)
	netC := f.addNetwork("net-c", "p-demo", "10.34.0.0/24", false)
	f.serveInterfaces("h1")
	f.addHost("h1", false, false)
	for _, name := range []string{"web", "db"} {
		if err := f.st.CreateSecurityGroup(ctx, &store.SecurityGroup{ProjectID: "p-demo", Name: name, Stateful: true}); err != nil {
			f.t.Fatal(err)
		}
	}
	var ids []string
	for i := range 2 {
		body := fmt.Sprintf(`{"server":{"name":"rich-%d","imageRef":"%s","flavorRef":"2","metadata":{"k":"v","n":"%d"},`+
			`"networks":[{"uuid":"%s"},{"uuid":"%s"},{"uuid":"%s"},{"uuid":"%s"}],`+
			`"security_groups":[{"name":"web"},{"name":"db"}]}}`, i, imageID, i, netA.ID, netB.ID, netA.ID, netC.ID)
		resp, out := f.do("POST", "/v2.1/servers", "demo", body)
		if resp.StatusCode != 202 {
			f.t.Fatalf("create: %d %v", resp.StatusCode, out)
		}
		id := out["server"].(map[string]any)["id"].(string)
		ids = append(ids, id)
		f.activate(id, "h1")
		ports := f.portsOf(id)
		if len(ports) != 4 {
			f.t.Fatalf("server %s has %d NICs, want 4", id, len(ports))
		}
		// A second fixed IP on the first NIC: the first free address
		// from .200 (the allocator picks addresses at random, so a
		// fixed one may be taken already).
		var taken []string
		if err := f.st.DB.Model(&store.IPAllocation{}).Where("subnet_id = ?", ports[0].FixedIPs[0].SubnetID).
			Pluck("ip_address", &taken).Error; err != nil {
			f.t.Fatal(err)
		}
		addr := ""
		for n := 200; n < 255 && addr == ""; n++ {
			if a := fmt.Sprintf("10.32.0.%d", n); !slices.Contains(taken, a) {
				addr = a
			}
		}
		extra := store.IPAllocation{SubnetID: ports[0].FixedIPs[0].SubnetID, IPAddress: addr,
			PortID: ports[0].ID, NetworkID: ports[0].NetworkID}
		if err := f.st.DB.Create(&extra).Error; err != nil {
			f.t.Fatal(err)
		}
		if resp, out := f.do("PUT", "/v2.1/servers/"+id+"/tags", "demo", `{"tags":["blue","alpha"]}`,
			"X-OpenStack-Nova-API-Version", "2.26"); resp.StatusCode != 200 {
			f.t.Fatalf("tags: %d %v", resp.StatusCode, out)
		}
		now := time.Now().UTC()
		for j, vol := range []string{"vol-b-" + id[:8], "vol-a-" + id[:8]} {
			f.addVolume(vol, "p-demo", "h1")
			att := store.VolumeAttachment{ID: "att-" + vol, VolumeID: vol, InstanceID: id, Host: "h1",
				Device: fmt.Sprintf("/dev/vd%c", 'b'+j), MountPath: "/mnt/" + vol, DeleteOnTermination: j == 0,
				Status: "attached", CreatedAt: now.Add(time.Duration(j) * time.Second)}
			if err := f.st.DB.Create(&att).Error; err != nil {
				f.t.Fatal(err)
			}
		}
		if resp, out := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"lock":{"locked_reason":"audit"}}`,
			"X-OpenStack-Nova-API-Version", "2.73"); resp.StatusCode != 202 {
			f.t.Fatalf("lock: %d %v", resp.StatusCode, out)
		}
	}
	f.setState(ids[1], lifecycle.Error, lifecycle.NoTask)
	at := time.Now().UTC().Add(-time.Minute)
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", ids[1]).Updates(map[string]any{
		"fault_code": 500, "fault_message": "boom", "fault_details": "trace", "fault_at": at}).Error; err != nil {
		f.t.Fatal(err)
	}
	return ids
}

// TestShowMatchesDetail: GET /servers/{id} and the same server in GET
// /servers/detail are the same view, field by field, for a member and an
// admin at each microversion where the view changes, for a server with
// several NICs on several networks, security groups, volumes, tags,
// metadata, a lock and (the second) a fault. The show renders through the
// list's batched loader; this keeps the two from drifting apart.
func TestShowMatchesDetail(t *testing.T) {
	f := newFixture(t).future(apiVersion{2, 100})
	ids := f.richServers()
	for _, token := range []string{"demo", "admin"} {
		for _, v := range []string{"2.1", "2.16", "2.47", "2.71", "2.73", "2.96", "2.98", "2.100"} {
			hdr := []string{"X-OpenStack-Nova-API-Version", v}
			minor, _ := strconv.Atoi(strings.TrimPrefix(v, "2."))
			resp, list := f.do("GET", "/v2.1/servers/detail?all_tenants=1", token, "", hdr...)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: detail %d %v", token, v, resp.StatusCode, list)
			}
			listed := map[string]map[string]any{}
			for _, s := range list["servers"].([]any) {
				listed[s.(map[string]any)["id"].(string)] = s.(map[string]any)
			}
			for _, id := range ids {
				resp, shown := f.do("GET", "/v2.1/servers/"+id, token, "", hdr...)
				if resp.StatusCode != 200 {
					t.Fatalf("%s %s: show %d %v", token, v, resp.StatusCode, shown)
				}
				show, detail := shown["server"].(map[string]any), listed[id]
				if detail == nil {
					t.Fatalf("%s %s: server %s not in the detailed list", token, v, id)
				}
				// server_groups (2.71) is the show's only: Nova's list
				// does not show it.
				if sg, ok := show["server_groups"]; ok != (minor >= 71) {
					t.Errorf("%s %s: server_groups %v present=%v", token, v, sg, ok)
				}
				delete(show, "server_groups")
				for _, k := range slices.Sorted(maps.Keys(show)) {
					if !reflect.DeepEqual(show[k], detail[k]) {
						a, _ := json.Marshal(show[k])
						b, _ := json.Marshal(detail[k])
						t.Errorf("%s %s server %s: %q show %s, detail %s", token, v, id, k, a, b)
					}
				}
				for k := range detail {
					if _, ok := show[k]; !ok {
						t.Errorf("%s %s server %s: %q in detail only", token, v, id, k)
					}
				}
			}
		}
	}
	// The fixture is what it says: the views carry what is compared.
	_, shown := f.do("GET", "/v2.1/servers/"+ids[1], "admin", "", "X-OpenStack-Nova-API-Version", "2.96")
	s := shown["server"].(map[string]any)
	addrs := s["addresses"].(map[string]any)
	if len(addrs) != 3 || len(addrs["net-a"].([]any)) != 3 || len(s["security_groups"].([]any)) != 2 ||
		len(s["os-extended-volumes:volumes_attached"].([]any)) != 2 || len(s["tags"].([]any)) != 2 ||
		s["fault"] == nil || s["locked_reason"] != "audit" || s["host_status"] != "UP" {
		t.Fatalf("rich server's view lacks what the test compares: %v", s)
	}
}

// TestShowQueriesDoNotGrowWithNICs: GET /servers/{id} costs the same
// number of database queries for a server with one NIC as for one with
// four on three networks in two security groups with two volumes (the
// show loads them as the detailed list does, a few queries in all).
// Clients poll the show while a server builds (openstack --wait,
// gophercloud WaitForStatus).
func TestShowQueriesDoNotGrowWithNICs(t *testing.T) {
	f := newFixture(t)
	ids := f.richServers()
	resp, out := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"plain","imageRef":"`+imageID+
		`","flavorRef":"1","networks":[{"uuid":"`+f.portsOf(ids[0])[0].NetworkID+`"}]}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, out)
	}
	plain := out["server"].(map[string]any)["id"].(string)
	f.activate(plain, "h1")
	queries := f.countQueries()
	// The count is the database's, so a background query of the
	// fixture's (the membership refresher's timer) can land in one show's
	// count: the fewest of five shows is the show's own.
	shown := func(id, token string) int64 {
		t.Helper()
		fewest := int64(-1)
		for range 5 {
			queries.Store(0)
			resp, body := f.do("GET", "/v2.1/servers/"+id, token, "", "X-OpenStack-Nova-API-Version", "2.96")
			if resp.StatusCode != 200 {
				t.Fatalf("show: %d %v", resp.StatusCode, body)
			}
			if n := queries.Load(); fewest < 0 || n < fewest {
				fewest = n
			}
		}
		return fewest
	}
	for _, token := range []string{"demo", "admin"} {
		one, four := shown(plain, token), shown(ids[0], token)
		t.Logf("%s: show of 1 NIC: %d queries; of 4 NICs on 3 networks, 2 groups, 2 volumes: %d", token, one, four)
		if four > one {
			t.Errorf("%s: show of 1 NIC in %d queries, of 4 NICs in %d: the show queries per NIC", token, one, four)
		}
	}
}

// BenchmarkServerShow is GET /servers/{id} of a server with four NICs on
// three networks, two security groups and two volumes, as a member at
// 2.96, over HTTP on SQLite (docs/benchmarks.md).
func BenchmarkServerShow(b *testing.B) {
	f := newFixture(b)
	id := f.richServers()[0]
	for b.Loop() {
		if resp, body := f.do("GET", "/v2.1/servers/"+id, "demo", "", "X-OpenStack-Nova-API-Version", "2.96"); resp.StatusCode != 200 {
			b.Fatalf("show: %d %v", resp.StatusCode, body)
		}
	}
}
