package compute

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

// GET /servers/{id}/capsule-usage: the owner reads its server's points
// (CPU as a percent of its vCPUs), another project gets 404, no token
// 401, a period other than hour/day/week 400.
func TestServerUsageHistory(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("POST", "/v2.1/servers", "demo", `{"server":{"name":"u","imageRef":"`+imageID+`","flavorRef":"1"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	f.activate(id, "h1")
	now := time.Now()
	var inst store.Instance
	if err := f.st.DB.First(&inst, "id = ?", id).Error; err != nil {
		t.Fatal(err)
	}
	samples := []store.UsageSample{
		{InstanceID: id, At: now.Add(-2 * time.Minute), CPU: 0.5 * float64(inst.VCPUs), Memory: 64 << 20, NetRx: 1000},
		{InstanceID: id, At: now.Add(-time.Minute), CPU: 0.25 * float64(inst.VCPUs), Memory: 32 << 20, NetTx: 500},
	}
	if err := store.RecordUsage(f.st.DB, samples, time.Minute, now); err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("GET", "/v2.1/servers/"+id+"/capsule-usage?period=hour", "demo", "")
	if resp.StatusCode != 200 {
		t.Fatalf("usage: %d %v", resp.StatusCode, body)
	}
	u := body["usage"].(map[string]any)
	pts := u["points"].([]any)
	if len(pts) != 2 || u["resolution_seconds"] != float64(60) {
		t.Fatalf("usage: %v", u)
	}
	p0 := pts[0].(map[string]any)
	if p0["cpu_percent"] != float64(50) || p0["memory_mb"] != float64(64) || p0["net_rx_bps"] != float64(1000) {
		t.Errorf("first point %v: want 50%% CPU, 64 MB, 1000 B/s in", p0)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id+"/capsule-usage?period=week", "read", "")
	if w := body["usage"].(map[string]any)["points"].([]any); len(w) == 0 || len(w) > 2 {
		t.Errorf("week (10-minute averages) for a reader: %v", body)
	}
	resp, body = f.do("GET", "/v2.1/servers/"+id+"/capsule-usage", "other", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("GET", "/v2.1/servers/"+id+"/capsule-usage?period=year", "demo", "")
	expectFault(t, resp, body, 400, "badRequest")
	resp, _ = f.do("GET", "/v2.1/servers/"+id+"/capsule-usage", "", "")
	if resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}
