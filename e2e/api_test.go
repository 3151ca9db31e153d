package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
)

func (c *cloud) imageIDs(t *testing.T, user, pass, project string) map[string]string {
	t.Helper()
	ctx := context.Background()
	pc, err := c.provider(ctx, user, pass, project)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatalf("image client: %v", err)
	}
	pages, err := images.List(ic, nil).AllPages(ctx)
	if err != nil {
		t.Fatalf("list images: %v", err)
	}
	imgs, err := images.ExtractImages(pages)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, i := range imgs {
		out[i.Name] = i.ID
	}
	if out["busybox"] == "" {
		t.Fatalf("base image not listed: %v", out)
	}
	return out
}

// raw sends a request with a token and returns status and decoded body.
func raw(t *testing.T, cc *gophercloud.ServiceClient, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, cc.ServiceURL(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if cc.TokenID != "" {
		req.Header.Set("X-Auth-Token", cc.TokenID)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: non-JSON body %q", method, path, b)
		}
	}
	return resp.StatusCode, m
}

// novaFault checks a Nova error body {"<name>": {"code": N, "message": ...}}.
func novaFault(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantName string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d (body %v)", what, status, wantStatus, body)
		return
	}
	f, ok := body[wantName].(map[string]any)
	if !ok || len(body) != 1 {
		t.Errorf("%s: body %v, want a single %q fault", what, body, wantName)
		return
	}
	if code, _ := f["code"].(float64); int(code) != wantStatus {
		t.Errorf("%s: fault code %v, want %d", what, f["code"], wantStatus)
	}
	if msg, _ := f["message"].(string); msg == "" {
		t.Errorf("%s: fault without message", what)
	}
}

func countServers(t *testing.T, cc *gophercloud.ServiceClient) int {
	t.Helper()
	pages, err := servers.List(cc, servers.ListOpts{}).AllPages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	all, err := servers.ExtractServers(pages)
	if err != nil {
		t.Fatal(err)
	}
	return len(all)
}

// TestBadInputAndIsolation: every bad request gets the right code and a
// Nova-style body, and leaves nothing behind; projects cannot see or touch
// each other's servers; members cannot call admin APIs.
func TestBadInputAndIsolation(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	before := countServers(t, demo)

	st, body := raw(t, demo, "POST", "servers", `{"server": {"name": "x", `)
	novaFault(t, "malformed JSON", st, body, 400, "badRequest")
	st, body = raw(t, demo, "POST", "servers", fmt.Sprintf(`{"server": {"name": "x", "imageRef": %q, "flavorRef": "nope"}}`, img))
	novaFault(t, "unknown flavor", st, body, 400, "badRequest")
	st, body = raw(t, demo, "POST", "servers", `{"server": {"name": "x", "imageRef": "6b8e7c1e-0000-4000-8000-000000000000", "flavorRef": "1"}}`)
	novaFault(t, "unknown image", st, body, 400, "badRequest")
	st, body = raw(t, demo, "POST", "servers", fmt.Sprintf(`{"server": {"name": %q, "imageRef": %q, "flavorRef": "1"}}`, strings.Repeat("n", 256), img))
	novaFault(t, "name too long", st, body, 400, "badRequest")
	st, body = raw(t, demo, "POST", "servers", fmt.Sprintf(`{"server": {"imageRef": %q, "flavorRef": "1"}}`, img))
	novaFault(t, "missing name", st, body, 400, "badRequest")
	if after := countServers(t, demo); after != before {
		t.Errorf("bad requests left servers behind: %d -> %d", before, after)
	}

	noTok := *demo // a copy with an empty provider: no token at all
	noTok.ProviderClient = &gophercloud.ProviderClient{}
	st, body = raw(t, &noTok, "GET", "servers", "")
	novaFault(t, "missing token", st, body, 401, "unauthorized")

	st, body = raw(t, demo, "GET", "os-hypervisors", "")
	novaFault(t, "member calls os-hypervisors", st, body, 403, "forbidden")
	st, body = raw(t, demo, "POST", "flavors", `{"flavor": {"name": "x", "ram": 64, "vcpus": 1, "disk": 0}}`)
	novaFault(t, "member creates a flavor", st, body, 403, "forbidden")

	// admin's server is invisible to demo.
	srv, err := servers.Create(context.Background(), admin, servers.CreateOpts{Name: "admins", ImageRef: img, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, admin, srv.ID, "ACTIVE", 90*time.Second)
	st, body = raw(t, demo, "GET", "servers/"+srv.ID, "")
	novaFault(t, "other project's server", st, body, 404, "itemNotFound")
	st, body = raw(t, demo, "POST", "servers/"+srv.ID+"/action", `{"os-stop": null}`)
	novaFault(t, "stop other project's server", st, body, 404, "itemNotFound")
	st, body = raw(t, demo, "DELETE", "servers/"+srv.ID, "")
	novaFault(t, "delete other project's server", st, body, 404, "itemNotFound")
	st, body = raw(t, demo, "GET", "servers/detail?all_tenants=1", "")
	if st != 200 || len(body["servers"].([]any)) != before {
		t.Errorf("member all_tenants listing leaked servers: %d %v", st, body)
	}
	st, body = raw(t, demo, "POST", "servers/"+srv.ID+"/action", `{"frobnicate": null}`)
	novaFault(t, "unknown action (as a stranger)", st, body, 404, "itemNotFound")
	st, body = raw(t, admin, "POST", "servers/"+srv.ID+"/action", `{"frobnicate": null}`)
	novaFault(t, "unknown action", st, body, 400, "badRequest")

	if err := servers.Delete(context.Background(), admin, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, admin, srv.ID, 60*time.Second)
}
