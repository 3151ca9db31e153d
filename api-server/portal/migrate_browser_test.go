package portal

import (
	"strings"
	"testing"
	"time"
)

// TestBrowserMigrationOutcome: with no other host up and enabled, the
// Hosts page says so and offers no Migrate; with one, a migration the
// API accepts but that then fails (no valid host) is reported as failed,
// with the reason from the migrate action's failed event, on the page the
// admin is looking at; it is never a green "Migration requested" only.
func TestBrowserMigrationOutcome(t *testing.T) {
	e := newEnv(t)
	srv := server("s1", "web", "ACTIVE")
	srv["OS-EXT-SRV-ATTR:host"] = "cn-a"
	e.api.servers = []map[string]any{srv}
	e.api.migrations = []map[string]any{}
	e.api.acceptMigrate = true
	e.api.services = map[string]bool{"cn-b": true} // disabled
	b := newTab(t, e.portal.URL)
	b.login("admin")
	b.open("/hosts")
	row := `[data-host="cn-a"] tr[data-id="s1"]`
	if !js[bool](b, `document.querySelector('`+row+` .migrate-go').disabled`) {
		t.Error("Migrate is offered while no other host is enabled")
	}
	if why := b.text(row + " .migrate-why"); !strings.Contains(why, "No other host") {
		t.Errorf("no reason given for the disabled Migrate: %q", why)
	}

	e.api.mu.Lock()
	e.api.services = map[string]bool{}
	e.api.mu.Unlock()
	b.open("/hosts")
	b.click(row+" .migrate-go", "/hosts?done=migrate")
	if n := b.text("#notice"); strings.Contains(n, "Migration requested") && !strings.Contains(n, "waiting") {
		t.Errorf("the page reports the request as the outcome: %q", n)
	}
	b.waitJS("outcome pending", `document.querySelector("#migration-outcome").getAttribute("data-state") === "running"`, 10*time.Second)
	// The migration fails: nobody could take the server.
	e.api.mu.Lock()
	e.api.migrations[0]["status"] = "error"
	e.api.serverActions = []map[string]any{{"action": "migrate", "request_id": "req-mig", "start_time": "2026-01-01T00:02:00.000000",
		"events": []map[string]any{{"event": "conductor_migrate_server", "result": "Error",
			"details": "No valid host was found. There are not enough hosts available (1 host, 1 removed by the filters: SameHost)."}}}}
	e.api.mu.Unlock()
	b.waitJS("outcome failed", `document.querySelector("#migration-outcome").getAttribute("data-state") === "failed"`, 15*time.Second)
	out := b.text("#migration-outcome")
	if !strings.Contains(out, "failed") || !strings.Contains(out, "No valid host was found") {
		t.Errorf("failed migration reported as %q", out)
	}
	if cls := js[string](b, `document.querySelector("#migration-outcome").className`); !strings.Contains(cls, "error") {
		t.Errorf("failed migration shown with class %q, want error", cls)
	}
	// The migrations list says it failed, and why.
	b.open("/hosts")
	if r := b.text(`#migrations tr[data-id="s1"]`); !strings.Contains(r, "error") || !strings.Contains(r, "No valid host") {
		t.Errorf("migrations list row: %q", r)
	}
}
