package portal

import (
	"testing"
	"time"
)

// TestBrowserImagesLive: a snapshot's status changes on the Images page
// without a reload (queued, then active), and a new image appears.
func TestBrowserImagesLive(t *testing.T) {
	e := newEnv(t)
	e.api.images = []map[string]any{{"id": "img-1", "name": "busybox", "status": "active", "visibility": "public"},
		{"id": "img-2", "name": "web-snap", "status": "queued", "visibility": "private"}}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/images")
	status := `(document.querySelector('#images tr[data-id="img-2"]')||{cells:[{},{innerText:""}]}).cells[1].innerText.trim()`
	if st := js[string](b, status); st != "queued" {
		t.Fatalf("snapshot status %q", st)
	}
	js[bool](b, `window.__mark = "same-page"; true`)
	e.api.mu.Lock()
	e.api.images[1]["status"] = "active"
	e.api.images = append(e.api.images, map[string]any{"id": "img-3", "name": "other", "status": "saving", "visibility": "private"})
	e.api.mu.Unlock()
	b.waitJS("snapshot active without a reload", status+` === "active" && window.__mark === "same-page"`, 15*time.Second)
	b.waitJS("new image listed", `!!document.querySelector('#images tr[data-id="img-3"]') && window.__mark === "same-page"`, 5*time.Second)
}
