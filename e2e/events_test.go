package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// withAlarmInterval makes the agent check its alarms every d. It appends
// to the agent: section (the last one startCloud writes before
// extraConfig), so it must come before options that add sections of
// their own.
func withAlarmInterval(d time.Duration) cloudOption {
	return func(t *testing.T, c *cloud) {
		if c.extraConfig != "" || c.twoHosts {
			t.Fatal("withAlarmInterval must be the first option of a one-host cloud: it continues the agent section")
		}
		c.extraConfig += fmt.Sprintf("  alarms:\n    interval: %s\n", d)
	}
}

// getJSON GETs path (joined to cc's endpoint, query included) with cc's
// token and decodes the body.
func getJSON(t *testing.T, cc *gophercloud.ServiceClient, path string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("GET", strings.TrimSuffix(cc.ResourceBaseURL(), "/")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", cc.TokenID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: status %d, non-JSON body %q", path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// TestOOMKillEvent: a process that eats memory in a 128 MiB server is
// OOM-killed; within seconds an admin sees the oom_kill event through
// GET /os-host-events, the server's owner sees it in the server's
// instance actions (openstack server event list), the operator CLI lists
// it; members may not list host events. Not parallel: the event must
// show within 15 s of the kill, a latency other clouds' load would skew.
func TestOOMKillEvent(t *testing.T) {
	c := startCloud(t, withAlarmInterval(time.Second))
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	images := c.imageIDs(t, "demo", c.demoPass, "demo")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "oom", ImageRef: images["busybox"], FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)

	// tail buffers its one endless "line" of zeros until the OOM killer
	// ends it (the flavor's 128 MiB is the cgroup's limit, no swap).
	out, err := c.docker("exec", "capsule-"+srv.ID, "sh", "-c", "tail /dev/zero")
	killed := time.Now()
	if err == nil {
		t.Fatalf("the memory hog was not killed: %s", out)
	}

	q := "/os-host-events?" + url.Values{"instance_uuid": {srv.ID}, "kind": {"oom_kill"}}.Encode()
	var ev map[string]any
	for deadline := killed.Add(15 * time.Second); ; {
		code, body := getJSON(t, admin, q)
		if code != 200 {
			t.Fatalf("GET %s: %d %v", q, code, body)
		}
		if l, _ := body["host_events"].([]any); len(l) > 0 {
			ev = l[0].(map[string]any)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no oom_kill event through the API within 15 s of the kill")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("OOM kill → visible in GET /os-host-events after %v: %v", time.Since(killed).Round(10*time.Millisecond), ev)
	if ev["host"] != c.host || ev["severity"] != "critical" || ev["project_id"] == "" || ev["value"].(float64) < 1 ||
		!strings.Contains(fmt.Sprint(ev["message"]), "OOM killer") {
		t.Errorf("event %v", ev)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(ev["created_at"])); err != nil {
		t.Errorf("created_at %v: %v", ev["created_at"], err)
	}
	if code, body := getJSON(t, demo, "/os-host-events"); code != 403 {
		t.Errorf("member lists host events: %d %v", code, body)
	}

	// The owner sees it as an action of the server.
	reqID := "req-" + fmt.Sprint(ev["id"])
	code, body := getJSON(t, demo, "/servers/"+srv.ID+"/os-instance-actions")
	if code != 200 {
		t.Fatalf("instance actions: %d %v", code, body)
	}
	found := false
	for _, a := range body["instanceActions"].([]any) {
		a := a.(map[string]any)
		if a["request_id"] == reqID {
			found = a["action"] == "oom_kill" && a["message"] == "Error"
			t.Logf("instance action: %v", a)
		}
	}
	if !found {
		t.Errorf("no oom_kill action %s in %v", reqID, body)
	}
	code, body = getJSON(t, admin, "/servers/"+srv.ID+"/os-instance-actions/"+reqID)
	if code != 200 {
		t.Fatalf("instance action %s: %d %v", reqID, code, body)
	}
	evs, _ := body["instanceAction"].(map[string]any)["events"].([]any)
	if len(evs) != 1 || evs[0].(map[string]any)["event"] != "capsule_oom_kill" || evs[0].(map[string]any)["result"] != "Error" {
		t.Errorf("action events %v", evs)
	}

	// The operator CLI.
	cmd := exec.Command(buildCapsuleCLI(t), "-f", "json", "host", "events", c.host, "--server", srv.ID, "--kind", "oom_kill", "--since", "10m")
	cmd.Env = c.env("admin", c.adminPass, "admin")
	cliOut, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("capsule host events: %v\n%s", err, cliOut)
	}
	var rows []map[string]string
	if err := json.Unmarshal(cliOut, &rows); err != nil || len(rows) != 1 || rows[0]["ID"] != ev["id"] || rows[0]["Server"] != srv.ID {
		t.Errorf("capsule host events: %v %s", err, cliOut)
	}
}
