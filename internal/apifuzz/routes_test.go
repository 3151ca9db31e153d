package apifuzz

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestWriteRoutesReachHandlers sends, unmutated, the valid request of the
// network quota routes and of the re-plug route to an in-process cloud,
// with ids the fuzzer may write to (a project it made, the seeded re-plug
// server's port): each is answered 2xx, so the fuzzer's mutations of them
// start from a request that reaches the handler, and the re-plug is real
// (the port's address changed).
func TestWriteRoutesReachHandlers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := StartCloud(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := newFuzzer(Config{IdentityURL: c.IdentityURL, AdminPassword: c.AdminPassword, DemoPassword: c.DemoPassword,
		Concurrency: 1, Timeout: 30 * time.Second})
	defer f.client.CloseIdleConnections()
	if err := f.login(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.seed(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{f: f, rng: rand.New(rand.NewPCG(1, 2)), demoPass: c.DemoPassword, last: map[string]string{}}
	send := func(service, method, path, token string, body any) (int, string) {
		t.Helper()
		var b []byte
		hdr := map[string]string{"X-Auth-Token": token}
		if body != nil {
			b, _ = json.Marshal(body)
			hdr["Content-Type"] = "application/json"
		}
		status, answer, _, err := f.send(ctx, method, f.endpoints[service]+path, hdr, b)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return status, answer
	}
	// A throw-away project, as the fuzzer's POST /projects makes them.
	status, answer := send("identity", "POST", "/projects", f.admin.token, obj("project", map[string]any{"name": "fz-quota", "domain_id": "default"}))
	var proj struct{ Project struct{ ID string } }
	if status != 201 || json.Unmarshal([]byte(answer), &proj) != nil {
		t.Fatalf("create project: %d %s", status, answer)
	}
	f.pools.addCreated("project", proj.Project.ID, "")
	fill := map[string]string{"{project}": proj.Project.ID, "{serverport}": f.pools.any("serverport", nil),
		"{secgroup}": f.pools.any("secgroup", nil)}

	for _, want := range []struct{ method, path, token string }{
		{"PUT", "/v2.0/quotas/{project}", f.admin.token},
		{"GET", "/v2.0/quotas/{project}/default", f.admin.token},
		{"GET", "/v2.0/quotas/{project}/details.json", f.admin.token},
		{"DELETE", "/v2.0/quotas/{project}", f.admin.token},
		{"PUT", "/v2.0/ports/{serverport}", f.demo.token},
		{"POST", "/v2.0/security-groups", f.demo.token},
		{"PUT", "/v2.0/security-groups/{secgroup}", f.demo.token},
	} {
		var rt *route
		for i := range f.routes {
			if r := f.routes[i]; r.service == "network" && r.method == want.method && r.path == want.path {
				rt = &f.routes[i]
			}
		}
		if rt == nil {
			t.Errorf("the fuzzer has no route %s %s", want.method, want.path)
			continue
		}
		if strings.Contains(want.path, "{project}") && want.method != "GET" && !rt.destructive {
			t.Errorf("%s %s writes but is not destructive: it would get the admin's and the member's projects", want.method, want.path)
		}
		path := want.path
		for k, v := range fill {
			path = strings.ReplaceAll(path, k, url.PathEscape(v))
		}
		var body any
		if rt.body != nil {
			body = rt.body(e)
		}
		if status, answer := send("network", want.method, path, want.token, body); status/100 != 2 {
			t.Errorf("%s %s with its valid body %v: %d %s", want.method, want.path, body, status, answer)
		}
	}

	// The re-plug route's address change is applied: the port has it.
	port := fill["{serverport}"]
	status, answer = send("network", "PUT", "/v2.0/ports/"+port, f.demo.token,
		obj("port", map[string]any{"fixed_ips": []any{map[string]any{"ip_address": "10.77.0.222"}}}))
	if status != 200 {
		t.Fatalf("change the re-plug server's address: %d %s", status, answer)
	}
	_, answer = send("network", "GET", "/v2.0/ports/"+port, f.demo.token, nil)
	if !strings.Contains(answer, `"10.77.0.222"`) || !strings.Contains(answer, f.replugServer) {
		t.Errorf("the re-plug server's port after the update: %s", answer)
	}
}
