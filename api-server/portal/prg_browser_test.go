package portal

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// countRequests counts the fake API's requests that start with prefix.
func (f *fakeAPI) countRequests(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// TestBrowserFailedFormReloadDoesNotRepost: a launch the API refuses
// comes back as a GET of the form (POST-redirect-GET) with the error and
// what the user typed; reloading it does not send the launch again. The
// same for a key pair the API refuses and a server action.
func TestBrowserFailedFormReloadDoesNotRepost(t *testing.T) {
	e := newEnv(t)
	e.api.flavors = []map[string]any{{"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1},
		{"id": "huge", "name": "huge", "vcpus": 64, "ram": 512, "disk": 1}}
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	// The quota preview sees room for the huge flavor; the API still
	// refuses it, as when another launch took the cores meanwhile.
	e.api.limits = map[string]any{"maxTotalInstances": 10, "totalInstancesUsed": 3, "maxTotalCores": 100, "totalCoresUsed": 5,
		"maxTotalRAMSize": 51200, "totalRAMUsed": 1536}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/launch")
	b.do("fill the launch form", chromedp.SetValue(chromedp.CSS("#name"), "big-one"), chromedp.SetValue(chromedp.CSS("#flavor"), "huge"))
	b.do("launch", chromedp.Click(chromedp.CSS("#launch-go")))
	b.waitJS("refusal shown", `document.readyState === "complete" && !!document.querySelector("#error")`, 10*time.Second)
	if e := b.text("#error"); !strings.Contains(e, "Quota exceeded") {
		t.Errorf("launch refusal: %q", e)
	}
	if v := js[string](b, `document.querySelector("#name").value + "|" + document.querySelector("#flavor").value`); v != "big-one|huge" {
		t.Errorf("the form after the refusal: %q, want what was typed", v)
	}
	posts := e.api.countRequests("POST /v2.1/servers")
	b.do("reload", chromedp.Reload())
	b.waitJS("reloaded", `document.readyState === "complete" && !!document.querySelector("#launch-go")`, 10*time.Second)
	if n := e.api.countRequests("POST /v2.1/servers"); n != posts {
		t.Errorf("reload sent the launch again (%d POSTs, was %d)", n, posts)
	}
	if p := b.path(); p != "/launch" {
		t.Errorf("after the refusal the page is %s", p)
	}

	// A key pair the API refuses.
	b.open("/keypairs")
	b.do("fill the key pair form", chromedp.SetValue(chromedp.CSS("#keypair-name"), "k1"), chromedp.SetValue(chromedp.CSS("#public-key"), "bad"))
	b.do("add", chromedp.Click(chromedp.CSS("#keypair-go")))
	b.waitJS("refusal shown", `document.readyState === "complete" && !!document.querySelector("#error")`, 10*time.Second)
	if v := js[string](b, `document.querySelector("#keypair-name").value + "|" + document.querySelector("#public-key").value`); v != "k1|bad" {
		t.Errorf("key pair form after the refusal: %q", v)
	}
	posts = e.api.countRequests("POST /v2.1/os-keypairs")
	b.do("reload", chromedp.Reload())
	b.waitJS("reloaded", `document.readyState === "complete" && !!document.querySelector("#keypair-go")`, 10*time.Second)
	if n := e.api.countRequests("POST /v2.1/os-keypairs"); n != posts {
		t.Errorf("reload sent the key pair again (%d POSTs, was %d)", n, posts)
	}
}
