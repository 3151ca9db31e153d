package portal

import (
	"strings"
	"testing"
)

// TestBrowserLaunchQuotaPreview: the launch form says what a launch uses
// and leaves (limits: 7 servers, 15 vCPUs left), disables Launch with the
// reason when the count does not fit and for user data past the limit,
// and fits a 390 px phone.
func TestBrowserLaunchQuotaPreview(t *testing.T) {
	e := newEnv(t)
	b := newTab(t, e.portal.URL)
	b.login("demo")
	b.open("/launch")
	set := func(sel, v string) {
		js[bool](b, `(function(){var c=document.querySelector("`+sel+`"); c.value=`+jsString(v)+`; c.dispatchEvent(new Event("input")); return true})()`)
	}
	if p := b.text("#quota-preview"); !strings.Contains(p, "This launch uses 1 servers") || !strings.Contains(p, "6 left of 10") {
		t.Errorf("preview for 1: %q", p)
	}
	set("#count", "8")
	if !js[bool](b, `document.querySelector("#launch-go").disabled`) {
		t.Errorf("Launch enabled for 8 servers with 7 left")
	}
	if why := b.text("#launch-why"); !strings.Contains(why, "servers (needs 8, 7 left)") {
		t.Errorf("reason for 8: %q", why)
	}
	set("#count", "2")
	set("#max-count", "9")
	if js[bool](b, `document.querySelector("#launch-go").disabled`) {
		t.Errorf("Launch disabled for 2 to 9: %q", b.text("#launch-why"))
	}
	if p := b.text("#quota-preview"); !strings.Contains(p, "Not all 9 fit") {
		t.Errorf("preview for 2 to 9: %q", p)
	}
	set("#name", "web")
	set("#tags", "web, production")
	set("#user-data", "#!/bin/sh\necho hello > /tmp/hello\n")
	b.shot("portal-launch-options")
	set("#max-count", "")
	set("#user-data", strings.Repeat("x", maxUserData+1))
	if why := b.text("#launch-why"); !strings.Contains(why, "user data is 1 bytes too long") {
		t.Errorf("reason for long user data: %q", why)
	}
	set("#user-data", "#!/bin/sh\n")
	b.viewport(390, 844)
	b.open("/launch")
	if w := js[int](b, `document.documentElement.scrollWidth - 390`); w > 0 {
		t.Errorf("the launch form is %dpx wider than a 390px phone: %s", w, js[string](b, `Array.from(document.querySelectorAll("main *")).filter(function(e){return e.getBoundingClientRect().right>390}).map(function(e){return e.tagName+"#"+e.id+"."+e.className+":"+Math.round(e.getBoundingClientRect().right)}).join(" ")`))
	}
	for _, sel := range []string{"#launch-go", "#quota-preview", "#user-data", "#max-count", "#tags"} {
		if r := js[float64](b, `document.querySelector("`+sel+`").getBoundingClientRect().right`); r > 390 || r <= 0 {
			t.Errorf("%s ends at x=%.0f at 390 px", sel, r)
		}
	}
	set("#count", "8")
	b.shot("portal-launch-options-phone")
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
