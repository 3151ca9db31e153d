package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserLaunchManyNetworks: a project seeing two networks (its own
// and a shared one) cannot launch on "the project's default" (Nova
// refuses: multiple possible networks), so the form offers no such
// choice: the network is a required pick, the browser stops an empty
// one, and the launch the user makes succeeds. With one usable network it
// is preselected; another project's network (visible to admins only) is
// never the default.
func TestBrowserLaunchManyNetworks(t *testing.T) {
	e := newEnv(t)
	e.api.networks = []map[string]any{
		{"id": "net-own", "name": "own", "status": "ACTIVE", "subnets": []string{"sn-1"}, "project_id": "p-demo"},
		{"id": "net-shared", "name": "public", "status": "ACTIVE", "shared": true, "project_id": "p-admin"},
	}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/launch")
	for _, o := range js[[]string](b, `Array.from(document.querySelectorAll("#network option")).map(function(o){return o.value+"|"+o.text+"|"+o.disabled})`) {
		if strings.HasPrefix(o, "|") && !strings.HasSuffix(o, "|true") {
			t.Errorf("the network menu offers %q: Nova refuses a launch without a network here", o)
		}
	}
	if !js[bool](b, `document.querySelector("#network").required`) {
		t.Error("the network is not a required field with two usable networks")
	}
	b.do("fill the launch form", chromedp.SetValue(chromedp.CSS("#name"), "web"))
	// Submitting without a network: the browser's validation stops it.
	b.do("launch without a network", chromedp.Click(chromedp.CSS("#launch-go")))
	if p := b.path(); p != "/launch" || len(e.api.created) != 0 {
		t.Fatalf("launch without a network went to %s (created %v)", p, e.api.created)
	}
	b.shot("portal-launch-networks")
	b.do("pick the shared network", chromedp.SetValue(chromedp.CSS("#network"), "net-shared"))
	b.click("#launch-go", "/servers?done=launched")
	if len(e.api.created) != 1 || !strings.Contains(strings.ReplaceAll(fmtAny(e.api.created[0]["networks"]), " ", ""), "net-shared") {
		t.Fatalf("created %v, want one server on net-shared", e.api.created)
	}

	// One usable network (the other is another project's): preselected.
	e.api.mu.Lock()
	e.api.networks[1]["shared"] = false
	e.api.mu.Unlock()
	b.open("/launch")
	if v := js[string](b, `document.querySelector("#network").value`); v != "net-own" {
		t.Errorf("one usable network: the menu shows %q, want net-own preselected", v)
	}
}

func fmtAny(v any) string { return strings.TrimSpace(fmt.Sprint(v)) }

// TestLaunchWithoutNetworkAsksForOne: a form posted without a network
// (no browser validation) on a project with two usable networks gets the
// portal's own sentence and never reaches Nova.
func TestLaunchWithoutNetworkAsksForOne(t *testing.T) {
	e := newEnv(t)
	e.api.networks = []map[string]any{
		{"id": "net-own", "name": "own", "project_id": "p-demo"},
		{"id": "net-shared", "name": "public", "shared": true, "project_id": "p-admin"},
	}
	csrf := e.login("demo")
	resp := e.postBack("/launch", url.Values{"csrf": {csrf}, "name": {"web"}, "image": {"img-1"}, "flavor": {"1"}, "count": {"1"}})
	if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "Choose a network") || len(e.api.created) != 0 {
		t.Fatalf("launch without a network: %d, created %v\n%s", resp.StatusCode, e.api.created, b)
	}
}
