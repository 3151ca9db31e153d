package portal

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserServerListTools: on the servers list the search box narrows
// the rows by name or by IP as one types (and the live refresh keeps the
// filter and the sort), the Name, Status and Created headers sort (again:
// the other way), the Created column says how long ago with the full time
// on hover, the copy buttons hand the IP or the ID to the clipboard, and
// the page still fits 390 px.
func TestBrowserServerListTools(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	mk := func(id, name, status, ip string, age time.Duration) map[string]any {
		s := server(id, name, status)
		s["addresses"] = map[string]any{"a-longer-network-name": []map[string]any{{"addr": ip}}}
		s["created"] = now.Add(-age).Format(time.RFC3339)
		return s
	}
	e.api.servers = []map[string]any{
		mk("id-b", "bravo", "SHUTOFF", "10.0.0.7", 5*time.Minute),
		mk("id-a", "alpha<b>", "ACTIVE", "10.0.0.12", 3*time.Hour),
		mk("id-c", "charlie-the-third", "ERROR", "192.168.5.9", 2*24*time.Hour),
	}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/servers?limit=10")
	ids := func() string {
		return js[string](b, `Array.from(document.querySelectorAll("#servers tbody tr")).filter(function(r){return !r.hidden}).map(function(r){return r.getAttribute("data-id")}).join(",")`)
	}
	typeIn := func(q string) {
		b.t.Helper()
		js[bool](b, fmt.Sprintf(`(function(){var i=document.querySelector("#server-search"); i.value=%q; i.dispatchEvent(new Event("input",{bubbles:true})); return true})()`, q))
	}
	sortBy := func(k string) {
		b.t.Helper()
		js[bool](b, fmt.Sprintf(`(document.querySelector('button.sort[data-sort=%q]').click(), true)`, k))
	}

	if got := ids(); got != "id-b,id-a,id-c" {
		t.Fatalf("rows before any search: %s", got)
	}
	if !js[bool](b, `document.querySelector('label[for="server-search"]') !== null`) {
		t.Error("the search box has no label")
	}
	typeIn("ALPHA")
	if got := ids(); got != "id-a" {
		t.Errorf("search by name (any case): rows %s, want id-a", got)
	}
	if got := b.text("#search-count"); !strings.Contains(got, "1 of the 3") {
		t.Errorf("the search's count says %q", got)
	}
	typeIn("10.0.0.")
	if got := ids(); got != "id-b,id-a" {
		t.Errorf("search by IP: rows %s, want id-b,id-a", got)
	}
	typeIn("nothing-like-it")
	if got := ids(); got != "" {
		t.Errorf("a search matching nothing left rows %s", got)
	}
	if js[bool](b, `document.querySelector("#search-empty").hidden`) {
		t.Error("a search matching nothing does not say so")
	}
	typeIn("")
	if got := ids(); got != "id-b,id-a,id-c" {
		t.Errorf("an emptied search shows %s", got)
	}

	sortBy("name")
	if got := ids(); got != "id-a,id-b,id-c" {
		t.Errorf("sorted by name: %s", got)
	}
	if s := js[string](b, `document.querySelector('button.sort[data-sort=name]').parentNode.getAttribute("aria-sort")`); s != "ascending" {
		t.Errorf("the Name header's aria-sort is %q", s)
	}
	sortBy("name")
	if got := ids(); got != "id-c,id-b,id-a" {
		t.Errorf("sorted by name again (descending): %s", got)
	}
	sortBy("status")
	if got := ids(); got != "id-a,id-c,id-b" {
		t.Errorf("sorted by status: %s", got)
	}
	sortBy("created")
	if got := ids(); got != "id-c,id-a,id-b" {
		t.Errorf("sorted by created (oldest first): %s", got)
	}
	sortBy("created")
	if got := ids(); got != "id-b,id-a,id-c" {
		t.Errorf("sorted by created, newest first: %s", got)
	}

	ages := js[[]string](b, `Array.from(document.querySelectorAll("#servers tbody time")).map(function(t){return t.textContent})`)
	if strings.Join(ages, "|") != "5 min ago|3 h ago|2 d ago" {
		t.Errorf("ages %q", ages)
	}
	if title := js[string](b, `document.querySelector('#servers tr[data-id="id-b"] time').title`); !strings.Contains(title, now.Add(-5*time.Minute).Format(time.RFC3339)) {
		t.Errorf("the age's title is %q, want the full timestamp", title)
	}

	// The live refresh rebuilds the rows: the search and sort stay.
	typeIn("ha")
	sortBy("name")
	b.waitJS("live refresh", `document.querySelector("#live").innerText.indexOf("·") > 0`, 10*time.Second)
	if got := ids(); got != "id-a,id-c" {
		t.Errorf("after the live refresh (search \"ha\", by name): rows %s, want id-a,id-c", got)
	}
	if name := js[string](b, `document.querySelector('#servers tr[data-id="id-a"] a').textContent`); name != "alpha<b>" {
		t.Errorf("the live row's name is %q (escaping)", name)
	}
	if n := js[int](b, `document.querySelectorAll("#servers b").length`); n != 0 {
		t.Errorf("a name became markup: %d <b> elements", n)
	}
	// The copy buttons' labels are CSS: a cell's text is the name alone
	// (what scripts and the e2e test read).
	if name := js[string](b, `document.querySelector('#servers tr[data-id="id-a"]').cells[0].innerText.trim()`); name != "alpha<b>" {
		t.Errorf("the name cell's text is %q", name)
	}
	if age := js[string](b, `document.querySelector('#servers tr[data-id="id-a"] time').textContent`); age != "3 h ago" {
		t.Errorf("the live row's age is %q", age)
	}
	typeIn("")

	// Copy: the Clipboard API gets the text (recorded here: a headless
	// page has no user's clipboard to read back), and without it the
	// execCommand fallback runs.
	js[bool](b, `(function(){window.copied=[]; Object.defineProperty(navigator, "clipboard", {configurable:true, value:{writeText:function(t){window.copied.push(t); return Promise.resolve()}}}); return true})()`)
	js[bool](b, `(document.querySelector('#servers tr[data-id="id-c"] .ip button.copy').click(), true)`)
	js[bool](b, `(document.querySelector('#servers tr[data-id="id-c"] td:first-child button.copy').click(), true)`)
	b.waitJS("copied", `window.copied.length === 2`, 5*time.Second)
	if got := js[[]string](b, `window.copied`); strings.Join(got, "|") != "192.168.5.9|id-c" {
		t.Errorf("copied %q, want the IP and the ID", got)
	}
	b.waitJS("copy acknowledged", `document.querySelector('#servers tr[data-id="id-c"] td:first-child button.copy').getAttribute("data-copied") === "1"`, 5*time.Second)
	js[bool](b, `(function(){Object.defineProperty(navigator, "clipboard", {configurable:true, value:undefined}); window.execd=[]; var ex=document.execCommand.bind(document); document.execCommand=function(c){window.execd.push(c+":"+document.activeElement.value); return true}; return true})()`)
	js[bool](b, `(document.querySelector('#servers tr[data-id="id-b"] .ip button.copy').click(), true)`)
	b.waitJS("fallback copy", `window.execd.length === 1`, 5*time.Second)
	if got := js[string](b, `window.execd[0]`); got != "copy:10.0.0.7" {
		t.Errorf("the fallback copied %q", got)
	}

	for _, w := range []int{390, 1280} {
		b.viewport(w, 844)
		b.open("/servers?limit=10")
		if over := js[int](b, fmt.Sprintf(`document.documentElement.scrollWidth - %d`, w)); over > 0 {
			t.Errorf("%dpx: the servers list is %dpx too wide", w, over)
		}
		if right := js[float64](b, `document.querySelector("#servers").getBoundingClientRect().right`); right > float64(w) {
			t.Errorf("%dpx: the list's table ends at %.0fpx (the Created column out of view)", w, right)
		}
		if right := js[float64](b, `Math.max.apply(null, Array.from(document.querySelectorAll("#servers summary")).map(function(s){return s.getBoundingClientRect().right}))`); right > float64(w) {
			t.Errorf("%dpx: a row menu's button ends at %.0fpx", w, right)
		}
		if w == 390 {
			b.shot("portal-servers-tools-phone")
		} else {
			b.shot("portal-servers-tools")
		}
	}
}

// TestBrowserServerListBulk: servers ticked in the list are stopped,
// started or deleted after one confirmation page naming them; ticks
// survive the live refresh, a row the search hides is not acted on, and
// the API's refusals are reported server by server.
func TestBrowserServerListBulk(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("id-a", "alpha", "ACTIVE"), server("id-b", "bravo", "ACTIVE"), server("id-c", "charlie", "SHUTOFF")}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	actions := func() string {
		e.api.mu.Lock()
		defer e.api.mu.Unlock()
		a := strings.Join(e.api.actions, ",")
		e.api.actions = nil
		return a
	}
	tick := func(id string) {
		t.Helper()
		js[bool](b, fmt.Sprintf(`(document.querySelector('#servers input.pick[value=%q]').click(), true)`, id))
	}
	b.open("/servers?limit=10")
	if !js[bool](b, `document.querySelector("#bulk-stop").disabled`) {
		t.Error("Stop is enabled with nothing ticked")
	}
	tick("id-a")
	tick("id-c")
	if got := b.text("#bulk-count"); got != "2 ticked" {
		t.Errorf("the count says %q", got)
	}
	b.waitJS("live refresh", `document.querySelector("#live").innerText.indexOf("·") > 0`, 10*time.Second)
	if got := js[string](b, `Array.from(document.querySelectorAll("#servers input.pick:checked")).map(function(c){return c.value}).join(",")`); got != "id-a,id-c" {
		t.Errorf("ticked after the live refresh: %q", got)
	}
	b.click("#bulk-stop", "/servers/bulk")
	if got := js[string](b, `Array.from(document.querySelectorAll("#bulk-list li")).map(function(l){return l.innerText.trim()}).join(",")`); got != "alpha,charlie" {
		t.Errorf("the confirmation lists %q", got)
	}
	if a := actions(); a != "" {
		t.Errorf("actions before the confirmation: %s", a)
	}
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-yes")))
	b.waitJS("results", `!!document.querySelector("#bulk-results")`, 10*time.Second)
	if a := actions(); a != "id-a os-stop,id-c os-stop" {
		t.Errorf("bulk stop sent %q", a)
	}
	if n := js[int](b, `document.querySelectorAll("#bulk-results li.accepted").length`); n != 2 {
		t.Errorf("%d accepted in the results: %s", n, b.text("main"))
	}

	// Start is refused by the fake API (409): each refusal is reported.
	b.open("/servers?limit=10")
	js[bool](b, `(document.querySelector("#pick-all").click(), true)`)
	b.click("#bulk-start", "/servers/bulk")
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-yes")))
	b.waitJS("results", `!!document.querySelector("#bulk-results")`, 10*time.Second)
	if a := actions(); a != "id-a os-start,id-b os-start,id-c os-start" {
		t.Errorf("bulk start sent %q", a)
	}
	if got := b.text("h1"); !strings.Contains(got, "3 refused") {
		t.Errorf("results heading %q", got)
	}
	if got := b.text(`#bulk-results li[data-id="id-b"]`); !strings.Contains(got, "refused (409)") || !strings.Contains(got, "Cannot 'start' instance id-b") {
		t.Errorf("id-b's refusal: %q", got)
	}

	// A ticked row the search hides is left alone.
	b.open("/servers?limit=10")
	tick("id-a")
	tick("id-b")
	js[bool](b, `(function(){var i=document.querySelector("#server-search"); i.value="brav"; i.dispatchEvent(new Event("input",{bubbles:true})); return true})()`)
	if got := b.text("#bulk-count"); got != "1 ticked" {
		t.Errorf("with alpha hidden the count says %q", got)
	}
	js[bool](b, `(window.confirm = function(){ return true }, true)`)
	b.click("#bulk-delete", "/servers/bulk")
	if got := js[int](b, `document.querySelectorAll("#bulk-list li").length`); got != 1 {
		t.Errorf("the delete confirmation lists %d servers: %s", got, b.text("main"))
	}
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-yes")))
	b.waitJS("results", `!!document.querySelector("#bulk-results")`, 10*time.Second)
	if a := actions(); a != "id-b delete" {
		t.Errorf("bulk delete sent %q", a)
	}
	b.viewport(390, 844)
	b.open("/servers?limit=10")
	if over := js[int](b, `document.documentElement.scrollWidth - 390`); over > 0 {
		t.Errorf("390px: the list with its bulk bar is %dpx too wide", over)
	}
}

// TestBrowserServerRowMenu: each row has an action menu (a <details>
// reachable by keyboard) with the actions its status allows; Stop goes
// through its confirmation, and the live refresh leaves an open menu
// alone.
func TestBrowserServerRowMenu(t *testing.T) {
	e := newEnv(t)
	e.api.servers = []map[string]any{server("id-a", "alpha", "ACTIVE"), server("id-c", "charlie", "SHUTOFF")}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/servers?limit=10")
	b.waitJS("live refresh", `document.querySelector("#live").innerText.indexOf("·") > 0`, 10*time.Second)
	items := func(id string) string {
		return js[string](b, fmt.Sprintf(`Array.from(document.querySelectorAll('#servers tr[data-id=%q] .menubox a, #servers tr[data-id=%q] .menubox button')).map(function(e){return e.textContent}).join(",")`, id, id))
	}
	if got := items("id-a"); got != "Open,Console output,Stop…,Reboot…,Delete…" {
		t.Errorf("ACTIVE row's menu: %q", got)
	}
	if got := items("id-c"); got != "Open,Console output,Start,Delete…" {
		t.Errorf("SHUTOFF row's menu: %q", got)
	}
	if label := js[string](b, `document.querySelector('#servers tr[data-id="id-a"] summary').getAttribute("aria-label")`); label != "Actions for alpha" {
		t.Errorf("the menu's label is %q", label)
	}
	// Open by keyboard: focus the summary, press Enter.
	js[bool](b, `(document.querySelector('#servers tr[data-id="id-a"] summary').focus(), true)`)
	b.do("open the menu", chromedp.KeyEvent("\r"))
	b.waitJS("menu open", `document.querySelector('#servers tr[data-id="id-a"] details').open`, 5*time.Second)
	e.api.mu.Lock()
	e.api.servers[0]["status"] = "SHUTOFF"
	e.api.mu.Unlock()
	b.waitJS("refresh waits", `document.querySelector("#live").innerText.indexOf("wait") > 0`, 10*time.Second)
	if !js[bool](b, `document.querySelector('#servers tr[data-id="id-a"] details').open`) {
		t.Error("the live refresh closed the open menu")
	}
	b.click(`#servers tr[data-id="id-a"] .menubox button[value=stop]`, "/servers/id-a/confirm?action=stop")
	b.click("#confirm-yes", "/servers/id-a?done=stop")
	e.api.mu.Lock()
	got := strings.Join(e.api.actions, ",")
	e.api.mu.Unlock()
	if got != "id-a os-stop" {
		t.Errorf("the menu's stop sent %q", got)
	}
	b.viewport(390, 844)
	b.open("/servers?limit=10")
	js[bool](b, `(document.querySelector('#servers tr[data-id="id-c"] summary').click(), true)`)
	b.waitJS("menu placed", `document.querySelector('#servers tr[data-id="id-c"] .menubox').style.position === "fixed"`, 5*time.Second)
	if over := js[int](b, `document.documentElement.scrollWidth - 390`); over > 0 {
		t.Errorf("390px: the list with an open menu is %dpx too wide", over)
	}
	if right := js[float64](b, `document.querySelector('#servers tr[data-id="id-c"] .menubox').getBoundingClientRect().right`); right > 390 {
		t.Errorf("390px: the open menu ends at %.0fpx", right)
	}
	// Not clipped by the table's scrolling box: its last item is the
	// topmost element at its own place.
	if !js[bool](b, `(function(){var d=document.querySelector('#servers tr[data-id="id-c"] .menubox button.danger'), r=d.getBoundingClientRect(); return document.elementFromPoint(r.left+r.width/2, r.top+r.height/2)===d})()`) {
		t.Error("390px: the open menu's Delete is hidden (clipped)")
	}
	b.shot("portal-servers-menu-phone")
}
