package portal

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestLockShelveRescueActions: the server page offers lock, shelve and
// rescue (and their opposites as the status says) and sends Nova's
// bodies; a rename without a name is refused before the API.
func TestLockShelveRescueActions(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	csrf := e.login("demo")
	_, page := e.get("/servers/s1")
	for _, id := range []string{`id="act-lock"`, `id="act-shelve"`, `id="act-rescue"`, `id="rename-name"`} {
		if !strings.Contains(page, id) {
			t.Errorf("detail page lacks %s", id)
		}
	}
	if !strings.Contains(page, `data-when="RESCUE" hidden`) {
		t.Errorf("an ACTIVE server's page shows Unrescue")
	}
	acts := []string{"lock", "unlock", "shelve", "unshelve", "rescue", "unrescue"}
	for _, a := range acts {
		resp := e.post("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {a}})
		if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/servers/s1?done="+a {
			t.Errorf("%s: %d %s", a, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	want := `{"lock":null} {"unlock":null} {"shelve":null} {"unshelve":null} {"rescue":null} {"unrescue":null}`
	if got := strings.Join(e.api.bodies, " "); got != want {
		t.Errorf("action bodies:\n got %s\nwant %s", got, want)
	}
	n := len(e.api.bodies)
	resp := e.postBack("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {"rename"}, "name": {"  "}})
	if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "Give the server a name.") || len(e.api.bodies) != n {
		t.Errorf("nameless rename: %d", resp.StatusCode)
	}
}
