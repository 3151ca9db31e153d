package compute

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// These tests drive every response the package produces through the
// Tempest schema Tempest would apply, at every microversion up to the
// advertised maximum, for admin and non-admin callers.

// allVersions is every microversion served.
func allVersions() []apiVersion {
	var vs []apiVersion
	for m := minVersion.Minor; m <= maxVersion.Minor; m++ {
		vs = append(vs, apiVersion{2, m})
	}
	return vs
}

func (f *fixture) raw(method, path, token, body string, hdr ...string) (*http.Response, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

// contractCall is one request checked against a Tempest schema.
type contractCall struct {
	token, method, path, body string
	module, schema            string
}

// check sends c at microversion v the way Tempest does (legacy header
// only), then checks the status code, the microversion and request-id
// headers and the body against the schema Tempest picks at v. It returns
// the decoded body (nil when empty).
func (f *fixture) check(t *testing.T, ts tempestSchemas, v apiVersion, c contractCall) map[string]any {
	t.Helper()
	resp, raw := f.raw(c.method, c.path, c.token, c.body, "X-OpenStack-Nova-API-Version", v.String())
	s := ts.pick(t, c.module, c.schema, v)
	where := fmt.Sprintf("%s %s as %s at %s (%s)", c.method, c.path, c.token, v, s.Name)
	okStatus := false
	for _, code := range s.StatusCode {
		okStatus = okStatus || code == resp.StatusCode
	}
	if !okStatus {
		t.Fatalf("%s: status %d, want %v: %s", where, resp.StatusCode, s.StatusCode, raw)
	}
	if got := resp.Header.Get("X-OpenStack-Nova-API-Version"); got != v.String() {
		t.Errorf("%s: X-OpenStack-Nova-API-Version %q", where, got)
	}
	if id := resp.Header.Get("x-compute-request-id"); !strings.HasPrefix(id, "req-") || resp.Header.Get("x-openstack-request-id") != id {
		t.Errorf("%s: request id headers %q / %q", where, id, resp.Header.Get("x-openstack-request-id"))
	}
	if s.Body == nil {
		// No body schema: Tempest requires an empty body ({} tolerated).
		if len(raw) != 0 && strings.TrimSpace(string(raw)) != "{}" {
			t.Errorf("%s: body must be empty, got %s", where, raw)
		}
		return nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: content type %q", where, ct)
	}
	val, err := decodeJSON(raw)
	if err != nil {
		t.Fatalf("%s: body is not JSON: %s", where, raw)
	}
	for _, e := range validateSchema("body", s.Body, val) {
		t.Errorf("%s: %s", where, e)
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return m
}

// contractWorld is a cloud with servers in the states views differ by.
type contractWorld struct {
	build, active, shutoff, errored, locked, deleted string
	privateFlavor                                    string
	h1, h2                                           store.Service
	createReq                                        string // request id of active's create
}

func seedContractWorld(t *testing.T, f *fixture) *contractWorld {
	t.Helper()
	w := &contractWorld{}
	now := time.Now().UTC()
	old := now.Add(-time.Hour)
	reason := "maintenance"
	w.h1 = store.Service{UUID: "0b3b4f4e-1111-4a4a-8b8b-000000000001", Host: "h1", Binary: store.ComputeBinary, Zone: "nova",
		LastHeartbeat: &now, HostIP: "192.0.2.10", HypervisorType: "docker", HypervisorVersion: 20010021,
		VCPUs: 4, MemoryMB: 8192, DiskGB: 100, RunningVMs: 2, CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1,
		CPUInfo: `{"arch": "x86_64", "model": "", "vendor": "", "features": [], "topology": {"cores": 4, "threads": 1, "sockets": 1}}`}
	// h2 is the sparse case: never reported, no IP, no CPU info, no zone.
	w.h2 = store.Service{UUID: "0b3b4f4e-1111-4a4a-8b8b-000000000002", Host: "h2.example", Binary: store.ComputeBinary,
		Disabled: true, DisabledReason: &reason, LastHeartbeat: &old}
	sched := store.Service{UUID: "0b3b4f4e-1111-4a4a-8b8b-000000000003", Host: "ctl", Binary: "nova-scheduler", LastHeartbeat: &now}
	for _, s := range []*store.Service{&w.h1, &w.h2, &sched} {
		if err := f.st.DB.Create(s).Error; err != nil {
			t.Fatal(err)
		}
	}
	desc := "private"
	fl := store.Flavor{FlavorID: "p1", Name: "m1.private", VCPUs: 2, MemoryMB: 256, RootGB: 2, SwapMB: 512, EphemeralGB: 1,
		RxtxFactor: 1.5, IsPublic: false, Description: &desc}
	if err := f.st.DB.Create(&fl).Error; err != nil {
		t.Fatal(err)
	}
	f.st.DB.Create(&store.FlavorAccess{FlavorID: fl.ID, ProjectID: "p-demo"})
	f.st.DB.Create(&store.FlavorExtraSpec{FlavorID: fl.ID, Key: "quota:cpu_shares", Value: "2048"})
	w.privateFlavor = "p1"

	w.build = f.create("demo", "build")
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"active","imageRef":"`+f.image+`","flavorRef":"p1",
		"accessIPv4":"192.0.2.5","accessIPv6":"0000:0000:0000:0000:0000:babe:220.12.22.2","user_data":"aGVsbG8=",
		"metadata":{"k":"v"}}}`, "X-OpenStack-Nova-API-Version", "2.19")
	if resp.StatusCode != 202 {
		t.Fatalf("create active: %d %v", resp.StatusCode, body)
	}
	w.active = body["server"].(map[string]any)["id"].(string)
	w.createReq = resp.Header.Get("x-compute-request-id")
	f.activate(w.active, "h1")
	key := "k1"
	f.st.DB.Model(&store.Instance{}).Where("id = ?", w.active).Updates(map[string]any{"launched_at": now, "key_name": key,
		"description": "a server", "availability_zone": "nova"})
	err := f.st.RecordEvent(context.Background(), store.Event{InstanceID: w.active, RequestID: w.createReq,
		Name: "compute__do_build_and_run_instance", Host: "h1", Start: now, Finish: now, OK: true})
	if err != nil {
		t.Fatal(err)
	}

	w.shutoff = f.create("demo", "shutoff")
	f.activate(w.shutoff, "h1")
	f.st.DB.Model(&store.Instance{}).Where("id = ?", w.shutoff).Updates(map[string]any{"vm_state": string(lifecycle.Stopped), "power_state": 4})

	w.errored = f.create("demo", "errored")
	f.st.DB.Model(&store.Instance{}).Where("id = ?", w.errored).Updates(map[string]any{"vm_state": string(lifecycle.Error),
		"task_state": "", "fault_code": 500, "fault_message": "No valid host was found.", "fault_details": "trace"})

	w.locked = f.create("demo", "locked")
	f.activate(w.locked, "h2.example")
	f.st.DB.Model(&store.Instance{}).Where("id = ?", w.locked).Updates(map[string]any{"locked": true})

	w.deleted = f.create("demo", "deleted")
	if resp, _ := f.do("DELETE", "/v2.1/servers/"+w.deleted, "demo", ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	return w
}

func TestContractServersReadEveryMicroversion(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	f.serveDiagnostics("h1", runningReply(), nil) // the agent of h1, for diagnostics
	servers := []string{w.build, w.active, w.shutoff, w.errored, w.locked}
	for _, v := range allVersions() {
		for _, tok := range []string{"demo", "admin"} {
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers", "", "servers", "list_servers"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers?limit=2", "", "servers", "list_servers"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/detail?limit=2", "", "servers", "list_servers_detail"})
			body := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/detail?all_tenants=", "", "servers", "list_servers_detail"})
			if n := len(body["servers"].([]any)); n != len(servers) {
				t.Errorf("%s %s detail lists %d servers, want %d", tok, v, n, len(servers))
			}
			for _, id := range servers {
				f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + id, "", "servers", "get_server"})
			}
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + w.active + "/ips", "", "servers", "list_addresses"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + w.active + "/metadata", "", "servers", "list_server_metadata"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + w.active + "/metadata/k", "", "servers", "set_show_server_metadata_item"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + w.active + "/os-volume_attachments", "", "servers", "list_volume_attachments"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + w.active + "/os-instance-actions", "", "servers", "list_instance_actions"})
			ia := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + w.active + "/os-instance-actions/" + w.createReq, "", "servers", "show_instance_action"})
			_, hasEvents := ia["instanceAction"].(map[string]any)["events"]
			if wantEvents := tok == "admin" || v.AtLeast(51); hasEvents != wantEvents {
				t.Errorf("%s %s: instance action events shown = %v, want %v", tok, v, hasEvents, wantEvents)
			}
			if tok == "admin" {
				for _, id := range []string{w.active, w.shutoff} {
					f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + id + "/diagnostics", "", "servers", "show_server_diagnostics"})
				}
			}
			if v.AtLeast(21) {
				body := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/servers/" + w.deleted + "/os-instance-actions", "", "servers", "list_instance_actions"})
				if n := len(body["instanceActions"].([]any)); n != 2 {
					t.Errorf("deleted server has %d actions, want create+delete", n)
				}
			}
		}
	}
}

func TestContractServerValues(t *testing.T) {
	f := newFixture(t)
	w := seedContractWorld(t, f)
	_, body := f.do("GET", "/v2.1/servers/"+w.active, "demo", "")
	s := body["server"].(map[string]any)
	if s["accessIPv6"] != "::babe:dc0c:1602" {
		t.Errorf("accessIPv6 = %v, want the normalised ::babe:dc0c:1602", s["accessIPv6"])
	}
	if s["OS-SRV-USG:launched_at"] == nil || strings.HasSuffix(s["OS-SRV-USG:launched_at"].(string), "Z") {
		t.Errorf("launched_at = %v, want a zoneless timestamp", s["OS-SRV-USG:launched_at"])
	}
	if !strings.HasSuffix(s["created"].(string), "Z") {
		t.Errorf("created = %v", s["created"])
	}
	_, body = f.do("GET", "/v2.1/servers/"+w.shutoff, "demo", "")
	if _, ok := body["server"].(map[string]any)["progress"]; ok {
		t.Error("SHUTOFF server has progress")
	}
	_, body = f.do("GET", "/v2.1/servers/"+w.errored, "demo", "")
	fault := body["server"].(map[string]any)["fault"].(map[string]any)
	if fault["created"] == nil || fault["details"] != nil {
		t.Errorf("non-admin fault = %v", fault)
	}
	_, body = f.do("GET", "/v2.1/servers/"+w.active, "admin", "", "X-OpenStack-Nova-API-Version", "2.16")
	if hs := body["server"].(map[string]any)["host_status"]; hs != "UP" {
		t.Errorf("host_status = %v", hs)
	}
	_, body = f.do("GET", "/v2.1/servers/"+w.locked, "admin", "", "X-OpenStack-Nova-API-Version", "2.16")
	if hs := body["server"].(map[string]any)["host_status"]; hs != "MAINTENANCE" {
		t.Errorf("host_status of a disabled host = %v", hs)
	}
}

func TestContractServerWrites(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	for _, v := range []apiVersion{{2, 1}, {2, 3}, {2, 9}, {2, 16}, {2, 19}, {2, 26}, {2, 37}, {2, 47}, {2, 52}, {2, 57}, {2, 60}, {2, 63}, {2, 71}, {2, 73}, {2, 75}, maxVersion} {
		body := `{"server":{"name":"n` + v.String() + `","imageRef":"` + f.image + `","flavorRef":"1"}}`
		if v.AtLeast(37) {
			body = `{"server":{"name":"n` + v.String() + `","imageRef":"` + f.image + `","flavorRef":"1","networks":"none"}}`
		}
		created := f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/servers", body, "servers", "create_server_with_admin_pass"})
		// Delete it again (under quota), checking the delete's contract too.
		id := created["server"].(map[string]any)["id"].(string)
		f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/servers/" + id, "", "servers", "delete_server"})
		for _, tok := range []string{"demo", "admin"} {
			for _, id := range []string{w.active, w.shutoff, w.errored} {
				f.check(t, ts, v, contractCall{tok, "PUT", "/v2.1/servers/" + id, `{"server":{}}`, "servers", "update_server"})
			}
			f.check(t, ts, v, contractCall{tok, "PUT", "/v2.1/servers/" + w.active,
				`{"server":{"name":"renamed","accessIPv4":"192.0.2.9","accessIPv6":"::babe:202:202"}}`, "servers", "update_server"})
			if v.AtLeast(19) {
				f.check(t, ts, v, contractCall{tok, "PUT", "/v2.1/servers/" + w.active, `{"server":{"description":"d"}}`, "servers", "update_server"})
			}
		}
		f.check(t, ts, v, contractCall{"demo", "PUT", "/v2.1/servers/" + w.active + "/metadata", `{"metadata":{"a":"1"}}`, "servers", "set_server_metadata"})
		f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/servers/" + w.active + "/metadata", `{"metadata":{"b":"2"}}`, "servers", "update_server_metadata"})
		f.check(t, ts, v, contractCall{"demo", "PUT", "/v2.1/servers/" + w.active + "/metadata/c", `{"meta":{"c":"3"}}`, "servers", "set_show_server_metadata_item"})
		f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/servers/" + w.active + "/metadata/c", "", "servers", "delete_server_metadata_item"})
		f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/servers/" + w.locked + "/action", `{"unlock":null}`, "servers", "server_actions_common_schema"})
		f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/servers/" + w.locked + "/action", `{"lock":null}`, "servers", "server_actions_common_schema"})
	}
	_, body := f.do("GET", "/v2.1/servers/"+w.active, "demo", "")
	if got := body["server"].(map[string]any)["accessIPv6"]; got != "::babe:202:202" {
		t.Errorf("accessIPv6 after update = %v", got)
	}
	for _, bad := range []string{`{"server":{"accessIPv4":"1.1.1"}}`, `{"server":{"accessIPv6":"notvalid"}}`} {
		resp, body := f.do("PUT", "/v2.1/servers/"+w.active, "demo", bad)
		expectFault(t, resp, body, 400, "badRequest")
	}
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+f.image+`","flavorRef":"1","accessIPv6":"notvalid"}}`)
	expectFault(t, resp, body, 400, "badRequest")
}

func TestContractFlavorsEveryMicroversion(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	for _, v := range allVersions() {
		for _, tok := range []string{"demo", "admin"} {
			for _, q := range []string{"", "?is_public=None", "?is_public=false", "?minRam=100&minDisk=1", "?limit=1"} {
				f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/flavors" + q, "", "flavors", "list_flavors"})
				f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/flavors/detail" + q, "", "flavors", "list_flavors_details"})
			}
			for _, id := range []string{"1", w.privateFlavor} {
				f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/flavors/" + id, "", "flavors", "create_update_get_flavor_details"})
				f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/flavors/" + id + "/os-extra_specs", "", "flavors_extra_specs", "set_get_flavor_extra_specs"})
			}
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/flavors/p1/os-extra_specs/quota:cpu_shares", "", "flavors_extra_specs", "set_get_flavor_extra_specs_key"})
		}
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/flavors/p1/os-flavor-access", "", "flavors_access", "add_remove_list_flavor_access"})
	}
}

func TestContractFlavorWrites(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	for i, v := range []apiVersion{{2, 1}, {2, 54}, {2, 55}, {2, 60}} {
		id := fmt.Sprintf("w%d", i)
		body := `{"flavor":{"name":"` + id + `","ram":"1024","vcpus":1,"disk":"1","id":"` + id + `","swap":0,"rxtx_factor":1.0,"os-flavor-access:is_public":"False"}}`
		if v.AtLeast(55) {
			body = `{"flavor":{"name":"` + id + `","ram":64,"vcpus":1,"disk":0,"id":"` + id + `","description":"d"}}`
		}
		created := f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/flavors", body, "flavors", "create_update_get_flavor_details"})
		if fl := created["flavor"].(map[string]any); !v.AtLeast(55) && (fl["ram"] != float64(1024) || fl["os-flavor-access:is_public"] != false) {
			t.Errorf("flavor created from strings: %v", fl)
		}
		if v.AtLeast(55) {
			f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/flavors/" + id, `{"flavor":{"description":"new"}}`, "flavors", "create_update_get_flavor_details"})
		}
		f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/flavors/" + id + "/os-extra_specs", `{"extra_specs":{"hw:numa_nodes":"1"}}`, "flavors_extra_specs", "set_get_flavor_extra_specs"})
		f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/flavors/" + id + "/os-extra_specs/hw:numa_nodes", `{"hw:numa_nodes":"2"}`, "flavors_extra_specs", "set_get_flavor_extra_specs_key"})
		f.check(t, ts, v, contractCall{"admin", "DELETE", "/v2.1/flavors/" + id + "/os-extra_specs/hw:numa_nodes", "", "flavors_extra_specs", "unset_flavor_extra_specs"})
		if !v.AtLeast(55) {
			f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/flavors/" + id + "/action", `{"addTenantAccess":{"tenant":"p-demo"}}`, "flavors_access", "add_remove_list_flavor_access"})
			f.check(t, ts, v, contractCall{"admin", "POST", "/v2.1/flavors/" + id + "/action", `{"removeTenantAccess":{"tenant":"p-demo"}}`, "flavors_access", "add_remove_list_flavor_access"})
		}
		f.check(t, ts, v, contractCall{"admin", "DELETE", "/v2.1/flavors/" + id, "", "flavors", "delete_flavor"})
	}
	// sdk sends "id": null and expects a generated one.
	f.check(t, ts, apiVersion{2, 1}, contractCall{"admin", "POST", "/v2.1/flavors", `{"flavor":{"name":"gen","ram":64,"vcpus":1,"disk":0,"id":null}}`, "flavors", "create_update_get_flavor_details"})
}

func TestContractFlavorVisibility(t *testing.T) {
	f := newFixture(t)
	seedContractWorld(t, f)
	hidden := store.Flavor{FlavorID: "hidden", Name: "hidden", VCPUs: 1, MemoryMB: 64, IsPublic: false, RxtxFactor: 1}
	f.st.DB.Create(&hidden)
	ids := func(tok, q string) map[string]bool {
		_, body := f.do("GET", "/v2.1/flavors"+q, tok, "")
		out := map[string]bool{}
		for _, it := range body["flavors"].([]any) {
			out[it.(map[string]any)["id"].(string)] = true
		}
		return out
	}
	for _, q := range []string{"", "?is_public=false", "?is_public=None", "?is_public=no"} {
		got := ids("demo", q)
		if got["hidden"] || !got["p1"] || !got["1"] {
			t.Errorf("demo %q sees %v, want public + p1 (granted), never hidden", q, got)
		}
	}
	if got := ids("admin", "?is_public=None"); !got["hidden"] || !got["1"] {
		t.Errorf("admin is_public=None sees %v, want all", got)
	}
	if got := ids("admin", "?is_public=false"); !got["hidden"] || got["1"] {
		t.Errorf("admin is_public=false sees %v, want private only", got)
	}
	if got := ids("admin", ""); got["hidden"] || !got["1"] {
		t.Errorf("admin default sees %v, want public only", got)
	}
	if got := ids("demo", "?minRam=200"); got["1"] || !got["2"] {
		t.Errorf("minRam=200 gives %v", got)
	}
	resp, body := f.do("GET", "/v2.1/flavors?is_public=maybe", "admin", "")
	expectFault(t, resp, body, 400, "badRequest")
}

func TestContractAdminEveryMicroversion(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	for _, v := range allVersions() {
		for _, tok := range []string{"demo", "admin"} {
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/limits", "", "limits", "get_limit"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/os-availability-zone", "", "availability_zone", "list_availability_zone_list"})
		}
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/limits?tenant_id=p-demo", "", "limits", "get_limit"})
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-availability-zone/detail", "", "availability_zone", "list_availability_zone_list_detail"})
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-services", "", "services", "list_services"})
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-services?binary=nova-compute&host=h1", "", "services", "list_services"})
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors", "", "hypervisors", "list_search_hypervisors"})
		f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/detail", "", "hypervisors", "list_hypervisors_detail"})
		if v.AtLeast(88) {
			// 2.88 removed the statistics and uptime APIs.
			resp, body := f.do("GET", "/v2.1/os-hypervisors/statistics", "admin", "", mv(v)...)
			expectFault(t, resp, body, 404, "itemNotFound")
			resp, body = f.do("GET", "/v2.1/os-hypervisors/"+w.h1.UUID+"/uptime", "admin", "", mv(v)...)
			expectFault(t, resp, body, 404, "itemNotFound")
		} else {
			f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/statistics", "", "hypervisors", "get_hypervisor_statistics"})
		}
		for _, h := range []store.Service{w.h1, w.h2} {
			id := fmt.Sprint(h.ID)
			if v.AtLeast(53) {
				id = h.UUID
			}
			body := f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/" + id, "", "hypervisors", "get_hypervisor"})
			ci := body["hypervisor"].(map[string]any)["cpu_info"]
			if s, isString := ci.(string); !v.AtLeast(28) && (!isString || json.Unmarshal([]byte(s), new(map[string]any)) != nil) {
				t.Errorf("%s cpu_info %v is not a JSON-encoded string", v, ci)
			}
			if !v.AtLeast(88) {
				f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/" + id + "/uptime", "", "hypervisors", "get_hypervisor_uptime"})
			}
			if v.AtLeast(53) {
				f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/" + id + "?with_servers=true", "", "hypervisors", "get_hypervisor"})
			} else {
				f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/" + h.Host + "/search", "", "hypervisors", "list_search_hypervisors"})
				f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/" + h.Host + "/servers", "", "hypervisors", "get_hypervisors_servers"})
			}
		}
		if v.AtLeast(53) {
			body := f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors?with_servers=true", "", "hypervisors", "list_search_hypervisors"})
			f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-hypervisors/detail?with_servers=1", "", "hypervisors", "list_hypervisors_detail"})
			h1 := body["hypervisors"].([]any)[0].(map[string]any)
			if n := len(h1["servers"].([]any)); n != 2 {
				t.Errorf("%s with_servers lists %d servers on h1, want 2", v, n)
			}
		}
	}
}

func TestContractServicesWrites(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	for _, v := range []apiVersion{{2, 1}, {2, 11}, {2, 52}} {
		hb := `{"host":"h1","binary":"nova-compute"}`
		f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/os-services/disable", hb, "services", "enable_disable_service"})
		f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/os-services/enable", hb, "services", "enable_disable_service"})
		f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/os-services/disable-log-reason",
			`{"host":"h1","binary":"nova-compute","disabled_reason":"why"}`, "services", "disable_log_reason"})
		if v.AtLeast(11) {
			f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/os-services/force-down",
				`{"host":"h1","binary":"nova-compute","forced_down":false}`, "services", "update_forced_down"})
		}
	}
	v := apiVersion{2, 53}
	for _, body := range []string{`{"status":"disabled","disabled_reason":"x"}`, `{"status":"enabled"}`, `{"forced_down":true}`, `{"forced_down":false}`} {
		f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/os-services/" + w.h2.UUID, body, "services", "update_service"})
	}
	resp, raw := f.raw("PUT", "/v2.1/os-services/"+"9e0a6ec5-8a7c-4f6a-9f59-3a8a7c1f1a11", "admin", `{"status":"enabled"}`,
		"X-OpenStack-Nova-API-Version", "2.53")
	if resp.StatusCode != 404 {
		t.Errorf("unknown service: %d %s", resp.StatusCode, raw)
	}
	_, body := f.do("GET", "/v2.1/os-services", "admin", "")
	for _, it := range body["services"].([]any) {
		s := it.(map[string]any)
		want := "nova"
		if s["binary"] != store.ComputeBinary {
			want = "internal"
		}
		if s["zone"] != want {
			t.Errorf("service %v zone %v, want %s", s["host"], s["zone"], want)
		}
	}
}

func TestContractVersionDocuments(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	resp, raw := f.raw("GET", "/", "", "")
	val, err := decodeJSON(raw)
	if resp.StatusCode != 200 || err != nil {
		t.Fatalf("GET / = %d %s", resp.StatusCode, raw)
	}
	for _, e := range validateSchema("body", ts.pick(t, "versions", "list_versions", minVersion).Body, val) {
		t.Error(e)
	}
	// Tempest test_get_version_details: follow each self link, with a
	// token, and expect the same self link back.
	for _, vd := range val.(map[string]any)["versions"].([]any) {
		self := vd.(map[string]any)["links"].([]any)[0].(map[string]any)["href"].(string)
		path := strings.TrimPrefix(self, f.srv.URL)
		resp, raw := f.raw("GET", path, "demo", "")
		doc, err := decodeJSON(raw)
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, raw)
		}
		for _, e := range validateSchema("body", ts.pick(t, "versions", "get_one_version", minVersion).Body, doc) {
			t.Errorf("GET %s: %s", path, e)
		}
		got := doc.(map[string]any)["version"].(map[string]any)["links"].([]any)[0].(map[string]any)["href"]
		if got != self {
			t.Errorf("GET %s self link %v, want %s", path, got, self)
		}
	}
}

func TestContractErrorsAndPitfalls(t *testing.T) {
	f := newFixture(t)
	w := seedContractWorld(t, f)
	// Fault bodies: one key, code and message, JSON content type, and the
	// microversion headers on errors too.
	resp, body := f.do("GET", "/v2.1/servers/nope", "demo", "", "X-OpenStack-Nova-API-Version", "2.30")
	expectFault(t, resp, body, 404, "itemNotFound")
	if resp.Header.Get("X-OpenStack-Nova-API-Version") != "2.30" || resp.Header.Get("x-compute-request-id") == "" {
		t.Errorf("error headers: %v", resp.Header)
	}
	resp, body = f.do("GET", "/v2.1/servers", "demo", "", "X-OpenStack-Nova-API-Version", apiVersion{2, maxVersion.Minor + 1}.String())
	expectFault(t, resp, body, 406, "computeFault")
	resp, body = f.do("GET", "/v2.1/servers", "demo", "", "X-OpenStack-Nova-API-Version", "2.x")
	expectFault(t, resp, body, 400, "badRequest")
	// sdk's empty Accept header and trailing slashes.
	if resp, _ := f.do("POST", "/v2.1/servers/"+w.locked+"/action", "admin", `{"unlock":null}`, "Accept", ""); resp.StatusCode != 202 {
		t.Errorf("empty Accept: %d", resp.StatusCode)
	}
	for _, p := range []string{"/v2.1/servers/", "/v2.1/flavors/detail/", "/v2.1/servers/" + w.active + "/"} {
		if resp, body := f.do("GET", p, "demo", ""); resp.StatusCode != 200 {
			t.Errorf("GET %s = %d %v", p, resp.StatusCode, body)
		}
	}
	// all_tenants with an empty value means true (admin only).
	f.create("other", "theirs")
	for _, q := range []string{"?all_tenants=", "?all_tenants", "?all_tenants=1", "?all_tenants=True"} {
		_, body := f.do("GET", "/v2.1/servers"+q, "admin", "")
		if n := len(body["servers"].([]any)); n != 6 {
			t.Errorf("admin %s lists %d servers, want 6", q, n)
		}
	}
	if _, body := f.do("GET", "/v2.1/servers?all_tenants=0", "admin", ""); len(body["servers"].([]any)) != 0 {
		t.Errorf("all_tenants=0 lists other projects' servers")
	}
	// 2.38: an unknown status is a 400; below it an empty list.
	if _, body := f.do("GET", "/v2.1/servers?status=bogus", "demo", "", "X-OpenStack-Nova-API-Version", "2.37"); len(body["servers"].([]any)) != 0 {
		t.Errorf("2.37 status=bogus: %v", body)
	}
	resp, body = f.do("GET", "/v2.1/servers?status=bogus", "demo", "", "X-OpenStack-Nova-API-Version", "2.38")
	expectFault(t, resp, body, 400, "badRequest")
	// networks: [] at 2.1 (novaclient), required from 2.37 with "auto"/"none".
	mk := func(extra, mv string) (*http.Response, map[string]any) {
		return f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"n","imageRef":"`+f.image+`","flavorRef":"1"`+extra+`}}`,
			"X-OpenStack-Nova-API-Version", mv)
	}
	for _, c := range []struct{ extra, mv string }{{`,"networks":[]`, "2.1"}, {"", "2.36"}, {`,"networks":"none"`, "2.37"}, {`,"networks":"auto"`, "2.37"}} {
		if resp, body := mk(c.extra, c.mv); resp.StatusCode != 202 {
			t.Errorf("create %s at %s: %d %v", c.extra, c.mv, resp.StatusCode, body)
		}
	}
	for _, c := range []struct{ extra, mv string }{{"", "2.37"}, {`,"networks":"none"`, "2.36"}, {`,"networks":"some"`, "2.37"}} {
		resp, body := mk(c.extra, c.mv)
		expectFault(t, resp, body, 400, "badRequest")
	}
}

func TestContractInstanceActionsRecordOnlyRealActions(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	// Refused actions (wrong state, bad input, unknown action, no host)
	// must leave no trace: Tempest counts the actions exactly.
	for _, body := range []string{`{"os-start":null}`, `{"os-stop":null}`, `{"reboot":{"type":"WARM"}}`, `{"frobnicate":null}`} {
		if resp, _ := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", body); resp.StatusCode < 400 {
			t.Fatalf("%s accepted on a BUILD server", body)
		}
	}
	f.activate(id, "h1")
	resp, _ := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"reboot":{"type":"HARD"}}`)
	reqID := resp.Header.Get("x-compute-request-id")
	if resp.StatusCode != 202 {
		t.Fatalf("reboot = %d", resp.StatusCode)
	}
	// A second action while the reboot is in flight is refused, unrecorded.
	if resp, _ := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-stop":null}`); resp.StatusCode != 409 {
		t.Fatalf("stop during reboot = %d", resp.StatusCode)
	}
	_, body := f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions", "demo", "")
	var got []string
	for _, a := range body["instanceActions"].([]any) {
		got = append(got, a.(map[string]any)["action"].(string))
	}
	if strings.Join(got, ",") != "reboot,create" {
		t.Errorf("actions = %v, want [reboot create]", got)
	}
	if resp, _ := f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions/"+reqID, "demo", ""); resp.StatusCode != 200 {
		t.Errorf("reboot action not found by its request id: %d", resp.StatusCode)
	}
}

func TestContractTenantUsage(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	w := seedContractWorld(t, f)
	now := time.Now().UTC()
	period := "?start=" + now.Add(-24*time.Hour).Format("2006-01-02T15:04:05.000000") + "&end=" + now.Add(24*time.Hour).Format("2006-01-02T15:04:05.000000")
	for _, v := range []apiVersion{{2, 1}, {2, 40}, {2, 60}} {
		body := f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-simple-tenant-usage" + period + "&detailed=1", "", "tenant_usages", "list_tenant_usage"})
		if u := body["tenant_usages"].([]any); len(u) != 1 || len(u[0].(map[string]any)) != 8 {
			t.Errorf("list usage: %v", body)
		}
		for _, tok := range []string{"admin", "demo"} {
			body := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/os-simple-tenant-usage/p-demo" + period, "", "tenant_usages", "get_tenant_usage"})
			u := body["tenant_usage"].(map[string]any)
			if len(u) != 8 || u["total_hours"].(float64) <= 0 {
				t.Errorf("%s usage of p-demo: %v", tok, u)
			}
			found := false
			for _, su := range u["server_usages"].([]any) {
				found = found || su.(map[string]any)["instance_id"] == w.active
			}
			if !found {
				t.Errorf("active server missing from usage %v", u)
			}
		}
	}
	for _, c := range []struct {
		token, path string
		status      int
		fault       string
	}{
		{"demo", "/v2.1/os-simple-tenant-usage" + period, 403, "forbidden"},
		{"demo", "/v2.1/os-simple-tenant-usage/p-other" + period, 403, "forbidden"},
		{"admin", "/v2.1/os-simple-tenant-usage/" + period, 404, "itemNotFound"},
		{"admin", "/v2.1/os-simple-tenant-usage/p-demo?start=2024-01-02T00:00:00&end=2024-01-01T00:00:00", 400, "badRequest"},
		{"admin", "/v2.1/os-simple-tenant-usage/p-demo?start=yesterday", 400, "badRequest"},
	} {
		resp, body := f.do("GET", c.path, c.token, "")
		expectFault(t, resp, body, c.status, c.fault)
	}
}

func TestContractCreateSecurityGroups(t *testing.T) {
	f := newFixture(t)
	mk := func(sg string) (*http.Response, map[string]any) {
		return f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"n","imageRef":"`+f.image+`","flavorRef":"1","security_groups":`+sg+`}}`)
	}
	if resp, body := mk(`[{"name":"default"}]`); resp.StatusCode != 202 {
		t.Errorf("default group: %d %v", resp.StatusCode, body)
	}
	resp, body := mk(`[{"name":"does_not_exist"}]`)
	expectFault(t, resp, body, 400, "badRequest")
}

func TestContractQuotaSets(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	seedContractWorld(t, f)
	for _, v := range allVersions() {
		for _, tok := range []string{"demo", "admin"} {
			q := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/os-quota-sets/p-demo", "", "quotas", "get_quota_set"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/os-quota-sets/p-demo?user_id=u-demo", "", "quotas", "get_quota_set"})
			d := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/os-quota-sets/p-demo/defaults", "", "quotas", "get_quota_set"})
			if fmt.Sprint(q) != fmt.Sprint(d) || q["quota_set"].(map[string]any)["id"] != "p-demo" {
				t.Errorf("%s quota set %v differs from defaults %v", v, q, d)
			}
			det := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/os-quota-sets/p-demo/detail", "", "quotas", "get_quota_set_details"})
			if used := det["quota_set"].(map[string]any)["instances"].(map[string]any)["in_use"]; used != float64(5) {
				t.Errorf("instances in use = %v, want 5", used)
			}
		}
	}
	resp, body := f.do("GET", "/v2.1/os-quota-sets/p-admin", "demo", "")
	expectFault(t, resp, body, 403, "forbidden")
}
