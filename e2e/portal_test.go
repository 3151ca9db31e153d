package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// chromiumPath finds Debian's chromium, Required like any component.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CAPSULE_TEST_CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	testenv.Require(t, false, "chromium not installed (apt-get install chromium; deploy/lib.sh installs it)")
	return ""
}

// portalURL reads the portal port startCloud gave the cloud.
func (c *cloud) portalURL(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(c.configPath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*portal_port:\s*(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("cloud config has no portal_port:\n%s", b)
	}
	return "http://127.0.0.1:" + string(m[1])
}

// browser is a headless Chromium tab with its own profile.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string // screenshots
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	exe := chromiumPath(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser: no timeout on it (a timeout would
	// end the browser with it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, base: base, dir: t.ArtifactDir()}
}

// do runs steps with a deadline.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v (page %s)", what, err, b.location())
	}
}

func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

func (b *browser) open(path string) { b.t.Helper(); b.do("open "+path, chromedp.Navigate(b.base+path)) }

// eval evaluates a JavaScript expression (awaiting a promise).
func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a boolean expression until it holds.
func (b *browser) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	b.shot("timeout-" + strings.ReplaceAll(what, " ", "-"))
	b.t.Fatalf("%s: not true within %s on %s: %s\npage text: %s", what, timeout, b.location(), expr, b.text("body"))
}

func (b *browser) text(sel string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{}).innerText||""`, sel)))
	return s
}

// shot saves a full-page screenshot under the test's artifact directory.
func (b *browser) shot(name string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	// A name may come from a URL: keep it one file name.
	name = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			return r
		}
		return '-'
	}, name)
	p := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
	return p
}

// submit clicks a button and waits for the next page to have path prefix.
func (b *browser) submit(button, wantPath string) {
	b.t.Helper()
	b.do("click "+button, chromedp.Click(chromedp.CSS(button)))
	b.waitJS("page "+wantPath, fmt.Sprintf(`document.readyState === "complete" && location.pathname + location.search !== "" && (location.pathname + location.search).startsWith(%q)`, wantPath), 30*time.Second)
}

func (b *browser) login(user, pass, project string) {
	b.t.Helper()
	b.open("/login")
	b.do("fill the login form",
		chromedp.SetValue(chromedp.CSS("#user"), user),
		chromedp.SetValue(chromedp.CSS("#password"), pass),
		chromedp.SetValue(chromedp.CSS("#project"), project))
	b.do("log in", chromedp.Click(chromedp.CSS(`#login button[type=submit]`)))
	b.waitJS("login answered", `document.readyState === "complete" && (location.pathname === "/" || !!document.querySelector("#error"))`, 30*time.Second)
}

// rowStatus is the JS for the status of the list's row named name.
func rowJS(name, field string) string {
	return fmt.Sprintf(`(function(){var r=Array.from(document.querySelectorAll("#servers tbody tr")).find(function(r){return r.cells.length>1 && r.cells[0].innerText.trim()===%q}); if(!r) return ""; return %s;})()`, name, field)
}

// TestPortal drives the tenant portal in headless Chromium: a wrong
// password is refused with a message; demo logs in, sees its usage,
// launches a server and watches it turn ACTIVE without reloading the page,
// reads its console, stops and deletes it; demo never sees admin's
// server; a POST without (or with a wrong) CSRF token is refused; the
// pages stay usable at phone width. Screenshots of the main pages land in
// the test's artifact directory (go test -artifacts keeps them) and the
// servers page also in docs/portal-servers.png.
func TestPortal(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	c := startCloud(t, withBridge)
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	// demo's own networks, for the launch form's network and fixed IP:
	// two, so a launch without a network is one Nova refuses ("Multiple
	// possible networks found") and the form must make the user choose.
	netName := "portal-net"
	tenantNetwork(t, c.networkClient(t, "demo", c.demoPass, "demo"), netName, "10.77.0.0/24", nil)
	tenantNetwork(t, c.networkClient(t, "demo", c.demoPass, "demo"), "portal-net-2", "10.79.0.0/24", nil)
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]

	// admin's own server, which demo must never see (with a NIC of its
	// own for the network chart).
	adminName := "admins-" + uuid.NewString()[:6]
	adminNet, _ := tenantNetwork(t, c.networkClient(t, "admin", c.adminPass, "admin"), "portal-admin-net", "10.78.0.0/24", nil)
	asrv, err := servers.Create(ctx, admin, servers.CreateOpts{Name: adminName, ImageRef: img, FlavorRef: "1",
		Networks: []servers.Network{{UUID: adminNet}}}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), admin, asrv.ID).ExtractErr() })

	b := newBrowser(t, c.portalURL(t))

	// A wrong password: Keystone's refusal as a readable message.
	b.login("demo", "not-the-password", "demo")
	if e := b.text("#error"); !strings.Contains(e, "Wrong user name, password or project") {
		t.Fatalf("wrong password: error %q, page %s", e, b.text("body"))
	}
	b.shot("login-wrong-password")

	b.login("demo", c.demoPass, "demo")
	if who := b.text("#who"); !strings.Contains(who, "demo") {
		t.Fatalf("after login: %q (error %q)", who, b.text("#error"))
	}
	if u := b.text("#usage"); !strings.Contains(u, "Servers") || !strings.Contains(u, "vCPUs") || !strings.Contains(u, "RAM") {
		t.Errorf("overview usage: %q", u)
	}
	b.shot("overview")

	// Launch.
	name := "portal-" + uuid.NewString()[:6]
	b.open("/launch")
	// Two usable networks: no "default" choice, a required pick instead.
	if bad := evalJS[string](b, `Array.from(document.querySelectorAll("#network option")).filter(function(o){return o.value === "" && !o.disabled}).map(function(o){return o.text}).join(",")`); bad != "" {
		t.Errorf("the launch form offers %q with two usable networks (Nova refuses it)", bad)
	}
	if !evalJS[bool](b, `document.querySelector("#network").required`) {
		t.Error("the network is not a required pick with two usable networks")
	}
	b.do("fill the launch form",
		chromedp.SetValue(chromedp.CSS("#name"), name),
		chromedp.SetValue(chromedp.CSS("#image"), img),
		chromedp.SetValue(chromedp.CSS("#flavor"), "1"),
		chromedp.SetValue(chromedp.CSS("#fixed_ip"), "10.77.0.50"),
		chromedp.SetValue(chromedp.CSS("#count"), "1"))
	// The network by its label, as a user picks it.
	evalJS[bool](b, fmt.Sprintf(`(function(){var s=document.querySelector("#network"); var o=Array.from(s.options).find(function(o){return o.text.indexOf(%q)===0}); if(!o) return false; s.value=o.value; return true})()`, netName))
	b.shot("launch")
	b.submit("#launch-go", "/servers?done=launched")

	// Live status: the row turns ACTIVE while the page stays the same
	// document (a mark set on window survives only without a reload).
	b.waitJS("server row listed", rowJS(name, "r.getAttribute('data-id')")+` !== ""`, 20*time.Second)
	first := evalJS[string](b, rowJS(name, "r.cells[1].innerText"))
	evalJS[bool](b, `window.__portalMark = "same-page"; true`)
	b.waitJS("server ACTIVE in the list", rowJS(name, "r.cells[1].innerText.trim()")+` === "ACTIVE" && window.__portalMark === "same-page"`, 120*time.Second)
	t.Logf("row status went from %q to ACTIVE without a reload", first)
	id := evalJS[string](b, rowJS(name, "r.getAttribute('data-id')"))
	if ips := evalJS[string](b, rowJS(name, "r.cells[2].innerText")); !strings.Contains(ips, netName+": 10.77.0.50") {
		t.Errorf("server's addresses in the list: %q, want %s: 10.77.0.50", ips, netName)
	}
	if body := b.text("body"); strings.Contains(body, adminName) {
		t.Errorf("demo's server list shows admin's server %s", adminName)
	}
	servPNG := b.shot("servers")
	if servPNG != "" {
		if png, err := os.ReadFile(servPNG); err == nil {
			if err := os.WriteFile(filepath.Join("..", "docs", "portal-servers.png"), png, 0o644); err != nil {
				t.Logf("copy the screenshot to docs: %v", err)
			}
		}
	}
	// demo cannot open admin's server by id either: Nova's 404 message.
	b.open("/servers/" + asrv.ID)
	if e := b.text("#error"); !strings.Contains(e, "could not be found") {
		t.Errorf("admin's server by id: %q", e)
	}

	// Detail and console output.
	b.open("/servers/" + id)
	b.waitJS("detail page", `!!document.querySelector("#status")`, 10*time.Second)
	if ips := b.text("#actions"); !strings.Contains(ips, "create") {
		t.Errorf("action log: %q", ips)
	}
	b.shot("server-detail")
	b.submit("#console-link", "/servers/"+id+"/console")
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := b.text("#console")
		if out != "" && !strings.Contains(out, "(no output yet)") {
			t.Logf("console output:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console output stayed empty: %q", b.text("body"))
		}
		time.Sleep(time.Second)
		b.open("/servers/" + id + "/console")
	}
	b.shot("console")

	// CSRF: the browser's own session, a POST without the token and with a
	// wrong one: 403, and the server is untouched.
	for _, tok := range []string{"", "wrong-token"} {
		js := fmt.Sprintf(`fetch("/servers/%s/action", {method: "POST", credentials: "same-origin", redirect: "manual",
			body: new URLSearchParams({action: "delete", confirmed: "yes"%s})}).then(function(r){return r.status})`,
			id, map[bool]string{true: "", false: `, csrf: "` + tok + `"`}[tok == ""])
		if st := evalJS[int](b, js); st != 403 {
			t.Errorf("POST with CSRF token %q: status %d, want 403", tok, st)
		}
	}
	if s, err := servers.Get(ctx, demo, id).Extract(); err != nil || s.Status != "ACTIVE" {
		t.Fatalf("server after refused POSTs: %v %v", s, err)
	}

	// A member has no Hosts page: no link, and its URL is refused.
	if evalJS[bool](b, `!!document.querySelector("#hosts-link")`) {
		t.Error("demo's menu links the Hosts page")
	}
	b.open("/hosts")
	if e := b.text("#error"); !strings.Contains(e, "for cloud administrators") {
		t.Errorf("demo on /hosts: %q", e)
	}
	// ...nor charts: a note says why (Nova's diagnostics are admin-only).
	b.open("/servers/" + id)
	if n := b.text("#charts-note"); !strings.Contains(n, "admin role") {
		t.Errorf("member's charts note: %q", n)
	}

	portalServerActions(t, b, c, demo, id, name)

	// Stop, with confirmation, and watch the status change in place.
	b.open("/servers/" + id)
	b.submit("#act-stop", "/servers/"+id+"/confirm?action=stop")
	b.shot("confirm-stop")
	b.submit("#confirm-yes", "/servers/"+id+"?done=stop")
	b.waitJS("status SHUTOFF on the detail page", `document.querySelector("#status").innerText.trim() === "SHUTOFF"`, 90*time.Second)
	waitStatus(t, demo, id, "SHUTOFF", 30*time.Second)
	b.shot("server-stopped")

	// Phone width: no page wider than the screen.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []string{"/servers", "/", "/launch", "/servers/" + id, "/images"} {
		b.open(p)
		if w := evalJS[int](b, phoneOverflowJS); w > 0 {
			t.Errorf("page %s is %dpx wider than a 390px phone", p, w)
		}
	}
	b.open("/servers")
	copyShot(t, b.shot("servers-phone"), "portal-servers-phone.png")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))

	// Lists.
	for _, p := range []string{"images", "flavors", "networks"} {
		b.open("/" + p)
		if e := b.text("#error"); e != "" {
			t.Errorf("%s page: %s", p, e)
		}
		b.shot(p)
	}
	if im := b.text("body"); im == "" {
		t.Error("blank page")
	}
	b.open("/images")
	if !strings.Contains(b.text("#images"), "busybox") {
		t.Errorf("images page: %q", b.text("#images"))
	}
	b.open("/flavors")
	if !strings.Contains(b.text("#flavors"), "vCPUs") {
		t.Errorf("flavors page: %q", b.text("#flavors"))
	}

	// Delete, confirmed; the row disappears from the live list.
	b.open("/servers/" + id)
	b.submit("#act-delete", "/servers/"+id+"/confirm?action=delete")
	b.shot("confirm-delete")
	b.submit("#confirm-yes", "/servers?done=delete")
	waitGone(t, demo, id, 60*time.Second)
	b.waitJS("row gone from the list", rowJS(name, "r.getAttribute('data-id')")+` === ""`, 20*time.Second)

	// Log out: the session is gone.
	b.submit("#logout", "/login")
	if n := b.text("#notice"); !strings.Contains(n, "logged out") {
		t.Errorf("logout notice: %q", n)
	}
	b.open("/servers")
	// The login page, which returns to /servers after the next login.
	if loc := b.location(); !strings.HasSuffix(loc, "/login?next=%2Fservers") {
		t.Errorf("after logout /servers went to %s, want the login page", loc)
	}

	// An admin sees the host of a server (Nova shows it to admins only).
	waitStatus(t, admin, asrv.ID, "ACTIVE", 60*time.Second)
	b.login("admin", c.adminPass, "admin")
	b.open("/servers/" + asrv.ID)
	if h := b.text("#host"); h != c.host {
		t.Errorf("admin's server detail: host %q, want %s", h, c.host)
	}
	b.shot("server-detail-admin")

	portalAdmin(t, b, c, admin, asrv.ID)
}

// waitVisible waits until the element sel is shown (its form or section
// is not hidden: the page's script shows actions as the status allows).
func (b *browser) waitVisible(sel string, timeout time.Duration) {
	b.t.Helper()
	b.waitJS(sel+" visible", fmt.Sprintf(`(function(){var e=document.querySelector(%q); return !!e && e.offsetParent !== null})()`, sel), timeout)
}

// phoneOverflowJS is how much wider than a 390 px phone the page is: the
// nominal width, not innerWidth (a mobile viewport widens to fit content
// that overflows, which hid the Hosts page's 569 px).
const phoneOverflowJS = `document.documentElement.scrollWidth - 390`

// copyShot copies a screenshot into docs/ (the pictures docs/portal.md
// shows).
func copyShot(t *testing.T, png, name string) {
	if png == "" {
		return
	}
	if b, err := os.ReadFile(png); err == nil {
		if err := os.WriteFile(filepath.Join("..", "docs", name), b, 0o644); err != nil {
			t.Logf("copy the screenshot to docs: %v", err)
		}
	}
}

// portalServerActions drives demo's ACTIVE server through the detail
// page's actions: pause and unpause, a resize Nova refuses (same flavor:
// its message shows), a live resize to m1.small confirmed from the page,
// and a snapshot that shows up in the images list.
func portalServerActions(t *testing.T, b *browser, c *cloud, demo *gophercloud.ServiceClient, id, name string) {
	t.Helper()
	ctx := context.Background()
	status := `document.querySelector("#status").innerText.trim()`

	// Pause and unpause: the buttons follow the status without a reload.
	b.open("/servers/" + id)
	b.submit("#act-pause", "/servers/"+id+"?done=pause")
	b.waitJS("status PAUSED", status+` === "PAUSED"`, 60*time.Second)
	b.waitVisible("#act-unpause", 10*time.Second)
	if evalJS[bool](b, `document.querySelector("#act-pause").offsetParent !== null`) {
		t.Error("a paused server still offers Pause")
	}
	b.shot("server-paused")
	b.submit("#act-unpause", "/servers/"+id+"?done=unpause")
	b.waitJS("status ACTIVE after unpause", status+` === "ACTIVE"`, 60*time.Second)
	waitStatus(t, demo, id, "ACTIVE", 30*time.Second)

	// The flavor the server has is no resize choice (Nova refuses it):
	// disabled in the menu, marked current.
	b.open("/servers/" + id)
	if cur := evalJS[string](b, `(function(){var o=document.querySelector('#resize-flavor option[value="1"]'); return o.disabled + " " + o.text})()`); !strings.HasPrefix(cur, "true ") || !strings.Contains(cur, "current") {
		t.Errorf("the current flavor in the resize menu: %q, want disabled and marked current", cur)
	}

	// Live resize to m1.small, then confirm from the page.
	b.open("/servers/" + id)
	b.do("pick m1.small", chromedp.SetValue(chromedp.CSS("#resize-flavor"), "2"))
	b.submit("#act-resize", "/servers/"+id+"?done=resize")
	b.waitJS("status VERIFY_RESIZE", status+` === "VERIFY_RESIZE"`, 90*time.Second)
	b.waitVisible("#act-confirm-resize", 10*time.Second)
	b.shot("server-verify-resize")
	b.submit("#act-confirm-resize", "/servers/"+id+"?done=confirmResize")
	s := waitStatus(t, demo, id, "ACTIVE", 60*time.Second)
	if s.Flavor["id"] != "2" {
		t.Errorf("flavor after the confirmed resize: %v, want 2", s.Flavor)
	}
	b.open("/servers/" + id)
	if f := b.text("#flavor"); !strings.Contains(f, "m1.small") {
		t.Errorf("detail page flavor after resize: %q", f)
	}
	if a := b.text("#actions"); !strings.Contains(a, "resize") || !strings.Contains(a, "confirmResize") || !strings.Contains(a, "pause") {
		t.Errorf("action log after pause and resize: %q", a)
	}

	// Snapshot: the new image is listed (queued, then active).
	snap := name + "-snap"
	b.do("name the snapshot", chromedp.SetValue(chromedp.CSS("#snapshot-name"), snap))
	b.submit("#act-snapshot", "/images?done=snapshot")
	row := fmt.Sprintf(`(Array.from(document.querySelectorAll("#images tbody tr")).find(function(r){return r.cells[0].innerText.trim()===%q})||{cells:[{},{innerText:""}]}).cells[1].innerText.trim()`, snap)
	if st := evalJS[string](b, row); st == "" {
		t.Fatalf("the snapshot %s is not in the images list: %s", snap, b.text("#images"))
	}
	deadline := time.Now().Add(2 * time.Minute)
	for evalJS[string](b, row) != "active" {
		if time.Now().After(deadline) {
			t.Fatalf("snapshot %s not active within 2m: %s", snap, b.text("#images"))
		}
		time.Sleep(time.Second)
		b.open("/images")
	}
	b.shot("images-snapshot")
	waitStatus(t, demo, id, "ACTIVE", 60*time.Second)
	// The image's registry tag goes with the image.
	pc, err := c.provider(ctx, "demo", c.demoPass, "demo")
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	if id := c.imageIDs(t, "demo", c.demoPass, "demo")[snap]; id != "" {
		if err := images.Delete(ctx, ic, id).ExtractErr(); err != nil {
			t.Errorf("delete the snapshot image: %v", err)
		}
	}
}

// portalAdmin: admin (logged in) sees usage charts drawn from live
// diagnostics samples on its server's page, and the Hosts page: the
// cloud's host with capacity numbers and the server under it; it
// disables and enables the host, and a migration gets a readable answer
// (with one host there is nowhere to go, or migration is not there yet).
func portalAdmin(t *testing.T, b *browser, c *cloud, admin *gophercloud.ServiceClient, sid string) {
	t.Helper()
	// A burner for a while, so the CPU chart has something to show. It
	// outlasts both waits below (30 s + 40 s): on a loaded machine the page
	// can take a while to open and to sample, and a burner that ended first
	// shows 0 %.
	if out, err := c.docker("exec", "-d", "capsule-"+sid, "sh", "-c", "while :; do :; done & sleep 75; kill $!"); err != nil {
		t.Fatalf("start a burner in %s: %v %s", sid, err, out)
	}
	b.open("/servers/" + sid)
	// Any sample at 5% of the vCPU or more (an idle server shows 0): the
	// burner wants all of it, but on a loaded machine it got only 9%.
	b.waitJS("CPU chart shows the burner", `parseFloat(document.querySelector("#cpu-now").innerText) >= 5`, 30*time.Second)
	b.waitJS("CPU chart has 2 points", `+(document.querySelector("#chart-cpu polyline.cpu")||{getAttribute:function(){return 0}}).getAttribute("data-points") >= 2`, 40*time.Second)
	if m := b.text("#mem-now"); !strings.Contains(m, "of 128 MB") {
		t.Errorf("memory chart caption: %q, want used of the flavor's 128 MB", m)
	}
	if n := evalJS[int](b, `+document.querySelector("#chart-mem polyline.mem").getAttribute("data-points")`); n < 2 {
		t.Errorf("memory chart has %d points", n)
	}
	if cpu := b.text("#cpu-now"); !strings.Contains(cpu, "% of 1 vCPU") {
		t.Errorf("CPU chart caption: %q", cpu)
	}
	if n := b.text("#net-now"); !strings.Contains(n, "rx ") || !strings.Contains(n, "/s") {
		t.Errorf("network chart caption: %q, want the NIC's rates", n)
	}
	// A few more samples, for a picture with lines in it.
	b.waitJS("7 samples", `+document.querySelector("#charts").getAttribute("data-samples") >= 7`, 40*time.Second)
	t.Logf("charts: cpu %q, memory %q, network %q", b.text("#cpu-now"), b.text("#mem-now"), b.text("#net-now"))
	copyShot(t, b.shot("server-detail-charts"), "portal-server-charts.png")

	b.open("/hosts")
	card := fmt.Sprintf(`document.querySelector('[data-host=%q]')`, c.host)
	if !evalJS[bool](b, "!!"+card) {
		t.Fatalf("hosts page has no card for %s: %s", c.host, b.text("body"))
	}
	for _, cls := range []string{".cap-vcpus", ".cap-ram", ".cap-disk"} {
		if v := evalJS[string](b, card+`.querySelector(`+fmt.Sprintf("%q", cls)+`).innerText`); !regexp.MustCompile(`^\d+ of [1-9]\d*$`).MatchString(v) {
			t.Errorf("host capacity %s: %q", cls, v)
		}
	}
	if !evalJS[bool](b, card+fmt.Sprintf(`.querySelector('tr[data-id=%q]') !== null`, sid)) {
		t.Errorf("server %s not listed under its host: %s", sid, b.text("#hosts"))
	}
	if st := evalJS[string](b, card+`.querySelector(".host-state").innerText`); st != "up" {
		t.Errorf("host state %q", st)
	}
	copyShot(t, b.shot("hosts"), "portal-hosts.png")

	// Disable, then enable.
	b.submit(`[data-host="`+c.host+`"] .host-disable`, "/hosts?done=disable")
	if n, st := b.text("#notice"), evalJS[string](b, card+`.querySelector(".host-status").innerText`); !strings.Contains(n, "is disabled") || st != "disabled" {
		t.Errorf("after disable: notice %q, status %q", n, st)
	}
	st, body := raw(t, admin, "GET", "os-services?binary=nova-compute&host="+c.host, "")
	if svcs, _ := body["services"].([]any); st != 200 || len(svcs) != 1 || svcs[0].(map[string]any)["status"] != "disabled" {
		t.Errorf("os-services after disable: %d %v", st, body)
	}
	b.shot("hosts-disabled")
	b.submit(`[data-host="`+c.host+`"] .host-enable`, "/hosts?done=enable")
	if st := evalJS[string](b, card+`.querySelector(".host-status").innerText`); st != "enabled" {
		t.Errorf("after enable: status %q", st)
	}

	// Migrate on a one-host cloud: nowhere to go, and the page says so
	// before anyone tries (a migration requested here could only fail).
	migRow := `[data-host="` + c.host + `"] tr[data-id="` + sid + `"]`
	if !evalJS[bool](b, `document.querySelector('`+migRow+` .migrate-go').disabled`) {
		t.Errorf("a one-host cloud offers Migrate")
	}
	if why := b.text(migRow + " .migrate-why"); !strings.Contains(why, "No other host") {
		t.Errorf("no reason for the disabled Migrate: %q", why)
	}
	// Asked anyway (a form from a stale page): the API accepts, the
	// scheduler finds no host, and the page reports the failure with the
	// reason instead of a success.
	st2 := evalJS[int](b, `fetch("/admin/servers/`+sid+`/migrate", {method: "POST", credentials: "same-origin", redirect: "manual",
		body: new URLSearchParams({csrf: document.querySelector("input[name=csrf]").value})}).then(function(r){return r.type === "opaqueredirect" ? 303 : r.status})`)
	if st2 != 303 {
		t.Fatalf("migrate POST: %d", st2)
	}
	b.open("/hosts?done=migrate&server=" + sid)
	b.waitJS("migration failed", `document.querySelector("#migration-outcome").getAttribute("data-state") === "failed"`, 60*time.Second)
	if o := b.text("#migration-outcome"); !strings.Contains(o, "No valid host") {
		t.Errorf("failed migration reported as %q, want its reason", o)
	}
	copyShot(t, b.shot("hosts-migrate"), "portal-hosts-migrate-failed.png")
	waitStatus(t, admin, sid, "ACTIVE", 60*time.Second)

	// Phone width for the admin pages.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []string{"/servers/" + sid, "/hosts"} {
		b.open(p)
		if w := evalJS[int](b, phoneOverflowJS); w > 0 {
			t.Errorf("page %s is %dpx wider than a 390px phone", p, w)
		}
	}
	copyShot(t, b.shot("hosts-phone"), "portal-hosts-phone.png")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))
}

// TestPortalManyServers: with 500 servers in the project (fake agents; a
// server the scheduler cannot place is listed in ERROR all the same), the
// servers page shows one page of rows at a time, follows the API's markers
// from page to page without repeating a server, and stays quick. Not
// parallel: "quick" is a time limit per page, which other clouds' load
// would skew.
func TestPortalManyServers(t *testing.T) {
	chromiumPath(t)
	const n = 500
	c := startCloud(t, fakeAgents, withQuota(n))
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	for i := 0; i < n; i += 100 {
		st, body := raw(t, demo, "POST", "servers", fmt.Sprintf(
			`{"server": {"name": "many", "imageRef": %q, "flavorRef": "1", "min_count": 100, "max_count": 100}}`, img))
		if st != 202 {
			t.Fatalf("create servers %d..%d: %d %v", i, i+99, st, body)
		}
	}
	if got := countServers(t, demo); got != n {
		t.Fatalf("project has %d servers, want %d", got, n)
	}

	b := newBrowser(t, c.portalURL(t))
	b.login("demo", c.demoPass, "demo")
	if u := b.text("#use-servers"); !strings.Contains(u, fmt.Sprintf("%d of %d", n, n)) {
		t.Errorf("overview: servers %q, want %d of %d", u, n, n)
	}
	seen := map[string]bool{}
	b.open("/servers")
	for page := 1; page <= 3; page++ {
		ids := evalJS[[]string](b, `Array.from(document.querySelectorAll("#servers tbody tr[data-id]")).map(function(r){return r.getAttribute("data-id")})`)
		if len(ids) != 20 {
			t.Fatalf("page %d shows %d rows, want 20", page, len(ids))
		}
		for _, id := range ids {
			if seen[id] {
				t.Errorf("page %d repeats server %s", page, id)
			}
			seen[id] = true
		}
		if page == 1 {
			b.shot("servers-500")
		}
		start := time.Now()
		b.submit("#next", "/servers?marker=")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("next page took %s", d)
		}
	}
	// The live list keeps to its page too.
	js := evalJS[string](b, `fetch("/api/servers?limit=20", {credentials: "same-origin"}).then(function(r){return r.text()})`)
	if strings.Count(js, `"id"`) != 20 || !strings.Contains(js, `"next"`) {
		t.Errorf("live list JSON: %.300s", js)
	}
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.open("/servers")
	if w := evalJS[int](b, phoneOverflowJS); w > 0 {
		t.Errorf("servers page with %d servers is %dpx wider than a phone", n, w)
	}
}

// TestPortalMigrate: on a two-host cloud an admin migrates a server from
// the Hosts page to the host picked in the menu, confirms it from the
// migrations list once it waits in VERIFY_RESIZE, then evacuates that
// host: it is disabled, the server's migration is reported as started,
// and once confirmed the server runs on the first host again.
func TestPortalMigrate(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	c, _ := migrationCloud(t)
	ctx := context.Background()
	admin := c.computeClient(t, "admin", c.adminPass, "admin")
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	srv, err := servers.Create(ctx, admin, servers.CreateOpts{Name: "portal-mig", ImageRef: img, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), admin, srv.ID).ExtractErr() })
	waitStatus(t, admin, srv.ID, "ACTIVE", 90*time.Second)
	from := serverHost(t, admin, srv.ID)
	to := c.hosts[0].name
	if to == from {
		to = c.hosts[1].name
	}

	b := newBrowser(t, c.portalURL(t))
	b.login("admin", c.adminPass, "admin")
	b.open("/hosts")
	row := fmt.Sprintf(`[data-host=%q] tr[data-id=%q]`, from, srv.ID)
	b.do("pick the target host", chromedp.SetValue(chromedp.CSS(row+` select[name=host]`), to))
	b.submit(row+" .migrate-go", "/hosts?done=migrate")
	// The page follows the migration to its outcome.
	b.waitJS("migration outcome", `document.querySelector("#migration-outcome").getAttribute("data-state") === "done"`, 3*time.Minute)
	if o := b.text("#migration-outcome"); !strings.Contains(o, "to "+to) {
		t.Errorf("migration outcome: %q, want the move to %s", o, to)
	}
	waitStatus(t, admin, srv.ID, "VERIFY_RESIZE", 3*time.Minute)
	b.open("/hosts")
	confirm := fmt.Sprintf(`#migrations tr[data-id=%q] .mig-confirm`, srv.ID)
	b.waitVisible(confirm, 10*time.Second)
	copyShot(t, b.shot("hosts-verify-migration"), "portal-hosts-migration.png")
	b.submit(confirm, "/hosts?done=confirmResize")
	waitStatus(t, admin, srv.ID, "ACTIVE", 2*time.Minute)
	if h := serverHost(t, admin, srv.ID); h != to {
		t.Fatalf("server on %s after the confirmed migration, want %s", h, to)
	}

	// Evacuate the host it now runs on.
	b.open("/hosts")
	b.submit(fmt.Sprintf(`[data-host=%q] .host-evacuate`, to), "/hosts/"+to+"/evacuate")
	// The results come on the confirmation page's own path: wait for them.
	b.do("evacuate", chromedp.Click(chromedp.CSS("#evacuate-yes")))
	b.waitJS("evacuate results", `document.readyState === "complete" && !!document.querySelector("#back-hosts")`, 60*time.Second)
	if r := b.text(fmt.Sprintf(`#evacuate tr[data-id=%q]`, srv.ID)); !strings.Contains(r, "migrating") {
		t.Errorf("evacuate result for the server: %q (page %s)", r, b.text("main"))
	}
	b.shot("hosts-evacuate")
	waitStatus(t, admin, srv.ID, "VERIFY_RESIZE", 3*time.Minute)
	b.open("/hosts")
	if st := evalJS[string](b, fmt.Sprintf(`document.querySelector('[data-host=%q] .host-status').innerText`, to)); st != "disabled" {
		t.Errorf("evacuated host %s is %q, want disabled", to, st)
	}
	b.submit(confirm, "/hosts?done=confirmResize")
	waitStatus(t, admin, srv.ID, "ACTIVE", 2*time.Minute)
	if h := serverHost(t, admin, srv.ID); h != from {
		t.Errorf("server on %s after the evacuation, want %s", h, from)
	}
}
