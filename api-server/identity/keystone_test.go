package identity_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"
)

func (e *env) id(r resp, key string) string {
	e.t.Helper()
	id, _ := obj(r.body[key])["id"].(string)
	if id == "" {
		e.t.Fatalf("no %s id in %s", key, r.raw)
	}
	return id
}

func names(list any, key string) []string {
	var out []string
	for _, x := range list.([]any) {
		out = append(out, obj(x)[key].(string))
	}
	return out
}

// TestDomainsLifecycle: a second domain holds its own projects and users
// (names unique per domain), password logins and project scopes name it,
// an admin of it gets a domain-scoped token, and it is deleted only once
// disabled — which also ends its users' tokens.
func TestDomainsLifecycle(t *testing.T) { forEachDB(t, testDomainsLifecycle) }

func testDomainsLifecycle(t *testing.T, e *env) {
	a := e.admin
	d := e.do("POST", "/v3/domains", a, map[string]any{"domain": map[string]any{"name": "acme", "description": "Acme"}})
	e.want(d, http.StatusCreated)
	did := e.id(d, "domain")
	if v := obj(d.body["domain"]); v["enabled"] != true || v["description"] != "Acme" {
		t.Fatalf("domain %s", d.raw)
	}
	e.want(e.do("POST", "/v3/domains", a, map[string]any{"domain": map[string]any{"name": "acme"}}), http.StatusConflict)
	if l := e.do("GET", "/v3/domains?name__startswith=ac", a, nil); !slices.Equal(names(l.body["domains"], "name"), []string{"acme"}) {
		t.Fatalf("domain filter: %s", l.raw)
	}
	// The same project and user names as in the default domain.
	p := e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "demo", "domain_id": did}})
	e.want(p, http.StatusCreated)
	pid := e.id(p, "project")
	if obj(p.body["project"])["parent_id"] != did {
		t.Fatalf("parent of a top project is its domain: %s", p.raw)
	}
	u := e.do("POST", "/v3/users", a, map[string]any{"user": map[string]any{"name": "alice", "password": "acmepw", "domain_id": did}})
	e.want(u, http.StatusCreated)
	uid := e.id(u, "user")
	e.want(e.do("POST", "/v3/users", a, map[string]any{"user": map[string]any{"name": "alice", "domain_id": did}}), http.StatusConflict)
	roles := e.do("GET", "/v3/roles?name=member", a, nil)
	member := obj(roles.body["roles"].([]any)[0])["id"].(string)
	roles = e.do("GET", "/v3/roles?name=admin", a, nil)
	admin := obj(roles.body["roles"].([]any)[0])["id"].(string)
	e.want(e.do("PUT", "/v3/projects/"+pid+"/users/"+uid+"/roles/"+member, a, nil), http.StatusNoContent)

	login := func(domain map[string]any, scope any) resp {
		return e.do("POST", "/v3/auth/tokens", "", map[string]any{"auth": map[string]any{
			"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
				"name": "alice", "domain": domain, "password": "acmepw"}}}, "scope": scope}})
	}
	scope := map[string]any{"project": map[string]any{"name": "demo", "domain": map[string]any{"name": "acme"}}}
	r := login(map[string]any{"name": "acme"}, scope)
	e.want(r, http.StatusCreated)
	tb := obj(r.body["token"])
	if obj(obj(tb["user"])["domain"])["name"] != "acme" || obj(tb["project"])["id"] != pid ||
		obj(obj(tb["project"])["domain"])["id"] != did {
		t.Fatalf("token of a user in acme: %s", r.raw)
	}
	acmeTok := r.header.Get("X-Subject-Token")
	e.want(login(map[string]any{"id": did}, scope), http.StatusCreated)
	e.want(login(map[string]any{"name": "Default"}, scope), http.StatusUnauthorized) // default's alice has another password
	e.want(login(map[string]any{"name": "nowhere"}, scope), http.StatusUnauthorized)

	// Domain scope needs a role on the domain.
	dscope := map[string]any{"domain": map[string]any{"id": did}}
	e.want(login(map[string]any{"id": did}, dscope), http.StatusUnauthorized)
	e.want(e.do("PUT", "/v3/domains/"+did+"/users/"+uid+"/roles/"+admin, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", "/v3/domains/"+did+"/users/"+uid+"/roles/"+admin, a, nil), http.StatusNoContent)
	e.want(e.do("HEAD", "/v3/domains/"+did+"/users/"+uid+"/roles/"+admin, a, nil), http.StatusNoContent)
	r = login(map[string]any{"id": did}, dscope)
	e.want(r, http.StatusCreated)
	if tb := obj(r.body["token"]); obj(tb["domain"])["id"] != did || len(tb["roles"].([]any)) != 1 || tb["project"] != nil {
		t.Fatalf("domain-scoped token: %s", r.raw)
	}
	// Its catalog is the token's (no project in the URLs).
	cat := e.do("GET", "/v3/auth/catalog", r.header.Get("X-Subject-Token"), nil)
	e.want(cat, http.StatusOK)
	if l, _ := cat.body["catalog"].([]any); len(l) == 0 || len(l) != len(obj(r.body["token"])["catalog"].([]any)) {
		t.Fatalf("catalog of a domain-scoped token: %s", cat.raw)
	}
	ra := e.do("GET", "/v3/role_assignments?scope.domain.id="+did+"&include_names", a, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || obj(obj(obj(l[0])["scope"])["domain"])["name"] != "acme" ||
		obj(obj(obj(l[0])["user"])["domain"])["name"] != "acme" {
		t.Fatalf("domain assignments: %s", ra.raw)
	}
	if l := e.do("GET", "/v3/users?domain_id="+did, a, nil); !slices.Equal(names(l.body["users"], "id"), []string{uid}) {
		t.Fatalf("users of acme: %s", l.raw)
	}

	// Deletion: never of an enabled domain nor of default; disabling ends
	// the domain's tokens; projects must go first.
	e.want(e.do("DELETE", "/v3/domains/"+did, a, nil), http.StatusForbidden)
	e.want(e.do("PATCH", "/v3/domains/default", a, map[string]any{"domain": map[string]any{"enabled": false}}), http.StatusForbidden)
	e.want(e.do("DELETE", "/v3/domains/default", a, nil), http.StatusForbidden)
	e.want(e.do("PATCH", "/v3/domains/"+did, e.member, map[string]any{"domain": map[string]any{"enabled": false}}), http.StatusForbidden)
	e.want(e.do("PATCH", "/v3/domains/"+did, a, map[string]any{"domain": map[string]any{"enabled": false}}), http.StatusOK)
	if _, err := e.svc.Validate(context.Background(), acmeTok); err == nil {
		t.Fatal("a token of a disabled domain's user still validates")
	}
	e.want(login(map[string]any{"id": did}, scope), http.StatusUnauthorized)
	e.want(e.do("DELETE", "/v3/domains/"+did, a, nil), http.StatusConflict)
	e.want(e.do("DELETE", "/v3/projects/"+pid, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/domains/"+did, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/users/"+uid, a, nil), http.StatusNotFound)
	e.want(e.do("GET", "/v3/domains/"+did, a, nil), http.StatusNotFound)

	// A project with is_domain is a domain.
	pd := e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "pd", "is_domain": true}})
	e.want(pd, http.StatusCreated)
	pdid := e.id(pd, "project")
	e.want(e.do("GET", "/v3/domains/"+pdid, a, nil), http.StatusOK)
	in := e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "inpd", "domain_id": pdid}})
	e.want(in, http.StatusCreated)
	e.want(e.do("PATCH", "/v3/projects/"+pdid, a, map[string]any{"project": map[string]any{"enabled": false}}), http.StatusOK)
	e.want(e.do("DELETE", "/v3/projects/"+e.id(in, "project"), a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/projects/"+pdid, a, nil), http.StatusNoContent)
}

// TestUserAttributesAndPassword: description, options and extra
// attributes are kept and shown; name filters; a user changes its own
// password with the original one.
func TestUserAttributesAndPassword(t *testing.T) { forEachDB(t, testUserAttributesAndPassword) }

func testUserAttributesAndPassword(t *testing.T, e *env) {
	a := e.admin
	u := e.do("POST", "/v3/users", a, map[string]any{"user": map[string]any{"name": "jsmith", "password": "oldpw",
		"description": "test description", "domain_id": "default", "email": "j@example.com", "team": "blue",
		"options": map[string]any{"ignore_password_expiry": true, "multi_factor_auth_rules": [][]string{{"password", "totp"}}}}})
	e.want(u, http.StatusCreated)
	uid := e.id(u, "user")
	v := obj(u.body["user"])
	if v["description"] != "test description" || v["team"] != "blue" || v["email"] != "j@example.com" ||
		obj(v["options"])["ignore_password_expiry"] != true || obj(v["options"])["multi_factor_auth_rules"] == nil {
		t.Fatalf("created user %s", u.raw)
	}
	e.want(e.do("POST", "/v3/users", a, map[string]any{"user": map[string]any{"name": "x", "options": map[string]any{"bogus": true}}}), http.StatusBadRequest)
	up := e.do("PATCH", "/v3/users/"+uid, a, map[string]any{"user": map[string]any{"description": "",
		"options": map[string]any{"multi_factor_auth_rules": nil}, "disabled_reason": "DDOS"}})
	e.want(up, http.StatusOK)
	g := e.do("GET", "/v3/users/"+uid, a, nil)
	v = obj(g.body["user"])
	if v["description"] != "" || v["team"] != "blue" || v["disabled_reason"] != "DDOS" ||
		obj(v["options"])["multi_factor_auth_rules"] != nil || obj(v["options"])["ignore_password_expiry"] != true {
		t.Fatalf("updated user %s", g.raw)
	}
	for q, want := range map[string][]string{
		"name__contains=smit": {"jsmith"}, "name__startswith=js": {"jsmith"}, "name__endswith=ith": {"jsmith"},
		"name__icontains=SMI": {"jsmith"}, "name__contains=SMI": nil, "name__contains=dmi": {"admin"},
	} {
		l := e.do("GET", "/v3/users?"+q, a, nil)
		if got := names(l.body["users"], "name"); !slices.Equal(got, want) {
			t.Errorf("users?%s = %v, want %v", q, got, want)
		}
	}
	if l := e.do("GET", "/v3/projects?name__contains=dmi", a, nil); !slices.Equal(names(l.body["projects"], "name"), []string{"admin"}) {
		t.Errorf("projects name__contains: %s", l.raw)
	}
	if l := e.do("GET", "/v3/roles?name__startswith=mem", a, nil); !slices.Equal(names(l.body["roles"], "name"), []string{"member"}) {
		t.Errorf("roles name__startswith: %s", l.raw)
	}

	// The user's own change; the admin may too, with the original.
	tok := e.token(passwordAuth("jsmith", "oldpw", nil))
	body := func(orig, pw string) map[string]any {
		return map[string]any{"user": map[string]any{"original_password": orig, "password": pw}}
	}
	e.want(e.do("POST", "/v3/users/"+uid+"/password", tok, body("wrong", "newpw")), http.StatusUnauthorized)
	e.want(e.do("POST", "/v3/users/"+uid+"/password", e.member, body("oldpw", "newpw")), http.StatusForbidden)
	e.want(e.do("POST", "/v3/users/"+uid+"/password", "", body("oldpw", "newpw")), http.StatusUnauthorized)
	e.want(e.do("POST", "/v3/users/"+uid+"/password", tok, body("oldpw", "newpw")), http.StatusNoContent)
	e.want(e.do("POST", "/v3/users/"+uid+"/password", a, body("newpw", "newerpw")), http.StatusNoContent)
	e.token(passwordAuth("jsmith", "newerpw", nil))
}

// TestProjectTagsAndHierarchy: tags on create and update, the tag routes,
// the four tag filters, and nested projects' parent_id as the subtree
// shows it.
func TestProjectTagsAndHierarchy(t *testing.T) { forEachDB(t, testProjectTagsAndHierarchy) }

func testProjectTagsAndHierarchy(t *testing.T, e *env) {
	a := e.admin
	p := e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "tagged", "tags": []string{"Tag1", "Tag2"}}})
	e.want(p, http.StatusCreated)
	pid := e.id(p, "project")
	for q, want := range map[string][]string{
		"tags=Tag1,Tag2": {"tagged"}, "tags=Tag1,Tag2,Tag3": nil, "tags-any=Tag3,Tag2": {"tagged"},
		"not-tags-any=Tag1&name=tagged": nil, "not-tags=Tag1,Tag3&name=tagged": {"tagged"},
	} {
		l := e.do("GET", "/v3/projects?"+q, a, nil)
		if got := names(l.body["projects"], "name"); !slices.Equal(got, want) {
			t.Errorf("projects?%s = %v, want %v", q, got, want)
		}
	}
	e.want(e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "bad", "tags": []string{"a/b"}}}), http.StatusBadRequest)
	up := e.do("PATCH", "/v3/projects/"+pid, a, map[string]any{"project": map[string]any{"tags": []string{"Tag1"}}})
	if tags := obj(up.body["project"])["tags"].([]any); len(tags) != 1 || tags[0] != "Tag1" {
		t.Fatalf("updated tags %s", up.raw)
	}
	e.want(e.do("PUT", "/v3/projects/"+pid+"/tags/foo", a, nil), http.StatusCreated)
	e.want(e.do("GET", "/v3/projects/"+pid+"/tags/foo", a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/projects/"+pid+"/tags/nope", a, nil), http.StatusNotFound)
	e.want(e.do("PUT", "/v3/projects/"+pid+"/tags/foo", e.member, nil), http.StatusForbidden)
	e.want(e.do("GET", "/v3/projects/"+pid+"/tags", e.member, nil), http.StatusForbidden)
	e.want(e.do("GET", "/v3/projects/"+pid+"/tags", "", nil), http.StatusUnauthorized)
	e.want(e.do("GET", "/v3/projects/"+pid+"/tags", "garbage", nil), http.StatusUnauthorized)
	l := e.do("GET", "/v3/projects/"+pid+"/tags", a, nil)
	if got := l.body["tags"].([]any); len(got) != 2 {
		t.Fatalf("tags %s", l.raw)
	}
	r := e.do("PUT", "/v3/projects/"+pid+"/tags", a, map[string]any{"tags": []string{"x", "y"}})
	e.want(r, http.StatusOK)
	e.want(e.do("DELETE", "/v3/projects/"+pid+"/tags/x", a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/projects/"+pid+"/tags", a, nil), http.StatusNoContent)
	if l := e.do("GET", "/v3/projects/"+pid+"/tags", a, nil); len(l.body["tags"].([]any)) != 0 {
		t.Fatalf("tags after clear %s", l.raw)
	}

	c := e.do("POST", "/v3/projects", a, map[string]any{"project": map[string]any{"name": "child", "parent_id": pid}})
	e.want(c, http.StatusCreated)
	cid := e.id(c, "project")
	if v := obj(c.body["project"]); v["parent_id"] != pid || v["domain_id"] != "default" {
		t.Fatalf("child %s", c.raw)
	}
	g := e.do("GET", "/v3/projects/"+pid+"?subtree_as_list&parents_as_ids", a, nil)
	sub := obj(g.body["project"])["subtree"].([]any)
	if len(sub) != 1 || obj(obj(sub[0])["project"])["id"] != cid || obj(obj(sub[0])["project"])["parent_id"] != pid {
		t.Fatalf("subtree %s", g.raw)
	}
	if l := e.do("GET", "/v3/projects?parent_id="+pid, a, nil); !slices.Equal(names(l.body["projects"], "id"), []string{cid}) {
		t.Fatalf("children %s", l.raw)
	}
	// Assignments on a subtree: the project's, its child's; a domain's
	// subtree is every project in it.
	admin, _ := e.svc.Validate(context.Background(), a)
	var member string
	for _, x := range e.do("GET", "/v3/roles?name=member", a, nil).body["roles"].([]any) {
		member = obj(x)["id"].(string)
	}
	e.want(e.do("PUT", "/v3/projects/"+cid+"/users/"+admin.UserID+"/roles/"+member, a, nil), http.StatusNoContent)
	for _, scope := range []string{pid, "default"} {
		l := e.do("GET", "/v3/role_assignments?user.id="+admin.UserID+"&scope.project.id="+scope+"&include_subtree=true&include_names", a, nil)
		found := false
		for _, x := range l.body["role_assignments"].([]any) {
			p := obj(obj(x)["scope"])["project"]
			found = found || (obj(p)["id"] == cid && obj(p)["name"] == "child" && obj(obj(p)["domain"])["id"] == "default")
		}
		if !found {
			t.Fatalf("subtree of %s: %s", scope, l.raw)
		}
	}
	e.want(e.do("DELETE", "/v3/projects/"+pid, a, nil), http.StatusForbidden) // not a leaf
	e.want(e.do("DELETE", "/v3/projects/"+cid, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/projects/"+pid, a, nil), http.StatusNoContent)
}

func TestCatalogEntitiesByID(t *testing.T) {
	e := newEnv(t)
	l := e.do("GET", "/v3/endpoints", e.admin, nil)
	for _, x := range l.body["endpoints"].([]any) {
		id := obj(x)["id"].(string)
		g := e.do("GET", "/v3/endpoints/"+id, e.admin, nil)
		e.want(g, http.StatusOK)
		if obj(g.body["endpoint"])["url"] != obj(x)["url"] {
			t.Fatalf("endpoint %s", g.raw)
		}
		e.want(e.do("GET", "/v3/endpoints/"+id, e.member, nil), http.StatusForbidden)
		e.want(e.do("GET", "/v3/endpoints/"+id, "", nil), http.StatusUnauthorized)
	}
	e.want(e.do("GET", "/v3/endpoints/nope", e.admin, nil), http.StatusNotFound)
	e.want(e.do("GET", "/v3/regions/RegionOne", e.member, nil), http.StatusOK)
	e.want(e.do("GET", "/v3/regions/Other", e.member, nil), http.StatusNotFound)
	e.want(e.do("GET", "/v3/regions/RegionOne", "garbage", nil), http.StatusUnauthorized)
	s := e.do("GET", "/v3/services", e.admin, nil)
	sid := obj(s.body["services"].([]any)[0])["id"].(string)
	e.want(e.do("GET", "/v3/services/"+sid, e.admin, nil), http.StatusOK)
}

// TestApplicationCredentials: the owner creates one (secret shown once),
// lists, shows and deletes it; it logs in by id or by name and user,
// limited to its project and roles; deleting it revokes its tokens.
func TestApplicationCredentials(t *testing.T) { forEachDB(t, testApplicationCredentials) }

func testApplicationCredentials(t *testing.T, e *env) {
	a := e.admin
	admin, _ := e.svc.Validate(context.Background(), a)
	base := "/v3/users/" + admin.UserID + "/application_credentials"
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	c := e.do("POST", base, a, map[string]any{"application_credential": map[string]any{"name": "ci",
		"description": "for CI", "roles": []map[string]any{{"name": "member"}}, "expires_at": exp.Format("2006-01-02T15:04:05.000000")}})
	e.want(c, http.StatusCreated)
	v := obj(c.body["application_credential"])
	id, secret := v["id"].(string), v["secret"].(string)
	if secret == "" || v["unrestricted"] != false || v["project_id"] != admin.ProjectID || len(v["roles"].([]any)) != 1 ||
		v["expires_at"] != exp.Format("2006-01-02T15:04:05.000000") {
		t.Fatalf("created %s", c.raw)
	}
	e.want(e.do("POST", base, a, map[string]any{"application_credential": map[string]any{"name": "ci"}}), http.StatusConflict)
	e.want(e.do("POST", base, a, map[string]any{"application_credential": map[string]any{"name": "x",
		"roles": []map[string]any{{"name": "reader"}}}}), http.StatusNotFound) // admin holds no reader role
	g := e.do("GET", base+"/"+id, a, nil)
	e.want(g, http.StatusOK)
	if _, has := obj(g.body["application_credential"])["secret"]; has {
		t.Fatalf("secret shown again: %s", g.raw)
	}
	if l := e.do("GET", base, a, nil); len(l.body["application_credentials"].([]any)) != 1 {
		t.Fatalf("list %s", l.raw)
	}
	var hash string
	e.st.DB.Raw("SELECT secret_hash FROM application_credentials WHERE id = ?", id).Scan(&hash)
	if hash == "" || hash == secret {
		t.Fatalf("secret stored as %q", hash)
	}

	// Other users: 403; no or garbage token: 401.
	e.want(e.do("GET", base, e.member, nil), http.StatusForbidden)
	e.want(e.do("GET", base+"/"+id, e.member, nil), http.StatusForbidden)
	e.want(e.do("DELETE", base+"/"+id, e.member, nil), http.StatusForbidden)
	e.want(e.do("POST", base, e.member, map[string]any{"application_credential": map[string]any{"name": "steal"}}), http.StatusForbidden)
	e.want(e.do("GET", base, "", nil), http.StatusUnauthorized)
	e.want(e.do("GET", base, "garbage", nil), http.StatusUnauthorized)

	acAuth := func(m map[string]any, scope any) resp {
		body := map[string]any{"identity": map[string]any{"methods": []string{"application_credential"}, "application_credential": m}}
		if scope != nil {
			body["scope"] = scope
		}
		return e.do("POST", "/v3/auth/tokens", "", map[string]any{"auth": body})
	}
	r := acAuth(map[string]any{"id": id, "secret": secret}, nil)
	e.want(r, http.StatusCreated)
	tb := obj(r.body["token"])
	if obj(tb["project"])["id"] != admin.ProjectID || len(tb["roles"].([]any)) != 1 || obj(tb["roles"].([]any)[0])["name"] != "member" ||
		obj(tb["application_credential"])["id"] != id || tb["methods"].([]any)[0] != "application_credential" {
		t.Fatalf("app cred token %s", r.raw)
	}
	acTok := r.header.Get("X-Subject-Token")
	cr, err := e.svc.Validate(context.Background(), acTok)
	if err != nil || cr.HasRole("admin") || cr.IsAdmin() {
		t.Fatalf("app cred token credentials %+v %v", cr, err)
	}
	// Limited: cannot act as the admin, cannot make more credentials.
	e.want(e.do("GET", "/v3/users", acTok, nil), http.StatusForbidden)
	e.want(e.do("POST", base, acTok, map[string]any{"application_credential": map[string]any{"name": "more"}}), http.StatusForbidden)
	e.want(acAuth(map[string]any{"name": "ci", "user": map[string]any{"name": "admin", "domain": map[string]any{"id": "default"}},
		"secret": secret}, nil), http.StatusCreated)
	e.want(acAuth(map[string]any{"id": id, "secret": "wrong"}, nil), http.StatusUnauthorized)
	e.want(acAuth(map[string]any{"id": id, "secret": secret}, projectScope("demo")), http.StatusUnauthorized)
	e.want(acAuth(map[string]any{"id": "nope", "secret": secret}, nil), http.StatusUnauthorized)

	e.want(e.do("DELETE", base+"/"+id, a, nil), http.StatusNoContent)
	if _, err := e.svc.Validate(context.Background(), acTok); err == nil {
		t.Fatal("a deleted application credential's token still validates")
	}
	e.want(acAuth(map[string]any{"id": id, "secret": secret}, nil), http.StatusUnauthorized)
	e.want(e.do("GET", base+"/"+id, a, nil), http.StatusNotFound)

	// Unrestricted, with a chosen secret, all roles.
	u := e.do("POST", base, a, map[string]any{"application_credential": map[string]any{"name": "all", "unrestricted": true, "secret": "myprecious"}})
	e.want(u, http.StatusCreated)
	if v := obj(u.body["application_credential"]); v["secret"] != "myprecious" || len(v["roles"].([]any)) != 2 || v["expires_at"] != nil {
		t.Fatalf("unrestricted %s", u.raw)
	}
	e.want(e.do("POST", base, a, map[string]any{"application_credential": map[string]any{"name": "ar",
		"access_rules": []map[string]any{{"path": "/v2.0/metrics", "service": "monitoring", "method": "GET"}}}}), http.StatusBadRequest)
	e.want(e.do("POST", base, a, map[string]any{"application_credential": map[string]any{"name": "old", "expires_at": "2000-01-01T00:00:00"}}), http.StatusBadRequest)
}

// TestDomainSpecificRoles: a role may belong to a domain (its name free
// in others), keeps options and extra attributes, is listed only with
// its domain_id, and grants nothing in a token even when named admin.
func TestDomainSpecificRoles(t *testing.T) { forEachDB(t, testDomainSpecificRoles) }

func testDomainSpecificRoles(t *testing.T, e *env) {
	a := e.admin
	c := e.do("POST", "/v3/roles", a, map[string]any{"role": map[string]any{"name": "admin", "domain_id": "default",
		"description": "d", "email": "r@example.com", "options": map[string]any{"immutable": false}}})
	e.want(c, http.StatusCreated)
	rid := e.id(c, "role")
	if v := obj(c.body["role"]); v["domain_id"] != "default" || v["email"] != "r@example.com" || obj(v["options"])["immutable"] != false {
		t.Fatalf("created %s", c.raw)
	}
	e.want(e.do("POST", "/v3/roles", a, map[string]any{"role": map[string]any{"name": "ADMIN", "domain_id": "default"}}), http.StatusConflict)
	e.want(e.do("POST", "/v3/roles", a, map[string]any{"role": map[string]any{"name": "x", "domain_id": "nowhere"}}), http.StatusNotFound)
	e.want(e.do("POST", "/v3/roles", e.member, map[string]any{"role": map[string]any{"name": "x", "domain_id": "default"}}), http.StatusForbidden)
	if l := e.do("GET", "/v3/roles?name=admin", a, nil); len(l.body["roles"].([]any)) != 1 || obj(l.body["roles"].([]any)[0])["domain_id"] != nil {
		t.Fatalf("global roles %s", l.raw)
	}
	if l := e.do("GET", "/v3/roles?domain_id=default", a, nil); !slices.Equal(names(l.body["roles"], "id"), []string{rid}) {
		t.Fatalf("default's roles %s", l.raw)
	}
	up := e.do("PATCH", "/v3/roles/"+rid, a, map[string]any{"role": map[string]any{"description": "u", "email": "u@example.com"}})
	e.want(up, http.StatusOK)
	if v := obj(up.body["role"]); v["description"] != "u" || v["email"] != "u@example.com" {
		t.Fatalf("updated %s", up.raw)
	}
	// Granted on alice's project, the domain role named admin gives her nothing.
	alice, _ := e.svc.Validate(context.Background(), e.member)
	e.want(e.do("PUT", "/v3/projects/"+alice.ProjectID+"/users/"+alice.UserID+"/roles/"+rid, a, nil), http.StatusNoContent)
	if l := e.do("GET", "/v3/projects/"+alice.ProjectID+"/users/"+alice.UserID+"/roles", a, nil); len(l.body["roles"].([]any)) != 2 {
		t.Fatalf("grants %s", l.raw)
	}
	tok := e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	if c, err := e.svc.Validate(context.Background(), tok); err != nil || c.HasRole("admin") {
		t.Fatalf("a domain-specific role reached a token: %+v %v", c, err)
	}
	// Immutable roles are neither changed nor deleted.
	e.want(e.do("PATCH", "/v3/roles/"+rid, a, map[string]any{"role": map[string]any{"options": map[string]any{"immutable": true}}}), http.StatusOK)
	e.want(e.do("DELETE", "/v3/roles/"+rid, a, nil), http.StatusForbidden)
	e.want(e.do("PATCH", "/v3/roles/"+rid, a, map[string]any{"role": map[string]any{"description": "v"}}), http.StatusForbidden)
	e.want(e.do("PATCH", "/v3/roles/"+rid, a, map[string]any{"role": map[string]any{"options": map[string]any{"immutable": nil}}}), http.StatusOK)
	e.want(e.do("DELETE", "/v3/roles/"+rid, a, nil), http.StatusNoContent)
}

// TestGroups: admins manage groups (names unique per domain, extras kept,
// name filters) and their members; a role granted to a group on a project
// reaches its members' tokens and shows in role assignments (effective:
// per member); members and others cannot manage groups; deleting the
// group ends the grant.
func TestGroups(t *testing.T) { forEachDB(t, testGroups) }

func testGroups(t *testing.T, e *env) {
	a := e.admin
	c := e.do("POST", "/v3/groups", a, map[string]any{"group": map[string]any{"name": "ops", "description": "d", "email": "g@example.com"}})
	e.want(c, http.StatusCreated)
	gid := e.id(c, "group")
	if v := obj(c.body["group"]); v["domain_id"] != "default" || v["email"] != "g@example.com" || v["description"] != "d" {
		t.Fatalf("created %s", c.raw)
	}
	e.want(e.do("POST", "/v3/groups", a, map[string]any{"group": map[string]any{"name": "ops"}}), http.StatusConflict)
	e.want(e.do("POST", "/v3/groups", a, map[string]any{"group": map[string]any{"name": "x", "domain_id": "nowhere"}}), http.StatusNotFound)
	e.want(e.do("POST", "/v3/groups", e.member, map[string]any{"group": map[string]any{"name": "x"}}), http.StatusForbidden)
	e.want(e.do("GET", "/v3/groups", e.member, nil), http.StatusForbidden)
	e.want(e.do("GET", "/v3/groups", "", nil), http.StatusUnauthorized)
	e.want(e.do("GET", "/v3/groups", "garbage", nil), http.StatusUnauthorized)
	if l := e.do("GET", "/v3/groups?domain_id=default&name__contains=op", a, nil); !slices.Equal(names(l.body["groups"], "id"), []string{gid}) {
		t.Fatalf("filtered groups %s", l.raw)
	}
	if l := e.do("GET", "/v3/groups?name__contains=zz", a, nil); len(l.body["groups"].([]any)) != 0 {
		t.Fatalf("filtered groups %s", l.raw)
	}
	up := e.do("PATCH", "/v3/groups/"+gid, a, map[string]any{"group": map[string]any{"description": "", "email": "h@example.com"}})
	e.want(up, http.StatusOK)
	if v := obj(up.body["group"]); v["description"] != "" || v["email"] != "h@example.com" {
		t.Fatalf("updated %s", up.raw)
	}
	e.want(e.do("PATCH", "/v3/groups/"+gid, e.member, map[string]any{"group": map[string]any{"description": "x"}}), http.StatusForbidden)

	alice, _ := e.svc.Validate(context.Background(), e.member)
	e.want(e.do("PUT", "/v3/groups/"+gid+"/users/"+alice.UserID, e.member, nil), http.StatusForbidden)
	e.want(e.do("HEAD", "/v3/groups/"+gid+"/users/"+alice.UserID, a, nil), http.StatusNotFound)
	e.want(e.do("PUT", "/v3/groups/"+gid+"/users/nobody", a, nil), http.StatusNotFound)
	e.want(e.do("PUT", "/v3/groups/"+gid+"/users/"+alice.UserID, a, nil), http.StatusNoContent)
	e.want(e.do("PUT", "/v3/groups/"+gid+"/users/"+alice.UserID, a, nil), http.StatusNoContent)
	e.want(e.do("HEAD", "/v3/groups/"+gid+"/users/"+alice.UserID, a, nil), http.StatusNoContent)
	if l := e.do("GET", "/v3/groups/"+gid+"/users", a, nil); !slices.Equal(names(l.body["users"], "id"), []string{alice.UserID}) {
		t.Fatalf("members %s", l.raw)
	}
	if l := e.do("GET", "/v3/users/"+alice.UserID+"/groups", e.member, nil); !slices.Equal(names(l.body["groups"], "id"), []string{gid}) {
		t.Fatalf("alice's groups %s", l.raw)
	}

	// A role granted to the group on the admin project reaches alice.
	roles := e.do("GET", "/v3/roles?name=reader", a, nil)
	reader := obj(roles.body["roles"].([]any)[0])["id"].(string)
	admins := e.do("GET", "/v3/projects?name=admin", a, nil)
	adminProject := obj(admins.body["projects"].([]any)[0])["id"].(string)
	grant := "/v3/projects/" + adminProject + "/groups/" + gid + "/roles/" + reader
	e.want(e.do("PUT", grant, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", grant, "", nil), http.StatusUnauthorized)
	e.want(e.do("HEAD", grant, a, nil), http.StatusNotFound)
	e.want(e.do("PUT", grant, a, nil), http.StatusNoContent)
	e.want(e.do("HEAD", grant, a, nil), http.StatusNoContent)
	if l := e.do("GET", "/v3/projects/"+adminProject+"/groups/"+gid+"/roles", a, nil); !slices.Equal(names(l.body["roles"], "id"), []string{reader}) {
		t.Fatalf("group grants %s", l.raw)
	}
	tok := e.token(passwordAuth("alice", "alicepw", projectScope("admin")))
	if c, err := e.svc.Validate(context.Background(), tok); err != nil || !c.HasRole("reader") || c.HasRole("admin") {
		t.Fatalf("alice's token on admin through her group: %+v %v", c, err)
	}
	ra := e.do("GET", "/v3/role_assignments?group.id="+gid+"&include_names", a, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || obj(obj(l[0])["group"])["name"] != "ops" ||
		obj(obj(obj(l[0])["scope"])["project"])["id"] != adminProject {
		t.Fatalf("group assignments %s", ra.raw)
	}
	ra = e.do("GET", "/v3/role_assignments?effective&user.id="+alice.UserID+"&scope.project.id="+adminProject, e.member, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || obj(obj(l[0])["user"])["id"] != alice.UserID ||
		obj(obj(l[0])["links"])["membership"] == nil {
		t.Fatalf("effective assignments %s", ra.raw)
	}

	// Domain grants to groups.
	dgrant := "/v3/domains/default/groups/" + gid + "/roles/" + reader
	e.want(e.do("PUT", dgrant, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", dgrant, a, nil), http.StatusNoContent)
	if l := e.do("GET", "/v3/domains/default/groups/"+gid+"/roles", a, nil); len(l.body["roles"].([]any)) != 1 {
		t.Fatalf("domain group grants %s", l.raw)
	}
	e.want(e.do("DELETE", dgrant, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", dgrant, a, nil), http.StatusNotFound)

	// Leaving the group, or deleting it, ends the grant.
	e.want(e.do("DELETE", "/v3/groups/"+gid+"/users/"+alice.UserID, a, nil), http.StatusNoContent)
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("alice", "alicepw", projectScope("admin"))), http.StatusUnauthorized)
	e.want(e.do("PUT", "/v3/groups/"+gid+"/users/"+alice.UserID, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/groups/"+gid, e.member, nil), http.StatusForbidden)
	e.want(e.do("DELETE", "/v3/groups/"+gid, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/groups/"+gid, a, nil), http.StatusNotFound)
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("alice", "alicepw", projectScope("admin"))), http.StatusUnauthorized)
	if l := e.do("GET", "/v3/users/"+alice.UserID+"/groups", a, nil); len(l.body["groups"].([]any)) != 0 {
		t.Fatalf("groups after delete %s", l.raw)
	}
}
