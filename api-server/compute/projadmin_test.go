package compute

import "testing"

// The admin role on a project other than the admin project (Keystone's
// admin_project rule) is not cloud-wide admin: no flavor writes, no hosts,
// no other project's servers; it still works in its own project.
func TestAdminRoleOnNonAdminProjectIsNotCloudAdmin(t *testing.T) {
	f := newFixture(t)
	other := f.create("other", "theirs")
	mine := f.create("projadmin", "mine")
	resp, body := f.do("POST", "/v2.1/flavors", "projadmin", `{"flavor":{"name":"x","ram":64,"vcpus":1,"disk":1}}`)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("GET", "/v2.1/os-hypervisors", "projadmin", "")
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("GET", "/v2.1/servers/"+other, "projadmin", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("GET", "/v2.1/servers?all_tenants=1", "projadmin", "")
	if resp.StatusCode != 200 {
		t.Fatalf("list: %d %v", resp.StatusCode, body)
	}
	for _, s := range body["servers"].([]any) {
		if id := s.(map[string]any)["id"]; id != mine {
			t.Fatalf("all_tenants list of a project admin shows server %v of another project", id)
		}
	}
	// The real admin sees both.
	resp, body = f.do("GET", "/v2.1/servers?all_tenants=1", "admin", "")
	if resp.StatusCode != 200 || len(body["servers"].([]any)) != 2 {
		t.Fatalf("admin list: %d %v", resp.StatusCode, body)
	}
}
