package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// TestNoVNCConsole: `openstack console url show --novnc` gives an http://
// URL of the console proxy's HTML5 console page; opened in Chromium, the
// page connects by itself to a shell in the server (on real dockerd):
// typing `hostname` shows the server's name. The URL works once (a second
// load is a 401 page); another project gets 404 for the server, a reader
// 403, a bad token 401; a stopped server's console is Nova's 409.
func TestNoVNCConsole(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	c := startCloud(t)
	ctx := context.Background()
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	images := c.imageIDs(t, "demo", c.demoPass, "demo")
	name := "vnc-" + uuid.NewString()[:6]
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: name, ImageRef: images["busybox"], FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), demo, srv.ID).ExtractErr() })
	waitStatus(t, demo, srv.ID, "ACTIVE", 90*time.Second)

	cli := c.openstack(t, "demo", c.demoPass, "demo")
	url := strings.TrimSpace(cli.run("console", "url", "show", "--novnc", srv.ID, "-f", "value", "-c", "url"))
	if !strings.HasPrefix(url, "http://") || !strings.Contains(url, "/console/novnc/vnc_auto.html?path=%3Ftoken%3D") {
		t.Fatalf("novnc console url %q, want http://…/console/novnc/vnc_auto.html?path=%%3Ftoken%%3D…", url)
	}
	if typ := strings.TrimSpace(cli.run("console", "url", "show", "--novnc", srv.ID, "-f", "value", "-c", "type")); typ != "novnc" {
		t.Errorf("console url type %q, want novnc", typ)
	}

	b := newBrowser(t, "")
	b.open(url)
	b.waitJS("terminal open", `(document.querySelector("#terminal")||{getAttribute:function(){return ""}}).getAttribute("data-state") === "open"`, 30*time.Second)
	if got := b.text("#server-name"); got != name {
		t.Errorf("page names the server %q, want %q", got, name)
	}
	start := time.Now()
	b.do("type hostname", chromedp.SendKeys(chromedp.CSS("#term-input"), "hostname"+kb.Enter))
	// The shell echoes the command; the name comes on a line of its own.
	b.waitJS("hostname read back", fmt.Sprintf(`document.querySelector("#terminal").terminalScreen().split("\n").some(function(l){return l.trim() === %q})`, name), 20*time.Second)
	t.Logf("hostname through the novnc console page in %v", time.Since(start))
	b.shot("novnc-console")

	// The URL works once: a second load (in the browser, and plainly)
	// is the 401 page, with no terminal.
	b.open(url)
	b.waitJS("second load refused", `document.readyState === "complete" && !!document.querySelector("#refused")`, 15*time.Second)
	if st := evalJS[string](b, `document.querySelector("#refused").getAttribute("data-status")`); st != "401" {
		t.Errorf("second load: status %s, want 401 (%s)", st, b.text("body"))
	}
	if got := b.text("#refused-reason"); !strings.Contains(got, "already used or expired") {
		t.Errorf("second load says %q", got)
	}
	if code, body := httpGet(t, url); code != http.StatusUnauthorized {
		t.Errorf("second GET of the URL: %d %s, want 401", code, body)
	}
	// A forged token.
	forged := url[:strings.Index(url, "%3Ftoken%3D")+len("%3Ftoken%3D")] + fmt.Sprintf("%064x", 1)
	if code, body := httpGet(t, forged); code != http.StatusUnauthorized {
		t.Errorf("forged token: %d %s, want 401", code, body)
	}

	// Another project does not see the server; a reader may not open a
	// console; a bad token is not authenticated.
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	other, otherPass := "vnc-other-"+uuid.NewString()[:6], "pw-"+uuid.NewString()[:8]
	admin.run("project", "create", other)
	admin.run("user", "create", "--password", otherPass, "--project", other, other)
	admin.run("role", "add", "--project", other, "--user", other, "member")
	admin.run("user", "create", "--password", otherPass, "--project", "demo", other+"-r")
	admin.run("role", "add", "--project", "demo", "--user", other+"-r", "reader")
	path := demo.ServiceURL("servers", srv.ID, "remote-consoles")
	body := `{"remote_console": {"protocol": "vnc", "type": "novnc"}}`
	oc := c.computeClient(t, other, otherPass, other)
	if code, b := remoteConsole(t, oc.TokenID, path, body); code != 404 {
		t.Errorf("other project's novnc URL: %d %s, want 404", code, b)
	}
	if out, err := c.openstack(t, other, otherPass, other).try("console", "url", "show", "--novnc", srv.ID); err == nil {
		t.Errorf("other project got a novnc URL:\n%s", out)
	}
	rc := c.computeClient(t, other+"-r", otherPass, "demo")
	if code, b := remoteConsole(t, rc.TokenID, path, body); code != 403 {
		t.Errorf("reader's novnc URL: %d %s, want 403", code, b)
	}
	if code, b := remoteConsole(t, "garbage", path, body); code != 401 {
		t.Errorf("garbage token: %d %s, want 401", code, b)
	}
	for _, g := range []string{`{"remote_console": {"protocol": "spice", "type": "spice-html5"}}`,
		`{"remote_console": {"protocol": "vnc", "type": "xvpvnc"}}`, `{"remote_console": {"protocol": "rdp", "type": "rdp-html5"}}`} {
		if code, b := remoteConsole(t, demo.TokenID, path, g); code != 400 || !strings.Contains(b, "Unavailable console type") {
			t.Errorf("%s: %d %s, want 400 Unavailable console type", g, code, b)
		}
	}

	// A URL issued before the server stopped opens no console; a
	// stopped server gets no URL (409).
	late := strings.TrimSpace(cli.run("console", "url", "show", "--novnc", srv.ID, "-f", "value", "-c", "url"))
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, demo, srv.ID, "SHUTOFF", 60*time.Second)
	if code, b := remoteConsole(t, demo.TokenID, path, body); code != 409 {
		t.Errorf("novnc console of a stopped server: %d %s, want 409", code, b)
	}
	if code, b := httpGet(t, late); code != 409 {
		t.Errorf("page of a stopped server: %d %s, want 409", code, b)
	}
}

// httpGet GETs u and returns the status and body.
func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
