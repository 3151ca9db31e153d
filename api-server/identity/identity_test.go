package identity_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// env is an identity server over a fresh SQLite store with an admin and a
// member user.
type env struct {
	t      *testing.T
	st     *store.Store
	svc    *identity.Service
	srv    *httptest.Server
	admin  string // admin's project-scoped token
	member string // member's project-scoped token
	projID string
}

// forEachDB runs f against SQLite and PostgreSQL.
func forEachDB(t *testing.T, f func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) { f(t, newEnvOn(t, storetest.SQLite(t))) })
	t.Run("postgres", func(t *testing.T) { f(t, newEnvOn(t, storetest.Postgres(t))) })
}

func newEnv(t *testing.T) *env { return newEnvOn(t, storetest.SQLite(t)) }

func newEnvOn(t *testing.T, st *store.Store) *env {
	t.Helper()
	ctx := context.Background()
	for _, r := range []string{"admin", "member", "reader"} {
		if _, err := identity.EnsureRole(ctx, st, r); err != nil {
			t.Fatal(err)
		}
	}
	p, err := identity.EnsureProject(ctx, st, "admin", "Bootstrap project")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := identity.EnsureProject(ctx, st, "demo", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.EnsureUser(ctx, st, "admin", "s3cret", "admin", identity.MinPasswordHashRounds); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.EnsureUser(ctx, st, "alice", "alicepw", "", identity.MinPasswordHashRounds); err != nil {
		t.Fatal(err)
	}
	for _, g := range [][3]string{{"admin", "admin", "admin"}, {"admin", "admin", "member"}, {"alice", "demo", "member"}} {
		if err := identity.Grant(ctx, st, g[0], g[1], g[2]); err != nil {
			t.Fatal(err)
		}
	}
	svc := identity.New(st, identity.Options{PublicHost: "cloud.example", TokenTTL: time.Hour, Logger: quiet(),
		PasswordHashRounds: identity.MinPasswordHashRounds})
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	e := &env{t: t, st: st, svc: svc, srv: srv, projID: p.ID}
	e.admin = e.token(passwordAuth("admin", "s3cret", projectScope("admin")))
	e.member = e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	return e
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func passwordAuth(user, pw string, scope any) map[string]any {
	a := map[string]any{"identity": map[string]any{"methods": []string{"password"},
		"password": map[string]any{"user": map[string]any{"name": user, "domain": map[string]any{"name": "Default"}, "password": pw}}}}
	if scope != nil {
		a["scope"] = scope
	}
	return map[string]any{"auth": a}
}

func projectScope(name string) map[string]any {
	return map[string]any{"project": map[string]any{"name": name, "domain": map[string]any{"id": "default"}}}
}

type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (e *env) do(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("%s %s: non-JSON body %q", method, path, raw)
		}
	}
	if res.Header.Get("x-openstack-request-id") == "" || !strings.HasPrefix(res.Header.Get("x-openstack-request-id"), "req-") {
		e.t.Errorf("%s %s: missing request id header", method, path)
	}
	return out
}

func (e *env) want(r resp, status int) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
}

func (e *env) token(body any) string {
	e.t.Helper()
	r := e.do("POST", "/v3/auth/tokens", "", body)
	e.want(r, http.StatusCreated)
	tok := r.header.Get("X-Subject-Token")
	if tok == "" {
		e.t.Fatal("no X-Subject-Token")
	}
	return tok
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

var keystoneTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

func TestVersionDocuments(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/", "", nil)
	e.want(r, http.StatusMultipleChoices)
	vals := obj(r.body["versions"])["values"].([]any)
	v := obj(vals[0])
	if v["id"] != "v3.14" || v["status"] != "stable" {
		t.Fatalf("version %v", v)
	}
	href := obj(v["links"].([]any)[0])["href"]
	if href != e.srv.URL+"/v3/" {
		t.Fatalf("self href %v, want %s/v3/", href, e.srv.URL)
	}
	mt := obj(v["media-types"].([]any)[0])
	if mt["type"] != "application/vnd.openstack.identity-v3+json" {
		t.Fatalf("media types %v", mt)
	}
	for _, p := range []string{"/v3", "/v3/"} {
		r := e.do("GET", p, "", nil)
		e.want(r, http.StatusOK)
		if got := keys(obj(r.body["version"])); !reflect.DeepEqual(got, []string{"id", "links", "media-types", "status", "updated"}) {
			t.Fatalf("%s keys %v", p, got)
		}
	}
}

func TestTokenIssueAndValidate(t *testing.T) { forEachDB(t, testTokenIssueAndValidate) }

func testTokenIssueAndValidate(t *testing.T, e *env) {
	r := e.do("POST", "/v3/auth/tokens", "", passwordAuth("admin", "s3cret", projectScope("admin")))
	e.want(r, http.StatusCreated)
	tok := r.header.Get("X-Subject-Token")
	if len(tok) < 40 || strings.ContainsAny(tok, "+/=") {
		t.Fatalf("token %q is not a 32-byte url-safe string", tok)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	tb := obj(r.body["token"])
	wantKeys := []string{"audit_ids", "catalog", "expires_at", "is_admin_project", "is_domain", "issued_at", "methods", "project", "roles", "user"}
	if got := keys(tb); !reflect.DeepEqual(got, wantKeys) {
		t.Fatalf("token keys %v, want %v", got, wantKeys)
	}
	for _, k := range []string{"expires_at", "issued_at"} {
		if !keystoneTime.MatchString(tb[k].(string)) {
			t.Fatalf("%s = %v", k, tb[k])
		}
	}
	exp, _ := time.Parse(time.RFC3339, tb["expires_at"].(string))
	if d := time.Until(exp); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("expires in %v, want the 1h TTL", d)
	}
	if p := obj(tb["project"]); p["id"] != e.projID || p["name"] != "admin" || obj(p["domain"])["id"] != "default" {
		t.Fatalf("project %v", p)
	}
	if u := obj(tb["user"]); u["name"] != "admin" || obj(u["domain"])["name"] != "Default" || u["password_expires_at"] != nil {
		t.Fatalf("user %v", u)
	}
	var roles []string
	for _, ro := range tb["roles"].([]any) {
		roles = append(roles, obj(ro)["name"].(string))
	}
	if !reflect.DeepEqual(roles, []string{"admin", "member"}) {
		t.Fatalf("roles %v", roles)
	}

	// Catalog: the four services with all interfaces, region and region_id.
	wantURL := map[string]string{"identity": "http://cloud.example:5000/v3", "compute": "http://cloud.example:8774/v2.1",
		"image": "http://cloud.example:9292", "network": "http://cloud.example:9696"}
	wantName := map[string]string{"identity": "keystone", "compute": "nova", "image": "glance", "network": "neutron"}
	cat := tb["catalog"].([]any)
	if len(cat) != 4 {
		t.Fatalf("catalog has %d services", len(cat))
	}
	for _, c := range cat {
		svc := obj(c)
		typ := svc["type"].(string)
		if svc["name"] != wantName[typ] || svc["id"] == "" {
			t.Fatalf("service %v", svc)
		}
		var itfs []string
		for _, ep := range svc["endpoints"].([]any) {
			ep := obj(ep)
			if ep["url"] != wantURL[typ] || ep["region"] != "RegionOne" || ep["region_id"] != "RegionOne" || ep["id"] == "" {
				t.Fatalf("endpoint %v", ep)
			}
			itfs = append(itfs, ep["interface"].(string))
		}
		sort.Strings(itfs)
		if !reflect.DeepEqual(itfs, []string{"admin", "internal", "public"}) {
			t.Fatalf("interfaces %v", itfs)
		}
	}

	// Validation returns the identical body and the subject header.
	v := e.do("GET", "/v3/auth/tokens", tok, nil, "X-Subject-Token", tok)
	e.want(v, http.StatusOK)
	if v.header.Get("X-Subject-Token") != tok {
		t.Fatal("validate: no X-Subject-Token")
	}
	if !reflect.DeepEqual(v.body, r.body) {
		t.Fatalf("validate body differs:\n%s\n%s", v.raw, r.raw)
	}
	h := e.do("HEAD", "/v3/auth/tokens", tok, nil, "X-Subject-Token", tok)
	e.want(h, http.StatusOK)
	if len(h.raw) != 0 {
		t.Fatal("HEAD has a body")
	}
	nc := e.do("GET", "/v3/auth/tokens?nocatalog", tok, nil, "X-Subject-Token", tok)
	e.want(nc, http.StatusOK)
	if _, has := obj(nc.body["token"])["catalog"]; has {
		t.Fatal("nocatalog still has a catalog")
	}

	// Validate implements auth.Validator.
	c, err := e.svc.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.ProjectID != e.projID || c.UserName != "admin" || !c.IsAdmin() || c.TokenID != tok {
		t.Fatalf("credentials %+v", c)
	}
}

func TestUnscopedTokenAndRescope(t *testing.T) { forEachDB(t, testUnscopedTokenAndRescope) }

func testUnscopedTokenAndRescope(t *testing.T, e *env) {
	// alice has no default project: no scope gives an unscoped token.
	r := e.do("POST", "/v3/auth/tokens", "", passwordAuth("alice", "alicepw", nil))
	e.want(r, http.StatusCreated)
	tb := obj(r.body["token"])
	if got := keys(tb); !reflect.DeepEqual(got, []string{"audit_ids", "expires_at", "issued_at", "methods", "user"}) {
		t.Fatalf("unscoped keys %v", got)
	}
	tok := r.header.Get("X-Subject-Token")
	v := e.do("GET", "/v3/auth/tokens", tok, nil, "X-Subject-Token", tok)
	e.want(v, http.StatusOK)
	if !reflect.DeepEqual(v.body, r.body) {
		t.Fatalf("validate body differs:\n%s\n%s", v.raw, r.raw)
	}
	// It has no catalog (Keystone's 403); a system-scoped one has one.
	e.want(e.do("GET", "/v3/auth/catalog", tok, nil), http.StatusForbidden)
	if cat := e.do("GET", "/v3/auth/catalog", e.systemToken(), nil); cat.status != http.StatusOK || len(cat.body["catalog"].([]any)) == 0 {
		t.Fatalf("catalog of a system-scoped token: %d %s", cat.status, cat.raw)
	}
	// An unscoped token lists the projects it may scope to.
	ps := e.do("GET", "/v3/auth/projects", tok, nil)
	e.want(ps, http.StatusOK)
	if l := ps.body["projects"].([]any); len(l) != 1 || obj(l[0])["name"] != "demo" {
		t.Fatalf("auth projects %s", ps.raw)
	}
	// Rescope with the token method to a project id.
	demo := obj(ps.body["projects"].([]any)[0])["id"].(string)
	rs := e.do("POST", "/v3/auth/tokens", "", map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"token"}, "token": map[string]any{"id": tok}},
		"scope":    map[string]any{"project": map[string]any{"id": demo}}}})
	e.want(rs, http.StatusCreated)
	st := obj(rs.body["token"])
	if obj(st["project"])["id"] != demo || !slices.Contains(st["methods"].([]any), any("token")) {
		t.Fatalf("rescoped token %s", rs.raw)
	}
	if st["expires_at"] != tb["expires_at"] {
		t.Fatalf("rescoped token outlives the original: %v vs %v", st["expires_at"], tb["expires_at"])
	}
	// admin has a default project: no scope scopes to it, "unscoped" does not.
	d := e.do("POST", "/v3/auth/tokens", "", passwordAuth("admin", "s3cret", nil))
	e.want(d, http.StatusCreated)
	if obj(obj(d.body["token"])["project"])["name"] != "admin" {
		t.Fatalf("default project scope missing: %s", d.raw)
	}
	u := e.do("POST", "/v3/auth/tokens", "", passwordAuth("admin", "s3cret", "unscoped"))
	e.want(u, http.StatusCreated)
	if _, has := obj(u.body["token"])["project"]; has {
		t.Fatal(`"unscoped" scope produced a scoped token`)
	}
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t)
	check := func(r resp, status int) {
		t.Helper()
		e.want(r, status)
		er := obj(r.body["error"])
		if er == nil || er["code"] != float64(status) || er["message"] == "" || er["title"] == "" {
			t.Fatalf("error body %s", r.raw)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("error content type %q", ct)
		}
	}
	r := e.do("POST", "/v3/auth/tokens", "", passwordAuth("admin", "wrong", projectScope("admin")))
	check(r, http.StatusUnauthorized)
	if obj(r.body["error"])["title"] != "Unauthorized" || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("401 %s %v", r.raw, r.header)
	}
	check(e.do("POST", "/v3/auth/tokens", "", passwordAuth("nobody", "x", nil)), http.StatusUnauthorized)
	// alice has no role on the admin project.
	check(e.do("POST", "/v3/auth/tokens", "", passwordAuth("alice", "alicepw", projectScope("admin"))), http.StatusUnauthorized)
	check(e.do("POST", "/v3/auth/tokens", "", map[string]any{"auth": map[string]any{}}), http.StatusBadRequest)
	check(e.do("GET", "/v3/projects", "", nil), http.StatusUnauthorized)
	check(e.do("GET", "/v3/projects", "garbage", nil), http.StatusUnauthorized)
	check(e.do("GET", "/v3/nope", e.admin, nil), http.StatusNotFound)
	check(e.do("GET", "/v3/auth/tokens", e.admin, nil, "X-Subject-Token", "garbage"), http.StatusNotFound)
}

func TestExpiredAndRevokedTokens(t *testing.T) { forEachDB(t, testExpiredAndRevokedTokens) }

func testExpiredAndRevokedTokens(t *testing.T, e *env) {
	ctx := context.Background()
	tok := e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	if _, err := e.svc.Validate(ctx, tok); err != nil {
		t.Fatal(err)
	}
	// Expire it in the database.
	if err := e.st.DB.Model(&store.Token{}).Where("user_id = (?)", e.st.DB.Model(&store.User{}).Select("id").Where("name = ?", "alice")).
		Update("expires_at", time.Now().Add(-time.Minute)).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Validate(ctx, tok); err == nil {
		t.Fatal("expired token validated")
	}
	e.want(e.do("GET", "/v3/auth/projects", tok, nil), http.StatusUnauthorized)
	e.want(e.do("GET", "/v3/auth/tokens", e.admin, nil, "X-Subject-Token", tok), http.StatusNotFound)

	// Revocation: DELETE, then GET/HEAD say 404 and the token is refused.
	tok2 := e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	e.want(e.do("DELETE", "/v3/auth/tokens", tok2, nil, "X-Subject-Token", tok2), http.StatusNoContent)
	e.want(e.do("GET", "/v3/auth/tokens", e.admin, nil, "X-Subject-Token", tok2), http.StatusNotFound)
	e.want(e.do("HEAD", "/v3/auth/tokens", e.admin, nil, "X-Subject-Token", tok2), http.StatusNotFound)
	if _, err := e.svc.Validate(ctx, tok2); err == nil {
		t.Fatal("revoked token validated")
	}
	// Only the hash is stored.
	var n int64
	e.st.DB.Model(&store.Token{}).Where("hash = ?", tok2).Count(&n)
	if n != 0 {
		t.Fatal("token stored in clear")
	}
	// A member may not validate someone else's token.
	fresh := e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	e.want(e.do("GET", "/v3/auth/tokens", fresh, nil, "X-Subject-Token", e.admin), http.StatusForbidden)
}

func TestRoleBasedAccess(t *testing.T) {
	e := newEnv(t)
	e.want(e.do("POST", "/v3/projects", e.member, map[string]any{"project": map[string]any{"name": "x"}}), http.StatusForbidden)
	e.want(e.do("GET", "/v3/projects", e.member, nil), http.StatusForbidden)
	e.want(e.do("GET", "/v3/roles", e.member, nil), http.StatusForbidden)
	e.want(e.do("POST", "/v3/users", e.member, map[string]any{"user": map[string]any{"name": "x"}}), http.StatusForbidden)
	e.want(e.do("GET", "/v3/projects/"+e.projID, e.member, nil), http.StatusForbidden)
	// Own things are visible.
	c, _ := e.svc.Validate(context.Background(), e.member)
	e.want(e.do("GET", "/v3/users/"+c.UserID, e.member, nil), http.StatusOK)
	e.want(e.do("GET", "/v3/projects/"+c.ProjectID, e.member, nil), http.StatusOK)
	e.want(e.do("GET", "/v3/users/"+c.UserID+"/projects", e.member, nil), http.StatusOK)
	e.want(e.do("GET", "/v3/role_assignments?user.id="+c.UserID, e.member, nil), http.StatusOK)
	e.want(e.do("GET", "/v3/role_assignments", e.member, nil), http.StatusForbidden)
	e.want(e.do("GET", "/v3/auth/catalog", e.member, nil), http.StatusOK)
}

// TestDynamicCredentialsFlow replays what Tempest's dynamic credentials
// and the OpenStack CLI do with the admin API.
func TestDynamicCredentialsFlow(t *testing.T) { forEachDB(t, testDynamicCredentialsFlow) }

func testDynamicCredentialsFlow(t *testing.T, e *env) {
	a := e.admin
	d := e.do("GET", "/v3/domains?name=Default", a, nil)
	e.want(d, http.StatusOK)
	if l := d.body["domains"].([]any); len(l) != 1 || obj(l[0])["id"] != "default" {
		t.Fatalf("domains %s", d.raw)
	}
	e.want(e.do("GET", "/v3/domains/default", a, nil), http.StatusOK)
	e.want(e.do("GET", "/v3/domains/other", a, nil), http.StatusNotFound)

	roles := e.do("GET", "/v3/roles", a, nil)
	e.want(roles, http.StatusOK)
	var memberID string
	for _, ro := range roles.body["roles"].([]any) {
		if obj(ro)["name"] == "member" {
			memberID = obj(ro)["id"].(string)
		}
		if obj(ro)["domain_id"] != nil || obj(obj(ro)["links"])["self"] == nil {
			t.Fatalf("role view %v", ro)
		}
	}
	e.want(e.do("POST", "/v3/roles", a, map[string]any{"role": map[string]any{"name": "Member"}}), http.StatusConflict)

	p := e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "tempest-p1", "description": "d", "domain_id": "default"}})
	e.want(p, http.StatusCreated)
	proj := obj(p.body["project"])
	pid := proj["id"].(string)
	if proj["domain_id"] != "default" || proj["is_domain"] != false || proj["enabled"] != true ||
		obj(proj["links"])["self"] != e.srv.URL+"/v3/projects/"+pid {
		t.Fatalf("project %s", p.raw)
	}
	e.want(e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "tempest-p1"}}), http.StatusConflict)
	e.want(e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": ""}}), http.StatusBadRequest)
	e.want(e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": strings.Repeat("x", 65)}}), http.StatusBadRequest)

	u := e.do("POST", "/v3/users", a, map[string]any{"user": map[string]any{"name": "tempest-u1", "password": "pw1", "domain_id": "default",
		"email": "u1@example.com", "project_id": pid}})
	e.want(u, http.StatusCreated)
	user := obj(u.body["user"])
	uid := user["id"].(string)
	if _, has := user["password"]; has || user["default_project_id"] != pid || user["email"] != "u1@example.com" {
		t.Fatalf("user %s", u.raw)
	}
	e.want(e.do("POST", "/v3/users", a, map[string]any{"user": map[string]any{"name": "tempest-u1"}}), http.StatusConflict)

	// Name lookups as OSC's find_resource does them.
	e.want(e.do("GET", "/v3/projects/tempest-p1", a, nil), http.StatusNotFound)
	byName := e.do("GET", "/v3/projects?name=tempest-p1&domain_id=default", a, nil)
	e.want(byName, http.StatusOK)
	if l := byName.body["projects"].([]any); len(l) != 1 || obj(l[0])["id"] != pid {
		t.Fatalf("projects?name %s", byName.raw)
	}
	if obj(byName.body["links"])["next"] != nil {
		t.Fatalf("links %v", byName.body["links"])
	}
	ul := e.do("GET", "/v3/users?name=tempest-u1", a, nil)
	e.want(ul, http.StatusOK)
	if l := ul.body["users"].([]any); len(l) != 1 || obj(l[0])["id"] != uid {
		t.Fatalf("users?name %s", ul.raw)
	}

	// No role yet: scoping fails.
	byID := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{"id": uid, "password": "pw1"}}},
		"scope":    map[string]any{"project": map[string]any{"id": pid}}}}
	e.want(e.do("POST", "/v3/auth/tokens", "", byID), http.StatusUnauthorized)
	grant := "/v3/projects/" + pid + "/users/" + uid + "/roles/" + memberID
	e.want(e.do("PUT", grant, a, nil), http.StatusNoContent)
	e.want(e.do("PUT", grant, a, nil), http.StatusNoContent)
	e.want(e.do("HEAD", grant, a, nil), http.StatusNoContent)
	e.want(e.do("GET", grant, a, nil), http.StatusNoContent)
	e.want(e.do("PUT", "/v3/projects/"+pid+"/users/"+uid+"/roles/nope", a, nil), http.StatusNotFound)
	ut := e.token(byID)
	c, err := e.svc.Validate(context.Background(), ut)
	if err != nil || c.ProjectID != pid || !c.HasRole("member") || c.IsAdmin() || !c.CanWrite() {
		t.Fatalf("new user's credentials %+v %v", c, err)
	}

	gl := e.do("GET", "/v3/projects/"+pid+"/users/"+uid+"/roles", a, nil)
	e.want(gl, http.StatusOK)
	if l := gl.body["roles"].([]any); len(l) != 1 || obj(l[0])["id"] != memberID {
		t.Fatalf("grants %s", gl.raw)
	}
	ra := e.do("GET", "/v3/role_assignments?user.id="+uid+"&scope.project.id="+pid+"&include_names", a, nil)
	e.want(ra, http.StatusOK)
	l := ra.body["role_assignments"].([]any)
	if len(l) != 1 || obj(obj(l[0])["role"])["name"] != "member" ||
		obj(obj(obj(l[0])["scope"])["project"])["id"] != pid ||
		obj(obj(l[0])["links"])["assignment"] != e.srv.URL+grant {
		t.Fatalf("role assignments %s", ra.raw)
	}
	up := e.do("GET", "/v3/users/"+uid+"/projects", ut, nil)
	e.want(up, http.StatusOK)
	if l := up.body["projects"].([]any); len(l) != 1 || obj(l[0])["id"] != pid {
		t.Fatalf("user projects %s", up.raw)
	}

	// Own password change revokes the user's tokens.
	e.want(e.do("POST", "/v3/users/"+uid+"/password", ut, map[string]any{"user": map[string]any{"password": "pw2", "original_password": "bad"}}), http.StatusUnauthorized)
	e.want(e.do("POST", "/v3/users/"+uid+"/password", ut, map[string]any{"user": map[string]any{"password": "pw2", "original_password": "pw1"}}), http.StatusNoContent)
	if _, err := e.svc.Validate(context.Background(), ut); err == nil {
		t.Fatal("token survived the password change")
	}
	obj(obj(byID["auth"])["identity"])["password"].(map[string]any)["user"].(map[string]any)["password"] = "pw2"
	ut = e.token(byID)

	// Updates.
	pu := e.do("PATCH", "/v3/projects/"+pid, a, map[string]any{"project": map[string]any{"description": "new"}})
	e.want(pu, http.StatusOK)
	if obj(pu.body["project"])["description"] != "new" {
		t.Fatalf("patch project %s", pu.raw)
	}
	uu := e.do("PATCH", "/v3/users/"+uid, a, map[string]any{"user": map[string]any{"enabled": false}})
	e.want(uu, http.StatusOK)
	if _, err := e.svc.Validate(context.Background(), ut); err == nil {
		t.Fatal("disabled user's token still valid")
	}

	// Revoking the grant, then deleting user and project.
	e.want(e.do("DELETE", grant, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", grant, a, nil), http.StatusNotFound)
	e.want(e.do("DELETE", "/v3/users/"+uid, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/users/"+uid, a, nil), http.StatusNotFound)
	e.want(e.do("DELETE", "/v3/projects/"+pid, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/projects/"+pid, a, nil), http.StatusNotFound)
	e.want(e.do("DELETE", "/v3/projects/"+pid, a, nil), http.StatusNotFound)

	// Roles CRUD.
	rc := e.do("POST", "/v3/roles", a, map[string]any{"role": map[string]any{"name": "tempest-role"}})
	e.want(rc, http.StatusCreated)
	rid := obj(rc.body["role"])["id"].(string)
	e.want(e.do("PATCH", "/v3/roles/"+rid, a, map[string]any{"role": map[string]any{"name": "tempest-role2"}}), http.StatusOK)
	rg := e.do("GET", "/v3/roles/"+rid, a, nil)
	e.want(rg, http.StatusOK)
	if obj(rg.body["role"])["name"] != "tempest-role2" {
		t.Fatalf("role %s", rg.raw)
	}
	e.want(e.do("DELETE", "/v3/roles/"+rid, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/roles/"+rid, a, nil), http.StatusNotFound)
	e.want(e.do("GET", "/v3/services", a, nil), http.StatusOK)
	e.want(e.do("GET", "/v3/endpoints?interface=public", a, nil), http.StatusOK)
}

func TestBootstrapIdempotent(t *testing.T) { forEachDB(t, testBootstrapIdempotent) }

func testBootstrapIdempotent(t *testing.T, e *env) {
	ctx := context.Background()
	u1, _ := identity.EnsureUser(ctx, e.st, "admin", "s3cret", "admin", identity.MinPasswordHashRounds)
	u2, _ := identity.EnsureUser(ctx, e.st, "admin", "s3cret", "admin", identity.MinPasswordHashRounds)
	if u1.ID != u2.ID || u1.PasswordHash != u2.PasswordHash {
		t.Fatal("EnsureUser not idempotent")
	}
	if _, err := e.svc.Validate(ctx, e.admin); err != nil {
		t.Fatalf("unchanged EnsureUser revoked tokens: %v", err)
	}
	r1, _ := identity.EnsureRole(ctx, e.st, "Admin")
	r2, _ := identity.EnsureRole(ctx, e.st, "admin")
	p1, _ := identity.EnsureProject(ctx, e.st, "admin", "")
	if r1.ID != r2.ID || p1.ID != e.projID {
		t.Fatal("EnsureRole/EnsureProject not idempotent")
	}
	if err := identity.Grant(ctx, e.st, "admin", "admin", "admin"); err != nil {
		t.Fatal(err)
	}
	// A changed password is applied and old tokens die.
	if _, err := identity.EnsureUser(ctx, e.st, "admin", "n3w", "admin", identity.MinPasswordHashRounds); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Validate(ctx, e.admin); err == nil {
		t.Fatal("token survived a password change")
	}
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("admin", "s3cret", nil)), http.StatusUnauthorized)
	e.token(passwordAuth("admin", "n3w", projectScope("admin")))
	if err := identity.Grant(ctx, e.st, "admin", "nope", "admin"); err == nil {
		t.Fatal("grant on a missing project succeeded")
	}
}

// systemToken grants admin the admin role on the system and returns its
// system-scoped token.
func (e *env) systemToken() string {
	e.t.Helper()
	admins := e.do("GET", "/v3/users?name=admin", e.admin, nil)
	uid := obj(admins.body["users"].([]any)[0])["id"].(string)
	roles := e.do("GET", "/v3/roles?name=admin", e.admin, nil)
	rid := obj(roles.body["roles"].([]any)[0])["id"].(string)
	e.want(e.do("PUT", "/v3/system/users/"+uid+"/roles/"+rid, e.admin, nil), http.StatusNoContent)
	return e.token(passwordAuth("admin", "s3cret", map[string]any{"system": map[string]any{"all": true}}))
}

func TestRequireTokenMiddleware(t *testing.T) {
	e := newEnv(t)
	var failed []int
	mw := identity.RequireToken(e.svc, func(w http.ResponseWriter, r *http.Request, err error) {
		status := http.StatusInternalServerError
		if errdefs.IsUnauthenticated(err) {
			status = http.StatusUnauthorized
		}
		if errdefs.IsForbidden(err) {
			status = http.StatusForbidden
		}
		failed = append(failed, status)
		http.Error(w, errdefs.Message(err), status)
	})
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := auth.FromContext(r.Context())
		_, _ = io.WriteString(w, c.ProjectID+" "+strconv.FormatBool(c.IsAdmin()))
	}))
	for _, tc := range []struct {
		tok    string
		status int
		body   string
	}{{"", 401, ""}, {"bad", 401, ""}, {e.admin, 200, e.projID + " true"}, {e.systemToken(), 403, ""}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/x", nil)
		if tc.tok != "" {
			req.Header.Set("X-Auth-Token", tc.tok)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status || (tc.body != "" && rec.Body.String() != tc.body) {
			t.Fatalf("token %q: %d %q", tc.tok, rec.Code, rec.Body.String())
		}
	}
	if !reflect.DeepEqual(failed, []int{401, 401, 403}) {
		t.Fatalf("onFail calls %v", failed)
	}
}

func TestCatalogUsesRequestHostWithoutPublicHost(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	identity.EnsureRole(ctx, st, "member")
	identity.EnsureProject(ctx, st, "p", "")
	identity.EnsureUser(ctx, st, "u", "pw", "p", identity.MinPasswordHashRounds)
	identity.Grant(ctx, st, "u", "p", "member")
	svc := identity.New(st, identity.Options{Ports: identity.Ports{Image: 19292}, Logger: quiet(),
		PasswordHashRounds: identity.MinPasswordHashRounds})
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	e := &env{t: t, st: st, svc: svc, srv: srv}
	r := e.do("POST", "/v3/auth/tokens", "", passwordAuth("u", "pw", nil))
	e.want(r, http.StatusCreated)
	host, _ := url.Parse(srv.URL)
	for _, c := range obj(r.body["token"])["catalog"].([]any) {
		if obj(c)["type"] == "image" {
			if got := obj(obj(c)["endpoints"].([]any)[0])["url"]; got != "http://"+host.Hostname()+":19292" {
				t.Fatalf("image url %v", got)
			}
		}
	}
}
