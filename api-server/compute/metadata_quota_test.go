package compute

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

// TestMetadataItemsQuota: the metadata_items quota an admin sets applies
// to server create, rebuild and the metadata calls; -1 is unlimited.
func TestMetadataItemsQuota(t *testing.T) {
	f := newFixture(t)
	if err := f.st.DB.Create(&store.Project{ID: "p-demo", Name: "demo", DomainID: "default", Enabled: true}).Error; err != nil {
		t.Fatal(err)
	}
	setQuota := func(n int) {
		t.Helper()
		if resp, body := f.do("PUT", "/v2.1/os-quota-sets/p-demo", "admin", fmt.Sprintf(`{"quota_set":{"metadata_items":%d}}`, n)); resp.StatusCode != 200 {
			t.Fatalf("set metadata_items=%d: %d %v", n, resp.StatusCode, body)
		}
	}
	meta := func(n int) string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	id := f.create("demo", "vm")
	f.activate(id, "h1")
	setQuota(2)
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"m","imageRef":"`+f.image+`","flavorRef":"1","metadata":`+meta(3)+`}}`)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("PUT", "/v2.1/servers/"+id+"/metadata", "demo", `{"metadata":`+meta(3)+`}`)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"rebuild":{"imageRef":"`+f.image+`","metadata":`+meta(3)+`}}`)
	expectFault(t, resp, body, 403, "forbidden")
	if resp, body := f.do("PUT", "/v2.1/servers/"+id+"/metadata", "demo", `{"metadata":`+meta(2)+`}`); resp.StatusCode != 200 {
		t.Errorf("2 items under a quota of 2: %d %v", resp.StatusCode, body)
	}
	setQuota(-1)
	if resp, body := f.do("PUT", "/v2.1/servers/"+id+"/metadata", "demo", `{"metadata":`+meta(130)+`}`); resp.StatusCode != 200 {
		t.Errorf("130 items unlimited: %d %v", resp.StatusCode, body)
	}
}
