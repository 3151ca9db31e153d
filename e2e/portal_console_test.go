package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// TestPortalConsole: the server page's terminal reaches a shell in the
// server through the serial console: typing `hostname` and Enter shows
// the server's name; the terminal fits a 390px phone; another project's
// user gets the API's 404 and a reader its 403 (as websocket close codes
// 4404/4403); a stopped server's console is refused with the API's 409.
func TestPortalConsole(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	c := startCloud(t)
	ctx := context.Background()
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	images := c.imageIDs(t, "demo", c.demoPass, "demo")
	name := "pcon-" + uuid.NewString()[:6]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: name, ImageRef: images["busybox"], FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), demo, srv.ID).ExtractErr() })
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)

	b := newBrowser(t, c.portalURL(t))
	b.login("demo", c.demoPass, "demo")
	b.open("/servers/" + srv.ID)
	b.do("connect the terminal", chromedp.Click(chromedp.CSS("#term-connect")))
	b.waitJS("terminal open", `document.querySelector("#terminal").getAttribute("data-state") === "open"`, 30*time.Second)
	start := time.Now()
	b.do("type hostname", chromedp.SendKeys(chromedp.CSS("#term-input"), "hostname"+kb.Enter))
	// The shell echoes the command; the name comes on a line of its own.
	b.waitJS("hostname read back", fmt.Sprintf(`document.querySelector("#terminal").terminalScreen().split("\n").some(function(l){return l.trim() === %q})`, name), 20*time.Second)
	t.Logf("hostname through the portal's terminal in %v", time.Since(start))
	if scr := b.text("#term-screen"); !strings.Contains(scr, "hostname") {
		t.Errorf("the terminal shows no echo of the command: %q", scr)
	}
	// Ctrl+C interrupts a running command: the shell prompts again.
	b.do("run sleep", chromedp.SendKeys(chromedp.CSS("#term-input"), "sleep 30; echo not-interrupted"+kb.Enter))
	time.Sleep(500 * time.Millisecond)
	b.do("ctrl+c", chromedp.KeyEvent("c", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	b.do("echo after ctrl+c", chromedp.SendKeys(chromedp.CSS("#term-input"), "echo after-$((40+2))"+kb.Enter))
	b.waitJS("command after Ctrl+C", `document.querySelector("#terminal").terminalScreen().split("\n").some(function(l){return l.trim() === "after-42"})`, 20*time.Second)
	if evalJS[bool](b, `document.querySelector("#terminal").terminalScreen().split("\n").some(function(l){return l.trim() === "not-interrupted"})`) {
		t.Error("Ctrl+C did not interrupt the sleep")
	}
	copyShot(t, b.shot("console"), "portal-console.png")

	// Phone width: the terminal takes the screen's width, not more.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.waitJS("terminal resized", `(document.querySelector("#terminal").getAttribute("data-size")||"").split("x")[0] < 50`, 10*time.Second)
	if w := evalJS[int](b, `document.documentElement.scrollWidth - window.innerWidth`); w > 0 {
		t.Errorf("server page with a terminal is %dpx wider than a 390px phone", w)
	}
	if w := evalJS[int](b, `(function(){var p=document.querySelector("#term-screen"); return p.scrollWidth - p.clientWidth})()`); w > 0 {
		t.Errorf("terminal screen is %dpx wider than its box at 390px", w)
	}
	b.do("type at phone width", chromedp.SendKeys(chromedp.CSS("#term-input"), "echo phone-$((1+1))"+kb.Enter))
	b.waitJS("command at phone width", `document.querySelector("#terminal").terminalScreen().split("\n").some(function(l){return l.trim() === "phone-2"})`, 20*time.Second)
	b.do("scroll to the terminal", chromedp.ScrollIntoView(chromedp.CSS("#terminal")))
	copyShot(t, b.shot("console-phone"), "portal-console-phone.png")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))

	// closeCode opens the terminal's websocket from the current page and
	// returns its close code and reason.
	closeCode := func(b *browser, id string) string {
		return evalJS[string](b, fmt.Sprintf(`new Promise(function(res){var w=new WebSocket("ws://"+location.host+"/servers/"+%q+"/terminal"); w.onclose=function(e){res(e.code+" "+e.reason)}})`, id))
	}

	// Another project's user and a reader of demo.
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	other, otherPass := "pcon-other-"+uuid.NewString()[:6], "pw-"+uuid.NewString()[:8]
	admin.run("project", "create", other)
	admin.run("user", "create", "--password", otherPass, "--project", other, other)
	admin.run("role", "add", "--project", other, "--user", other, "member")
	admin.run("user", "create", "--password", otherPass, "--project", "demo", other+"-r")
	admin.run("role", "add", "--project", "demo", "--user", other+"-r", "reader")

	ob := newBrowser(t, c.portalURL(t))
	ob.login(other, otherPass, other)
	ob.open("/servers")
	if got := closeCode(ob, srv.ID); !strings.HasPrefix(got, "4404 ") {
		t.Errorf("other project's terminal: close %q, want 4404", got)
	}
	rb := newBrowser(t, c.portalURL(t))
	rb.login(other+"-r", otherPass, "demo")
	rb.open("/servers/" + srv.ID)
	if got := closeCode(rb, srv.ID); !strings.HasPrefix(got, "4403 ") {
		t.Errorf("reader's terminal: close %q, want 4403", got)
	}
	rb.do("reader connects", chromedp.Click(chromedp.CSS("#term-connect")))
	rb.waitJS("reader refused", `document.querySelector("#terminal").getAttribute("data-state") === "closed" && document.querySelector("#term-state").className.indexOf("error") >= 0`, 20*time.Second)
	t.Logf("reader sees: %s", rb.text("#term-state"))

	// A stopped server: the API's 409 and its message.
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "SHUTOFF", 60*time.Second)
	b.open("/servers/" + srv.ID)
	if got := closeCode(b, srv.ID); !strings.HasPrefix(got, "4409 ") {
		t.Errorf("stopped server's terminal: close %q, want 4409", got)
	}

	// Rename and lock/unlock from the page (on the real API).
	b.do("new name", chromedp.SetValue(chromedp.CSS("#rename-name"), name+"-renamed"))
	b.submit("#act-rename", "/servers/"+srv.ID+"?done=rename")
	if got, err := servers.Get(ctx, demo, srv.ID).Extract(); err != nil || got.Name != name+"-renamed" {
		t.Errorf("after rename: %v %v", got, err)
	}
	b.submit("#act-lock", "/servers/"+srv.ID+"?done=lock")
	b.waitVisible("#act-unlock", 5*time.Second)
	b.submit("#act-unlock", "/servers/"+srv.ID+"?done=unlock")
	b.waitVisible("#act-lock", 5*time.Second)
}
