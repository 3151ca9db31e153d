package compute

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// stubValidator maps fixed tokens to credentials.
type stubValidator map[string]*auth.Credentials

func (v stubValidator) Validate(_ context.Context, tok string) (*auth.Credentials, error) {
	if c, ok := v[tok]; ok {
		return c, nil
	}
	return nil, errors.New("invalid token")
}

type fixture struct {
	t     testing.TB
	st    *store.Store
	bus   *bus.Mem
	srv   *httptest.Server
	svc   *Service
	image string
}

const imageID = "11111111-2222-4333-8444-555555555555"

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newFixtureOn(t, st)
}

// newFixtureOn is newFixture on the store st.
func newFixtureOn(t testing.TB, st *store.Store) *fixture {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.DB.Create(&store.Flavor{FlavorID: "1", Name: "m1.tiny", VCPUs: 1, MemoryMB: 128, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error)
	must(st.DB.Create(&store.Flavor{FlavorID: "2", Name: "m1.small", VCPUs: 1, MemoryMB: 512, RootGB: 5, IsPublic: true, RxtxFactor: 1}).Error)
	must(st.DB.Create(&store.Image{ID: imageID, Name: "busybox", Owner: "p-admin", Visibility: "public", Status: "active",
		ContainerFormat: "docker", DiskFormat: "raw", RegistryRef: "127.0.0.1:5050/capsule/busybox:latest"}).Error)
	b := bus.NewMem(bus.MemRetryDelay(10 * time.Millisecond))
	t.Cleanup(func() { b.Close() })
	v := stubValidator{
		"demo":  {UserID: "u-demo", ProjectID: "p-demo", Roles: []string{"member", "reader"}},
		"other": {UserID: "u-other", ProjectID: "p-other", Roles: []string{"member"}},
		"admin": {UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member"}, IsAdminProject: true},
		"read":  {UserID: "u-read", ProjectID: "p-demo", Roles: []string{"reader"}},
		// The admin role on a project that is not the admin project.
		"projadmin": {UserID: "u-projadmin", ProjectID: "p-demo", Roles: []string{"admin", "member", "reader"}},
	}
	// CallTimeout: the fake agents answer at once, but a loaded CI machine
	// has delayed them past 1 s (a flake whose test the log did not keep).
	svc := New(st, b, Options{PublicHost: "127.0.0.1", ComputePort: 8774, Validator: v, CallTimeout: 5 * time.Second,
		Images: image.New(st, image.Options{Validator: v})})
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &fixture{t: t, st: st, bus: b, srv: srv, svc: svc, image: imageID}
}

func (f *fixture) do(method, path, token, body string, hdr ...string) (*http.Response, map[string]any) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
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
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			f.t.Fatalf("%s %s: body is not JSON: %q", method, path, b)
		}
	}
	return resp, m
}

// future is a server of f's service that serves microversions up to v,
// beyond the advertised maximum: for a step's behaviour implemented before
// maxVersion reaches it. Its do is f.do's.
func (f *fixture) future(v apiVersion) *fixture {
	f.t.Helper()
	srv := httptest.NewServer(f.svc.handlerUpTo(v))
	f.t.Cleanup(srv.Close)
	g := *f
	g.srv = srv
	return &g
}

func expectFault(t testing.TB, resp *http.Response, body map[string]any, status int, name string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d (%v)", resp.StatusCode, status, body)
	}
	f, ok := body[name].(map[string]any)
	if !ok || len(body) != 1 {
		t.Fatalf("body %v, want a %q fault", body, name)
	}
	if int(f["code"].(float64)) != status || f["message"] == "" {
		t.Fatalf("fault %v", f)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error content type %q", ct)
	}
}

func (f *fixture) create(token, name string) string {
	f.t.Helper()
	resp, body := f.do("POST", "/v2.1/servers", token, `{"server":{"name":"`+name+`","imageRef":"`+f.image+`","flavorRef":"1"}}`)
	if resp.StatusCode != 202 {
		f.t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	return body["server"].(map[string]any)["id"].(string)
}

func TestVersionsAndMicroversions(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("GET", "/", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("GET / = %d", resp.StatusCode)
	}
	vs := body["versions"].([]any)
	if vs[0].(map[string]any)["id"] != "v2.0" || vs[1].(map[string]any)["version"] != maxVersion.String() {
		t.Fatalf("versions = %v", vs)
	}
	for _, p := range []string{"/v2.1", "/v2.1/", "/v2/"} {
		if resp, _ := f.do("GET", p, "", ""); resp.StatusCode != 200 {
			t.Errorf("GET %s = %d", p, resp.StatusCode)
		}
	}
	resp, _ = f.do("GET", "/v2.1/flavors", "demo", "", "X-OpenStack-Nova-API-Version", "2.25")
	if resp.Header.Get("X-OpenStack-Nova-API-Version") != "2.25" || resp.Header.Get("OpenStack-API-Version") != "compute 2.25" {
		t.Errorf("version headers not echoed: %v", resp.Header)
	}
	resp, body = f.do("GET", "/v2.1/flavors", "demo", "", "OpenStack-API-Version", "compute 2.999")
	expectFault(t, resp, body, 406, "computeFault")
	resp, _ = f.do("GET", "/v2.1/flavors", "demo", "", "OpenStack-API-Version", "compute latest")
	if resp.Header.Get("X-OpenStack-Nova-API-Version") != maxVersion.String() {
		t.Errorf("latest resolved to %q", resp.Header.Get("X-OpenStack-Nova-API-Version"))
	}
}

func TestCreateServerCastsToScheduler(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"vm1","imageRef":"`+f.image+`","flavorRef":"http://x/flavors/2","metadata":{"a":"b"}}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create = %d %v", resp.StatusCode, body)
	}
	s := body["server"].(map[string]any)
	if s["adminPass"] == "" || resp.Header.Get("Location") == "" || len(s) != 5 {
		t.Errorf("create body %v, Location %q", s, resp.Header.Get("Location"))
	}
	id := s["id"].(string)
	sent := f.bus.Sent(bus.SchedulerQueue)
	if len(sent) != 1 || sent[0].Kind != protocol.KindScheduleInstance {
		t.Fatalf("scheduler queue got %v", sent)
	}
	var req protocol.ScheduleInstance
	if err := sent[0].Decode(&req); err != nil || req.InstanceID != id || req.Attempt != 1 {
		t.Fatalf("schedule request %+v %v", req, err)
	}
	if req.RequestID != resp.Header.Get("x-compute-request-id") || req.RequestID == "" {
		t.Errorf("request id %q vs header %q", req.RequestID, resp.Header.Get("x-compute-request-id"))
	}
	resp, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("show = %d %v", resp.StatusCode, body)
	}
	srv := body["server"].(map[string]any)
	if srv["status"] != "BUILD" || srv["OS-EXT-STS:task_state"] != "scheduling" || srv["metadata"].(map[string]any)["a"] != "b" {
		t.Errorf("show = %v", srv)
	}
	if _, leaked := srv["OS-EXT-SRV-ATTR:host"]; leaked {
		t.Error("non-admin sees OS-EXT-SRV-ATTR:host")
	}
	resp, body = f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions", "demo", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("instance actions = %d %v", resp.StatusCode, body)
	}
	acts := body["instanceActions"].([]any)
	if len(acts) != 1 || acts[0].(map[string]any)["action"] != "create" || acts[0].(map[string]any)["request_id"] != req.RequestID {
		t.Errorf("actions = %v", acts)
	}
}

func TestCreateServerBadInput(t *testing.T) {
	f := newFixture(t)
	cases := []struct{ name, body string }{
		{"malformed JSON", `{"server": {`},
		{"unknown flavor", `{"server":{"name":"x","imageRef":"` + imageID + `","flavorRef":"99"}}`},
		{"unknown image", `{"server":{"name":"x","imageRef":"no-such-image","flavorRef":"1"}}`},
		{"name too long", `{"server":{"name":"` + strings.Repeat("a", 256) + `","imageRef":"` + imageID + `","flavorRef":"1"}}`},
		{"blank name", `{"server":{"name":"   ","imageRef":"` + imageID + `","flavorRef":"1"}}`},
		{"no flavor", `{"server":{"name":"x","imageRef":"` + imageID + `"}}`},
		{"bad network", `{"server":{"name":"x","imageRef":"` + imageID + `","flavorRef":"1","networks":[{"uuid":"nope"}]}}`},
		{"bad count", `{"server":{"name":"x","imageRef":"` + imageID + `","flavorRef":"1","min_count":3,"max_count":2}}`},
		{"user_data not base64", `{"server":{"name":"x","imageRef":"` + imageID + `","flavorRef":"1","user_data":"@@"}}`},
		// Valid base64, one character over Nova's 65,535.
		{"user_data too long", `{"server":{"name":"x","imageRef":"` + imageID + `","flavorRef":"1","user_data":"` + strings.Repeat("A", 65536) + `"}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := f.do("POST", "/v2.1/servers", "demo", c.body)
			expectFault(t, resp, body, 400, "badRequest")
		})
	}
	var n int64
	f.st.DB.Model(&store.Instance{}).Count(&n)
	if n != 0 || len(f.bus.Sent(bus.SchedulerQueue)) != 0 {
		t.Errorf("bad requests left %d instances / %d messages", n, len(f.bus.Sent(bus.SchedulerQueue)))
	}
	resp, body := f.do("POST", "/v2.1/servers", "", `{}`)
	expectFault(t, resp, body, 401, "unauthorized")
	resp, body = f.do("POST", "/v2.1/servers", "read", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1"}}`)
	expectFault(t, resp, body, 403, "forbidden")
}

func TestQuotaExceeded(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"1","min_count":11}}`)
	expectFault(t, resp, body, 403, "forbidden")
}

func TestProjectIsolation(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "mine")
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v2.1/servers/" + id, ""},
		{"PUT", "/v2.1/servers/" + id, `{"server":{"name":"stolen"}}`},
		{"DELETE", "/v2.1/servers/" + id, ""},
		{"POST", "/v2.1/servers/" + id + "/action", `{"os-stop":null}`},
		{"GET", "/v2.1/servers/" + id + "/os-instance-actions", ""},
	} {
		resp, body := f.do(c.method, c.path, "other", c.body)
		expectFault(t, resp, body, 404, "itemNotFound")
	}
	_, body := f.do("GET", "/v2.1/servers/detail?all_tenants=1", "other", "")
	if n := len(body["servers"].([]any)); n != 0 {
		t.Errorf("other project lists %d servers", n)
	}
	_, body = f.do("GET", "/v2.1/servers/detail?all_tenants=1", "admin", "")
	if n := len(body["servers"].([]any)); n != 1 {
		t.Errorf("admin all_tenants lists %d servers", n)
	}
	for _, p := range []string{"/v2.1/os-hypervisors", "/v2.1/os-services", "/v2.1/os-hypervisors/detail"} {
		resp, body := f.do("GET", p, "demo", "")
		expectFault(t, resp, body, 403, "forbidden")
	}
}

// activate puts an instance on a host as the scheduler and conductor would.
func (f *fixture) activate(id, host string) {
	f.t.Helper()
	err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{
		"host": host, "vm_state": string(lifecycle.Active), "task_state": "", "power_state": 1}).Error
	if err != nil {
		f.t.Fatal(err)
	}
}

func TestActionsCastToHostWithStateChecks(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-stop":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest") // still BUILD

	f.activate(id, "h1")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-start":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest") // already active
	resp, _ = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"os-stop":null}`)
	if resp.StatusCode != 202 {
		t.Fatalf("stop = %d", resp.StatusCode)
	}
	sent := f.bus.Sent(bus.ComputeQueue("h1"))
	if len(sent) != 1 {
		t.Fatalf("compute queue got %d messages", len(sent))
	}
	var act protocol.InstanceAction
	_ = sent[0].Decode(&act)
	if act.Action != lifecycle.ActStop || act.InstanceID != id {
		t.Errorf("cast %+v", act)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "demo", "")
	if st := body["server"].(map[string]any)["OS-EXT-STS:task_state"]; st != "powering-off" {
		t.Errorf("task_state = %v", st)
	}
	// A second action while one is in flight conflicts.
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"reboot":{"type":"HARD"}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"reboot":{"type":"WARM"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"frobnicate":null}`)
	expectFault(t, resp, body, 400, "badRequest")
	// Delete preempts and casts.
	resp, _ = f.do("DELETE", "/v2.1/servers/"+id, "demo", "")
	if resp.StatusCode != 204 {
		t.Fatalf("delete = %d", resp.StatusCode)
	}
	if n := len(f.bus.Sent(bus.ComputeQueue("h1"))); n != 2 {
		t.Errorf("delete not cast (%d messages)", n)
	}
}

func TestDeleteUnscheduledServerCompletesAtOnce(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	resp, _ := f.do("DELETE", "/v2.1/servers/"+id, "demo", "")
	if resp.StatusCode != 204 {
		t.Fatalf("delete = %d", resp.StatusCode)
	}
	resp, body := f.do("GET", "/v2.1/servers/"+id, "demo", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	// Instance actions stay listable after delete from 2.21.
	resp, body = f.do("GET", "/v2.1/servers/"+id+"/os-instance-actions", "demo", "", "X-OpenStack-Nova-API-Version", "2.21")
	if resp.StatusCode != 200 || len(body["instanceActions"].([]any)) != 2 {
		t.Errorf("actions after delete: %d %v", resp.StatusCode, body)
	}
}

func TestServerViewsByMicroversion(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	_, body := f.do("GET", "/v2.1/servers/"+id, "admin", "")
	s := body["server"].(map[string]any)
	for _, k := range []string{"OS-EXT-SRV-ATTR:host", "OS-EXT-STS:vm_state", "hostId", "progress", "links", "addresses"} {
		if _, ok := s[k]; !ok {
			t.Errorf("2.1 admin view lacks %s", k)
		}
	}
	for _, k := range []string{"locked", "description", "tags", "OS-EXT-SRV-ATTR:hostname"} {
		if _, ok := s[k]; ok {
			t.Errorf("2.1 view has %s", k)
		}
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "admin", "", "X-OpenStack-Nova-API-Version", "2.47")
	s = body["server"].(map[string]any)
	fl := s["flavor"].(map[string]any)
	if fl["original_name"] != "m1.tiny" || s["locked"] != false || s["OS-EXT-SRV-ATTR:hostname"] != "vm" {
		t.Errorf("2.47 view: %v", s)
	}
	// PUT returns the reduced view.
	_, body = f.do("PUT", "/v2.1/servers/"+id, "demo", `{"server":{"name":"renamed"}}`)
	s = body["server"].(map[string]any)
	if s["name"] != "renamed" {
		t.Errorf("update: %v", s)
	}
	if _, ok := s["OS-EXT-STS:vm_state"]; ok {
		t.Error("PUT response carries OS-EXT-STS fields")
	}
	// Index view is id, name, links only; paging with limit and marker.
	f.create("demo", "b")
	f.create("demo", "c")
	_, body = f.do("GET", "/v2.1/servers?limit=2", "demo", "")
	items := body["servers"].([]any)
	if len(items) != 2 || len(items[0].(map[string]any)) != 3 || body["servers_links"] == nil {
		t.Fatalf("index page: %v", body)
	}
	marker := items[1].(map[string]any)["id"].(string)
	_, body = f.do("GET", "/v2.1/servers?limit=2&marker="+marker, "demo", "")
	if n := len(body["servers"].([]any)); n != 1 {
		t.Errorf("second page has %d", n)
	}
	_, body = f.do("GET", "/v2.1/servers/detail?status=active", "demo", "")
	if n := len(body["servers"].([]any)); n != 1 {
		t.Errorf("status=active lists %d", n)
	}
	_, body = f.do("GET", "/v2.1/servers?name=^ren", "demo", "")
	if n := len(body["servers"].([]any)); n != 1 {
		t.Errorf("name regex lists %d", n)
	}
}

func TestFlavorsAdmin(t *testing.T) {
	f := newFixture(t)
	_, body := f.do("GET", "/v2.1/flavors/detail", "demo", "")
	if n := len(body["flavors"].([]any)); n != 2 {
		t.Fatalf("flavors: %v", body)
	}
	fl := body["flavors"].([]any)[0].(map[string]any)
	if fl["swap"] != "" || fl["id"] != "1" {
		t.Errorf("flavor view %v", fl)
	}
	resp, body := f.do("POST", "/v2.1/flavors", "demo", `{"flavor":{"name":"x","ram":64,"vcpus":1,"disk":0}}`)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("POST", "/v2.1/flavors", "admin", `{"flavor":{"name":"x","ram":"64","vcpus":1,"disk":0,"id":null,"os-flavor-access:is_public":"False"}}`)
	if resp.StatusCode != 200 || body["flavor"].(map[string]any)["os-flavor-access:is_public"] != false {
		t.Fatalf("create flavor: %d %v", resp.StatusCode, body)
	}
	fid := body["flavor"].(map[string]any)["id"].(string)
	resp, body = f.do("POST", "/v2.1/flavors", "admin", `{"flavor":{"name":"x","ram":64,"vcpus":1,"disk":0}}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	resp, body = f.do("POST", "/v2.1/flavors", "admin", `{"flavor":{"name":"y","ram":-1,"vcpus":1,"disk":0}}`)
	expectFault(t, resp, body, 400, "badRequest")
	// Private flavor: invisible to demo until access is granted.
	resp, _ = f.do("GET", "/v2.1/flavors/"+fid, "demo", "")
	if resp.StatusCode != 404 {
		t.Errorf("private flavor visible: %d", resp.StatusCode)
	}
	resp, _ = f.do("POST", "/v2.1/flavors/"+fid+"/action", "admin", `{"addTenantAccess":{"tenant":"p-demo"}}`)
	if resp.StatusCode != 200 {
		t.Errorf("add access: %d", resp.StatusCode)
	}
	if resp, _ = f.do("GET", "/v2.1/flavors/"+fid, "demo", ""); resp.StatusCode != 200 {
		t.Errorf("granted flavor not visible: %d", resp.StatusCode)
	}
	resp, body = f.do("POST", "/v2.1/flavors/"+fid+"/os-extra_specs", "admin", `{"extra_specs":{"hw:cpu_policy":"shared"}}`)
	if resp.StatusCode != 200 {
		t.Errorf("extra specs: %d %v", resp.StatusCode, body)
	}
	_, body = f.do("GET", "/v2.1/flavors/"+fid+"/os-extra_specs", "admin", "")
	if body["extra_specs"].(map[string]any)["hw:cpu_policy"] != "shared" {
		t.Errorf("extra specs: %v", body)
	}
	resp, _ = f.do("DELETE", "/v2.1/flavors/"+fid+"/os-extra_specs/hw:cpu_policy", "admin", "")
	if resp.StatusCode != 200 {
		t.Errorf("delete extra spec: %d", resp.StatusCode)
	}
	resp, _ = f.do("DELETE", "/v2.1/flavors/"+fid, "admin", "")
	if resp.StatusCode != 202 {
		t.Errorf("delete flavor: %d", resp.StatusCode)
	}
	if resp, _ = f.do("GET", "/v2.1/flavors/"+fid, "admin", ""); resp.StatusCode != 404 {
		t.Errorf("deleted flavor: %d", resp.StatusCode)
	}
}

func TestLimitsAndZones(t *testing.T) {
	f := newFixture(t)
	f.create("demo", "vm")
	_, body := f.do("GET", "/v2.1/limits", "demo", "")
	abs := body["limits"].(map[string]any)["absolute"].(map[string]any)
	if abs["totalInstancesUsed"].(float64) != 1 || abs["totalRAMUsed"].(float64) != 128 {
		t.Errorf("limits: %v", abs)
	}
	_, body = f.do("GET", "/v2.1/limits", "demo", "", "X-OpenStack-Nova-API-Version", "2.57")
	abs = body["limits"].(map[string]any)["absolute"].(map[string]any)
	if _, ok := abs["maxPersonality"]; ok {
		t.Error("2.57 limits still have maxPersonality")
	}
	_, body = f.do("GET", "/v2.1/os-availability-zone", "demo", "")
	z := body["availabilityZoneInfo"].([]any)[0].(map[string]any)
	if z["zoneName"] != "nova" || z["hosts"] != nil {
		t.Errorf("zones: %v", body)
	}
}
