package portal

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestBulkWithoutScript: the bulk form works as plain HTML: a POST asks
// for confirmation first (nothing is sent to the API), names each server
// and reports one the project cannot see instead of offering it; the
// confirmed POST acts on each; bad input and a missing CSRF token are
// refused.
func TestBulkWithoutScript(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web<1>", "ACTIVE"), server("s2", "db", "ACTIVE")}
	csrf := e.login("demo")
	resp := e.post("/servers/bulk", url.Values{"csrf": {csrf}, "action": {"stop"}, "id": {"s1", "nosuch", "s1"}})
	page := body(resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Stop 2 servers?") || !strings.Contains(page, "web&lt;1&gt;") ||
		strings.Contains(page, `name="id" value="nosuch"`) || !strings.Contains(page, `name="id" value="s1"`) {
		t.Errorf("confirmation: %d\n%s", resp.StatusCode, page)
	}
	if len(e.api.actions) != 0 {
		t.Errorf("actions before the confirmation: %v", e.api.actions)
	}
	resp = e.post("/servers/bulk", url.Values{"csrf": {csrf}, "action": {"stop"}, "confirmed": {"yes"}, "id": {"s1", "s2"}})
	if page = body(resp); resp.StatusCode != http.StatusOK || strings.Count(page, `class="accepted"`) != 2 {
		t.Errorf("results: %d\n%s", resp.StatusCode, page)
	}
	if got := strings.Join(e.api.actions, ","); got != "s1 os-stop,s2 os-stop" {
		t.Errorf("sent %s", got)
	}
	// Every start refused (the fake answers 409): 409, each reported.
	resp = e.post("/servers/bulk", url.Values{"csrf": {csrf}, "action": {"start"}, "confirmed": {"yes"}, "id": {"s1", "s2"}})
	if page = body(resp); resp.StatusCode != http.StatusConflict || strings.Count(page, `class="refused"`) != 2 || !strings.Contains(page, "2 refused") {
		t.Errorf("all refused: %d\n%s", resp.StatusCode, page)
	}
	for _, c := range []struct {
		form url.Values
		want int
	}{
		{url.Values{"csrf": {csrf}, "action": {"rebuild"}, "id": {"s1"}}, http.StatusBadRequest},
		{url.Values{"csrf": {csrf}, "action": {"delete"}}, http.StatusBadRequest},
		{url.Values{"action": {"delete"}, "id": {"s1"}, "confirmed": {"yes"}}, http.StatusForbidden},
	} {
		resp := e.post("/servers/bulk", c.form)
		if resp.Body.Close(); resp.StatusCode != c.want {
			t.Errorf("%v: %d, want %d", c.form, resp.StatusCode, c.want)
		}
	}
	if got := strings.Join(e.api.actions, ","); strings.Contains(got, "delete") {
		t.Errorf("a refused form acted: %s", got)
	}
}
