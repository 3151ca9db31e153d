package compute

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

// addHostEvents stores three events: an old OOM kill of server i-1 on h1,
// a pids alarm of i-1, and a host pids alarm of h2 (newest).
func (f *fixture) addHostEvents() time.Time {
	f.t.Helper()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, e := range []store.HostEvent{
		{UUID: "e-oom", Host: "h1", InstanceID: "i-1", ProjectID: "p-demo", Kind: "oom_kill", Severity: "critical",
			Message: "killed 1", Value: 1, At: t0},
		{UUID: "e-pids", Host: "h1", InstanceID: "i-1", ProjectID: "p-demo", Kind: "pids_alarm", Severity: "warning",
			Message: "47 of 48", Value: 47, Threshold: 43.2, At: t0.Add(time.Minute)},
		{UUID: "e-host", Host: "h2", Kind: "host_pids_alarm", Severity: "critical", Message: "27000 tasks",
			Value: 27000, Threshold: 26214.4, At: t0.Add(2 * time.Minute)},
	} {
		if err := f.st.DB.Create(&e).Error; err != nil {
			f.t.Fatal(err)
		}
	}
	return t0
}

func eventIDs(body map[string]any) []string {
	var out []string
	list, _ := body["host_events"].([]any)
	for _, e := range list {
		out = append(out, e.(map[string]any)["id"].(string))
	}
	return out
}

func TestListHostEvents(t *testing.T) {
	f := newFixture(t)
	f.addHostEvents()

	resp, body := f.do("GET", "/v2.1/os-host-events", "admin", "")
	if resp.StatusCode != 200 {
		t.Fatalf("list: %d %v", resp.StatusCode, body)
	}
	if got := eventIDs(body); len(got) != 3 || got[0] != "e-host" || got[1] != "e-pids" || got[2] != "e-oom" {
		t.Fatalf("events %v, want newest first", got)
	}
	list := body["host_events"].([]any)
	host, pids := list[0].(map[string]any), list[1].(map[string]any)
	if host["instance_uuid"] != nil || host["host"] != "h2" || host["kind"] != "host_pids_alarm" || host["threshold"] != 26214.4 {
		t.Errorf("host event %v", host)
	}
	if pids["instance_uuid"] != "i-1" || pids["project_id"] != "p-demo" || pids["severity"] != "warning" ||
		pids["message"] != "47 of 48" || pids["value"] != 47.0 || pids["created_at"] != "2026-11-25T12:01:00.000000Z" {
		t.Errorf("server event %v", pids)
	}

	for q, want := range map[string][]string{
		"?host=h1":                           {"e-pids", "e-oom"},
		"?instance_uuid=i-1&kind=oom_kill":   {"e-oom"},
		"?severity=critical":                 {"e-host", "e-oom"},
		"?since=2026-11-25T12:01:00Z":        {"e-host", "e-pids"},
		"?since=2026-11-25T12:00:30":         {"e-host", "e-pids"},
		"?since=2026-11-25T13:00:30%2B01:00": {"e-host", "e-pids"},
		"?limit=1":                           {"e-host"},
		"?limit=5000&host=nope":              nil,
	} {
		resp, body := f.do("GET", "/v2.1/os-host-events"+q, "admin", "")
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %v", q, resp.StatusCode, body)
			continue
		}
		got := eventIDs(body)
		if len(got) != len(want) {
			t.Errorf("%s: %v, want %v", q, got, want)
			continue
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: %v, want %v", q, got, want)
			}
		}
	}
}

// Members may not read host events; bad filters are 400s in Nova's shape.
func TestListHostEventsErrors(t *testing.T) {
	f := newFixture(t)
	if resp, body := f.do("GET", "/v2.1/os-host-events", "demo", ""); resp.StatusCode != 403 || body["forbidden"] == nil {
		t.Errorf("member: %d %v", resp.StatusCode, body)
	}
	if resp, _ := f.do("GET", "/v2.1/os-host-events", "", ""); resp.StatusCode != 401 {
		t.Errorf("no token: %d", resp.StatusCode)
	}
	for _, q := range []string{"?since=yesterday", "?limit=-1", "?limit=0", "?limit=lots"} {
		resp, body := f.do("GET", "/v2.1/os-host-events"+q, "admin", "")
		bad, _ := body["badRequest"].(map[string]any)
		if resp.StatusCode != 400 || bad == nil || bad["code"] != 400.0 || bad["message"] == "" {
			t.Errorf("%s: %d %v, want a badRequest fault", q, resp.StatusCode, body)
		}
	}
	// Empty list is a list, not null.
	resp, body := f.do("GET", "/v2/os-host-events", "admin", "")
	if l, ok := body["host_events"].([]any); resp.StatusCode != 200 || !ok || len(l) != 0 {
		t.Errorf("empty: %d %v", resp.StatusCode, body)
	}
}
