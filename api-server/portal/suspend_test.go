package portal

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestSuspendResumeButtons: an ACTIVE server offers Suspend, a SUSPENDED
// one Resume; each sends Nova's body and comes back with its notice.
func TestSuspendResumeButtons(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("s1", "web", "ACTIVE")}
	csrf := e.login("demo")
	_, page := e.get("/servers/s1")
	if !regexp.MustCompile(`data-when="ACTIVE" *><input[^>]*><input type="hidden" name="action" value="suspend"><button[^>]*id="act-suspend"`).MatchString(page) ||
		!regexp.MustCompile(`data-when="SUSPENDED" hidden><input[^>]*><input type="hidden" name="action" value="resume">`).MatchString(page) {
		t.Fatalf("active server's suspend/resume buttons:\n%s", page)
	}
	for _, action := range []string{"suspend", "resume"} {
		resp := e.post("/servers/s1/action", url.Values{"csrf": {csrf}, "action": {action}})
		if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/servers/s1?done="+action {
			t.Errorf("%s: %d %s", action, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if got, want := strings.Join(e.api.bodies, " "), `{"suspend":null} {"resume":null}`; got != want {
		t.Errorf("action bodies %s, want %s", got, want)
	}
	if _, page := e.get("/servers/s1?done=suspend"); !strings.Contains(page, "Suspend requested") {
		t.Errorf("no suspend notice")
	}
	e.api.mu.Lock()
	e.api.servers[0]["status"] = "SUSPENDED"
	e.api.mu.Unlock()
	_, page = e.get("/servers/s1")
	if !regexp.MustCompile(`data-when="SUSPENDED" *><input[^>]*><input type="hidden" name="action" value="resume">`).MatchString(page) ||
		!regexp.MustCompile(`data-when="ACTIVE" hidden><input[^>]*><input type="hidden" name="action" value="suspend">`).MatchString(page) {
		t.Errorf("suspended server's buttons:\n%s", page)
	}
}
