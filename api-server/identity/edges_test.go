package identity_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/store"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// withService swaps e's server for one with opts (over the same store).
func (e *env) withService(opts identity.Options) {
	opts.Logger = quiet()
	opts.PasswordHashRounds = identity.MinPasswordHashRounds
	e.svc = identity.New(e.st, opts)
	e.srv = httptest.NewServer(e.svc.Handler())
	e.t.Cleanup(e.srv.Close)
}

func (e *env) login(user, pw string, hdr ...string) int {
	e.t.Helper()
	return e.do("POST", "/v3/auth/tokens", "", passwordAuth(user, pw, nil), hdr...).status
}

// bcrypt uses 72 bytes of a password: a longer one is refused when set
// (400, not a 500 from the hash) and never logs in (401).
func TestPasswordLongerThan72Bytes(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("p", 73)
	r := e.do("POST", "/v3/users", e.admin, map[string]any{"user": map[string]any{"name": "longpw", "password": long}})
	e.want(r, http.StatusBadRequest)
	if msg, _ := r.body["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "72 bytes") {
		t.Fatalf("message %q", msg)
	}
	r = e.do("POST", "/v3/users", e.admin, map[string]any{"user": map[string]any{"name": "okpw", "password": strings.Repeat("p", 72)}})
	e.want(r, http.StatusCreated)
	id := r.body["user"].(map[string]any)["id"].(string)
	e.want(e.do("PATCH", "/v3/users/"+id, e.admin, map[string]any{"user": map[string]any{"password": long}}), http.StatusBadRequest)
	aliceID := e.do("GET", "/v3/auth/tokens", e.member, nil, "X-Subject-Token", e.member).body["token"].(map[string]any)["user"].(map[string]any)["id"].(string)
	e.want(e.do("POST", "/v3/users/"+aliceID+"/password", e.member,
		map[string]any{"user": map[string]any{"password": long, "original_password": "alicepw"}}), http.StatusBadRequest)
	if _, err := identity.EnsureUser(context.Background(), e.st, "boot", long, "", identity.MinPasswordHashRounds); err == nil {
		t.Fatal("EnsureUser took a password bcrypt cannot hold")
	}
	if got := e.login("alice", "alicepw"+strings.Repeat("x", 80)); got != http.StatusUnauthorized {
		t.Fatalf("login with a 87-byte password: %d, want 401", got)
	}
	if got := e.login("okpw", strings.Repeat("p", 72)); got != http.StatusCreated {
		t.Fatalf("login with the 72-byte password: %d", got)
	}
}

// An unknown user is refused after the same bcrypt work as a known user's
// wrong password, so the answer's time does not tell which names exist.
func TestUnknownUserTakesAsLongAsWrongPassword(t *testing.T) {
	e := newEnv(t)
	e.withService(identity.Options{Lockout: identity.Lockout{UserAttempts: -1, SourceAttempts: -1}})
	// Timing on a shared machine is noisy, and load only ever adds time: the
	// two users are measured alternately and each keeps its fastest answer,
	// and the bound is loose. What it catches is an unknown user answered
	// without the bcrypt work (microseconds against tens of milliseconds).
	e.login("nobody", "wrong") // warm up (the dummy hash is made once)
	fastest := func(user string, best time.Duration) time.Duration {
		start := time.Now()
		if got := e.login(user, "wrong"); got != http.StatusUnauthorized {
			t.Fatalf("%s: %d", user, got)
		}
		return min(best, time.Since(start))
	}
	known, unknown := time.Hour, time.Hour
	for range 7 {
		known = fastest("alice", known)
		unknown = fastest("nobody", unknown)
	}
	t.Logf("fastest answers: known user %v, unknown user %v", known, unknown)
	if unknown < known/4 {
		t.Fatalf("unknown user answered in %v, a known user's wrong password in %v: the unknown user skips the password hash", unknown, known)
	}
}

// After N failed logins a user is locked out (401 even with the right
// password) for the lockout duration; other users are not.
func TestLoginLockoutPerUser(t *testing.T) {
	e := newEnv(t)
	e.withService(identity.Options{Lockout: identity.Lockout{UserAttempts: 3, SourceAttempts: -1, Duration: 3 * time.Second}})
	for range 2 {
		e.login("alice", "wrong")
	}
	if got := e.login("alice", "alicepw"); got != http.StatusCreated {
		t.Fatalf("below the limit: %d", got)
	}
	// The success cleared the count: three more failures lock.
	for range 3 {
		e.login("alice", "wrong")
	}
	if got := e.login("alice", "alicepw"); got != http.StatusUnauthorized {
		t.Fatalf("locked user with the right password: %d, want 401", got)
	}
	if got := e.login("admin", "s3cret"); got != http.StatusCreated {
		t.Fatalf("another user: %d", got)
	}
	time.Sleep(3200 * time.Millisecond)
	if got := e.login("alice", "alicepw"); got != http.StatusCreated {
		t.Fatalf("after the lockout: %d", got)
	}
}

// Failed logins from one address (whatever names they try) lock that
// address out, not others.
func TestLoginLockoutPerSource(t *testing.T) {
	e := newEnv(t)
	e.withService(identity.Options{Lockout: identity.Lockout{UserAttempts: -1, SourceAttempts: 4, Duration: time.Minute}})
	for _, u := range []string{"u1", "u2", "u3", "alice"} {
		e.login(u, "wrong")
	}
	if got := e.login("alice", "alicepw"); got != http.StatusUnauthorized {
		t.Fatalf("locked address with the right password: %d, want 401", got)
	}
	// Another client of a local proxy (the portal says who with
	// X-Forwarded-For, honoured from loopback only).
	if got := e.login("alice", "alicepw", "X-Forwarded-For", "203.0.113.9"); got != http.StatusCreated {
		t.Fatalf("another address: %d", got)
	}
}

// The admin role makes a cloud administrator only on the admin project
// (Keystone's admin_project): on its own project it is that project's
// admin, which cannot list users or make projects.
func TestAdminRoleOutsideAdminProject(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := identity.Grant(ctx, e.st, "alice", "demo", "admin"); err != nil {
		t.Fatal(err)
	}
	tok := e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	c, err := e.svc.Validate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if !c.HasRole("admin") || c.IsAdminProject || c.IsAdmin() || !c.CanWrite() {
		t.Fatalf("admin on demo: roles %v, admin project %v, IsAdmin %v, CanWrite %v", c.Roles, c.IsAdminProject, c.IsAdmin(), c.CanWrite())
	}
	e.want(e.do("GET", "/v3/users", tok, nil), http.StatusForbidden)
	e.want(e.do("POST", "/v3/projects", tok, map[string]any{"project": map[string]any{"name": "mine"}}), http.StatusForbidden)
	ac, err := e.svc.Validate(ctx, e.admin)
	if err != nil || !ac.IsAdmin() {
		t.Fatalf("admin on the admin project: %+v %v", ac, err)
	}
	e.want(e.do("GET", "/v3/users", e.admin, nil), http.StatusOK)

	// "*": every project is the admin project (Keystone without
	// admin_project_name).
	e.withService(identity.Options{AdminProject: "*"})
	if c, err := e.svc.Validate(ctx, tok); err != nil || !c.IsAdmin() {
		t.Fatalf("admin_project *: %+v %v", c, err)
	}
}

func TestCredentialsAdminNeedsAdminProject(t *testing.T) {
	c := auth.Credentials{Roles: []string{"admin"}}
	if c.IsAdmin() {
		t.Fatal("admin role outside the admin project is cloud admin")
	}
	c.IsAdminProject = true
	if !c.IsAdmin() {
		t.Fatal("admin role on the admin project is not admin")
	}
	if (&auth.Credentials{Roles: []string{"admin"}, IsAdminProject: true}).IsAdmin() != true ||
		(&auth.Credentials{Roles: []string{"member"}, IsAdminProject: true}).IsAdmin() {
		t.Fatal("IsAdmin")
	}
}

// Expired tokens are deleted by the periodic purge.
func TestExpiredTokensPurgedPeriodically(t *testing.T) {
	e := newEnv(t)
	db := e.st.WithContext(context.Background())
	old := store.Token{Hash: strings.Repeat("a", 64), UserID: "u", ExpiresAt: time.Now().Add(-time.Hour), IssuedAt: time.Now().Add(-2 * time.Hour)}
	if err := db.Create(&old).Error; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.svc.PurgeTokensEvery(ctx, 50*time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int64
		db.Model(&store.Token{}).Where("hash = ?", old.Hash).Count(&n)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the expired token is still there")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	// Live tokens stay.
	if _, err := e.svc.Validate(context.Background(), e.member); err != nil {
		t.Fatalf("live token purged: %v", err)
	}
}

// A token's holder cannot guess the user's password through the password
// change either: its failures lock the user out like failed logins.
func TestPasswordChangeFailuresLockOut(t *testing.T) {
	e := newEnv(t)
	e.withService(identity.Options{Lockout: identity.Lockout{UserAttempts: 2, SourceAttempts: -1, Duration: time.Minute}})
	aliceID := e.do("GET", "/v3/auth/tokens", e.member, nil, "X-Subject-Token", e.member).body["token"].(map[string]any)["user"].(map[string]any)["id"].(string)
	for range 2 {
		e.want(e.do("POST", "/v3/users/"+aliceID+"/password", e.member,
			map[string]any{"user": map[string]any{"password": "new", "original_password": "guess"}}), http.StatusUnauthorized)
	}
	e.want(e.do("POST", "/v3/users/"+aliceID+"/password", e.member,
		map[string]any{"user": map[string]any{"password": "new", "original_password": "alicepw"}}), http.StatusUnauthorized)
	if got := e.login("alice", "alicepw"); got != http.StatusUnauthorized {
		t.Fatalf("login after failed password changes: %d, want 401 (locked)", got)
	}
}

// A project-scoped token says whether its project is the admin project
// (Keystone's token.is_admin_project), on issue (POST) and on validation
// (GET); an unscoped token has no project and no such field.
func TestTokenIsAdminProject(t *testing.T) {
	e := newEnv(t)
	if err := identity.Grant(context.Background(), e.st, "alice", "demo", "admin"); err != nil {
		t.Fatal(err)
	}
	isAdminProject := func(body any, service string) (any, bool) {
		t.Helper()
		r := e.do("POST", "/v3/auth/tokens", "", body)
		e.want(r, http.StatusCreated)
		posted, hasPosted := obj(r.body["token"])["is_admin_project"]
		g := e.do("GET", "/v3/auth/tokens", e.admin, nil, "X-Subject-Token", r.header.Get("X-Subject-Token"))
		e.want(g, http.StatusOK)
		got, has := obj(g.body["token"])["is_admin_project"]
		if got != posted || has != hasPosted {
			t.Errorf("%s: is_admin_project %v (present %v) on issue, %v (present %v) on validation", service, posted, hasPosted, got, has)
		}
		return got, has
	}
	for _, c := range []struct {
		name string
		body any
		want any
	}{
		{"admin on the admin project", passwordAuth("admin", "s3cret", projectScope("admin")), true},
		{"admin role on demo", passwordAuth("alice", "alicepw", projectScope("demo")), false},
	} {
		if got, has := isAdminProject(c.body, c.name); !has || got != c.want {
			t.Errorf("%s: is_admin_project %v (present %v), want %v", c.name, got, has, c.want)
		}
	}
	if got, has := isAdminProject(passwordAuth("alice", "alicepw", nil), "unscoped"); has {
		t.Errorf("unscoped token: is_admin_project %v, want none", got)
	}
	// "*": every project is the admin project.
	e.withService(identity.Options{AdminProject: "*"})
	if got, has := isAdminProject(passwordAuth("alice", "alicepw", projectScope("demo")), "admin_project *"); !has || got != true {
		t.Errorf("admin_project *: is_admin_project %v (present %v), want true", got, has)
	}
}

// api.password_hash_rounds sets the bcrypt cost of the hashes made from
// then on (a created user's, an application credential's); a hash of
// another cost (one made before the setting changed) keeps verifying.
func TestPasswordHashRounds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cost := func(user string) int {
		t.Helper()
		var u store.User
		if err := e.st.DB.Where("name = ?", user).Take(&u).Error; err != nil {
			t.Fatal(err)
		}
		c, err := bcrypt.Cost([]byte(u.PasswordHash))
		if err != nil {
			t.Fatalf("hash of %s: %v", user, err)
		}
		return c
	}
	// Made at the default cost, as before the setting existed.
	if _, err := identity.EnsureUser(ctx, e.st, "old", "old-pw", "demo", 0); err != nil {
		t.Fatal(err)
	}
	if c := cost("old"); c != bcrypt.DefaultCost {
		t.Fatalf("EnsureUser with rounds 0 hashed at cost %d, want the default %d", c, bcrypt.DefaultCost)
	}
	e.withService(identity.Options{}) // PasswordHashRounds: MinPasswordHashRounds
	e.token(passwordAuth("old", "old-pw", nil))
	e.want(e.do("POST", "/v3/auth/tokens", "", passwordAuth("old", "wrong", nil)), http.StatusUnauthorized)
	e.want(e.do("POST", "/v3/users", e.admin, map[string]any{"user": map[string]any{"name": "new", "password": "new-pw",
		"domain_id": "default"}}), http.StatusCreated)
	if c := cost("new"); c != identity.MinPasswordHashRounds {
		t.Fatalf("created user hashed at cost %d, want %d", c, identity.MinPasswordHashRounds)
	}
	e.token(passwordAuth("new", "new-pw", nil))
	// A service at the default cost verifies the cheap hash as well.
	e.svc = identity.New(e.st, identity.Options{Logger: quiet()})
	e.srv = httptest.NewServer(e.svc.Handler())
	t.Cleanup(e.srv.Close)
	e.token(passwordAuth("new", "new-pw", nil))
}

// A validated token is not read again while nothing is written (a client
// polling every 20 ms paid about ten queries a request), and a write to
// an identity table through the store ends the reuse: a revocation made
// directly in the database takes effect on the next request.
func TestValidateCachedUntilAWrite(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok := e.token(passwordAuth("alice", "alicepw", projectScope("demo")))
	if _, err := e.svc.Validate(ctx, tok); err != nil {
		t.Fatal(err)
	}
	var queries atomic.Int64
	if err := e.st.DB.Callback().Query().Before("gorm:query").Register("test:count-queries", func(*gorm.DB) { queries.Add(1) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.st.DB.Callback().Query().Remove("test:count-queries") })
	for range 3 {
		if c, err := e.svc.Validate(ctx, tok); err != nil || c.UserName != "alice" || !c.HasRole("member") {
			t.Fatalf("cached validation: %+v %v", c, err)
		}
	}
	if n := queries.Load(); n != 0 {
		t.Fatalf("%d queries for three validations of a token validated just before, want 0", n)
	}
	if err := e.st.DB.Model(&store.Token{}).Where("1 = 1").Update("revoked", true).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Validate(ctx, tok); !errors.Is(err, identity.ErrInvalidToken) {
		t.Fatalf("validation after a revocation written to the database: %v, want ErrInvalidToken", err)
	}
}

// The cache outlives writes to tables a validation does not read (a
// cloud at work writes servers, ports and actions many times a second)
// and is emptied by a write to any table it does read: each table the
// queries of a project-, system- and application-credential-scoped
// validation touch is written once, and the next validation reads again.
func TestCacheEmptiedByEveryTableValidationReads(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sys := e.systemToken()
	admin, _ := e.svc.Validate(ctx, e.admin)
	c := e.do("POST", "/v3/users/"+admin.UserID+"/application_credentials", e.admin, map[string]any{
		"application_credential": map[string]any{"name": "cache", "roles": []map[string]any{{"name": "member"}}}})
	e.want(c, http.StatusCreated)
	ac := obj(c.body["application_credential"])
	acTok := e.token(map[string]any{"auth": map[string]any{"identity": map[string]any{"methods": []string{"application_credential"},
		"application_credential": map[string]any{"id": ac["id"], "secret": ac["secret"]}}}})
	tokens := []string{e.member, sys, acTok}

	var mu sync.Mutex
	var queries int
	read := map[string]bool{}
	if err := e.st.DB.Callback().Query().Before("gorm:query").Register("test:tables-read", func(db *gorm.DB) {
		mu.Lock()
		defer mu.Unlock()
		queries++
		read[db.Statement.Table] = true
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.st.DB.Callback().Query().Remove("test:tables-read") })
	count := func() int { mu.Lock(); defer mu.Unlock(); return queries }
	validateAll := func(what string) int {
		t.Helper()
		before := count()
		for _, tok := range tokens {
			if _, err := e.svc.Validate(ctx, tok); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		return count() - before
	}
	// Emptied by a write to the tokens table above (the credential's
	// token): the first round reads, the second does not.
	e.st.DB.Model(&store.Token{}).Where("1 = 0").Update("revoked", true)
	if n := validateAll("first validation"); n == 0 {
		t.Fatal("no query for validations after a write to tokens")
	}
	if n := validateAll("cached validation"); n != 0 {
		t.Fatalf("%d queries for cached validations", n)
	}
	// Writes to the cloud's busy tables leave the cache alone.
	for _, m := range []any{&store.Instance{}, &store.Port{}, &store.InstanceAction{}} {
		if err := e.st.DB.Model(m).Where("1 = 0").Update("updated_at", time.Now()).Error; err != nil {
			t.Fatal(err)
		}
	}
	if n := validateAll("validation after writes to servers, ports, actions"); n != 0 {
		t.Fatalf("%d queries after writes to tables validation does not read, want 0", n)
	}
	mu.Lock()
	tables := make([]string, 0, len(read))
	for tb := range read {
		tables = append(tables, tb)
	}
	mu.Unlock()
	slices.Sort(tables)
	if len(tables) < 5 {
		t.Fatalf("validation read only %v", tables)
	}
	for _, tb := range tables {
		if tb == "" {
			t.Fatal("a validation query without a table name: the cache cannot tell which writes concern it")
		}
		_ = validateAll("refill")
		if err := e.st.DB.Table(tb).Where("1 = 0").Update(firstColumn(t, e, tb), gorm.Expr(firstColumn(t, e, tb))).Error; err != nil {
			t.Fatal(err)
		}
		if n := validateAll("validation after a write to " + tb); n == 0 {
			t.Errorf("a write to %s (read by validation) left the token cache in use", tb)
		}
	}
}

// firstColumn is a column of table tb.
func firstColumn(t *testing.T, e *env, tb string) string {
	t.Helper()
	cols, err := e.st.DB.Migrator().ColumnTypes(tb)
	if err != nil || len(cols) == 0 {
		t.Fatalf("columns of %s: %v", tb, err)
	}
	return cols[0].Name()
}

// A NUL byte or invalid UTF-8 in a path id, a filter or a name is bad
// input on both databases (PostgreSQL refuses such text; it answered 500):
// 400 or 404, never 5xx.
func TestNULBytesAreBadInput(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for _, path := range []string{"/v3/projects/a%00b", "/v3/users/a%00b", "/v3/credentials/a%ffb"} {
			if r := e.do("GET", path, e.admin, nil); r.status != 400 && r.status != 404 {
				t.Errorf("GET %s: %d %s, want 400 or 404", path, r.status, r.raw)
			}
		}
		// A filter nothing can match: an empty list (SQLite) or 400.
		for _, path := range []string{"/v3/projects?name=a%00b", "/v3/users?name=%ff"} {
			if r := e.do("GET", path, e.admin, nil); r.status != 400 && r.status != 200 {
				t.Errorf("GET %s: %d %s, want 200 or 400", path, r.status, r.raw)
			}
		}
		r := e.do("POST", "/v3/projects", e.admin, map[string]any{"project": map[string]any{"name": "a\x00b"}})
		if r.status >= 500 {
			t.Errorf("a project named with a NUL byte: %d %s", r.status, r.raw)
		}
	})
}
