package compute

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

// addComputeHost registers compute host name with agent zone zone, alive.
func (f *fixture) addComputeHost(name, zone string) {
	f.t.Helper()
	now := time.Now().UTC()
	svc := store.Service{UUID: "svc-" + name, Host: name, Binary: store.ComputeBinary, Zone: zone, AgentZone: zone,
		LastHeartbeat: &now, VCPUs: 8, MemoryMB: 8192, DiskGB: 100, CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}
	if err := f.st.DB.Create(&svc).Error; err != nil {
		f.t.Fatal(err)
	}
}

// hostZone is the zone os-services shows for compute host name.
func (f *fixture) hostZone(name string) string {
	f.t.Helper()
	_, body := f.do("GET", "/v2.1/os-services?binary=nova-compute&host="+name, "admin", "")
	svcs := body["services"].([]any)
	if len(svcs) != 1 {
		f.t.Fatalf("os-services for %s: %v", name, body)
	}
	return svcs[0].(map[string]any)["zone"].(string)
}

// zoneNames is the zones os-availability-zone lists.
func (f *fixture) zoneNames() []string {
	f.t.Helper()
	_, body := f.do("GET", "/v2.1/os-availability-zone", "demo", "")
	var out []string
	for _, z := range body["availabilityZoneInfo"].([]any) {
		out = append(out, z.(map[string]any)["zoneName"].(string))
	}
	slices.Sort(out)
	return out
}

// TestContractAggregates runs Tempest's aggregate flows (create, show,
// list, update, add and remove a host, set and unset metadata, delete)
// through Tempest's schemas at every microversion.
func TestContractAggregates(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	f.addComputeHost("agg-h1", "")
	for _, v := range allVersions() {
		name := "agg-" + v.String()
		created := f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/os-aggregates",
			`{"aggregate":{"name":"` + name + `","availability_zone":"az-` + v.String() + `"}}`, "aggregates", "create_aggregate"})
		agg := created["aggregate"].(map[string]any)
		id := fmt.Sprint(agg["id"])
		if agg["name"] != name || agg["availability_zone"] != "az-"+v.String() || agg["updated_at"] != nil {
			t.Fatalf("%s created %v", v, agg)
		}
		if _, has := agg["uuid"]; has != v.AtLeast(41) {
			t.Errorf("%s uuid shown: %v", v, has)
		}
		p := "/v2.1/os-aggregates/" + id
		shown := f.check(t, ts, v, contractCall{"admin", "GET", p, "", "aggregates", "get_aggregate"})["aggregate"].(map[string]any)
		if shown["metadata"].(map[string]any)["availability_zone"] != "az-"+v.String() || len(shown["hosts"].([]any)) != 0 {
			t.Errorf("%s shown %v", v, shown)
		}
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-aggregates", "", "aggregates", "list_aggregates"})
		upd := f.check(t, ts, v, contractCall{"admin", "PUT", p, `{"aggregate":{"name":"` + name + `-new"}}`,
			"aggregates", "update_aggregate"})["aggregate"].(map[string]any)
		if upd["name"] != name+"-new" || upd["availability_zone"] != "az-"+v.String() {
			t.Errorf("%s updated %v", v, upd)
		}
		added := f.check(t, ts, v, contractCall{"admin", "POST", p + "/action", `{"add_host":{"host":"agg-h1"}}`,
			"aggregates", "aggregate_add_remove_host"})["aggregate"].(map[string]any)
		if fmt.Sprint(added["hosts"]) != "[agg-h1]" {
			t.Errorf("%s after add_host: %v", v, added)
		}
		meta := f.check(t, ts, v, contractCall{"admin", "POST", p + "/action", `{"set_metadata":{"metadata":{"ssd":"true","k":"v"}}}`,
			"aggregates", "aggregate_set_metadata"})["aggregate"].(map[string]any)["metadata"].(map[string]any)
		if meta["ssd"] != "true" || meta["k"] != "v" || meta["availability_zone"] != "az-"+v.String() {
			t.Errorf("%s metadata %v", v, meta)
		}
		meta = f.check(t, ts, v, contractCall{"admin", "POST", p + "/action", `{"set_metadata":{"metadata":{"k":null}}}`,
			"aggregates", "aggregate_set_metadata"})["aggregate"].(map[string]any)["metadata"].(map[string]any)
		if _, has := meta["k"]; has || meta["ssd"] != "true" {
			t.Errorf("%s metadata after unset %v", v, meta)
		}
		f.check(t, ts, v, contractCall{"admin", "POST", p + "/action", `{"remove_host":{"host":"agg-h1"}}`,
			"aggregates", "aggregate_add_remove_host"})
		f.check(t, ts, v, contractCall{"admin", "DELETE", p, "", "aggregates", "delete_aggregate"})
		resp, body := f.do("GET", p, "admin", "", mv(v)...)
		expectFault(t, resp, body, 404, "itemNotFound")
	}
}

// TestAggregatePolicyAndErrors: aggregates are admins' (members and
// readers 403, no or a bad token 401) and Nova's errors for bad input,
// duplicates and unknown hosts.
func TestAggregatePolicyAndErrors(t *testing.T) {
	f := newFixture(t)
	f.addComputeHost("agg-h1", "")
	resp, body := f.do("POST", "/v2.1/os-aggregates", "admin", `{"aggregate":{"name":"a1"}}`)
	if resp.StatusCode != 200 || body["aggregate"].(map[string]any)["availability_zone"] != nil {
		t.Fatalf("create without a zone: %d %v", resp.StatusCode, body)
	}
	p := fmt.Sprintf("/v2.1/os-aggregates/%v", body["aggregate"].(map[string]any)["id"])
	for _, tok := range []string{"demo", "read", "other", "projadmin"} {
		for _, c := range [][3]string{{"GET", "/v2.1/os-aggregates", ""}, {"GET", p, ""},
			{"POST", "/v2.1/os-aggregates", `{"aggregate":{"name":"x"}}`}, {"PUT", p, `{"aggregate":{"name":"x"}}`},
			{"POST", p + "/action", `{"add_host":{"host":"agg-h1"}}`}, {"DELETE", p, ""}} {
			resp, body := f.do(c[0], c[1], tok, c[2])
			if tok == "projadmin" {
				// The admin role in a project other than the admin
				// project: Capsule's administrators are the admin
				// project's (docs/security.md).
				if resp.StatusCode != 403 && resp.StatusCode != 200 {
					t.Errorf("%s %s as %s: %d", c[0], c[1], tok, resp.StatusCode)
				}
				continue
			}
			expectFault(t, resp, body, 403, "forbidden")
		}
	}
	for _, tok := range []string{"", "bogus"} {
		resp, _ := f.do("GET", "/v2.1/os-aggregates", tok, "")
		if resp.StatusCode != 401 {
			t.Errorf("list with token %q: %d", tok, resp.StatusCode)
		}
	}
	for _, c := range []struct {
		method, path, body string
		status             int
		fault              string
	}{
		{"POST", "/v2.1/os-aggregates", `{"aggregate":{"name":"a1"}}`, 409, "conflictingRequest"},
		{"POST", "/v2.1/os-aggregates", `{"aggregate":{"name":""}}`, 400, "badRequest"},
		{"POST", "/v2.1/os-aggregates", `{"aggregate":{"name":" x"}}`, 400, "badRequest"},
		{"POST", "/v2.1/os-aggregates", `{"aggregate":{"name":"x","availability_zone":"a:b"}}`, 400, "badRequest"},
		{"POST", "/v2.1/os-aggregates", `{"aggregate":{"name":"x","availability_zone":"internal"}}`, 400, "badRequest"},
		{"POST", "/v2.1/os-aggregates", `{"aggregate":{"name":"x","hosts":[]}}`, 400, "badRequest"},
		{"POST", "/v2.1/os-aggregates", `{"name":"x"}`, 400, "badRequest"},
		{"PUT", p, `{"aggregate":{}}`, 400, "badRequest"},
		{"GET", "/v2.1/os-aggregates/abc", "", 400, "badRequest"},
		{"GET", "/v2.1/os-aggregates/999", "", 404, "itemNotFound"},
		{"DELETE", "/v2.1/os-aggregates/999", "", 404, "itemNotFound"},
		{"POST", p + "/action", `{"add_host":{"host":"nowhere"}}`, 404, "itemNotFound"},
		{"POST", p + "/action", `{"remove_host":{"host":"agg-h1"}}`, 404, "itemNotFound"},
		{"POST", p + "/action", `{"set_metadata":{"metadata":{"availability_zone":""}}}`, 400, "badRequest"},
		{"POST", p + "/action", `{"set_metadata":{"metadata":{"k":1}}}`, 400, "badRequest"},
		{"POST", p + "/action", `{"set_metadata":{"metadata":{"bad/key":"v"}}}`, 400, "badRequest"},
		{"POST", p + "/action", `{"frobnicate":{}}`, 400, "badRequest"},
		{"POST", p + "/action", `{"add_host":{"host":"agg-h1"},"remove_host":{"host":"agg-h1"}}`, 400, "badRequest"},
	} {
		resp, body := f.do(c.method, c.path, "admin", c.body)
		if resp.StatusCode != c.status {
			t.Errorf("%s %s %s: %d %v, want %d", c.method, c.path, c.body, resp.StatusCode, body, c.status)
			continue
		}
		expectFault(t, resp, body, c.status, c.fault)
	}
	resp, body = f.do("POST", p+"/action", "admin", `{"add_host":{"host":"agg-h1"}}`)
	if resp.StatusCode != 200 {
		t.Fatalf("add_host: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do("POST", p+"/action", "admin", `{"add_host":{"host":"agg-h1"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("DELETE", p, "admin", "")
	expectFault(t, resp, body, 400, "badRequest") // not empty
}

// TestAggregateZones: an aggregate's availability_zone is the zone of its
// hosts, for os-services, os-availability-zone and the scheduler's zone
// check at create; a host cannot be in two zones; a host running servers
// keeps its zone; leaving the aggregate gives the host its agent's zone
// back.
func TestAggregateZones(t *testing.T) {
	f := newFixture(t)
	f.addComputeHost("zh1", "")
	f.addComputeHost("zh2", "rack2")
	if got := f.zoneNames(); fmt.Sprint(got) != "[nova rack2]" {
		t.Fatalf("zones before aggregates: %v", got)
	}
	mk := func(name, zone string) string {
		t.Helper()
		body := `{"aggregate":{"name":"` + name + `"}}`
		if zone != "" {
			body = `{"aggregate":{"name":"` + name + `","availability_zone":"` + zone + `"}}`
		}
		resp, out := f.do("POST", "/v2.1/os-aggregates", "admin", body)
		if resp.StatusCode != 200 {
			t.Fatalf("create %s: %d %v", name, resp.StatusCode, out)
		}
		return fmt.Sprintf("/v2.1/os-aggregates/%v", out["aggregate"].(map[string]any)["id"])
	}
	act := func(p, body string, want int) map[string]any {
		t.Helper()
		resp, out := f.do("POST", p+"/action", "admin", body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %v, want %d", p, body, resp.StatusCode, out, want)
		}
		return out
	}
	gold := mk("gold", "az-gold")
	act(gold, `{"add_host":{"host":"zh1"}}`, 200)
	act(gold, `{"add_host":{"host":"zh2"}}`, 200)
	if z1, z2 := f.hostZone("zh1"), f.hostZone("zh2"); z1 != "az-gold" || z2 != "az-gold" {
		t.Fatalf("zones of the gold hosts: %s %s", z1, z2)
	}
	if got := f.zoneNames(); fmt.Sprint(got) != "[az-gold]" {
		t.Errorf("zones with gold: %v", got)
	}
	// A second, unzoned aggregate may hold the same host; a zoned one of
	// another zone may not (Nova's conflict).
	ssd := mk("ssd", "")
	act(ssd, `{"add_host":{"host":"zh1"}}`, 200)
	silver := mk("silver", "az-silver")
	resp, out := f.do("POST", silver+"/action", "admin", `{"add_host":{"host":"zh1"}}`)
	expectFault(t, resp, out, 409, "conflictingRequest")
	resp, out = f.do("POST", ssd+"/action", "admin", `{"set_metadata":{"metadata":{"availability_zone":"az-other"}}}`)
	expectFault(t, resp, out, 400, "badRequest")

	// The zone is what create checks and what the scheduler reads.
	resp, out = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"z","imageRef":"`+f.image+`","flavorRef":"1","availability_zone":"az-gold","networks":"none"}}`, mv(apiVersion{2, 37})...)
	if resp.StatusCode != 202 {
		t.Fatalf("create in az-gold: %d %v", resp.StatusCode, out)
	}
	server := out["server"].(map[string]any)["id"].(string)
	resp, out = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"z","imageRef":"`+f.image+`","flavorRef":"1","availability_zone":"rack2","networks":"none"}}`, mv(apiVersion{2, 37})...)
	expectFault(t, resp, out, 400, "badRequest")

	// zh2 runs a server: its zone may not change under it.
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", server).Update("host", "zh2").Error; err != nil {
		t.Fatal(err)
	}
	act(gold, `{"remove_host":{"host":"zh2"}}`, 409)
	resp, out = f.do("PUT", gold, "admin", `{"aggregate":{"availability_zone":"az-platinum"}}`)
	expectFault(t, resp, out, 400, "badRequest")
	if z := f.hostZone("zh2"); z != "az-gold" {
		t.Errorf("zh2 moved to %s", z)
	}
	// zh1 has no server: it leaves gold and is in nova again (its agent
	// names no zone); it may then join silver.
	act(gold, `{"remove_host":{"host":"zh1"}}`, 200)
	if z := f.hostZone("zh1"); z != "nova" {
		t.Errorf("zh1 after leaving gold: %s", z)
	}
	act(silver, `{"add_host":{"host":"zh1"}}`, 200)
	if z := f.hostZone("zh1"); z != "az-silver" {
		t.Errorf("zh1 in silver: %s", z)
	}
	// Unsetting silver's zone gives zh1 back its agent's zone.
	resp, out = f.do("PUT", silver, "admin", `{"aggregate":{"availability_zone":null}}`)
	if resp.StatusCode != 200 || out["aggregate"].(map[string]any)["availability_zone"] != nil {
		t.Fatalf("unset silver's zone: %d %v", resp.StatusCode, out)
	}
	if z := f.hostZone("zh1"); z != "nova" {
		t.Errorf("zh1 after silver's zone went: %s", z)
	}
}
