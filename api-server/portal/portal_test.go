package portal

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// fakeAPI plays Keystone, Nova, Glance and Neutron with just what the
// portal calls, recording the requests it got.
type fakeAPI struct {
	mu       sync.Mutex
	revoked  []string
	requests []string
	servers  []map[string]any
	created  []map[string]any
	actions  []string
	bodies   []string // action bodies, with the microversion asked for
	services map[string]bool
	down     map[string]bool // compute hosts whose service is down
	keypairs []string        // names, in creation order
	// keypairVersions is the OpenStack-API-Version of each keypair create.
	keypairVersions []string
	// networks replaces the network list members see (nil: one private
	// network); launches without a network are refused as Nova does when
	// more than one of them is the project's own or shared.
	networks []map[string]any
	// migrations replaces os-migrations' list (nil: one finished
	// migration of s1); acceptMigrate makes migrate answer 202 and list a
	// pre-migrating migration of the server.
	migrations    []map[string]any
	acceptMigrate bool
	// serverActions are extra instance actions (newest first) shown
	// before the fixed ones, with their events.
	serverActions []map[string]any
	// flavors and limits replace the fixed flavor list and absolute
	// limits when set.
	flavors []map[string]any
	limits  map[string]any
	images  []map[string]any
}

func (f *fakeAPI) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	authed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			tok := r.Header.Get("X-Auth-Token")
			f.mu.Lock()
			f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
			revoked := false
			for _, t := range f.revoked {
				revoked = revoked || t == tok
			}
			f.mu.Unlock()
			if tok != "tok-demo" && tok != "tok-admin" || revoked {
				w.WriteHeader(401)
				_, _ = io.WriteString(w, `{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`)
				return
			}
			h(w, r)
		}
	}
	writeJSON := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /v3/auth/tokens", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Auth struct {
				Identity struct {
					Password struct {
						User struct{ Name, Password string }
					}
				}
				Scope struct{ Project struct{ Name string } }
			}
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		u := body.Auth.Identity.Password.User
		if u.Password != "secret" || (u.Name != "demo" && u.Name != "admin") || body.Auth.Scope.Project.Name != u.Name {
			writeJSON(w, 401, map[string]any{"error": map[string]any{"code": 401, "title": "Unauthorized",
				"message": "The request you have made requires authentication."}})
			return
		}
		role := "member"
		if u.Name == "admin" {
			role = "admin"
		}
		w.Header().Set("X-Subject-Token", "tok-"+u.Name)
		writeJSON(w, 201, map[string]any{"token": map[string]any{"expires_at": "2999-01-01T00:00:00.000000Z",
			"user": map[string]any{"name": u.Name}, "project": map[string]any{"id": "p-" + u.Name, "name": u.Name},
			"roles": []map[string]any{{"name": role}}}})
	})
	mux.HandleFunc("DELETE /v3/auth/tokens", authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.revoked = append(f.revoked, r.Header.Get("X-Subject-Token"))
		f.mu.Unlock()
		w.WriteHeader(204)
	}))
	mux.HandleFunc("GET /v2.1/limits", authed(func(w http.ResponseWriter, r *http.Request) {
		abs := map[string]any{"maxTotalInstances": 10, "totalInstancesUsed": 3, "maxTotalCores": 20, "totalCoresUsed": 5,
			"maxTotalRAMSize": 51200, "totalRAMUsed": 1536}
		f.mu.Lock()
		if f.limits != nil {
			abs = f.limits
		}
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"limits": map[string]any{"absolute": abs}})
	}))
	mux.HandleFunc("GET /v2.1/servers/detail", authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := f.servers
		if m := r.URL.Query().Get("marker"); m != "" {
			for i, s := range list {
				if s["id"] == m {
					list = list[i+1:]
					break
				}
			}
		}
		if h := r.URL.Query().Get("host"); h != "" {
			var on []map[string]any
			for _, s := range list {
				if s["OS-EXT-SRV-ATTR:host"] == h && r.URL.Query().Get("all_tenants") == "1" {
					on = append(on, s)
				}
			}
			list = on
		}
		var n int
		_ = json.Unmarshal([]byte(r.URL.Query().Get("limit")), &n)
		if n > 0 && n < len(list) {
			list = list[:n]
		}
		writeJSON(w, 200, map[string]any{"servers": list})
	}))
	mux.HandleFunc("GET /v2.1/servers/{id}", authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.servers {
			if s["id"] == r.PathValue("id") {
				writeJSON(w, 200, map[string]any{"server": s})
				return
			}
		}
		writeJSON(w, 404, map[string]any{"itemNotFound": map[string]any{"code": 404, "message": "Instance " + r.PathValue("id") + " could not be found."}})
	}))
	mux.HandleFunc("GET /v2.1/servers/{id}/os-instance-actions", authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		list := []map[string]any{}
		for _, a := range f.serverActions {
			list = append(list, map[string]any{"action": a["action"], "request_id": a["request_id"], "start_time": a["start_time"]})
		}
		f.mu.Unlock()
		list = append(list,
			map[string]any{"action": "oom_kill", "request_id": "req-2", "start_time": "2026-01-01T00:01:00.000000", "message": "a process was killed: out of memory"},
			map[string]any{"action": "create", "request_id": "req-1", "start_time": "2026-01-01T00:00:00.000000"})
		writeJSON(w, 200, map[string]any{"instanceActions": list})
	}))
	mux.HandleFunc("POST /v2.1/servers", authed(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Server map[string]any }
		_ = json.NewDecoder(r.Body).Decode(&body)
		if _, named := body.Server["networks"]; !named && f.usableNetworks() > 1 {
			writeJSON(w, 409, map[string]any{"conflictingRequest": map[string]any{"code": 409,
				"message": "Multiple possible networks found, use a Network ID to be more specific."}})
			return
		}
		if body.Server["flavorRef"] == "huge" {
			writeJSON(w, 403, map[string]any{"forbidden": map[string]any{"code": 403,
				"message": "Quota exceeded for cores: Requested 64, but already used 5 of 20 cores"}})
			return
		}
		f.mu.Lock()
		f.created = append(f.created, body.Server)
		f.mu.Unlock()
		writeJSON(w, 202, map[string]any{"server": map[string]any{"id": "new"}})
	}))
	mux.HandleFunc("GET /v2.1/os-keypairs", authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		items := []map[string]any{}
		for _, n := range f.keypairs {
			items = append(items, map[string]any{"keypair": map[string]any{"name": n, "type": "ssh",
				"fingerprint": "aa:bb", "public_key": "ssh-ed25519 AAAA " + n}})
		}
		writeJSON(w, 200, map[string]any{"keypairs": items})
	}))
	mux.HandleFunc("POST /v2.1/os-keypairs", authed(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Keypair map[string]string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		name, pub := body.Keypair["name"], body.Keypair["public_key"]
		if pub == "bad" {
			writeJSON(w, 400, map[string]any{"badRequest": map[string]any{"code": 400, "message": "Keypair data is invalid: not a key"}})
			return
		}
		f.mu.Lock()
		f.keypairs = append(f.keypairs, name)
		f.keypairVersions = append(f.keypairVersions, r.Header.Get("OpenStack-API-Version"))
		f.mu.Unlock()
		kp := map[string]any{"name": name, "type": "ssh", "fingerprint": "aa:bb", "public_key": pub}
		if pub == "" {
			kp["private_key"] = "-----BEGIN RSA PRIVATE KEY-----\nsecret<&>\n-----END RSA PRIVATE KEY-----\n"
		}
		writeJSON(w, 201, map[string]any{"keypair": kp})
	}))
	mux.HandleFunc("DELETE /v2.1/os-keypairs/{name}", authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, n := range f.keypairs {
			if n == r.PathValue("name") {
				f.keypairs = append(f.keypairs[:i], f.keypairs[i+1:]...)
				w.WriteHeader(204)
				return
			}
		}
		writeJSON(w, 404, map[string]any{"itemNotFound": map[string]any{"code": 404, "message": "Keypair " + r.PathValue("name") + " not found."}})
	}))
	mux.HandleFunc("GET /v2.1/servers/{id}/os-instance-actions/{req}", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("OpenStack-API-Version") != "compute 2.84" {
			writeJSON(w, 200, map[string]any{"instanceAction": map[string]any{"action": "x"}}) // no events below 2.51, no details below 2.84
			return
		}
		f.mu.Lock()
		for _, a := range f.serverActions {
			if a["request_id"] == r.PathValue("req") {
				f.mu.Unlock()
				writeJSON(w, 200, map[string]any{"instanceAction": a})
				return
			}
		}
		f.mu.Unlock()
		act := map[string]any{"action": "create", "request_id": "req-1", "events": []map[string]any{{"event": "compute_build", "result": "Success"}}}
		if r.PathValue("req") == "req-2" {
			act = map[string]any{"action": "oom_kill", "request_id": "req-2", "events": []map[string]any{{"event": "oom_kill", "result": "Error",
				"details": "the kernel killed sh: out of memory"}}}
		}
		writeJSON(w, 200, map[string]any{"instanceAction": act})
	}))
	mux.HandleFunc("GET /v2.1/servers/{id}/diagnostics", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") != "tok-admin" {
			writeJSON(w, 403, map[string]any{"forbidden": map[string]any{"code": 403, "message": "Policy doesn't allow os_compute_api:os-server-diagnostics to be performed."}})
			return
		}
		if r.Header.Get("OpenStack-API-Version") != "compute 2.48" {
			writeJSON(w, 200, map[string]any{"cpu0_time": 1})
			return
		}
		writeJSON(w, 200, map[string]any{"state": "running", "num_cpus": 2, "uptime": 50,
			"cpu_details":    []map[string]any{{"id": 0, "time": 3000000000}, {"id": 1, "time": 1000000000}},
			"memory_details": map[string]any{"maximum": 512, "used": 37},
			"nic_details":    []map[string]any{{"rx_octets": 1000, "tx_octets": 10}, {"rx_octets": 24, "tx_octets": nil}}})
	}))
	mux.HandleFunc("GET /v2.1/os-services", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") != "tok-admin" || r.URL.Query().Get("binary") != "nova-compute" {
			writeJSON(w, 403, map[string]any{"forbidden": map[string]any{"code": 403, "message": "Policy doesn't allow os_compute_api:os-services:list to be performed."}})
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		var list []map[string]any
		for _, h := range []string{"cn-a", "cn-b"} {
			st := "enabled"
			if f.services[h] {
				st = "disabled"
			}
			state := "up"
			if f.down[h] {
				state = "down"
			}
			list = append(list, map[string]any{"host": h, "binary": "nova-compute", "state": state, "status": st, "zone": "nova"})
		}
		writeJSON(w, 200, map[string]any{"services": list})
	}))
	mux.HandleFunc("PUT /v2.1/os-services/{op}", authed(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Host, Binary string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.services == nil {
			f.services = map[string]bool{}
		}
		f.services[body.Host] = r.PathValue("op") == "disable"
		f.bodies = append(f.bodies, "service "+r.PathValue("op")+" "+body.Host+" "+body.Binary)
		writeJSON(w, 200, map[string]any{"service": map[string]any{"host": body.Host}})
	}))
	mux.HandleFunc("GET /v2.1/os-hypervisors/detail", authed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"hypervisors": []map[string]any{
			{"hypervisor_hostname": "cn-a", "state": "up", "status": "enabled", "vcpus": 8, "vcpus_used": 3, "memory_mb": 16000,
				"memory_mb_used": 4096, "local_gb": 100, "local_gb_used": 7, "running_vms": 2},
			{"hypervisor_hostname": "cn-b", "state": "up", "status": "enabled", "vcpus": 4, "vcpus_used": 0, "memory_mb": 8000,
				"memory_mb_used": 512, "local_gb": 50, "local_gb_used": 0, "running_vms": 0}}})
	}))
	mux.HandleFunc("GET /v2.1/os-migrations", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("OpenStack-API-Version") != "compute 2.59" {
			writeJSON(w, 400, map[string]any{"badRequest": map[string]any{"code": 400, "message": "want 2.59"}})
			return
		}
		f.mu.Lock()
		migs := f.migrations
		f.mu.Unlock()
		if migs == nil {
			migs = []map[string]any{{"id": 1, "uuid": "m-1", "status": "finished",
				"instance_uuid": "s1", "source_compute": "cn-a", "dest_compute": "cn-b", "migration_type": "migration"}}
		}
		if id := r.URL.Query().Get("instance_uuid"); id != "" {
			var mine []map[string]any
			for _, m := range migs {
				if m["instance_uuid"] == id {
					mine = append(mine, m)
				}
			}
			migs = mine
		}
		writeJSON(w, 200, map[string]any{"migrations": migs})
	}))
	mux.HandleFunc("POST /v2.1/servers/{id}/action", authed(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &body)
		f.mu.Lock()
		f.bodies = append(f.bodies, strings.TrimSpace(r.Header.Get("OpenStack-API-Version")+" "+string(raw)))
		f.mu.Unlock()
		for k := range body {
			if k == "migrate" && f.accepts() {
				f.mu.Lock()
				f.migrations = append([]map[string]any{{"id": len(f.migrations) + 2, "uuid": "m-new", "status": "pre-migrating",
					"instance_uuid": r.PathValue("id"), "source_compute": "cn-a", "dest_compute": "", "migration_type": "migration"}}, f.migrations...)
				f.mu.Unlock()
				w.WriteHeader(202)
				return
			}
			if k == "migrate" {
				writeJSON(w, 400, map[string]any{"badRequest": map[string]any{"code": 400,
					"message": "Action 'migrate' (cold migration) is not supported by this Capsule release yet."}})
				return
			}
			if k == "resize" && body[k].(map[string]any)["flavorRef"] == "1" {
				writeJSON(w, 400, map[string]any{"badRequest": map[string]any{"code": 400, "message": "When resizing, instances must change flavor!"}})
				return
			}
			f.mu.Lock()
			f.actions = append(f.actions, r.PathValue("id")+" "+k)
			f.mu.Unlock()
			if k == "os-getConsoleOutput" {
				writeJSON(w, 200, map[string]any{"output": "capsule-init: booted\n<b>not bold</b>\n"})
				return
			}
			if k == "os-start" {
				writeJSON(w, 409, map[string]any{"conflictingRequest": map[string]any{"code": 409,
					"message": "Cannot 'start' instance " + r.PathValue("id") + " while it is in vm_state active"}})
				return
			}
		}
		w.WriteHeader(202)
	}))
	mux.HandleFunc("DELETE /v2.1/servers/{id}", authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.actions = append(f.actions, r.PathValue("id")+" delete")
		f.mu.Unlock()
		w.WriteHeader(204)
	}))
	mux.HandleFunc("GET /v2.1/flavors/detail", authed(func(w http.ResponseWriter, r *http.Request) {
		fl := []map[string]any{{"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1}}
		f.mu.Lock()
		if f.flavors != nil {
			fl = f.flavors
		}
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"flavors": fl})
	}))
	mux.HandleFunc("GET /v2/images", authed(func(w http.ResponseWriter, r *http.Request) {
		im := []map[string]any{{"id": "img-1", "name": "busybox", "status": "active", "visibility": "public"}}
		f.mu.Lock()
		if f.images != nil {
			im = f.images
		}
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"images": im})
	}))
	mux.HandleFunc("GET /v2.0/networks", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") == "tok-admin" {
			writeJSON(w, 503, map[string]any{"NeutronError": map[string]any{"type": "ServiceUnavailable",
				"message": "The network service is down for maintenance.", "detail": ""}})
			return
		}
		f.mu.Lock()
		nets := f.networks
		f.mu.Unlock()
		if nets == nil {
			nets = []map[string]any{{"id": "net-1", "name": "private", "status": "ACTIVE", "subnets": []string{"sn-1"}, "project_id": "p-demo"}}
		}
		writeJSON(w, 200, map[string]any{"networks": nets})
	}))
	mux.HandleFunc("GET /v2.0/subnets", authed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"subnets": []map[string]any{{"id": "sn-1", "cidr": "10.0.0.0/24"}}})
	}))
	return mux
}

func (f *fakeAPI) accepts() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acceptMigrate
}

// usableNetworks counts the networks a launch without one would choose
// from: demo's own and shared ones.
func (f *fakeAPI) usableNetworks() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.networks == nil {
		return 1
	}
	n := 0
	for _, nw := range f.networks {
		if nw["shared"] == true || nw["project_id"] == "p-demo" {
			n++
		}
	}
	return n
}

func server(id, name, status string) map[string]any {
	return map[string]any{"id": id, "name": name, "status": status, "OS-EXT-STS:task_state": nil,
		"flavor": map[string]any{"id": "1"}, "image": map[string]any{"id": "img-1"},
		"addresses": map[string]any{"private": []map[string]any{{"addr": "10.0.0.5"}}}}
}

type env struct {
	t      *testing.T
	api    *fakeAPI
	portal *httptest.Server
	client *http.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	f := &fakeAPI{}
	up := httptest.NewServer(f.handler(t))
	t.Cleanup(up.Close)
	p, err := New(Options{Endpoints: Endpoints{Identity: up.URL + "/v3", Compute: up.URL + "/v2.1", Image: up.URL, Network: up.URL},
		PageSize: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewServer(p.Handler())
	t.Cleanup(ps.Close)
	return &env{t: t, api: f, portal: ps, client: newClient(t)}
}

func newClient(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches a page (following redirects by hand) and returns status and body.
func (e *env) get(path string) (int, string) {
	e.t.Helper()
	resp, err := e.client.Get(e.portal.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) post(path string, form url.Values) *http.Response {
	e.t.Helper()
	resp, err := e.client.PostForm(e.portal.URL+path, form)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// postBack posts a form the portal refuses and follows its redirect
// back to the page that shows the refusal (POST-redirect-GET), returning
// that page; a POST answered otherwise is returned as it is.
func (e *env) postBack(path string, form url.Values) *http.Response {
	e.t.Helper()
	resp := e.post(path, form)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/") {
		return resp
	}
	resp.Body.Close()
	back, err := e.client.Get(e.portal.URL + loc)
	if err != nil {
		e.t.Fatal(err)
	}
	return back
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("page has no CSRF field:\n%s", page)
	}
	return m[1]
}

func body(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// login logs in and returns the session's CSRF token.
func (e *env) login(user string) string {
	e.t.Helper()
	_, page := e.get("/login")
	resp := e.post("/login", url.Values{"csrf": {csrfOf(e.t, page)}, "user": {user}, "password": {"secret"}, "project": {user}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		e.t.Fatalf("login: %d %s\n%s", resp.StatusCode, resp.Header.Get("Location"), body(resp))
	}
	resp.Body.Close()
	st, page := e.get("/")
	if st != 200 {
		e.t.Fatalf("overview after login: %d\n%s", st, page)
	}
	return csrfOf(e.t, page)
}

func TestLoginSessionCookieAndLogout(t *testing.T) {
	e := newEnv(t)
	if st, _ := e.get("/servers"); st != http.StatusSeeOther {
		t.Fatalf("servers without a session: %d, want a redirect to the login page", st)
	}
	_, page := e.get("/login")
	resp := e.post("/login", url.Values{"csrf": {csrfOf(t, page)}, "user": {"demo"}, "password": {"secret"}, "project": {"demo"}})
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			sc = c
		}
	}
	resp.Body.Close()
	if sc == nil {
		t.Fatal("login set no session cookie")
	}
	if !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Secure {
		t.Errorf("session cookie on plain http: HttpOnly=%v SameSite=%v Secure=%v, want HttpOnly, Strict, not Secure", sc.HttpOnly, sc.SameSite, sc.Secure)
	}
	st, page := e.get("/")
	if st != 200 || !strings.Contains(page, "3 of 10") || !strings.Contains(page, "5 of 20") || !strings.Contains(page, "1536 of 51200") {
		t.Fatalf("overview: %d, want usage from /limits:\n%s", st, page)
	}
	if !strings.Contains(page, "w30") || !strings.Contains(page, "w25") {
		t.Errorf("overview bars: want 30%% and 25%% fills")
	}
	// A tampered cookie is no session.
	u, _ := url.Parse(e.portal.URL)
	e.client.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: sc.Value + "x", Path: "/"}})
	if st, _ := e.get("/"); st != http.StatusSeeOther {
		t.Errorf("tampered cookie: %d, want a redirect to the login page", st)
	}
	e.client.Jar.SetCookies(u, []*http.Cookie{sc})

	resp = e.post("/logout", url.Values{"csrf": {csrfOf(t, page)}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if len(e.api.revoked) != 1 || e.api.revoked[0] != "tok-demo" {
		t.Errorf("logout revoked %v, want the session's token", e.api.revoked)
	}
	if st, _ := e.get("/"); st != http.StatusSeeOther {
		t.Errorf("after logout: %d, want a redirect to the login page", st)
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	e := newEnv(t)
	p, err := New(Options{Endpoints: Endpoints{Identity: e.portal.URL, Compute: "x", Image: "x", Network: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	direct := httptest.NewRequest("GET", "https://portal.example/login", nil)
	direct.TLS = &tls.ConnectionState{}
	proxied := httptest.NewRequest("GET", "http://127.0.0.1:8080/login", nil)
	proxied.Header.Set("X-Forwarded-Proto", "https") // a TLS-terminating proxy
	for _, req := range []*http.Request{direct, proxied} {
		rec := httptest.NewRecorder()
		p.Handler().ServeHTTP(rec, req)
		cookies := rec.Result().Cookies()
		if len(cookies) == 0 {
			t.Fatalf("%s: no cookie", req.URL)
		}
		for _, c := range cookies {
			if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
				t.Errorf("%s: cookie %s: Secure=%v HttpOnly=%v SameSite=%v", req.URL, c.Name, c.Secure, c.HttpOnly, c.SameSite)
			}
		}
	}
}

func TestWrongPasswordShowsKeystoneMessage(t *testing.T) {
	e := newEnv(t)
	_, page := e.get("/login")
	resp := e.post("/login", url.Values{"csrf": {csrfOf(t, page)}, "user": {"demo"}, "password": {"nope"}, "project": {"demo"}})
	b := body(resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "Wrong user name, password or project") ||
		!strings.Contains(b, "requires authentication") || !strings.Contains(b, `value="demo"`) {
		t.Fatalf("wrong password: %d\n%s", resp.StatusCode, b)
	}
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie && c.Value != "" {
			t.Error("a refused login set a session")
		}
	}
}

func TestCSRFEnforced(t *testing.T) {
	e := newEnv(t)
	// The login form too: a POST without the login cookie's token.
	resp := e.post("/login", url.Values{"user": {"demo"}, "password": {"secret"}})
	if b := body(resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "CSRF") {
		t.Errorf("login without CSRF: %d %s", resp.StatusCode, b)
	}
	csrf := e.login("demo")
	form := url.Values{"name": {"x"}, "image": {"img-1"}, "flavor": {"1"}, "count": {"1"}}
	for _, tok := range []string{"", "0123" + csrf[4:], csrf + "0"} {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		if tok != "" {
			f.Set("csrf", tok)
		}
		resp := e.post("/launch", f)
		if b := body(resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "CSRF") {
			t.Errorf("launch with CSRF %q: %d, want 403\n%s", tok, resp.StatusCode, b)
		}
	}
	resp = e.post("/logout", url.Values{})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(e.api.revoked) != 0 {
		t.Errorf("logout without CSRF: %d (revoked %v), want 403 and nothing revoked", resp.StatusCode, e.api.revoked)
	}
	if len(e.api.created) != 0 {
		t.Fatalf("a refused POST reached the API: %v", e.api.created)
	}
	// Another session's token does not pass either.
	other := newClient(t)
	e2 := *e
	e2.client = other
	otherCSRF := e2.login("admin")
	form.Set("csrf", otherCSRF)
	resp = e.post("/launch", form)
	if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Errorf("launch with another session's CSRF token: %d, want 403", resp.StatusCode)
	}
	// The header works as the field does.
	req, _ := http.NewRequest("POST", e.portal.URL+"/launch", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(csrfHeader, csrf)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || len(e.api.created) != 1 {
		t.Errorf("launch with the CSRF header: %d, created %v", resp.StatusCode, e.api.created)
	}
}

func TestLaunchAndAPIErrors(t *testing.T) {
	e := newEnv(t)
	csrf := e.login("demo")
	st, page := e.get("/launch")
	if st != 200 || !strings.Contains(page, "busybox") || !strings.Contains(page, "m1.tiny") || !strings.Contains(page, "10.0.0.0/24") {
		t.Fatalf("launch form: %d\n%s", st, page)
	}
	resp := e.post("/launch", url.Values{"csrf": {csrf}, "name": {"web"}, "image": {"img-1"}, "flavor": {"1"},
		"network": {"net-1"}, "fixed_ip": {"10.0.0.10"}, "count": {"1"}})
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("launch: %d", resp.StatusCode)
	}
	resp = e.post("/launch", url.Values{"csrf": {csrf}, "name": {"many"}, "image": {"img-1"}, "flavor": {"1"}, "count": {"3"}})
	resp.Body.Close()
	got, _ := json.Marshal(e.api.created)
	want := `[{"flavorRef":"1","imageRef":"img-1","name":"web","networks":[{"fixed_ip":"10.0.0.10","uuid":"net-1"}]},` +
		`{"flavorRef":"1","imageRef":"img-1","max_count":3,"min_count":3,"name":"many"}]`
	if string(got) != want {
		t.Errorf("create requests:\n got %s\nwant %s", got, want)
	}
	// Nova's refusal reaches the user as Nova wrote it, form kept.
	resp = e.postBack("/launch", url.Values{"csrf": {csrf}, "name": {"big"}, "image": {"img-1"}, "flavor": {"huge"}, "count": {"1"}})
	b := body(resp)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "Quota exceeded for cores: Requested 64") || !strings.Contains(b, `value="big"`) {
		t.Errorf("quota refusal: %d\n%s", resp.StatusCode, b)
	}
	resp = e.postBack("/launch", url.Values{"csrf": {csrf}, "name": {"x"}, "image": {"img-1"}, "flavor": {"1"}, "count": {"zero"}})
	if b := body(resp); !strings.Contains(b, "Count must be a whole number") {
		t.Errorf("bad count: %s", b)
	}
	// A server that is not there: Nova's 404 message, not a blank page.
	st, page = e.get("/servers/nope")
	if st != 404 || !strings.Contains(page, "Instance nope could not be found.") {
		t.Errorf("missing server: %d\n%s", st, page)
	}
	// Neutron's error body.
	e2 := *e
	e2.client = newClient(t)
	e2.login("admin")
	st, page = e2.get("/networks")
	if st != 503 || !strings.Contains(page, "The network service is down for maintenance.") {
		t.Errorf("neutron error: %d\n%s", st, page)
	}
}

func TestServersPagedLiveAndEscaped(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "<script>alert(1)</script>", "BUILD"), server("s2", "two", "ACTIVE"), server("s3", "three", "SHUTOFF")}
	e.login("demo")
	st, page := e.get("/servers")
	if st != 200 || strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("servers page does not escape names: %d\n%s", st, page)
	}
	if !strings.Contains(page, "two") || strings.Contains(page, "three") || !strings.Contains(page, `href="/servers?marker=s2&amp;limit=2"`) {
		t.Errorf("first page (size 2) should show s1, s2 and link the next page:\n%s", page)
	}
	if !strings.Contains(e.api.requests[len(e.api.requests)-3], "limit=3") && !strings.Contains(strings.Join(e.api.requests, " "), "servers/detail?limit=3") {
		t.Errorf("portal should ask for a page plus one: %v", e.api.requests)
	}
	_, page = e.get("/servers?marker=s2")
	if !strings.Contains(page, "three") || strings.Contains(page, ">two<") || !strings.Contains(page, `id="next" hidden`) {
		t.Errorf("second page:\n%s", page)
	}
	// The JSON the list's script polls: statuses change without a reload.
	e.api.mu.Lock()
	e.api.servers[0]["status"] = "ACTIVE"
	e.api.mu.Unlock()
	st, js := e.get("/api/servers?limit=2")
	var got struct {
		Servers []serverRow
		Next    string
	}
	if err := json.Unmarshal([]byte(js), &got); err != nil || st != 200 {
		t.Fatalf("servers JSON: %d %v %s", st, err, js)
	}
	if len(got.Servers) != 2 || got.Servers[0].Status != "ACTIVE" || got.Servers[0].Class != "ok" || got.Next != "s2" ||
		got.Servers[0].Flavor != "m1.tiny" || got.Servers[0].Image != "busybox" || got.Servers[0].IPs[0] != "private: 10.0.0.5" {
		t.Errorf("servers JSON: %+v", got)
	}
	// Without a session the script gets a 401 it understands.
	anon := *e
	anon.client = newClient(t)
	if st, _ := anon.get("/api/servers"); st != http.StatusUnauthorized {
		t.Errorf("servers JSON without a session: %d", st)
	}
}

func TestServerDetailActionsConsole(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	csrf := e.login("demo")
	st, page := e.get("/servers/s1")
	if st != 200 || !strings.Contains(page, "m1.tiny (1 vCPU, 512 MB RAM") || !strings.Contains(page, "private: 10.0.0.5") ||
		!strings.Contains(page, "req-1") || strings.Contains(page, `id="host"`) {
		t.Fatalf("detail (member: no host): %d\n%s", st, page)
	}
	st, page = e.get("/servers/s1/console")
	if st != 200 || !strings.Contains(page, "capsule-init: booted") || !strings.Contains(page, "&lt;b&gt;not bold") {
		t.Errorf("console: %d\n%s", st, page)
	}
	// A destructive action without confirmation only asks.
	resp := e.post("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {"delete"}})
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "/confirm?action=delete") {
		t.Errorf("unconfirmed delete: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	st, page = e.get("/servers/s1/confirm?action=delete")
	if st != 200 || !strings.Contains(page, "Delete web?") {
		t.Errorf("confirm page: %d\n%s", st, page)
	}
	for _, a := range []string{"stop", "reboot", "delete"} {
		resp := e.post("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {a}, "confirmed": {"yes"}})
		if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("%s: %d", a, resp.StatusCode)
		}
	}
	// Nova's conflict message for a start of a running server.
	resp = e.postBack("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {"start"}})
	if b := body(resp); resp.StatusCode != http.StatusConflict || !strings.Contains(b, "Cannot &#39;start&#39; instance s1 while it is in vm_state active") {
		t.Errorf("start conflict: %d\n%s", resp.StatusCode, b)
	}
	want := "s1 os-getConsoleOutput,s1 os-stop,s1 reboot,s1 delete,s1 os-start"
	if got := strings.Join(e.api.actions, ","); got != want {
		t.Errorf("actions sent: %s, want %s", got, want)
	}
}

// TestExpiredTokenSendsToLogin: when the API stops accepting the token,
// the user is asked to log in again rather than shown a failure.
func TestExpiredTokenSendsToLogin(t *testing.T) {
	e := newEnv(t)
	e.login("demo")
	e.api.mu.Lock()
	e.api.revoked = append(e.api.revoked, "tok-demo")
	e.api.mu.Unlock()
	resp, err := e.client.Get(e.portal.URL + "/servers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?expired=1&next=%2Fservers" {
		t.Errorf("revoked token: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page := e.get("/login?expired=1"); !strings.Contains(page, "Your session has ended") {
		t.Errorf("login page does not say why")
	}
}

// TestAPIUnreachable: an API that does not answer is a sentence on the
// page, not a Go error with addresses in it.
func TestAPIUnreachable(t *testing.T) {
	ln := httptest.NewServer(http.NotFoundHandler())
	dead := ln.URL
	ln.Close()
	p, err := New(Options{Endpoints: Endpoints{Identity: dead + "/v3", Compute: dead, Image: dead, Network: dead},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewServer(p.Handler())
	defer ps.Close()
	e := &env{t: t, portal: ps, client: newClient(t)}
	_, page := e.get("/login")
	resp := e.post("/login", url.Values{"csrf": {csrfOf(t, page)}, "user": {"demo"}, "password": {"x"}})
	b := body(resp)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(b, "The identity service cannot be reached right now") ||
		strings.Contains(b, strings.TrimPrefix(dead, "http://")) {
		t.Errorf("unreachable identity: %d\n%s", resp.StatusCode, b)
	}
}

// TestAssetsOffline: nothing in the pages loads from another site, and the
// security headers forbid it anyway.
func TestAssetsOffline(t *testing.T) {
	ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:`)
	err := fs.WalkDir(assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(assets, p)
		if loc := ext.FindIndex(b); loc != nil {
			t.Errorf("%s loads from another site: %q", p, b[loc[0]:loc[1]])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	resp, err := http.Get(e.portal.URL + "/static/portal.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("static asset: %d CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
}

// TestNewServerActions: pause, unpause, resize, confirm, revert and
// snapshot send Nova's bodies; a refusal (resize to the same flavor) is
// shown on the server's page as Nova wrote it; the action log highlights
// an alarm whose event ended in Error.
func TestNewServerActions(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	csrf := e.login("demo")
	st, page := e.get("/servers/s1")
	if st != 200 || !strings.Contains(page, `id="act-pause"`) || !strings.Contains(page, `id="resize-flavor"`) || !strings.Contains(page, `id="snapshot-name"`) {
		t.Fatalf("detail: %d\n%s", st, page)
	}
	// The alarm is listed with its message and highlighted; the create is not.
	if !regexp.MustCompile(`<tr class="failed" data-action="oom_kill">`).MatchString(page) || !strings.Contains(page, "out of memory") ||
		!strings.Contains(page, "oom_kill: Error") || !strings.Contains(page, `<tr class="" data-action="create">`) {
		t.Errorf("action log does not highlight the failed alarm:\n%s", page)
	}
	// The server has no fault (it is ACTIVE): the newest failed action
	// says what failed and why.
	if !strings.Contains(page, `<dd class="bad" id="last-failure">oom_kill at 2026-01-01T00:01:00.000000 failed: the kernel killed sh: out of memory</dd>`) {
		t.Errorf("detail page lacks the last failure:\n%s", page)
	}
	// Members get a note instead of charts.
	if !strings.Contains(page, `id="charts-note"`) || strings.Contains(page, `id="charts"`) {
		t.Errorf("member's detail page should have the charts note, not the charts")
	}
	for _, tc := range []struct {
		form url.Values
		loc  string
	}{
		{url.Values{"action": {"pause"}}, "/servers/s1?done=pause"},
		{url.Values{"action": {"unpause"}}, "/servers/s1?done=unpause"},
		{url.Values{"action": {"resize"}, "flavor": {"2"}}, "/servers/s1?done=resize"},
		{url.Values{"action": {"confirmResize"}}, "/servers/s1?done=confirmResize"},
		{url.Values{"action": {"revertResize"}}, "/servers/s1?done=revertResize"},
		{url.Values{"action": {"snapshot"}, "name": {" web-snap "}}, "/images?done=snapshot"},
	} {
		tc.form.Set("csrf", csrf)
		resp := e.post("/servers/s1/action", tc.form)
		if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != tc.loc {
			t.Errorf("%v: %d %s, want a redirect to %s", tc.form["action"], resp.StatusCode, resp.Header.Get("Location"), tc.loc)
		}
	}
	want := []string{`{"pause":null}`, `{"unpause":null}`, `{"resize":{"flavorRef":"2"}}`, `{"confirmResize":null}`,
		`{"revertResize":null}`, `{"createImage":{"name":"web-snap"}}`}
	if got := strings.Join(e.api.bodies, " "); got != strings.Join(want, " ") {
		t.Errorf("action bodies:\n got %s\nwant %s", got, strings.Join(want, " "))
	}
	if _, page := e.get("/images?done=snapshot"); !strings.Contains(page, "Snapshot requested") {
		t.Errorf("images page after a snapshot has no notice")
	}
	// Nova's refusal on the server's own page, with its status.
	resp := e.postBack("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {"resize"}, "flavor": {"1"}})
	if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "When resizing, instances must change flavor!") ||
		!strings.Contains(b, `id="act-pause"`) {
		t.Errorf("resize to the same flavor: %d\n%s", resp.StatusCode, b)
	}
	// A snapshot without a name is refused before the API.
	n := len(e.api.bodies)
	resp = e.postBack("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {"snapshot"}, "name": {" "}})
	if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "Give the snapshot a name.") || len(e.api.bodies) != n {
		t.Errorf("nameless snapshot: %d\n%s", resp.StatusCode, b)
	}
	// Buttons follow the status: a paused server offers unpause, not pause.
	e.api.mu.Lock()
	e.api.servers[0]["status"] = "PAUSED"
	e.api.mu.Unlock()
	_, page = e.get("/servers/s1")
	if !regexp.MustCompile(`data-when="PAUSED" *>`).MatchString(page) || !regexp.MustCompile(`data-when="ACTIVE" hidden><input[^>]*><input type="hidden" name="action" value="pause">`).MatchString(page) {
		t.Errorf("paused server's buttons:\n%s", page)
	}
}

// TestDiagnosticsSample: the charts' JSON sums the vCPUs' times and the
// NICs' counters of Nova's 2.48 body; a member gets Nova's 403 as JSON.
func TestDiagnosticsSample(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	e.login("demo")
	st, js := e.get("/api/servers/s1/diagnostics")
	if st != http.StatusForbidden || !strings.Contains(js, "os-server-diagnostics") {
		t.Errorf("member's diagnostics: %d %s", st, js)
	}
	a := *e
	a.client = newClient(t)
	a.login("admin")
	st, js = a.get("/api/servers/s1/diagnostics")
	var smp Sample
	if err := json.Unmarshal([]byte(js), &smp); err != nil || st != 200 {
		t.Fatalf("admin's diagnostics: %d %v %s", st, err, js)
	}
	if smp.VCPUs != 2 || smp.CPUNS == nil || *smp.CPUNS != 4e9 || *smp.MemUsed != 37 || smp.MemMax != 512 ||
		*smp.RxBytes != 1024 || *smp.TxBytes != 10 || smp.NumNICs != 2 || smp.At == 0 {
		t.Errorf("sample: %s", js)
	}
	if _, page := a.get("/servers/s1"); !strings.Contains(page, `id="chart-cpu"`) || strings.Contains(page, `id="charts-note"`) {
		t.Errorf("admin's detail page has no charts")
	}
}

// TestHostsPage: admins see each host's state, capacity and servers,
// the migrations (with confirm and revert for a server in VERIFY_RESIZE)
// and "no events" where the API has no os-host-events; they disable and
// enable hosts; a migration the API refuses shows its message; evacuate
// disables the host and reports each server. Members are refused.
func TestHostsPage(t *testing.T) {
	e := newEnv(t)
	s1 := server("s1", "web", "VERIFY_RESIZE")
	s1["OS-EXT-SRV-ATTR:host"], s1["tenant_id"] = "cn-a", "p-demo"
	s2 := server("s2", "db", "ACTIVE")
	s2["OS-EXT-SRV-ATTR:host"] = "cn-a"
	e.api.servers = []map[string]any{s1, s2}

	_, page := (func() (int, string) { e.login("demo"); return e.get("/") })()
	if strings.Contains(page, `id="hosts-link"`) {
		t.Error("a member's menu links the Hosts page")
	}
	if st, page := e.get("/hosts"); st != http.StatusForbidden || !strings.Contains(page, "for cloud administrators") {
		t.Errorf("member on /hosts: %d\n%s", st, page)
	}
	csrf := csrfOf(t, page)
	resp := e.post("/hosts/cn-a/disable", url.Values{"csrf": {csrf}})
	if resp.Body.Close(); resp.StatusCode != http.StatusForbidden || len(e.api.bodies) != 0 {
		t.Errorf("member disables a host: %d %v", resp.StatusCode, e.api.bodies)
	}

	a := *e
	a.client = newClient(t)
	csrf = a.login("admin")
	st, page := a.get("/hosts")
	if st != 200 {
		t.Fatalf("hosts: %d\n%s", st, page)
	}
	for _, want := range []string{`id="hosts-link"`, `data-host="cn-a"`, `data-host="cn-b"`, "3 of 8", "4096 of 16000", "7 of 100",
		`<tr data-id="s1"><td><a class="clip" href="/servers/s1" title="web">web</a>`, `<option value="cn-b">cn-b</option>`, "mig-confirm", "mig-revert",
		"No events: this cloud&#39;s compute API has no host events", "cn-a → cn-b"} {
		if !strings.Contains(page, want) {
			t.Errorf("hosts page lacks %q", want)
		}
	}
	resp = a.post("/hosts/cn-b/disable", url.Values{"csrf": {csrf}})
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("disable: %d", resp.StatusCode)
	}
	_, page = a.get(resp.Header.Get("Location"))
	if !strings.Contains(page, "Host cn-b is disabled") || !regexp.MustCompile(`(?s)data-host="cn-b".*host-enable`).MatchString(page) {
		t.Errorf("after disable:\n%s", page)
	}
	resp = a.post("/hosts/cn-b/enable", url.Values{"csrf": {csrf}})
	resp.Body.Close()
	// Migrate: the API's refusal on the Hosts page, readable.
	resp = a.postBack("/admin/servers/s2/migrate", url.Values{"csrf": {csrf}, "host": {"cn-b"}})
	if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "cold migration) is not supported") || !strings.Contains(b, `data-host="cn-a"`) {
		t.Errorf("refused migration: %d\n%s", resp.StatusCode, b)
	}
	resp = a.post("/admin/servers/s1/confirmResize", url.Values{"csrf": {csrf}})
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("confirm: %d", resp.StatusCode)
	}
	// Evacuate: confirmation lists the servers; the POST disables the
	// host and reports each server's answer.
	if _, page := a.get("/hosts/cn-a/evacuate"); !strings.Contains(page, "Yes, evacuate cn-a") || !strings.Contains(page, "db") {
		t.Errorf("evacuate confirmation:\n%s", page)
	}
	resp = a.post("/hosts/cn-a/evacuate", url.Values{"csrf": {csrf}})
	b := body(resp)
	if resp.StatusCode != 200 || strings.Count(b, "cold migration) is not supported") != 2 || !strings.Contains(b, "cn-a is disabled") {
		t.Errorf("evacuate: %d\n%s", resp.StatusCode, b)
	}
	want := []string{"service disable cn-b nova-compute", "service enable cn-b nova-compute", `compute 2.56 {"migrate":{"host":"cn-b"}}`,
		`{"confirmResize":null}`, "service disable cn-a nova-compute", `{"migrate":null}`, `{"migrate":null}`}
	if got := strings.Join(a.api.bodies, " | "); got != strings.Join(want, " | ") {
		t.Errorf("requests:\n got %s\nwant %s", got, strings.Join(want, " | "))
	}
	// A host that is down: its servers are evacuated (rebuilt elsewhere),
	// not cold-migrated, and the page says so.
	a.api.mu.Lock()
	a.api.down, a.api.bodies = map[string]bool{"cn-a": true}, nil
	a.api.mu.Unlock()
	if _, page := a.get("/hosts/cn-a/evacuate"); !strings.Contains(page, `id="evacuate-dead"`) || !strings.Contains(page, "rebuilt on another host") {
		t.Errorf("evacuate confirmation of a down host:\n%s", page)
	}
	resp = a.post("/hosts/cn-a/evacuate", url.Values{"csrf": {csrf}})
	b = body(resp)
	if resp.StatusCode != 200 || strings.Count(b, "evacuating</span>") != 2 {
		t.Errorf("evacuate of a down host: %d\n%s", resp.StatusCode, b)
	}
	want = []string{"service disable cn-a nova-compute", `compute 2.14 {"evacuate":{}}`, `compute 2.14 {"evacuate":{}}`}
	if got := strings.Join(a.api.bodies, " | "); got != strings.Join(want, " | ") {
		t.Errorf("requests for a down host:\n got %s\nwant %s", got, strings.Join(want, " | "))
	}
}
