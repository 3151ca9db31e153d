package compute

import (
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

// os-server-password: the owner's project reads the password its server
// posted and clears it; another project gets 404, a reader may read but
// not clear (403), no token 401.
func TestServerPassword(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "pw")
	path := "/v2.1/servers/" + id + "/os-server-password"
	resp, body := f.do("GET", path, "demo", "")
	if resp.StatusCode != 200 || body["password"] != "" || len(body) != 1 {
		t.Fatalf("before a post: %d %v", resp.StatusCode, body)
	}
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("metadata_password", "ZW5jcnlwdGVk").Error; err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"demo", "read", "admin"} {
		if resp, body := f.do("GET", path, tok, ""); resp.StatusCode != 200 || body["password"] != "ZW5jcnlwdGVk" {
			t.Errorf("%s reads %d %v", tok, resp.StatusCode, body)
		}
	}
	resp, body = f.do("GET", path, "other", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("DELETE", path, "other", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("DELETE", path, "read", "")
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("DELETE", path, "", "")
	expectFault(t, resp, body, 401, "unauthorized")
	resp, body = f.do("GET", path, "garbage", "")
	expectFault(t, resp, body, 401, "unauthorized")
	var inst store.Instance
	f.st.DB.First(&inst, "id = ?", id)
	if inst.MetadataPassword != "ZW5jcnlwdGVk" {
		t.Fatalf("refused requests changed the password to %q", inst.MetadataPassword)
	}
	if resp, _ := f.do("DELETE", path, "demo", ""); resp.StatusCode != 204 {
		t.Fatalf("clear: %d", resp.StatusCode)
	}
	if resp, body := f.do("GET", path, "demo", ""); resp.StatusCode != 200 || body["password"] != "" {
		t.Errorf("after clear: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do("GET", "/v2.1/servers/nope/os-server-password", "demo", "")
	expectFault(t, resp, body, 404, "itemNotFound")
}
