package identity_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestInheritedSystemAndImpliedRoles: OS-INHERIT grants on a project
// reach the projects below it (not the project itself) and grants on a
// domain reach its projects, for users and groups' members; system grants
// give system-scoped tokens, whose admin is a cloud administrator of the
// identity API only; role inference rules add implied roles to tokens and
// effective assignments. Only administrators manage any of it.
func TestInheritedSystemAndImpliedRoles(t *testing.T) {
	forEachDB(t, testInheritedSystemAndImpliedRoles)
}

func testInheritedSystemAndImpliedRoles(t *testing.T, e *env) {
	a := e.admin
	ctx := context.Background()
	mk := func(path, key string, body map[string]any) string {
		r := e.do("POST", path, a, map[string]any{key: body})
		e.want(r, http.StatusCreated)
		return e.id(r, key)
	}
	parent := mk("/v3/projects", "project", map[string]any{"name": "parent"})
	child := mk("/v3/projects", "project", map[string]any{"name": "child", "parent_id": parent})
	auditor := mk("/v3/roles", "role", map[string]any{"name": "auditor"})
	viewer := mk("/v3/roles", "role", map[string]any{"name": "viewer"})
	bob := mk("/v3/users", "user", map[string]any{"name": "bob", "password": "bobpw"})
	gid := mk("/v3/groups", "group", map[string]any{"name": "watchers"})
	e.want(e.do("PUT", "/v3/groups/"+gid+"/users/"+bob, a, nil), http.StatusNoContent)
	roleIDs := func(tok string) []string {
		t.Helper()
		c, err := e.svc.Validate(ctx, tok)
		if err != nil {
			t.Fatalf("validate: %v", err)
		}
		return c.Roles
	}
	scoped := func(name string) map[string]any { return projectScope(name) }

	// OS-INHERIT on a project: the child inherits, the project does not.
	inh := "/v3/OS-INHERIT/projects/" + parent + "/users/" + bob + "/roles/" + auditor + "/inherited_to_projects"
	e.want(e.do("PUT", inh, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", inh, "", nil), http.StatusUnauthorized)
	e.want(e.do("PUT", inh, "garbage", nil), http.StatusUnauthorized)
	e.want(e.do("PUT", strings.Replace(inh, parent, "nowhere", 1), a, nil), http.StatusNotFound)
	e.want(e.do("PUT", strings.Replace(inh, bob, "nobody", 1), a, nil), http.StatusNotFound)
	e.want(e.do("HEAD", inh, a, nil), http.StatusNotFound)
	e.want(e.do("PUT", inh, a, nil), http.StatusNoContent)
	e.want(e.do("PUT", inh, a, nil), http.StatusNoContent)
	e.want(e.do("HEAD", inh, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/OS-INHERIT/projects/"+parent+"/users/"+bob+"/roles/inherited_to_projects", e.member, nil), http.StatusForbidden)
	if l := e.do("GET", "/v3/OS-INHERIT/projects/"+parent+"/users/"+bob+"/roles/inherited_to_projects", a, nil); !slices.Equal(names(l.body["roles"], "id"), []string{auditor}) {
		t.Fatalf("inherited grants %s", l.raw)
	}
	if got := roleIDs(e.token(passwordAuth("bob", "bobpw", scoped("child")))); !slices.Equal(got, []string{"auditor"}) {
		t.Fatalf("bob's roles on child: %v", got)
	}
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("bob", "bobpw", scoped("parent"))), http.StatusUnauthorized)
	ra := e.do("GET", "/v3/role_assignments?user.id="+bob, a, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || obj(obj(l[0])["scope"])["OS-INHERIT:inherited_to"] != "projects" ||
		obj(obj(obj(l[0])["scope"])["project"])["id"] != parent || !strings.Contains(obj(obj(l[0])["links"])["assignment"].(string), "/v3/OS-INHERIT/projects/") {
		t.Fatalf("inherited assignment %s", ra.raw)
	}
	ra = e.do("GET", "/v3/role_assignments?effective&include_names&user.id="+bob, e.member, nil)
	e.want(ra, http.StatusForbidden)
	bobTok := e.token(passwordAuth("bob", "bobpw", scoped("child")))
	ra = e.do("GET", "/v3/role_assignments?effective&include_names&user.id="+bob, bobTok, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || obj(obj(obj(l[0])["scope"])["project"])["name"] != "child" ||
		obj(obj(l[0])["scope"])["OS-INHERIT:inherited_to"] != nil {
		t.Fatalf("effective inherited assignment %s", ra.raw)
	}
	if l := e.do("GET", "/v3/auth/projects", bobTok, nil); !slices.Equal(names(l.body["projects"], "id"), []string{child}) {
		t.Fatalf("bob's projects %s", l.raw)
	}

	// OS-INHERIT on a domain, to a group: every project of the domain.
	ginh := "/v3/OS-INHERIT/domains/default/groups/" + gid + "/roles/" + viewer + "/inherited_to_projects"
	e.want(e.do("PUT", ginh, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", ginh, a, nil), http.StatusNoContent)
	if got := roleIDs(e.token(passwordAuth("bob", "bobpw", scoped("demo")))); !slices.Equal(got, []string{"viewer"}) {
		t.Fatalf("bob's roles on demo: %v", got)
	}
	if got := roleIDs(e.token(passwordAuth("bob", "bobpw", scoped("child")))); !slices.Equal(got, []string{"auditor", "viewer"}) {
		t.Fatalf("bob's roles on child: %v", got)
	}
	ra = e.do("GET", "/v3/role_assignments?scope.OS-INHERIT:inherited_to=projects&group.id="+gid, a, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || obj(obj(obj(l[0])["scope"])["domain"])["id"] != "default" {
		t.Fatalf("inherited group assignment %s", ra.raw)
	}
	e.want(e.do("DELETE", ginh, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", ginh, a, nil), http.StatusNotFound)
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("bob", "bobpw", scoped("demo"))), http.StatusUnauthorized)

	// Implied roles: auditor implies reader, in tokens and effective lists.
	rules := "/v3/roles/" + auditor + "/implies/"
	readers := e.do("GET", "/v3/roles?name=reader", a, nil)
	reader := obj(readers.body["roles"].([]any)[0])["id"].(string)
	admins := e.do("GET", "/v3/roles?name=admin", a, nil)
	admin := obj(admins.body["roles"].([]any)[0])["id"].(string)
	e.want(e.do("PUT", rules+reader, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", rules+reader, "", nil), http.StatusUnauthorized)
	e.want(e.do("GET", "/v3/role_inferences", e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", rules+"nothing", a, nil), http.StatusNotFound)
	e.want(e.do("PUT", rules+admin, a, nil), http.StatusForbidden)
	c := e.do("PUT", rules+reader, a, nil)
	e.want(c, http.StatusCreated)
	if v := obj(c.body["role_inference"]); obj(v["prior_role"])["id"] != auditor || obj(v["implies"])["name"] != "reader" {
		t.Fatalf("created rule %s", c.raw)
	}
	e.want(e.do("PUT", "/v3/roles/"+reader+"/implies/"+auditor, a, nil), http.StatusForbidden) // a cycle
	e.want(e.do("HEAD", rules+reader, a, nil), http.StatusNoContent)
	e.want(e.do("GET", rules+viewer, a, nil), http.StatusNotFound)
	if l := e.do("GET", "/v3/role_inferences", a, nil); len(l.body["role_inferences"].([]any)) != 1 ||
		!slices.Equal(names(obj(l.body["role_inferences"].([]any)[0])["implies"], "id"), []string{reader}) {
		t.Fatalf("role inferences %s", l.raw)
	}
	if l := e.do("GET", "/v3/roles/"+auditor+"/implies", a, nil); !slices.Equal(names(obj(l.body["role_inference"])["implies"], "id"), []string{reader}) {
		t.Fatalf("implied roles of auditor %s", l.raw)
	}
	if got := roleIDs(e.token(passwordAuth("bob", "bobpw", scoped("child")))); !slices.Equal(got, []string{"auditor", "reader"}) {
		t.Fatalf("bob's roles on child with the rule: %v", got)
	}
	ra = e.do("GET", "/v3/role_assignments?effective&user.id="+bob+"&role.id="+reader, a, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || !strings.HasSuffix(obj(obj(l[0])["links"])["prior_role"].(string), "/v3/roles/"+auditor) {
		t.Fatalf("effective implied assignment %s", ra.raw)
	}

	// System grants and system-scoped tokens.
	sys := "/v3/system/users/" + bob + "/roles/" + admin
	system := map[string]any{"system": map[string]any{"all": true}}
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("bob", "bobpw", system)), http.StatusUnauthorized)
	e.want(e.do("PUT", sys, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", sys, "", nil), http.StatusUnauthorized)
	e.want(e.do("PUT", sys, a, nil), http.StatusNoContent)
	e.want(e.do("HEAD", sys, a, nil), http.StatusNoContent)
	if l := e.do("GET", "/v3/system/users/"+bob+"/roles", a, nil); !slices.Equal(names(l.body["roles"], "id"), []string{admin}) {
		t.Fatalf("system grants %s", l.raw)
	}
	st := e.do("POST", "/v3/auth/tokens", "", passwordAuth("bob", "bobpw", system))
	e.want(st, http.StatusCreated)
	sysTok := st.header.Get("X-Subject-Token")
	if v := obj(st.body["token"]); obj(v["system"])["all"] != true || v["project"] != nil || !slices.Equal(names(v["roles"], "name"), []string{"admin"}) {
		t.Fatalf("system token %s", st.raw)
	}
	if cr, err := e.svc.Validate(ctx, sysTok); err != nil || !cr.System || cr.ProjectID != "" || cr.IsAdmin() || !cr.IsSystemAdmin() {
		t.Fatalf("system credentials %+v %v", cr, err)
	}
	e.want(e.do("GET", "/v3/users", sysTok, nil), http.StatusOK) // a cloud administrator of the identity API
	ra = e.do("GET", "/v3/role_assignments?scope.system=all&user.id="+bob, sysTok, nil)
	if l := ra.body["role_assignments"].([]any); len(l) != 1 || obj(obj(obj(l[0])["scope"])["system"])["all"] != true ||
		!strings.HasSuffix(obj(obj(l[0])["links"])["assignment"].(string), sys) {
		t.Fatalf("system assignment %s", ra.raw)
	}
	gsys := "/v3/system/groups/" + gid + "/roles/" + reader
	e.want(e.do("PUT", gsys, e.member, nil), http.StatusForbidden)
	e.want(e.do("PUT", gsys, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", sys, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/users", sysTok, nil), http.StatusForbidden) // reader through the group only
	e.want(e.do("DELETE", gsys, a, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v3/users", sysTok, nil), http.StatusUnauthorized) // no system role left
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("alice", "alicepw", system)), http.StatusUnauthorized)

	// Deleting the role, the user or the group removes their grants and rules.
	e.want(e.do("DELETE", "/v3/roles/"+auditor, a, nil), http.StatusNoContent)
	if l := e.do("GET", "/v3/role_inferences", a, nil); len(l.body["role_inferences"].([]any)) != 0 {
		t.Fatalf("rules after the role's deletion %s", l.raw)
	}
	e.want(e.do("PUT", "/v3/OS-INHERIT/domains/default/users/"+bob+"/roles/"+viewer+"/inherited_to_projects", a, nil), http.StatusNoContent)
	e.want(e.do("PUT", "/v3/system/groups/"+gid+"/roles/"+viewer, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/users/"+bob, a, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v3/groups/"+gid, a, nil), http.StatusNoContent)
	for _, q := range []string{"user.id=" + bob, "group.id=" + gid} {
		if l := e.do("GET", "/v3/role_assignments?"+q, a, nil); len(l.body["role_assignments"].([]any)) != 0 {
			t.Fatalf("assignments left after deletion %s", l.raw)
		}
	}
}
