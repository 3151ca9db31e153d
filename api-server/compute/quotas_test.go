package compute

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

// withProjects registers the fixture's projects in Keystone's table: a
// quota can only be set for a project that exists.
func (f *fixture) withProjects() {
	f.t.Helper()
	for _, p := range []string{"p-demo", "p-other", "p-admin"} {
		if err := f.st.DB.Create(&store.Project{ID: p, Name: p, DomainID: "default", Enabled: true}).Error; err != nil {
			f.t.Fatal(err)
		}
	}
}

// quotaSet GETs path and returns its quota_set.
func (f *fixture) quotaSet(path, token string, hdr ...string) map[string]any {
	f.t.Helper()
	resp, body := f.do("GET", path, token, "", hdr...)
	if resp.StatusCode != 200 {
		f.t.Fatalf("GET %s: %d %v", path, resp.StatusCode, body)
	}
	return body["quota_set"].(map[string]any)
}

// putQuota PUTs a quota_set body as admin and returns the status and body.
func (f *fixture) putQuota(path, set string, hdr ...string) (int, map[string]any) {
	f.t.Helper()
	resp, body := f.do("PUT", path, "admin", `{"quota_set":`+set+`}`, hdr...)
	return resp.StatusCode, body
}

func anyFaultMessage(body map[string]any) string {
	for _, v := range body {
		if m, ok := v.(map[string]any); ok {
			s, _ := m["message"].(string)
			return s
		}
	}
	return ""
}

// TestContractQuotaSetWrites is Tempest's test_update_all_quota_resources_for_tenant
// and test_delete_quota at each schema's microversions: every served key
// changed at once (force), the PUT answer and the GET after it checked
// against Tempest's schemas, then DELETE back to the defaults.
func TestContractQuotaSetWrites(t *testing.T) {
	f := newFixture(t)
	f.withProjects()
	ts := loadTempestSchemas(t)
	for _, v := range []apiVersion{{2, 1}, {2, 35}, {2, 36}, {2, 56}, {2, 57}, {2, maxVersion.Minor}} {
		defaults := f.check(t, ts, v, contractCall{"admin", "GET", "/v2.1/os-quota-sets/p-demo/defaults", "", "quotas", "get_quota_set"})
		want := map[string]any{}
		var parts []string
		for _, k := range servedQuotaKeys(v) {
			n := int(defaults["quota_set"].(map[string]any)[k].(float64)) + 7
			want[k] = float64(n)
			parts = append(parts, fmt.Sprintf("%q:%d", k, n))
		}
		body := `{"quota_set":{"force":true,` + strings.Join(parts, ",") + `}}`
		put := f.check(t, ts, v, contractCall{"admin", "PUT", "/v2.1/os-quota-sets/p-demo", body, "quotas", "update_quota_set"})
		got := put["quota_set"].(map[string]any)
		if _, ok := got["id"]; ok {
			t.Errorf("%s: PUT answer has an id: %v", v, got)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: PUT answered %v, want %v", v, got, want)
		}
		show := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-quota-sets/p-demo", "", "quotas", "get_quota_set"})["quota_set"].(map[string]any)
		if show["id"] != "p-demo" {
			t.Errorf("%s: GET id = %v", v, show["id"])
		}
		delete(show, "id")
		if fmt.Sprint(show) != fmt.Sprint(want) {
			t.Errorf("%s: GET after PUT = %v, want %v", v, show, want)
		}
		det := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-quota-sets/p-demo/detail", "", "quotas", "get_quota_set_details"})
		if l := det["quota_set"].(map[string]any)["ram"].(map[string]any)["limit"]; l != want["ram"] {
			t.Errorf("%s: detail ram limit %v, want %v", v, l, want["ram"])
		}
		f.check(t, ts, v, contractCall{"admin", "DELETE", "/v2.1/os-quota-sets/p-demo", "", "quotas", "delete_quota"})
		after := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/os-quota-sets/p-demo", "", "quotas", "get_quota_set"})
		if fmt.Sprint(after) != fmt.Sprint(defaults) {
			t.Errorf("%s: after DELETE %v, want the defaults %v", v, after, defaults)
		}
	}
}

// TestQuotaSetTempestFlows follows test_get_updated_quotas and
// test_delete_quota: values as strings, a user's own limit, and DELETE of
// the project taking the user's limits with it.
func TestQuotaSetTempestFlows(t *testing.T) {
	f := newFixture(t)
	f.withProjects()
	if st, body := f.putQuota("/v2.1/os-quota-sets/p-other", `{"ram":"5120"}`); st != 200 {
		t.Fatalf("PUT ram as a string: %d %v", st, body)
	}
	det := f.quotaSet("/v2.1/os-quota-sets/p-other/detail", "admin")
	if l := det["ram"].(map[string]any)["limit"]; l != float64(5120) {
		t.Fatalf("detail ram limit = %v", l)
	}
	if st, body := f.putQuota("/v2.1/os-quota-sets/p-other?user_id=u-x", `{"ram":"2048"}`); st != 200 {
		t.Fatalf("PUT user ram: %d %v", st, body)
	}
	if q := f.quotaSet("/v2.1/os-quota-sets/p-other?user_id=u-x", "admin"); q["ram"] != float64(2048) || q["instances"] != float64(10) {
		t.Errorf("user quota = %v, want ram 2048 over the project's others", q)
	}
	if q := f.quotaSet("/v2.1/os-quota-sets/p-other", "other"); q["ram"] != float64(5120) {
		t.Errorf("project ram = %v after a user's PUT", q["ram"])
	}
	// A user's DELETE keeps the project's limit.
	if resp, _ := f.do("DELETE", "/v2.1/os-quota-sets/p-other?user_id=u-x", "admin", ""); resp.StatusCode != 202 {
		t.Fatalf("DELETE user: %d", resp.StatusCode)
	}
	if q := f.quotaSet("/v2.1/os-quota-sets/p-other?user_id=u-x", "admin"); q["ram"] != float64(5120) {
		t.Errorf("user ram after the user's DELETE = %v, want the project's 5120", q["ram"])
	}
	f.putQuota("/v2.1/os-quota-sets/p-other?user_id=u-x", `{"cores":3}`)
	if resp, _ := f.do("DELETE", "/v2.1/os-quota-sets/p-other", "admin", ""); resp.StatusCode != 202 {
		t.Fatalf("DELETE project: %d", resp.StatusCode)
	}
	def := f.quotaSet("/v2.1/os-quota-sets/p-other/defaults", "admin")
	for _, path := range []string{"/v2.1/os-quota-sets/p-other", "/v2.1/os-quota-sets/p-other?user_id=u-x"} {
		if q := f.quotaSet(path, "admin"); fmt.Sprint(q) != fmt.Sprint(def) {
			t.Errorf("%s after DELETE = %v, want the defaults %v", path, q, def)
		}
	}
	// Another project never sees it.
	f.putQuota("/v2.1/os-quota-sets/p-other", `{"instances":1}`)
	if q := f.quotaSet("/v2.1/os-quota-sets/p-demo", "demo"); q["instances"] != float64(10) {
		t.Errorf("p-demo instances = %v after p-other's PUT", q["instances"])
	}
}

func TestQuotaSetPolicy(t *testing.T) {
	f := newFixture(t)
	f.withProjects()
	for _, c := range []struct{ method, path, token string }{
		{"PUT", "/v2.1/os-quota-sets/p-demo", "demo"},
		{"PUT", "/v2.1/os-quota-sets/p-demo", "read"},
		{"DELETE", "/v2.1/os-quota-sets/p-demo", "demo"},
		{"GET", "/v2.1/os-quota-sets/p-admin/detail", "demo"},
	} {
		resp, body := f.do(c.method, c.path, c.token, `{"quota_set":{"instances":50}}`)
		expectFault(t, resp, body, 403, "forbidden")
		if !strings.Contains(anyFaultMessage(body), "os_compute_api:os-quota-sets:") {
			t.Errorf("%s %s as %s: message %q", c.method, c.path, c.token, anyFaultMessage(body))
		}
	}
	if q := f.quotaSet("/v2.1/os-quota-sets/p-demo", "demo"); q["instances"] != float64(10) {
		t.Errorf("a member's refused PUT changed the quota: %v", q)
	}
	// Members read their own project, for any user in it (Tempest's
	// test_get_quotas_with_user_id... reads its own user).
	f.quotaSet("/v2.1/os-quota-sets/p-demo?user_id=u-demo", "read")
	// Defaults are everyone's (Nova's policy "@").
	f.quotaSet("/v2.1/os-quota-sets/p-other/defaults", "demo")
}

func TestQuotaSetBadInput(t *testing.T) {
	f := newFixture(t)
	f.withProjects()
	for _, c := range []struct {
		version, path, body, want string
	}{
		{"2.1", "p-demo", `{"quota_set":{"bogus":1}}`, "Additional properties are not allowed ('bogus' was unexpected)"},
		{"2.1", "p-demo", `{"quota_set":{"b":1,"a":2}}`, "('a', 'b' were unexpected)"},
		{"2.1", "p-demo", `{"quota_set":{"ram":1},"extra":1}`, "('extra' was unexpected)"},
		{"2.1", "p-demo", `{"quota":{"ram":1}}`, "'quota_set' is a required property"},
		{"2.1", "p-demo", `{"quota_set":[1]}`, "is not of type 'object'"},
		{"2.36", "p-demo", `{"quota_set":{"floating_ips":1}}`, "('floating_ips' was unexpected)"},
		{"2.57", "p-demo", `{"quota_set":{"injected_files":1}}`, "('injected_files' was unexpected)"},
		{"2.1", "p-demo", `{"quota_set":{"networks":1}}`, "The networks quota has been removed"},
		{"2.36", "p-demo", `{"quota_set":{"networks":1}}`, "('networks' was unexpected)"},
		{"2.1", "p-demo", `{"quota_set":{"ram":-2}}`, "-2 is less than the minimum of -1"},
		{"2.1", "p-demo", `{"quota_set":{"ram":"-5"}}`, "-5 is less than the minimum of -1"},
		{"2.1", "p-demo", `{"quota_set":{"ram":2147483648}}`, "greater than the maximum of 2147483647"},
		{"2.1", "p-demo", `{"quota_set":{"ram":"lots"}}`, "'lots' does not match '^-?[0-9]+$'"},
		{"2.1", "p-demo", `{"quota_set":{"ram":1.5}}`, "1.5 is not of type 'integer', 'string'"},
		{"2.1", "p-demo", `{"quota_set":{"ram":null}}`, "is not of type 'integer', 'string'"},
		{"2.1", "p-demo", `{"quota_set":{"ram":1,"force":"maybe"}}`, "maybe is not a valid boolean"},
		{"2.1", "p-nowhere", `{"quota_set":{"ram":1}}`, "Project ID p-nowhere is not a valid project."},
		{"2.1", "p-demo", `not json`, "Malformed request body"},
	} {
		resp, body := f.do("PUT", "/v2.1/os-quota-sets/"+c.path, "admin", c.body, "X-OpenStack-Nova-API-Version", c.version)
		expectFault(t, resp, body, 400, "badRequest")
		if msg := anyFaultMessage(body); !strings.Contains(msg, c.want) {
			t.Errorf("%s at %s: message %q, want it to say %q", c.body, c.version, msg, c.want)
		}
	}
	if q := f.quotaSet("/v2.1/os-quota-sets/p-demo", "admin"); q["ram"] != float64(51200) {
		t.Errorf("refused PUTs changed ram: %v", q["ram"])
	}
	// What 2.57 refuses, 2.1 takes.
	if st, body := f.putQuota("/v2.1/os-quota-sets/p-demo", `{"injected_files":"7","fixed_ips":-1}`); st != 200 {
		t.Errorf("injected_files at 2.1: %d %v", st, body)
	}
}

// TestQuotaSetForce: without force a limit below what is in use (or a
// user's above what the project has left) is refused in Nova's words;
// with force it is taken.
func TestQuotaSetForce(t *testing.T) {
	f := newFixture(t)
	f.withProjects()
	f.create("demo", "a")
	f.create("demo", "b")
	st, body := f.putQuota("/v2.1/os-quota-sets/p-demo", `{"instances":1}`)
	if want := "Quota limit 1 for instances must be greater than or equal to already used and reserved 2."; st != 400 || anyFaultMessage(body) != want {
		t.Errorf("lowering under use: %d %q, want 400 %q", st, anyFaultMessage(body), want)
	}
	// -1 is never under use.
	if st, body := f.putQuota("/v2.1/os-quota-sets/p-demo", `{"instances":-1}`); st != 200 {
		t.Errorf("unlimited: %d %v", st, body)
	}
	if st, body := f.putQuota("/v2.1/os-quota-sets/p-demo", `{"instances":1,"force":"True"}`); st != 200 || body["quota_set"].(map[string]any)["instances"] != float64(1) {
		t.Fatalf("forced: %d %v", st, body)
	}

	// User limits share out the project's.
	f.putQuota("/v2.1/os-quota-sets/p-other", `{"cores":5}`)
	for _, c := range []struct {
		path, set string
		status    int
		msg       string
	}{
		{"p-other?user_id=u1", `{"cores":6}`, 400, "Quota limit 6 for cores must be less than or equal to 5."},
		{"p-other?user_id=u1", `{"cores":-1}`, 400, "Quota limit -1 for cores must be less than or equal to 5."},
		{"p-other?user_id=u1", `{"cores":3}`, 200, ""},
		{"p-other?user_id=u1", `{"cores":5}`, 200, ""}, // its own 3 are free to take again
		{"p-other?user_id=u1", `{"cores":3}`, 200, ""},
		{"p-other?user_id=u2", `{"cores":3}`, 400, "Quota limit 3 for cores must be less than or equal to 2."},
		{"p-other?user_id=u2", `{"cores":2}`, 200, ""},
		{"p-other", `{"cores":4}`, 400, "Quota limit 4 for cores must be greater than or equal to already used and reserved 5."},
		{"p-other", `{"cores":4,"force":true}`, 200, ""},
	} {
		st, body := f.putQuota("/v2.1/os-quota-sets/"+c.path, c.set)
		if st != c.status || anyFaultMessage(body) != c.msg {
			t.Errorf("PUT %s %s = %d %q, want %d %q", c.path, c.set, st, anyFaultMessage(body), c.status, c.msg)
		}
	}
}

// TestQuotaEnforced: creation (with min/max count), resize and GET
// /limits follow the set quota; -1 is unlimited.
func TestQuotaEnforced(t *testing.T) {
	f := newFixture(t)
	f.withProjects()
	boot := func(extra string) (int, map[string]any) {
		resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"q","imageRef":"`+f.image+`","flavorRef":"1"`+extra+`}}`)
		return resp.StatusCode, body
	}
	first := f.create("demo", "first")
	f.putQuota("/v2.1/os-quota-sets/p-demo", `{"instances":1}`)
	st, body := boot("")
	if want := "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"; st != 403 || anyFaultMessage(body) != want {
		t.Fatalf("boot over instances: %d %q, want 403 %q", st, anyFaultMessage(body), want)
	}
	limits := func(token string) map[string]any {
		_, body := f.do("GET", "/v2.1/limits", token, "")
		return body["limits"].(map[string]any)["absolute"].(map[string]any)
	}
	if abs := limits("demo"); abs["maxTotalInstances"] != float64(1) || abs["totalInstancesUsed"] != float64(1) {
		t.Errorf("limits = %v", abs)
	}

	// min/max count: as many as fit, or 403 when min does not.
	f.putQuota("/v2.1/os-quota-sets/p-demo", `{"instances":3}`)
	if st, body := boot(`,"min_count":3`); st != 403 || !strings.Contains(anyFaultMessage(body), "Requested 3, but already used 1 of 3 instances") {
		t.Errorf("min_count 3: %d %v", st, body)
	}
	if st, body := boot(`,"min_count":1,"max_count":5`); st != 202 {
		t.Fatalf("max_count 5: %d %v", st, body)
	}
	if u, _ := f.st.CountQuotaUsage(t.Context(), "p-demo", ""); u.Instances != 3 {
		t.Errorf("%d servers after max_count 5 under a quota of 3", u.Instances)
	}

	// Unlimited: past every default.
	f.putQuota("/v2.1/os-quota-sets/p-demo", `{"instances":-1,"cores":-1,"ram":-1}`)
	if st, body := boot(`,"min_count":12`); st != 202 {
		t.Fatalf("unlimited boot of 12: %d %v", st, body)
	}
	if abs := limits("demo"); abs["maxTotalInstances"] != float64(-1) || abs["maxTotalRAMSize"] != float64(-1) {
		t.Errorf("unlimited limits = %v", abs)
	}

	// Cores, then RAM on resize.
	f.putQuota("/v2.1/os-quota-sets/p-demo", `{"cores":15,"force":true}`)
	if st, body := boot(""); st != 403 || !strings.HasPrefix(anyFaultMessage(body), "Quota exceeded for cores: Requested 1, but already used 15 of 15 cores") {
		t.Errorf("boot over cores: %d %v", st, body)
	}
	f.placeActive(first, 8)
	f.putQuota("/v2.1/os-quota-sets/p-demo", `{"cores":-1,"ram":1920,"force":true}`) // 15 servers × 128 MB
	resp, body := f.do("POST", "/v2.1/servers/"+first+"/action", "demo", `{"resize":{"flavorRef":"2"}}`)
	expectFault(t, resp, body, 403, "forbidden")
	if want := "Quota exceeded for ram: Requested 384, but already used 1920 of 1920 ram"; anyFaultMessage(body) != want {
		t.Errorf("resize over ram: %q, want %q", anyFaultMessage(body), want)
	}
	f.putQuota("/v2.1/os-quota-sets/p-demo", `{"ram":-1}`)
	if resp, body := f.do("POST", "/v2.1/servers/"+first+"/action", "demo", `{"resize":{"flavorRef":"2"}}`); resp.StatusCode != 202 {
		t.Errorf("resize with unlimited ram: %d %v", resp.StatusCode, body)
	}
}

// TestUserQuotaEnforced: a user with a limit of their own is held to it,
// counting their own servers only; the project's limit still holds.
func TestUserQuotaEnforced(t *testing.T) {
	f := newFixture(t)
	f.withProjects()
	now := time.Now().UTC()
	for i := 0; i < 3; i++ {
		// Another user's servers in the same project.
		if err := f.st.DB.Create(&store.Instance{ID: fmt.Sprintf("x%d", i), ProjectID: "p-demo", UserID: "u-x",
			VCPUs: 1, MemoryMB: 128, CreatedAt: now}).Error; err != nil {
			t.Fatal(err)
		}
	}
	if st, body := f.putQuota("/v2.1/os-quota-sets/p-demo?user_id=u-demo", `{"instances":2}`); st != 200 {
		t.Fatalf("user PUT: %d %v", st, body)
	}
	f.create("demo", "one")
	f.create("demo", "two")
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"three","imageRef":"`+f.image+`","flavorRef":"1"}}`)
	expectFault(t, resp, body, 403, "forbidden")
	if want := "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"; anyFaultMessage(body) != want {
		t.Errorf("user over quota: %q, want %q", anyFaultMessage(body), want)
	}
	_, body = f.do("GET", "/v2.1/limits", "demo", "")
	abs := body["limits"].(map[string]any)["absolute"].(map[string]any)
	if abs["maxTotalInstances"] != float64(2) || abs["totalInstancesUsed"] != float64(2) || abs["totalCoresUsed"] != float64(5) {
		t.Errorf("user limits = %v (want the user's instances, the project's cores)", abs)
	}
	det := f.quotaSet("/v2.1/os-quota-sets/p-demo/detail?user_id=u-demo", "demo")
	if in := det["instances"].(map[string]any); in["limit"] != float64(2) || in["in_use"] != float64(2) {
		t.Errorf("user detail instances = %v", in)
	}
	// The project's own limit still binds a user with room of their own.
	f.putQuota("/v2.1/os-quota-sets/p-demo?user_id=u-demo", `{"instances":4}`)
	f.putQuota("/v2.1/os-quota-sets/p-demo", `{"instances":5,"force":true}`)
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"three","imageRef":"`+f.image+`","flavorRef":"1"}}`)
	if want := "Quota exceeded for instances: Requested 1, but already used 5 of 5 instances"; resp.StatusCode != 403 || anyFaultMessage(body) != want {
		t.Errorf("project over quota: %d %q, want %q", resp.StatusCode, anyFaultMessage(body), want)
	}
	// An admin asking for the project sees the project level.
	_, body = f.do("GET", "/v2.1/limits?tenant_id=p-demo", "admin", "")
	abs = body["limits"].(map[string]any)["absolute"].(map[string]any)
	if abs["maxTotalInstances"] != float64(5) || abs["totalInstancesUsed"] != float64(5) {
		t.Errorf("admin's view of p-demo limits = %v", abs)
	}
}

// TestQuotaDetailCountsKeypairs: keypairs are a user's, so the detail
// counts the asked user's, or the caller's in their own project.
func TestQuotaDetailCountsKeypairs(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{"k1", "k2"} {
		kp := &store.Keypair{UserID: "u-demo", Name: name, Type: "ssh", PublicKey: "ssh-ed25519 AAAA " + name}
		if err := f.st.CreateKeypair(t.Context(), kp, 100); err != nil {
			t.Fatal(err)
		}
	}
	inUse := func(path, token string) any {
		return f.quotaSet(path, token)["key_pairs"].(map[string]any)["in_use"]
	}
	if n := inUse("/v2.1/os-quota-sets/p-demo/detail", "demo"); n != float64(2) {
		t.Errorf("demo's own detail: key_pairs in use %v, want 2", n)
	}
	if n := inUse("/v2.1/os-quota-sets/p-demo/detail?user_id=u-demo", "admin"); n != float64(2) {
		t.Errorf("admin's detail for u-demo: key_pairs in use %v, want 2", n)
	}
	if n := inUse("/v2.1/os-quota-sets/p-demo/detail", "admin"); n != float64(0) {
		t.Errorf("admin's detail of the whole project: key_pairs in use %v, want 0", n)
	}
}
