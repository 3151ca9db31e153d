package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserBackAfterLogout: after logging out, Back does not show the
// page that was open (authenticated pages are no-store, and one restored
// from the back-forward cache reloads, which sends it to the login page).
func TestBrowserBackAfterLogout(t *testing.T) {
	e := newEnv(t)
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/servers")
	b.click("#logout", "/login")
	b.do("back", chromedp.NavigateBack())
	b.waitJS("back settled", `document.readyState === "complete"`, 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	b.waitJS("back shows the login page", `location.pathname === "/login" && !document.querySelector("#who")`, 5*time.Second)
	if st, _ := e.get("/servers"); st != http.StatusSeeOther {
		t.Errorf("servers without a session: %d", st)
	}
}

// TestBrowserReturnToPageAfterLogin: a page opened without a session
// comes back after the login; a next that leads off the portal is
// ignored.
func TestBrowserReturnToPageAfterLogin(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	b := newTab(t, e.portal.URL)
	b.open("/servers/s1?done=stop")
	if p := b.path(); !strings.HasPrefix(p, "/login") {
		t.Fatalf("without a session: %s", p)
	}
	b.logInHere("demo")
	if p := b.path(); p != "/servers/s1?done=stop" {
		t.Errorf("after login: %s, want the page asked for", p)
	}
	for _, next := range []string{"//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "/%2F%2Fevil.example"} {
		c := newClient(t)
		e2 := *e
		e2.client = c
		_, page := e2.get("/login?next=" + url.QueryEscape(next))
		resp := e2.post("/login", url.Values{"csrf": {csrfOf(t, page)}, "user": {"demo"}, "password": {"secret"}, "project": {"demo"}, "next": {next}})
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Errorf("login with next %q went to %q, want /", next, loc)
		}
	}
}

// TestLoginThrottled: repeated wrong passwords for one user from one
// address are refused for a while with a clear message, without asking
// Keystone (even the right password); another user still logs in.
func TestLoginThrottled(t *testing.T) {
	e := newEnv(t)
	try := func(user, pass string) (int, string) {
		_, page := e.get("/login")
		req, _ := http.NewRequest("POST", e.portal.URL+"/login", strings.NewReader(url.Values{"csrf": {csrfOf(t, page)},
			"user": {user}, "password": {pass}, "project": {user}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body(resp)
	}
	for i := 0; i < loginFailures; i++ {
		if st, _ := try("demo", "wrong"); st != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, st)
		}
	}
	before := len(e.api.requests)
	st, page := try("demo", "secret")
	if st != http.StatusTooManyRequests || !strings.Contains(page, "Too many failed logins") {
		t.Fatalf("after %d failures: %d\n%s", loginFailures, st, page)
	}
	if len(e.api.requests) != before {
		t.Errorf("a throttled login reached Keystone")
	}
	if st, _ := try("admin", "secret"); st != http.StatusSeeOther {
		t.Errorf("another user from the same address: %d", st)
	}
}

// TestBrowserServerPageKeyAndResizeFit: the server page names its key
// pair, and the resize menu offers only flavors that can take the server
// (not smaller in disk), saying why the others are disabled.
func TestBrowserServerPageKeyAndResizeFit(t *testing.T) {
	e := newEnv(t)
	srv := server("s1", "web", "ACTIVE")
	srv["key_name"] = "laptop"
	srv["flavor"] = map[string]any{"id": "2"}
	e.api.servers = []map[string]any{srv}
	e.api.flavors = []map[string]any{{"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1},
		{"id": "2", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20}, {"id": "3", "name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
		{"id": "4", "name": "m1.huge", "vcpus": 32, "ram": 4096, "disk": 40}}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/servers/s1")
	if k := b.text("#key-name"); k != "laptop" {
		t.Errorf("key pair on the server page: %q", k)
	}
	opts := js[[]string](b, `Array.from(document.querySelectorAll("#resize-flavor option")).map(function(o){return o.value+"|"+o.disabled+"|"+o.text})`)
	for _, o := range opts {
		p := strings.SplitN(o, "|", 3)
		if want := p[0] != "3"; fmt.Sprint(want) != p[1] { // 4 needs 31 more vCPUs: the quota leaves 15
			t.Errorf("resize option %q: disabled=%s, want %v", p[2], p[1], want)
		}
	}
	if all := strings.Join(opts, "\n"); !strings.Contains(all, "disk") || !strings.Contains(all, "quota leaves 15") {
		t.Errorf("disabled flavors do not say why: %v", opts)
	}
	if v := js[string](b, `document.querySelector("#resize-flavor").value`); v != "3" {
		t.Errorf("resize preselects %q, want the one flavor that fits", v)
	}
}

// TestBrowserLaunchQuotaFull: with no servers left in the quota the launch
// page says what is left and offers no Launch.
func TestBrowserLaunchQuotaFull(t *testing.T) {
	e := newEnv(t)
	e.api.limits = map[string]any{"maxTotalInstances": 3, "totalInstancesUsed": 3, "maxTotalCores": 20, "totalCoresUsed": 3,
		"maxTotalRAMSize": 51200, "totalRAMUsed": 1536}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/launch")
	if q := b.text("#quota"); !strings.Contains(q, "0 of 3 servers") || !strings.Contains(q, "17 of 20 vCPUs") {
		t.Errorf("launch page's quota: %q", q)
	}
	if !js[bool](b, `document.querySelector("#launch-go").disabled`) {
		t.Error("Launch is offered with the server quota full")
	}
}

// TestBrowserFavicon: the portal has an icon (no 404 in the console).
func TestBrowserFavicon(t *testing.T) {
	e := newEnv(t)
	b := newTab(t, e.portal.URL)
	b.open("/login")
	if st := js[int](b, `fetch("/favicon.ico").then(function(r){return r.status})`); st != 200 {
		t.Errorf("/favicon.ico: %d", st)
	}
	href := js[string](b, `(document.querySelector("link[rel=icon]")||{}).href||""`)
	if href == "" {
		t.Fatal("no link rel=icon")
	}
	if st := js[int](b, fmt.Sprintf(`fetch(%q).then(function(r){return r.status})`, href)); st != 200 {
		t.Errorf("icon %s: %d", href, st)
	}
}

// TestLoginLimiterKeys: the limiter counts per user and address, forgets
// after its window, and a success clears the count.
func TestLoginLimiterKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLoginLimiter(func() time.Time { return now })
	for i := 0; i < loginFailures; i++ {
		l.failed("demo", "10.0.0.1")
	}
	if wait := l.blocked("demo", "10.0.0.1"); wait <= 0 {
		t.Error("demo from 10.0.0.1 not blocked")
	}
	if l.blocked("demo", "10.0.0.2") > 0 || l.blocked("admin", "10.0.0.1") > 0 || l.blocked("Demo", "10.0.0.1") <= 0 {
		t.Error("the block is not per user (case-insensitive) and address")
	}
	now = now.Add(loginWindow + time.Second)
	if l.blocked("demo", "10.0.0.1") > 0 {
		t.Error("still blocked after the window")
	}
	l.failed("admin", "10.0.0.1")
	l.succeeded("admin", "10.0.0.1")
	for i := 0; i < loginFailures-1; i++ {
		l.failed("admin", "10.0.0.1")
	}
	if l.blocked("admin", "10.0.0.1") > 0 {
		t.Error("a success did not clear the count")
	}
}
