package portal

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestRebuildAsksFirst: the rebuild form picks an image, goes through the
// confirmation page (which names the image and says the disk is lost),
// and only the confirmed post reaches the API, with the image chosen.
func TestRebuildAsksFirst(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	csrf := e.login("demo")
	_, page := e.get("/servers/s1")
	if !strings.Contains(page, `id="rebuild-image"`) || !strings.Contains(page, `<option value="img-1" selected>busybox · current</option>`) {
		t.Fatalf("detail page lacks the rebuild picker:\n%s", page)
	}
	resp := e.post("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {"rebuild"}, "image": {"img-1"}})
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || loc != "/servers/s1/confirm?action=rebuild&image=img-1" {
		t.Fatalf("unconfirmed rebuild: %d %s", resp.StatusCode, loc)
	}
	if len(e.api.bodies) != 0 {
		t.Fatalf("an unconfirmed rebuild reached the API: %v", e.api.bodies)
	}
	st, page := e.get(loc)
	if st != 200 || !strings.Contains(page, "Rebuild web?") || !strings.Contains(page, "replaced by image busybox") ||
		!strings.Contains(page, `name="image" value="img-1"`) {
		t.Fatalf("confirmation page: %d\n%s", st, page)
	}
	resp = e.post("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {"rebuild"}, "image": {"img-1"}, "confirmed": {"yes"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/servers/s1?done=rebuild" {
		t.Fatalf("confirmed rebuild: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := strings.Join(e.api.bodies, " "); got != `{"rebuild":{"imageRef":"img-1"}}` {
		t.Errorf("rebuild body %s", got)
	}
	if st, page := e.get("/servers/s1/confirm?action=rebuild"); st != http.StatusBadRequest || !strings.Contains(page, "Choose the image") {
		t.Errorf("confirmation without an image: %d", st)
	}
}
