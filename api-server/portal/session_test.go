package portal

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The session cookie is a random ID of a session the portal keeps, not
// the Keystone token (nor an encoding of it); logging out ends it on the
// server, so a copy of the cookie replayed afterwards is no session.
func TestSessionCookieIsNotTheToken(t *testing.T) {
	e := newEnv(t)
	_, page := e.get("/login")
	resp := e.post("/login", url.Values{"csrf": {csrfOf(t, page)}, "user": {"demo"}, "password": {"secret"}, "project": {"demo"}})
	resp.Body.Close()
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			sc = c
		}
	}
	if sc == nil {
		t.Fatal("no session cookie")
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sc.Value) {
		t.Fatalf("session cookie %q is not a random session ID", sc.Value)
	}
	for _, part := range strings.FieldsFunc(sc.Value, func(r rune) bool { return r == '.' }) {
		dec, _ := base64.RawURLEncoding.DecodeString(part)
		if strings.Contains(sc.Value, "tok-demo") || strings.Contains(string(dec), "tok-demo") {
			t.Fatalf("session cookie carries the token: %q", sc.Value)
		}
	}
	if sc.Expires.IsZero() || sc.Expires.After(time.Now().Add(maxSessionTTL+time.Minute)) {
		t.Errorf("cookie expiry %v, want at most %v from now", sc.Expires, maxSessionTTL)
	}
	st, page := e.get("/")
	if st != 200 {
		t.Fatalf("overview: %d", st)
	}
	resp = e.post("/logout", url.Values{"csrf": {csrfOf(t, page)}})
	resp.Body.Close()
	// Replay the old cookie (a copy taken before the logout).
	u, _ := url.Parse(e.portal.URL)
	e.client.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: sc.Value, Path: "/"}})
	if st, _ := e.get("/"); st != http.StatusSeeOther {
		t.Fatalf("the session cookie still works after logout: %d", st)
	}
}

func TestSessionsExpire(t *testing.T) {
	ss := newSessions()
	now := time.Now()
	ss.now = func() time.Time { return now }
	id := ss.add(&session{Token: "t", Expires: now.Add(time.Minute)})
	if ss.get(id) == nil || ss.get(id+"0") != nil || ss.get("") != nil {
		t.Fatal("lookup")
	}
	now = now.Add(2 * time.Minute)
	if ss.get(id) != nil {
		t.Fatal("an expired session is still served")
	}
	if len(ss.byID) != 0 {
		t.Fatal("an expired session is still kept")
	}
}

// The admin pages show for the admin role on the admin project only, the
// callers the APIs treat as cloud admins.
func TestAdminPagesNeedAdminProject(t *testing.T) {
	for _, c := range []struct {
		project, adminProject string
		want                  bool
	}{{"admin", "", true}, {"demo", "", false}, {"ops", "ops", true}, {"demo", "*", true}} {
		idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Subject-Token", "tok")
			writeJSON(w, 201, map[string]any{"token": map[string]any{"expires_at": "2999-01-01T00:00:00.000000Z",
				"user": map[string]any{"name": "u"}, "project": map[string]any{"id": "p", "name": c.project},
				"roles": []map[string]any{{"name": "admin"}, {"name": "member"}}}})
		}))
		p, err := New(Options{AdminProject: c.adminProject, Endpoints: Endpoints{Identity: idp.URL + "/v3",
			Compute: idp.URL, Image: idp.URL, Network: idp.URL}})
		if err != nil {
			t.Fatal(err)
		}
		sess, err := p.login(context.Background(), "u", "pw", c.project)
		idp.Close()
		if err != nil {
			t.Fatal(err)
		}
		if sess.Admin != c.want {
			t.Errorf("admin role on %q (admin project %q): Admin %v, want %v", c.project, c.adminProject, sess.Admin, c.want)
		}
	}
}
