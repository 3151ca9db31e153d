package portal

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestBrowserEvacuateChecksTheHost: evacuating a host the cloud does not
// have is a 404 (page and POST, and nothing is disabled); evacuating the
// only enabled host warns that its servers have nowhere to go and offers
// no "Yes, evacuate" while it has servers.
func TestBrowserEvacuateChecksTheHost(t *testing.T) {
	e := newEnv(t)
	srv := server("s1", "web", "ACTIVE")
	srv["OS-EXT-SRV-ATTR:host"] = "cn-a"
	e.api.servers = []map[string]any{srv}
	csrf := e.login("admin")
	if st, page := e.get("/hosts/nosuchhost/evacuate"); st != http.StatusNotFound || strings.Contains(page, "evacuate-yes") || !strings.Contains(page, "nosuchhost") {
		t.Errorf("evacuate page of an unknown host: %d\n%s", st, page)
	}
	resp := e.post("/hosts/nosuchhost/evacuate", url.Values{"csrf": {csrf}})
	if b := body(resp); resp.StatusCode != http.StatusNotFound {
		t.Errorf("evacuate POST for an unknown host: %d\n%s", resp.StatusCode, b)
	}
	e.api.mu.Lock()
	if len(e.api.bodies) != 0 {
		t.Errorf("an unknown host's evacuation called the API: %v", e.api.bodies)
	}
	e.api.services = map[string]bool{"cn-b": true} // disabled: nowhere to go
	e.api.mu.Unlock()

	b := newTab(t, e.portal.URL)
	b.login("admin")
	b.open("/hosts/nosuchhost/evacuate")
	if js[bool](b, `!!document.querySelector("#evacuate-yes")`) {
		t.Error("the browser is offered to evacuate an unknown host")
	}
	b.open("/hosts/cn-a/evacuate")
	if w := b.text("#evacuate-warning"); !strings.Contains(w, "nowhere") {
		t.Errorf("no warning that the servers have nowhere to go: %q (page %s)", w, b.text("main"))
	}
	b.shot("portal-evacuate-nowhere")
	if !js[bool](b, `(document.querySelector("#evacuate-yes")||{disabled:true}).disabled`) {
		t.Error("Yes, evacuate is offered although no host can take the servers")
	}
}
