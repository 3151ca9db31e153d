package portal

import (
	"fmt"
	"testing"
)

// TestBrowserFormsAndHostsFit: the public-key textarea is styled like the
// other fields (full width of its form, the same border and font), and
// the Hosts page fits a 390 px phone without scrolling sideways.
func TestBrowserFormsAndHostsFit(t *testing.T) {
	e := newEnv(t)
	srv := server("s1", "web-with-a-longer-name", "VERIFY_RESIZE")
	srv["OS-EXT-SRV-ATTR:host"] = "cn-a"
	srv["tenant_id"] = "0123456789abcdef0123456789abcdef"
	srv["OS-EXT-STS:task_state"] = "resize_migrating"
	e.api.servers = []map[string]any{srv}
	b := newTab(t, e.portal.URL)
	b.login("admin")
	for _, w := range []int{1280, 390} {
		b.viewport(w, 844)
		b.open("/keypairs")
		ta := js[map[string]any](b, `(function(){var t=document.querySelector("#public-key"), n=document.querySelector("#keypair-name"), a=t.getBoundingClientRect(), b=n.getBoundingClientRect(), s=getComputedStyle(t), m=getComputedStyle(n);
			return {tw:a.width, nw:b.width, border:s.borderTopColor===m.borderTopColor && s.borderTopLeftRadius===m.borderTopLeftRadius, font:s.fontFamily===m.fontFamily || s.fontFamily.indexOf("mono")>=0}})()`)
		if tw, nw := ta["tw"].(float64), ta["nw"].(float64); tw < nw-1 {
			t.Errorf("%dpx: the public-key textarea is %.0fpx wide, the name field %.0fpx", w, tw, nw)
		}
		if ta["border"] != true || ta["font"] != true {
			t.Errorf("%dpx: the textarea is not styled like the fields: %v", w, ta)
		}
		if w == 390 {
			b.shot("portal-keypairs-phone")
		}
		if over := js[int](b, fmt.Sprintf(`document.documentElement.scrollWidth - %d`, w)); over > 0 {
			t.Errorf("%dpx: the key pairs page is %dpx too wide", w, over)
		}
		b.open("/hosts")
		if right := js[float64](b, `Math.max.apply(null, Array.from(document.querySelectorAll(".host")).map(function(c){return c.getBoundingClientRect().right}))`); right > float64(w) {
			t.Errorf("%dpx: a host card ends at %.0fpx", w, right)
		}
		if over := js[int](b, fmt.Sprintf(`document.documentElement.scrollWidth - %d`, w)); over > 0 {
			t.Errorf("%dpx: the Hosts page is %dpx wider than the viewport", w, over)
		}
	}
}
