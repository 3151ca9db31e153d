package compute

import (
	"net/http"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

// faultMessage returns the message of a Nova fault body.
func faultMessage(body map[string]any, name string) string {
	f, _ := body[name].(map[string]any)
	m, _ := f["message"].(string)
	return m
}

// v286 asks for microversion 2.86, from which extra specs are validated.
var v286 = []string{"X-OpenStack-Nova-API-Version", "2.86"}

func TestExtraSpecsValidatedFrom286(t *testing.T) {
	base := newFixture(t)
	f := base.future(apiVersion{2, 86})
	do := func(method, path, token, body string) (*http.Response, map[string]any) {
		return f.do(method, path, token, body, v286...)
	}
	const specs = "/v2.1/flavors/1/os-extra_specs"

	resp, body := do("POST", specs, "admin", `{"extra_specs":{"quota:cpu_quota":"50000","quota:cpu_period":"100000",
		"quota:disk_write_bytes_sec":"10485760","quota:vif_inbound_average":"1250","capsule:pids_max":"128",
		"hw:cpu_policy":"dedicated","aggregate_instance_extra_specs:ssd":"true"}}`)
	if resp.StatusCode != 200 {
		t.Fatalf("valid specs: %d %v", resp.StatusCode, body)
	}

	for _, tc := range []struct {
		method, path, body, key string
	}{
		{"POST", specs, `{"extra_specs":{"quota:cpu_quota":"half"}}`, "quota:cpu_quota"},
		{"POST", specs, `{"extra_specs":{"quota:cpu_period":"10"}}`, "quota:cpu_period"},
		{"POST", specs, `{"extra_specs":{"quota:cpu_quotaa":"1000"}}`, "quota:cpu_quotaa"},
		{"POST", specs, `{"extra_specs":{"hw:cpu_policy":"mixed"}}`, "hw:cpu_policy"},
		{"POST", specs, `{"extra_specs":{"capsule:pids_max":"4"}}`, "capsule:pids_max"},
		{"POST", specs, `{"extra_specs":{"quota:vif_outbound_peak":"100"}}`, "quota:vif_outbound_peak"},
		{"PUT", specs + "/quota:disk_read_iops_sec", `{"quota:disk_read_iops_sec":"-3"}`, "quota:disk_read_iops_sec"},
		{"PUT", specs + "/capsule:nonsense", `{"capsule:nonsense":"1"}`, "capsule:nonsense"},
		// With the write throttle already set, a total one conflicts.
		{"POST", specs, `{"extra_specs":{"quota:disk_total_bytes_sec":"1000"}}`, "quota:disk_total_bytes_sec"},
	} {
		resp, body := do(tc.method, tc.path, "admin", tc.body)
		expectFault(t, resp, body, 400, "badRequest")
		if msg := faultMessage(body, "badRequest"); !strings.Contains(msg, tc.key) {
			t.Errorf("%s %s: message %q does not name %s", tc.method, tc.body, msg, tc.key)
		}
		// A member is refused before anything is validated.
		resp, body = do(tc.method, tc.path, "demo", tc.body)
		expectFault(t, resp, body, 403, "forbidden")
	}

	// Nothing of the refused requests was stored, everything valid was.
	_, body = do("GET", specs, "admin", "")
	got := body["extra_specs"].(map[string]any)
	if len(got) != 7 || got["quota:cpu_quota"] != "50000" || got["capsule:pids_max"] != "128" || got["aggregate_instance_extra_specs:ssd"] != "true" {
		t.Errorf("stored extra specs = %v", got)
	}

	// PUT of a valid value, and of any key outside the validated namespaces.
	resp, body = do("PUT", specs+"/quota:cpu_quota", "admin", `{"quota:cpu_quota":"-1"}`)
	if resp.StatusCode != 200 || body["quota:cpu_quota"] != "-1" {
		t.Errorf("PUT quota:cpu_quota: %d %v", resp.StatusCode, body)
	}
	resp, body = do("PUT", specs+"/trait:CUSTOM_X", "admin", `{"trait:CUSTOM_X":"required"}`)
	if resp.StatusCode != 200 {
		t.Errorf("PUT trait: %d %v", resp.StatusCode, body)
	}
	resp, body = do("PUT", specs+"/quota:cpu_shares", "demo", `{"quota:cpu_shares":"512"}`)
	expectFault(t, resp, body, 403, "forbidden")

	// A peak needs its average: removing the average first is refused,
	// the peak then the average is fine.
	if resp, body = do("PUT", specs+"/quota:vif_inbound_peak", "admin", `{"quota:vif_inbound_peak":"2500"}`); resp.StatusCode != 200 {
		t.Fatalf("PUT peak: %d %v", resp.StatusCode, body)
	}
	resp, body = do("DELETE", specs+"/quota:vif_inbound_average", "admin", "")
	expectFault(t, resp, body, 400, "badRequest")
	if msg := faultMessage(body, "badRequest"); !strings.Contains(msg, "quota:vif_inbound_peak") {
		t.Errorf("delete message %q does not name the peak", msg)
	}
	for _, k := range []string{"quota:vif_inbound_peak", "quota:vif_inbound_average"} {
		if resp, body := do("DELETE", specs+"/"+k, "admin", ""); resp.StatusCode != 200 {
			t.Errorf("DELETE %s: %d %v", k, resp.StatusCode, body)
		}
	}
}

// A flavor stored before validation existed can still be cleaned up.
func TestExtraSpecsLegacyFlavorCanBeCleaned(t *testing.T) {
	f := newFixture(t).future(apiVersion{2, 86})
	var fl store.Flavor
	if err := f.st.DB.Where("flavor_id = ?", "2").First(&fl).Error; err != nil {
		t.Fatal(err)
	}
	if err := f.st.DB.Create(&store.FlavorExtraSpec{FlavorID: fl.ID, Key: "quota:bogus", Value: "x"}).Error; err != nil {
		t.Fatal(err)
	}
	const specs = "/v2.1/flavors/2/os-extra_specs"
	// Adding to it is refused while the bad key is there...
	resp, body := f.do("POST", specs, "admin", `{"extra_specs":{"quota:cpu_shares":"512"}}`, v286...)
	expectFault(t, resp, body, 400, "badRequest")
	if !strings.Contains(faultMessage(body, "badRequest"), "quota:bogus") {
		t.Errorf("message %q does not name the bad key", faultMessage(body, "badRequest"))
	}
	// ...and deleting the bad key works.
	if resp, body := f.do("DELETE", specs+"/quota:bogus", "admin", "", v286...); resp.StatusCode != 200 {
		t.Fatalf("DELETE quota:bogus: %d %v", resp.StatusCode, body)
	}
	if resp, body := f.do("POST", specs, "admin", `{"extra_specs":{"quota:cpu_shares":"512"}}`, v286...); resp.StatusCode != 200 {
		t.Errorf("POST after cleanup: %d %v", resp.StatusCode, body)
	}
}

// TestExtraSpecsBelow286AreStoredAsGiven: below 2.86 Nova stores any key
// and value (gophercloud's acceptance test sets hw:cpu_policy=CPU-POLICY);
// a server is then refused such a flavor at create and resize, before
// anything reaches a host.
func TestExtraSpecsBelow286AreStoredAsGiven(t *testing.T) {
	f := newFixture(t)
	future := f.future(apiVersion{2, 86})
	const specs = "/v2.1/flavors/2/os-extra_specs"
	for _, v := range []string{"2.1", "2.60"} {
		resp, body := f.do("POST", specs, "admin", `{"extra_specs":{"hw:cpu_policy":"CPU-POLICY","quota:cpu_quotaa":"x"}}`,
			"X-OpenStack-Nova-API-Version", v)
		if resp.StatusCode != 200 || len(body["extra_specs"].(map[string]any)) != 2 {
			t.Fatalf("%s: %d %v", v, resp.StatusCode, body)
		}
		resp, body = f.do("PUT", specs+"/hw:cpu_thread_policy", "admin", `{"hw:cpu_thread_policy":"CPU-THREAD-POLICY"}`,
			"X-OpenStack-Nova-API-Version", v)
		if resp.StatusCode != 200 {
			t.Fatalf("%s PUT: %d %v", v, resp.StatusCode, body)
		}
		// A member still may not.
		resp, body = f.do("PUT", specs+"/k", "demo", `{"k":"v"}`, "X-OpenStack-Nova-API-Version", v)
		expectFault(t, resp, body, 403, "forbidden")
	}
	// At 2.86 the same is refused, naming the key.
	resp, body := future.do("PUT", specs+"/hw:cpu_policy", "admin", `{"hw:cpu_policy":"CPU-POLICY"}`, v286...)
	expectFault(t, resp, body, 400, "badRequest")
	// The flavor cannot boot a server, nor be resized to.
	resp, body = f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"2"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	if msg := faultMessage(body, "badRequest"); !strings.Contains(msg, "Flavor 2 has invalid extra specs") {
		t.Errorf("create message %q", msg)
	}
	var n int64
	f.st.DB.Model(&store.Instance{}).Count(&n)
	if n != 0 {
		t.Errorf("refused create left %d instances", n)
	}
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"resize":{"flavorRef":"2"}}`)
	expectFault(t, resp, body, 400, "badRequest")
	// Deleting keys below 2.86 is free too: the flavor boots again.
	for _, k := range []string{"hw:cpu_policy", "quota:cpu_quotaa", "hw:cpu_thread_policy"} {
		if resp, body := f.do("DELETE", specs+"/"+k, "admin", ""); resp.StatusCode != 200 {
			t.Fatalf("DELETE %s: %d %v", k, resp.StatusCode, body)
		}
	}
	if resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"x","imageRef":"`+imageID+`","flavorRef":"2"}}`); resp.StatusCode != 202 {
		t.Errorf("create after cleanup: %d %v", resp.StatusCode, body)
	}
}
