package portal

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// newPagesEnv is newEnv with the image, network and identity reads the
// images, networks and admin pages make: demo owns image img-own (shared
// with p-other) and network net-own with a server's port; p-other
// offers demo img-offer.
func newPagesEnv(t *testing.T) *env {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	mux.Handle("/", f.handler(t))
	js := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	own := map[string]any{"id": "img-own", "name": "web-image", "status": "active", "visibility": "shared", "owner": "p-demo",
		"container_format": "docker", "disk_format": "raw", "size": 4404224, "created_at": "2026-12-06T10:00:00Z"}
	offer := map[string]any{"id": "img-offer", "name": "their-image", "status": "active", "visibility": "shared", "owner": "p-other"}
	mux.HandleFunc("GET /v2/images", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("member_status") == "pending" {
			js(w, map[string]any{"images": []any{offer}})
			return
		}
		js(w, map[string]any{"images": []any{own, map[string]any{"id": "img-1", "name": "busybox", "status": "active", "visibility": "public", "owner": "p-admin"}}})
	})
	mux.HandleFunc("GET /v2/images/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "img-own":
			js(w, own)
		case "img-offer":
			js(w, offer)
		default:
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"code": 404, "title": "Not Found", "message": "No image found with ID x"}`)
		}
	})
	mux.HandleFunc("GET /v2/images/{id}/members", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "img-offer" {
			js(w, map[string]any{"members": []any{map[string]any{"member_id": "p-demo", "status": "pending"}}})
			return
		}
		js(w, map[string]any{"members": []any{map[string]any{"member_id": "p-other", "status": "accepted"}}})
	})
	network := map[string]any{"id": "net-own", "name": "backend", "status": "ACTIVE", "subnets": []string{"sn-1"}, "project_id": "p-demo",
		"provider:network_type": "vlan"}
	mux.HandleFunc("GET /v2.0/networks/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "net-own" {
			w.WriteHeader(404)
			js(w, map[string]any{"NeutronError": map[string]any{"type": "NetworkNotFound", "message": "Network x could not be found."}})
			return
		}
		js(w, map[string]any{"network": network})
	})
	mux.HandleFunc("GET /v2.0/subnets", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"subnets": []any{map[string]any{"id": "sn-1", "name": "backend-v4", "cidr": "10.84.0.0/24",
			"gateway_ip": "10.84.0.1", "ip_version": 4, "allocation_pools": []any{map[string]any{"start": "10.84.0.20", "end": "10.84.0.40"}}}}})
	})
	mux.HandleFunc("GET /v2.0/ports", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"ports": []any{
			map[string]any{"id": "port-1", "status": "ACTIVE", "mac_address": "fa:16:3e:00:00:01", "device_id": "s1", "device_owner": "compute:nova",
				"fixed_ips": []any{map[string]any{"ip_address": "10.84.0.21"}}},
			map[string]any{"id": "port-2", "status": "ACTIVE", "mac_address": "fa:16:3e:00:00:02", "device_id": "dhcp", "device_owner": "network:dhcp",
				"fixed_ips": []any{map[string]any{"ip_address": "10.84.0.2"}}}}})
	})
	mux.HandleFunc("GET /v2.1/servers", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"servers": []any{map[string]any{"id": "s1", "name": "api-server-1"}}})
	})
	mux.HandleFunc("GET /v3/projects", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"projects": []any{map[string]any{"id": "p-demo", "name": "demo", "enabled": true},
			map[string]any{"id": "p-admin", "name": "admin", "enabled": true}}})
	})
	up := httptest.NewServer(mux)
	t.Cleanup(up.Close)
	p, err := New(Options{Endpoints: Endpoints{Identity: up.URL + "/v3", Compute: up.URL + "/v2.1", Image: up.URL, Network: up.URL},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewServer(p.Handler())
	t.Cleanup(ps.Close)
	return &env{t: t, api: f, portal: ps, client: newClient(t)}
}

// TestBrowserManagePages: the images page offers the shared image with
// Accept/Reject and the upload form; an own image's page shows who it
// is shared with, Share and Delete; the network's page lists its subnet
// and its ports, a server's linked by name; another network is 404; the
// admin's all-servers page names projects; every page fits 390 px.
func TestBrowserManagePages(t *testing.T) {
	e := newPagesEnv(t)
	srv := server("s1", "api-server-1", "ACTIVE")
	srv["tenant_id"] = "p-demo"
	e.api.servers = []map[string]any{srv}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/images")
	if p := b.text("#shared-pending"); !strings.Contains(p, "their-image") || !strings.Contains(p, "Accept") {
		t.Errorf("images shared with demo: %q", p)
	}
	if !js[bool](b, `!!document.querySelector("#upload-form input[type=file]")`) {
		t.Errorf("no upload form")
	}
	b.shot("portal-images")
	b.open("/images/img-own")
	if m := b.text("#image-members"); !strings.Contains(m, "p-other") || !strings.Contains(m, "accepted") {
		t.Errorf("members: %q", m)
	}
	if !js[bool](b, `!!document.querySelector("#image-delete") && !!document.querySelector("#share-go")`) {
		t.Errorf("own image without Delete or Share")
	}
	b.open("/images/img-offer")
	if s := b.text("#my-status"); s != "pending" || js[bool](b, `!!document.querySelector("#image-delete")`) {
		t.Errorf("offered image: status %q, delete offered %v", s, js[bool](b, `!!document.querySelector("#image-delete")`))
	}
	b.open("/networks/net-own")
	if s := b.text(`#ports a.port-server[href="/servers/s1"]`); s != "api-server-1" {
		t.Errorf("the port's server: %q", s)
	}
	if sn := b.text("#subnets"); !strings.Contains(sn, "10.84.0.20 – 10.84.0.40") || !strings.Contains(sn, "10.84.0.1") {
		t.Errorf("subnets: %q", sn)
	}
	if js[bool](b, `!!document.querySelector('#ports a[href="/servers/dhcp"]')`) {
		t.Errorf("the DHCP port is linked as a server")
	}
	b.shot("portal-network")
	b.viewport(390, 844)
	for _, p := range []string{"/images", "/images/img-own", "/networks", "/networks/net-own"} {
		b.open(p)
		if w := js[int](b, `document.documentElement.scrollWidth - 390`); w > 0 {
			t.Errorf("%s is %d px wider than 390", p, w)
		}
	}
	b.shot("portal-network-phone")
	b.open("/images")
	b.shot("portal-images-phone")
	b.viewport(1280, 860)

	a := newTab(t, e.portal.URL)
	a.login("admin")
	a.open("/admin/servers")
	if p := a.text(`#admin-servers tr[data-id="s1"] td.project`); p != "demo" {
		t.Errorf("all servers: project %q, want demo", p)
	}
	a.shot("portal-admin-servers")
	a.viewport(390, 844)
	for _, p := range []string{"/admin/servers", "/admin/migrations"} {
		a.open(p)
		if w := js[int](a, `document.documentElement.scrollWidth - 390`); w > 0 {
			t.Errorf("%s is %d px wider than 390", p, w)
		}
	}
	a.open("/admin/servers")
	a.shot("portal-admin-servers-phone")
}
