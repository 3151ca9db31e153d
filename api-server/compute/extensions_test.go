package compute

import "testing"

func TestExtensions(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	var body map[string]any
	for _, v := range allVersions() {
		body = f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/extensions", "", "extensions", "list_extensions"})
	}
	aliases := map[string]bool{}
	for _, e := range body["extensions"].([]any) {
		aliases[e.(map[string]any)["alias"].(string)] = true
	}
	for _, want := range []string{"os-keypairs", "os-server-groups", "OS-EXT-SRV-ATTR", "os-instance-actions", "os-shelve", "os-admin-password", "os-config-drive", "os-evacuate"} {
		if !aliases[want] {
			t.Errorf("extension %s not listed", want)
		}
	}
	// Not implemented: not listed (a client would rely on it).
	for _, absent := range []string{"os-volumes", "os-consoles", "os-floating-ips"} {
		if aliases[absent] {
			t.Errorf("extension %s listed but not implemented", absent)
		}
	}
	resp, one := f.do("GET", "/v2.1/extensions/os-keypairs", "demo", "")
	if e, _ := one["extension"].(map[string]any); resp.StatusCode != 200 || e["name"] != "Keypairs" || e["alias"] != "os-keypairs" {
		t.Errorf("show os-keypairs: %d %v", resp.StatusCode, one)
	}
	resp, one = f.do("GET", "/v2.1/extensions/os-volumes", "demo", "")
	expectFault(t, resp, one, 404, "itemNotFound")
	for _, p := range []string{"/v2.1/extensions", "/v2.1/extensions/os-keypairs"} {
		resp, one = f.do("GET", p, "", "")
		if resp.StatusCode != 401 {
			t.Errorf("%s without a token: %d %v", p, resp.StatusCode, one)
		}
		resp, _ = f.do("GET", p, "garbage", "")
		if resp.StatusCode != 401 {
			t.Errorf("%s with a garbage token: %d", p, resp.StatusCode)
		}
	}
}
