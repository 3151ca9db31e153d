package identity

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/internal/fuzzhttp"
	"github.com/capsule-cloud/capsule/internal/storetest"
)

// Native fuzz targets for the identity API's decoders and validators:
// the authentication body, users, projects and roles. Their seeds run as
// ordinary tests; deploy/test.sh runs each for a few seconds with -fuzz.
// A rejected input is a 4xx Keystone error, never a 5xx or a panic.

type fuzzIdentity struct {
	h                    http.Handler
	admin, user, project string
}

func newFuzzIdentity(tb testing.TB) *fuzzIdentity {
	tb.Helper()
	ctx := context.Background()
	st := storetest.SQLite(tb)
	for _, r := range []string{"admin", "member", "reader"} {
		if _, err := EnsureRole(ctx, st, r); err != nil {
			tb.Fatal(err)
		}
	}
	p, err := EnsureProject(ctx, st, "admin", "")
	if err != nil {
		tb.Fatal(err)
	}
	u, err := EnsureUser(ctx, st, "admin", "pw-admin", p.ID, MinPasswordHashRounds)
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range []string{"admin", "member"} {
		if err := Grant(ctx, st, u.ID, p.ID, r); err != nil {
			tb.Fatal(err)
		}
	}
	s := New(st, Options{PublicHost: "127.0.0.1", PasswordHashRounds: MinPasswordHashRounds})
	fi := &fuzzIdentity{h: s.Handler(), user: u.ID, project: p.ID}
	rec := fuzzhttp.Do(fi.h, "POST", "/v3/auth/tokens", "", []byte(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"pw-admin"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}`))
	if rec.Code != http.StatusCreated {
		tb.Fatalf("log in: %d %s", rec.Code, rec.Body)
	}
	fi.admin = rec.Header().Get("X-Subject-Token")
	return fi
}

func FuzzAuthBody(f *testing.F) {
	for _, s := range []string{
		`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"pw-admin"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`,
		`{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":"USER","password":"x"}}},"scope":{"project":{"id":"PROJECT"}}}}`,
		`{"auth":{"identity":{"methods":["token"],"token":{"id":"TOKEN"}},"scope":{"domain":{"id":"default"}}}}`,
		`{"auth":{"identity":{"methods":["password","token"]},"scope":{"system":{"all":true}}}}`,
		`{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"id":"x","secret":"y"}}}}`,
		`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"` +
			"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890" + `"}}}}}`,
		`{"auth":{"identity":{"methods":[],"password":null}}}`, `{"auth":null}`, `[]`, `{"auth":{"scope":"unscoped"}}`,
	} {
		f.Add([]byte(s))
	}
	fi := newFuzzIdentity(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		b := []byte(replaceFuzzIDs(string(body), fi))
		fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "POST", "/v3/auth/tokens", "", b), "issue token")
	})
}

func FuzzSubjectToken(f *testing.F) {
	for _, s := range []string{"TOKEN", "", "x", "\x00"} {
		f.Add(s, "nocatalog")
	}
	fi := newFuzzIdentity(f)
	f.Fuzz(func(t *testing.T, subject, query string) {
		subject = replaceFuzzIDs(subject, fi)
		if subject == fi.admin {
			return // revoking the fuzzer's own token would only make every later call a 401
		}
		q := "/v3/auth/tokens?" + url.QueryEscape(query)
		for _, m := range []string{"GET", "HEAD", "DELETE"} {
			fuzzhttp.Check(t, fuzzhttp.Do(fi.h, m, q, fi.admin, nil, "X-Subject-Token", subject), m+" token")
		}
	})
}

func FuzzAdminBodies(f *testing.F) {
	for _, s := range []string{`{"user":{"name":"u","password":"p","default_project_id":"PROJECT","enabled":true,"email":"e","domain_id":"default"}}`,
		`{"project":{"name":"p","description":"d","enabled":false,"domain_id":"default","is_domain":false,"parent_id":null,"tags":["a"]}}`,
		`{"role":{"name":"r","description":"d"}}`, `{"user":{"name":"","password":null}}`, `{"project":{"name":1}}`,
		`{"user":{"name":"u","password":"` + "0123456789012345678901234567890123456789012345678901234567890123456789012345" + `"}}`,
		`{"user":{"password":"new","original_password":"pw-admin"}}`} {
		f.Add([]byte(s))
	}
	fi := newFuzzIdentity(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		b := []byte(replaceFuzzIDs(string(body), fi))
		for _, c := range []struct{ method, path string }{{"POST", "/v3/users"}, {"POST", "/v3/projects"}, {"POST", "/v3/roles"},
			{"PATCH", "/v3/projects/" + fi.project}} {
			fuzzhttp.Check(t, fuzzhttp.Do(fi.h, c.method, c.path, fi.admin, b), c.method+" "+c.path)
		}
	})
}

// FuzzListFilters: the query filters of the list routes.
func FuzzListFilters(f *testing.F) {
	for _, q := range []string{"name=admin", "enabled=maybe", "user.id=x&scope.project.id=y&include_names=1", "effective&role.id=",
		"domain_id=x&is_domain=true", "parent_id=%00", "interface=public&service_id=x"} {
		f.Add(q)
	}
	fi := newFuzzIdentity(f)
	f.Fuzz(func(t *testing.T, q string) {
		for _, p := range []string{"/v3/users", "/v3/projects", "/v3/roles", "/v3/role_assignments", "/v3/endpoints", "/v3/domains",
			"/v3/role_inferences"} {
			fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "GET", p+"?"+q, fi.admin, nil), "GET "+p)
		}
	})
}

// FuzzGrantPaths: the ids in the inherited, system and implied-role grant
// URLs (any method) answer 2xx or a Keystone 4xx, never a 5xx.
func FuzzGrantPaths(f *testing.F) {
	for i, s := range [][2]string{{"PROJECT", "USER"}, {"default", "USER"}, {"x", ""}, {"%00", "..%2F"}, {"PROJECT", "admin"}} {
		f.Add(uint8(i), s[0], s[1], "member")
	}
	fi := newFuzzIdentity(f)
	f.Fuzz(func(t *testing.T, pick uint8, target, actor, role string) {
		esc := func(s string) string { return url.PathEscape(replaceFuzzIDs(s, fi)) }
		target, actor, role = esc(target), esc(actor), esc(role)
		paths := []string{
			"/v3/OS-INHERIT/projects/" + target + "/users/" + actor + "/roles/" + role + "/inherited_to_projects",
			"/v3/OS-INHERIT/domains/" + target + "/groups/" + actor + "/roles/" + role + "/inherited_to_projects",
			"/v3/OS-INHERIT/domains/" + target + "/users/" + actor + "/roles/inherited_to_projects",
			"/v3/system/users/" + actor + "/roles/" + role, "/v3/system/groups/" + actor + "/roles",
			"/v3/roles/" + target + "/implies/" + role, "/v3/roles/" + target + "/implies",
		}
		p, m := paths[int(pick)%len(paths)], []string{"GET", "HEAD", "PUT", "DELETE"}[int(pick/16)%4]
		fuzzhttp.Check(t, fuzzhttp.Do(fi.h, m, p, fi.admin, nil), m+" "+p)
	})
}

// replaceFuzzIDs puts the fixture's real ids where a seed says USER,
// PROJECT or TOKEN, so seeds reach past the lookups.
func replaceFuzzIDs(s string, fi *fuzzIdentity) string {
	r := strings.NewReplacer("USER", fi.user, "PROJECT", fi.project, "TOKEN", fi.admin)
	return r.Replace(s)
}
