// Package apifuzz fuzzes a running Capsule API over HTTP: it logs in as
// the admin and as a member, then sends generated requests to every route
// of identity, compute, image and network (valid shapes with mutated
// fields, wrong types, huge values, unicode, deep nesting, bad headers and
// microversions, hostile path parameters) and reports every 5xx and every
// broken connection with the request that caused it. Cloud starts a whole
// control plane in this process (fake compute driver), for CI and for the
// long run (cmd/capsule-fuzz).
package apifuzz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Config says what to fuzz and how much.
type Config struct {
	// IdentityURL is the Keystone v3 endpoint, e.g. http://127.0.0.1:5000/v3.
	IdentityURL string
	// AdminPassword and DemoPassword are the passwords of users admin
	// (admin of project admin) and demo (member of project demo).
	AdminPassword, DemoPassword string
	Requests                    int           // how many fuzzed requests to send
	Concurrency                 int           // default 8
	Seed                        uint64        // of the generator; the same seed sends the same requests
	Timeout                     time.Duration // per request, default 30s
	// Progress, when set, gets a line every ProgressEvery requests.
	Progress      io.Writer
	ProgressEvery int

	// ready is called once logged in and seeded, before the first fuzzed
	// request, with a function closing the client's idle connections.
	ready func(closeIdle func())
}

// Finding is one request answered with a 5xx, or not answered at all.
type Finding struct {
	Kind    string // "5xx", "transport" (connection broken: a panic?), "timeout"
	Route   string // service, method and path pattern
	Count   int    // how many requests of this kind and route failed so
	Method  string
	URL     string
	Headers map[string]string
	Body    string // the request body (truncated)
	Status  int
	Answer  string // the response body or the client error (truncated)
}

// Report is what a run saw.
type Report struct {
	Requests  int
	ByStatus  map[int]int
	Status5xx int // 5xx answers that are not a route's documented 501
	Transport int // requests with no answer (reset, EOF): a handler panic kills its connection
	Timeouts  int
	Findings  []Finding
	Duration  time.Duration
}

// Failed reports whether the run found anything.
func (r *Report) Failed() bool { return r.Status5xx > 0 || r.Transport > 0 || r.Timeouts > 0 }

// String is the report as text.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests: %d in %s (%.0f/s)\n", r.Requests, r.Duration.Round(time.Millisecond),
		float64(r.Requests)/max(r.Duration.Seconds(), 1e-9))
	codes := make([]int, 0, len(r.ByStatus))
	for c := range r.ByStatus {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	b.WriteString("statuses:")
	for _, c := range codes {
		fmt.Fprintf(&b, " %d×%d", c, r.ByStatus[c])
	}
	fmt.Fprintf(&b, "\n5xx: %d, broken connections: %d, timeouts: %d\n", r.Status5xx, r.Transport, r.Timeouts)
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "- %s %s (%d×): %d %s %s\n  headers: %v\n  body: %q\n  answer: %q\n", f.Kind, f.Route, f.Count,
			f.Status, f.Method, f.URL, f.Headers, f.Body, f.Answer)
	}
	return b.String()
}

// Run logs in, seeds a few resources of each kind and sends cfg.Requests
// fuzzed requests.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	f := newFuzzer(cfg)
	defer f.client.CloseIdleConnections()
	if err := f.login(ctx); err != nil {
		return nil, err
	}
	if err := f.seed(ctx); err != nil {
		return nil, fmt.Errorf("seed resources: %w", err)
	}
	if cfg.ready != nil {
		cfg.ready(f.client.CloseIdleConnections)
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &env{f: f, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(w))), demoPass: cfg.DemoPassword}
			for ctx.Err() == nil {
				n := next.Add(1)
				if n > int64(cfg.Requests) {
					return
				}
				f.fuzzOne(ctx, e)
				if cfg.Progress != nil && cfg.ProgressEvery > 0 && n%int64(cfg.ProgressEvery) == 0 {
					f.mu.Lock()
					fmt.Fprintf(cfg.Progress, "%d requests, %s, 5xx %d, broken %d\n", n, time.Since(start).Round(time.Second),
						f.report.Status5xx, f.report.Transport)
					f.mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	f.report.Duration = time.Since(start)
	for _, k := range sortedKeys(f.findings) {
		f.report.Findings = append(f.report.Findings, *f.findings[k])
	}
	return f.report, ctx.Err()
}

func newFuzzer(cfg Config) *fuzzer {
	return &fuzzer{cfg: cfg, routes: routes(), pools: newPools(),
		client: &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency * 2}},
		report: &Report{ByStatus: map[int]int{}}, findings: map[string]*Finding{}}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

type fuzzer struct {
	cfg       Config
	routes    []route
	pools     *pools
	client    *http.Client
	endpoints map[string]string // service type → URL (identity: the v3 URL)
	admin     principal
	demo      principal
	// replugServer is the seeded server whose port the "serverport"
	// routes update.
	replugServer string

	mu       sync.Mutex
	report   *Report
	findings map[string]*Finding
}

// principal is a logged-in user.
type principal struct{ token, userID, projectID string }

// login gets the admin's and the member's tokens and the catalog.
func (f *fuzzer) login(ctx context.Context) error {
	var err error
	if f.admin, err = f.authenticate(ctx, "admin", f.cfg.AdminPassword, "admin"); err != nil {
		return err
	}
	f.demo, err = f.authenticate(ctx, "demo", f.cfg.DemoPassword, "demo")
	return err
}

func (f *fuzzer) authenticate(ctx context.Context, user, password, project string) (principal, error) {
	body, _ := json.Marshal(obj("auth", map[string]any{
		"identity": map[string]any{"methods": []any{"password"}, "password": obj("user",
			map[string]any{"name": user, "domain": obj("id", "default"), "password": password})},
		"scope": obj("project", map[string]any{"name": project, "domain": obj("id", "default")})}))
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(f.cfg.IdentityURL, "/")+"/auth/tokens", bytes.NewReader(body))
	if err != nil {
		return principal{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return principal{}, fmt.Errorf("log in as %s: %w", user, err)
	}
	defer resp.Body.Close()
	var tok struct {
		Token struct {
			User    struct{ ID string }
			Project struct{ ID string }
			Catalog []struct {
				Type      string
				Endpoints []struct{ Interface, URL string }
			}
		}
	}
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return principal{}, fmt.Errorf("log in as %s: %s: %s", user, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return principal{}, fmt.Errorf("log in as %s: %w", user, err)
	}
	f.endpoints = map[string]string{"identity": strings.TrimRight(f.cfg.IdentityURL, "/")}
	for _, s := range tok.Token.Catalog {
		for _, ep := range s.Endpoints {
			if ep.Interface == "public" {
				f.endpoints[s.Type] = strings.TrimRight(ep.URL, "/")
			}
		}
	}
	for _, s := range []string{"compute", "image", "network"} {
		if f.endpoints[s] == "" {
			return principal{}, fmt.Errorf("the catalog has no public %s endpoint", s)
		}
	}
	return principal{token: resp.Header.Get("X-Subject-Token"), userID: tok.Token.User.ID, projectID: tok.Token.Project.ID}, nil
}

// seed makes one resource of each kind, as the member and the admin, so
// that routes with ids reach past their lookups.
func (f *fuzzer) seed(ctx context.Context) error {
	p := f.pools
	p.addKnown("project", f.admin.projectID, f.demo.projectID)
	p.addKnown("user", f.admin.userID, f.demo.userID)
	p.addKnown("token", f.demo.token)
	p.addKnown("domain", "default")
	p.addKnown("region", "RegionOne")
	call := func(service, method, path string, tok string, body any) (map[string]any, error) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, method, f.endpoints[service]+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Auth-Token", tok)
		resp, err := f.client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, raw)
		}
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return m, nil
	}
	sub := func(m map[string]any, key string) string {
		if inner, ok := m[key].(map[string]any); ok {
			if id, ok := inner["id"].(string); ok {
				return id
			}
		}
		return ""
	}
	m, err := call("network", "POST", "/v2.0/networks", f.demo.token, obj("network", map[string]any{"name": "fuzz-net"}))
	if err != nil {
		return err
	}
	netID := sub(m, "network")
	p.addKnown("network", netID)
	p.addKnown("netname", "fuzz-net")
	if m, err = call("network", "POST", "/v2.0/subnets", f.demo.token, obj("subnet", map[string]any{"network_id": netID,
		"cidr": "10.77.0.0/24", "ip_version": 4, "name": "fuzz-sub"})); err != nil {
		return err
	}
	p.addKnown("subnet", sub(m, "subnet"))
	if m, err = call("network", "POST", "/v2.0/ports", f.demo.token, obj("port", map[string]any{"network_id": netID, "name": "fuzz-port"})); err != nil {
		return err
	}
	p.addKnown("port", sub(m, "port"))
	if m, err = call("network", "POST", "/v2.0/security-groups", f.demo.token, obj("security_group", map[string]any{"name": "fuzz-sg"})); err != nil {
		return err
	}
	sgID := sub(m, "security_group")
	p.addKnown("secgroup", sgID)
	if m, err = call("network", "POST", "/v2.0/security-group-rules", f.demo.token, obj("security_group_rule", map[string]any{
		"security_group_id": sgID, "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80})); err != nil {
		return err
	}
	p.addKnown("sgrule", sub(m, "security_group_rule"))
	if m, err = call("image", "GET", "/v2/images", f.demo.token, nil); err != nil {
		return err
	}
	for _, i := range asSlice(m["images"]) {
		if id, ok := asMap(i)["id"].(string); ok {
			p.addKnown("image", id)
		}
	}
	if _, err = call("compute", "POST", "/os-keypairs", f.demo.token, obj("keypair", map[string]any{"name": "fuzz-kp", "public_key": sshKey})); err != nil {
		return err
	}
	p.addKnown("keypair", "fuzz-kp")
	if m, err = call("compute", "POST", "/os-server-groups", f.demo.token, obj("server_group", map[string]any{"name": "fuzz-g", "policies": []any{"anti-affinity"}})); err != nil {
		return err
	}
	p.addKnown("group", sub(m, "server_group"))
	if m, err = call("compute", "POST", "/flavors", f.admin.token, obj("flavor", map[string]any{"name": "fuzz-flavor", "ram": 128, "vcpus": 1, "disk": 1})); err != nil {
		return err
	}
	p.addKnown("flavor", sub(m, "flavor"), "1", "2")
	if m, err = call("identity", "GET", "/roles", f.admin.token, nil); err != nil {
		return err
	}
	for _, r := range asSlice(m["roles"]) {
		if id, ok := asMap(r)["id"].(string); ok {
			p.addKnown("role", id)
		}
	}
	if m, err = call("compute", "POST", "/servers", f.demo.token, obj("server", map[string]any{"name": "fuzz-vm",
		"imageRef": p.any("image", nil), "flavorRef": "1", "networks": []any{obj("uuid", netID)}})); err != nil {
		return err
	}
	p.addKnown("server", sub(m, "server"))
	// The re-plug server: its port (only ever updated, by the route of
	// pool "serverport") is one the fuzzer made, so a changed address or
	// MAC is applied on its host while the API answers.
	if m, err = call("network", "POST", "/v2.0/ports", f.demo.token, obj("port", map[string]any{"network_id": netID, "name": "fuzz-replug-port"})); err != nil {
		return err
	}
	replugPort := sub(m, "port")
	if m, err = call("compute", "POST", "/servers", f.demo.token, obj("server", map[string]any{"name": "fuzz-replug-vm",
		"imageRef": p.any("image", nil), "flavorRef": "1", "networks": []any{obj("port", replugPort)}})); err != nil {
		return err
	}
	p.addKnown("serverport", replugPort)
	f.replugServer = sub(m, "server")
	// Until it is ACTIVE an update of its port is only refused (409,
	// the server is busy): give it a while, then fuzz anyway.
	for wait := time.Now().Add(time.Minute); time.Now().Before(wait) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
		if m, err = call("compute", "GET", "/servers/"+f.replugServer, f.demo.token, nil); err == nil && asMap(m["server"])["status"] != "BUILD" {
			break
		}
	}
	p.addKnown("tag", "t1", "a")
	p.addKnown("metakey", "k")
	p.addKnown("speckey", extraSpecKeys...)
	p.addKnown("serviceaction", "disable", "enable", "disable-log-reason", "force-down")
	p.addKnown("hypervisor", "1", "fuzz-host")
	p.addKnown("migration", "1")
	p.addKnown("domain", "default")
	p.addKnown("alias", "quotas", "security-group", "binding", "os-keypairs")
	p.addKnown("vtype", "__DEFAULT__", "c5f4d0b8-3c59-5b8a-9a8e-6c1f0d7e2a01")
	return nil
}

func asSlice(v any) []any        { s, _ := v.([]any); return s }
func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return s
}

var methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FUZZ"}

// fuzzOne builds, sends and judges one request.
func (f *fuzzer) fuzzOne(ctx context.Context, e *env) {
	rt := f.routes[e.rng.IntN(len(f.routes))]
	e.last = map[string]string{}
	method := rt.method
	if e.rng.IntN(30) == 0 {
		method = methods[e.rng.IntN(len(methods))]
	}
	// A route's method changed into a write must not get the ids reads
	// get: a GET /v3/users/{user} turned DELETE would delete the fuzzer's
	// own user (and revoke its tokens).
	if method != rt.method && method != "GET" && method != "HEAD" && method != "OPTIONS" {
		rt.destructive = true
	}
	path := e.fillPath(rt)
	u := f.endpoints[rt.service] + path
	if q := e.query(rt); q != "" {
		u += "?" + q
	}
	var body []byte
	contentType := rt.contentType
	switch {
	case rt.rawBody:
		n := []int{0, 1, 100, 4096, 65536}[e.rng.IntN(5)]
		body = make([]byte, n)
		for i := range body {
			body[i] = byte(e.rng.IntN(256))
		}
	case rt.body != nil:
		valid, _ := json.Marshal(rt.body(e))
		switch r := e.rng.IntN(20); {
		case r < 7:
			body = valid
		case r < 18:
			var v any
			_ = json.Unmarshal(valid, &v)
			body, _ = json.Marshal(mutate(e.rng, v, 1+e.rng.IntN(3)))
		default:
			body = rawBody(e.rng, valid)
		}
		if contentType == "" {
			contentType = "application/json"
		}
	case e.rng.IntN(20) == 0:
		body = rawBody(e.rng, nil)
	}
	hdr := oddHeaders(e.rng, rt.service)
	if _, set := hdr["Content-Type"]; !set && contentType != "" {
		hdr["Content-Type"] = contentType
	}
	switch tok := e.pickToken(rt); tok {
	case "":
	default:
		hdr["X-Auth-Token"] = tok
	}
	if rt.service == "identity" && strings.HasPrefix(path, "/auth/tokens") && method != "POST" {
		// Never the fuzzer's own tokens for a DELETE: it would revoke them.
		if method == "DELETE" || e.rng.IntN(2) == 0 {
			if hdr["X-Subject-Token"] = e.f.pools.createdOne("token", e.rng); hdr["X-Subject-Token"] == "" {
				hdr["X-Subject-Token"] = oddPathValue(e.rng)
			}
		} else {
			hdr["X-Subject-Token"] = e.id("token")
		}
	}
	status, answer, respHdr, err := f.send(ctx, method, u, hdr, body)
	f.judge(rt, method, u, hdr, body, status, answer, err)
	if err == nil && status/100 == 2 && rt.creates != "" && method == "POST" {
		f.collect(ctx, rt, hdr["X-Auth-Token"], answer)
	}
	if err == nil && status == http.StatusCreated && rt.service == "identity" && path == "/auth/tokens" {
		if t := respHdr.Get("X-Subject-Token"); t != "" {
			f.pools.addCreated("token", t, "")
		}
	}
}

// send does one request and returns the status, up to 4 KiB of the answer
// and its headers.
func (f *fuzzer) send(ctx context.Context, method, u string, hdr map[string]string, body []byte) (int, string, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return resp.StatusCode, string(head), resp.Header, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, string(head), resp.Header, nil
}

// judge counts one answer and keeps the first example of each failure.
func (f *fuzzer) judge(rt route, method, u string, hdr map[string]string, body []byte, status int, answer string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.report.Requests++
	kind := ""
	switch {
	case err != nil && ctxDone(err):
		return
	case err != nil && isTimeout(err):
		f.report.Timeouts++
		kind, answer = "timeout", err.Error()
	case err != nil && (strings.HasPrefix(err.Error(), "build request") || strings.Contains(err.Error(), "net/http: invalid header")):
		f.report.Requests-- // the client refused to send it: nothing was fuzzed
		return
	case err != nil:
		f.report.Transport++
		kind, answer = "transport", err.Error()
	default:
		f.report.ByStatus[status]++
		if status >= 500 && !(status == http.StatusNotImplemented && f.notImplemented(rt.service, method, rt.path)) &&
			!(status == http.StatusServiceUnavailable && strings.Contains(answer, `"NoNetworkAvailable"`)) {
			// (Neutron's 503 when the tenant VLAN range is used up is its
			// documented answer, as a 501 is for what is not implemented.)
			f.report.Status5xx++
			kind = "5xx"
		}
	}
	if kind == "" {
		return
	}
	key := fmt.Sprintf("%s %s %s %s %d", kind, rt.service, method, rt.path, status)
	if fd, ok := f.findings[key]; ok {
		fd.Count++
		return
	}
	shown := map[string]string{}
	for k, v := range hdr {
		shown[k] = truncate(v, 80)
	}
	f.findings[key] = &Finding{Kind: kind, Route: rt.service + " " + method + " " + rt.path, Count: 1, Method: method,
		URL: truncate(u, 300), Headers: shown, Body: truncate(string(body), 2048), Status: status, Answer: truncate(answer, 1024)}
}

func ctxDone(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) && !isTimeout(err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// collect puts the ids a create answered with in the created pool, and
// deletes the oldest of that pool beyond poolCap (the janitor), so the
// database stays small however long the run.
func (f *fuzzer) collect(ctx context.Context, rt route, token, answer string) {
	var m map[string]any
	if json.Unmarshal([]byte(answer), &m) != nil {
		return
	}
	var ids []string
	if id, ok := m["id"].(string); ok { // Glance
		ids = append(ids, id)
	}
	for _, v := range m {
		if inner, ok := v.(map[string]any); ok {
			if id, ok := inner["id"].(string); ok {
				ids = append(ids, id)
			} else if name, ok := inner["name"].(string); ok && rt.creates == "keypair" {
				ids = append(ids, name)
			}
		}
		for _, x := range asSlice(v) { // bulk creates
			if id, ok := asMap(x)["id"].(string); ok {
				ids = append(ids, id)
			}
		}
	}
	for _, id := range ids {
		for _, old := range f.pools.addCreated(rt.creates, id, token) {
			del := deleteRoutes[rt.creates]
			tok := old.token
			if del.service == "identity" || tok == "" {
				tok = f.admin.token
			}
			_, _, _, _ = f.send(ctx, del.method, f.endpoints[del.service]+fmt.Sprintf(del.path, url.PathEscape(old.id)),
				map[string]string{"X-Auth-Token": tok}, nil)
		}
	}
}

// poolCap is how many created resources of a kind the fuzzer keeps.
const poolCap = 25

type created struct{ id, token string }

// pools are the ids the fuzzer knows: seeded ones (never deleted) and
// those it created (deleted when the pool is full, and the only ones
// destructive routes get).
type pools struct {
	mu      sync.Mutex
	known   map[string][]string
	created map[string][]created
}

func newPools() *pools { return &pools{known: map[string][]string{}, created: map[string][]created{}} }

func (p *pools) addKnown(kind string, ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if id != "" {
			p.known[kind] = append(p.known[kind], id)
		}
	}
}

// addCreated adds id and returns what fell out of the pool.
func (p *pools) addCreated(kind, id, token string) []created {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.created[kind] = append(p.created[kind], created{id, token})
	var out []created
	if n := len(p.created[kind]); n > poolCap {
		out = append(out, p.created[kind][:n-poolCap]...)
		p.created[kind] = append([]created(nil), p.created[kind][n-poolCap:]...)
	}
	return out
}

// any returns a known or created id of kind ("" if none); rng nil picks
// the first known.
func (p *pools) any(kind string, rng *rand.Rand) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, c := p.known[kind], p.created[kind]
	if len(k)+len(c) == 0 {
		return ""
	}
	if rng == nil {
		if len(k) > 0 {
			return k[0]
		}
		return c[0].id
	}
	if i := rng.IntN(len(k) + len(c)); i < len(k) {
		return k[i]
	} else {
		return c[i-len(k)].id
	}
}

func (p *pools) createdOne(kind string, rng *rand.Rand) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.created[kind]
	if len(c) == 0 {
		return ""
	}
	return c[rng.IntN(len(c))].id
}

// env is one worker's generator state.
type env struct {
	f        *fuzzer
	rng      *rand.Rand
	demoPass string
	last     map[string]string // path parameters of the request being built
}

func (e *env) pickOf(vs ...any) any { return vs[e.rng.IntN(len(vs))] }

func (e *env) name(prefix string) string {
	return fmt.Sprintf("fz-%s-%d", prefix, e.rng.IntN(1_000_000))
}

func (e *env) uuid() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(e.rng.IntN(256))
	}
	u, _ := uuid.FromBytes(b[:])
	return u.String()
}

// id returns an id of kind: mostly a live one, sometimes a random uuid or
// a hostile string.
func (e *env) id(kind string) string {
	switch r := e.rng.IntN(20); {
	case r < 16:
		if id := e.f.pools.any(kind, e.rng); id != "" {
			return id
		}
		return e.uuid()
	case r < 18:
		return e.uuid()
	default:
		return oddPathValue(e.rng)
	}
}

// token returns a token for a token-auth body: the member's, one the
// fuzzer got, or garbage.
func (e *env) token() string {
	if e.rng.IntN(4) == 0 {
		return oddPathValue(e.rng)
	}
	if id := e.f.pools.createdOne("token", e.rng); id != "" && e.rng.IntN(2) == 0 {
		return id
	}
	return e.f.demo.token
}

// pickToken is the X-Auth-Token of a request ("" for none).
func (e *env) pickToken(rt route) string {
	switch r := e.rng.IntN(100); {
	case r < 3:
		return ""
	case r < 6:
		return oddPathValue(e.rng)
	case r < 8:
		return strings.Repeat("A", 8000)
	case rt.asAdmin && r < 90, !rt.asAdmin && r < 40:
		return e.f.admin.token
	default:
		return e.f.demo.token
	}
}

func (e *env) lastPath(kind string) string {
	if v, ok := e.last[kind]; ok {
		return v
	}
	return "k"
}

// fillPath replaces the route's {kind} placeholders.
func (e *env) fillPath(rt route) string {
	path := rt.path
	for {
		i := strings.IndexByte(path, '{')
		if i < 0 {
			return path
		}
		j := strings.IndexByte(path[i:], '}')
		kind := path[i+1 : i+j]
		var v string
		switch r := e.rng.IntN(10); {
		case r < 8 && rt.destructive && kind != "tag" && kind != "speckey" && kind != "role":
			v = e.f.pools.createdOne(kind, e.rng)
			if v == "" {
				v = e.uuid()
			}
		case r < 8:
			v = e.f.pools.any(kind, e.rng)
			if v == "" {
				v = e.uuid()
			}
		case r < 9:
			v = e.uuid()
		default:
			v = oddPathValue(e.rng)
		}
		if rt.destructive && kind == "role" && rt.service == "identity" && !strings.Contains(rt.path, "/users/") {
			v = e.f.pools.createdOne("role", e.rng) // never delete member, reader, admin
			if v == "" {
				v = e.uuid()
			}
		}
		e.last[kind] = v
		path = path[:i] + url.PathEscape(v) + path[i+j+1:]
	}
}

// queryValues are values for query parameters besides ids.
var queryValues = []string{"1", "0", "-1", "10", "1000", "true", "false", "True", "yes", "asc", "desc", "name", "created_at",
	"id", "status", "ACTIVE", "active", "in:a,b", "gt:2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "nova", "fuzz-host",
	"t1,a", "default", "x,y,z"}

// query returns a query string of some of the route's parameters (and
// sometimes an unknown or repeated one).
func (e *env) query(rt route) string {
	if len(rt.query) == 0 && e.rng.IntN(10) != 0 {
		return ""
	}
	q := url.Values{}
	for range e.rng.IntN(4) {
		k := "unknown"
		if len(rt.query) > 0 {
			k = rt.query[e.rng.IntN(len(rt.query))]
		}
		var v string
		switch r := e.rng.IntN(10); {
		case r < 5:
			v = queryValues[e.rng.IntN(len(queryValues))]
		case r < 7:
			v = e.id(e.pickOf("server", "image", "network", "project", "flavor", "port").(string))
		default:
			v = oddPathValue(e.rng)
		}
		q.Add(k, v)
	}
	return q.Encode()
}

// notImplemented reports whether 501 is the documented answer to method
// on the route path of service (a mutated method can land on one).
func (f *fuzzer) notImplemented(service, method, path string) bool {
	for _, r := range f.routes {
		if r.notImplemented && r.service == service && r.method == method && r.path == path {
			return true
		}
	}
	return false
}
