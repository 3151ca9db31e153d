package portal

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBrowserLongNameKeepsColumnsInView: a 255-character name without
// spaces does not widen the servers list or the detail page: at desktop
// and phone width the Status column of every row is inside the viewport
// (its layout box, not just the text), the page does not scroll sideways,
// the detail title fits the viewport, and the full name is there on
// hover (title).
func TestBrowserLongNameKeepsColumnsInView(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("x", 250) + "-tail"
	e.api.servers = []map[string]any{server("s1", long, "ACTIVE"), server("s2", "short", "SHUTOFF")}
	b := newTab(t, e.portal.URL)
	b.login("demo")
	for _, size := range [][2]int{{1280, 860}, {390, 844}} {
		b.viewport(size[0], size[1])
		for _, live := range []bool{false, true} {
			b.open("/servers")
			if live {
				// The rows the list's script rebuilds keep the same layout.
				b.waitJS("live refresh", `document.querySelector("#live").innerText.indexOf("·") > 0`, 10*time.Second)
			}
			what := fmt.Sprintf("%dpx (live rows %v)", size[0], live)
			boxes := js[[]float64](b, `Array.from(document.querySelectorAll("#servers tbody tr")).map(function(r){var b=r.cells[1].querySelector(".status").getBoundingClientRect(); return b.right})`)
			if len(boxes) != 2 {
				t.Fatalf("%s: %d rows", what, len(boxes))
			}
			// The nominal width, not innerWidth: a phone widens its layout
			// viewport to fit content that overflows.
			vw := float64(size[0])
			for i, right := range boxes {
				if right > vw || right <= 0 {
					t.Errorf("%s: row %d's status badge ends at %.0fpx, outside the %.0fpx viewport", what, i, right, vw)
				}
			}
			if over := js[int](b, fmt.Sprintf(`document.documentElement.scrollWidth - %d`, size[0])); over > 0 {
				t.Errorf("%s: the servers page is %dpx wider than the viewport", what, over)
			}
			if title := js[string](b, `document.querySelector('#servers tr[data-id="s1"] td a').title`); title != long {
				t.Errorf("%s: the long name's link has title %q, want the full name", what, title)
			}
		}
		b.shot(fmt.Sprintf("portal-long-name-%d", size[0]))
		b.open("/servers/s1")
		what := fmt.Sprintf("detail at %dpx", size[0])
		if w := js[float64](b, fmt.Sprintf(`document.querySelector("h1").getBoundingClientRect().right - %d`, size[0])); w > 0 {
			t.Errorf("%s: the title runs %.0fpx past the viewport", what, w)
		}
		if !js[bool](b, fmt.Sprintf(`(function(){var s=document.querySelector("#status").getBoundingClientRect(); return s.right <= %d && s.bottom > 0})()`, size[0])) {
			t.Errorf("%s: the status badge is outside the viewport", what)
		}
		if over := js[int](b, fmt.Sprintf(`document.documentElement.scrollWidth - %d`, size[0])); over > 0 {
			t.Errorf("%s: the page is %dpx wider than the viewport", what, over)
		}
		if title := js[string](b, `document.querySelector("h1").title`); title != long {
			t.Errorf("%s: title attribute %q, want the full name", what, title)
		}
	}
}
