package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
)

// TestPortalSecurityGroups: demo creates a security group in the portal,
// launches server A into it from the launch form, and server B (default
// group) cannot reach A's web server; a TCP 8080 rule added on the
// group's page lets B in. B's page adds and removes the group. Another
// project's user gets 404 for the group, a reader of demo the API's
// refusal for a rule; a throwaway group is deleted from its page; the
// pages fit a 390 px phone.
func TestPortalSecurityGroups(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	c := startCloud(t, withBridge)
	ctx := context.Background()
	suffix := uuid.NewString()[:6]
	netName := "psg-net-" + suffix
	dnc := c.networkClient(t, "demo", c.demoPass, "demo")
	netID, _ := tenantNetwork(t, dnc, netName, "10.83.0.0/24", nil)
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	acc := c.computeClient(t, "admin", c.adminPass, "admin")
	anc := c.networkClient(t, "admin", c.adminPass, "admin")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]

	b := newBrowser(t, c.portalURL(t))
	b.login("demo", c.demoPass, "demo")

	// Create the group.
	group := "psg-web-" + suffix
	b.open("/security-groups")
	b.do("fill the group form", chromedp.SetValue(chromedp.CSS("#secgroup-name"), group),
		chromedp.SetValue(chromedp.CSS("#secgroup-desc"), "<b>web</b> servers"))
	b.submit("#secgroup-go", "/security-groups/")
	gid := strings.TrimPrefix(evalJS[string](b, `location.pathname`), "/security-groups/")
	if n := evalJS[int](b, `document.querySelectorAll("#rules tbody tr[data-id]").length`); n != 2 {
		t.Errorf("a new group lists %d rules, want Neutron's 2 egress rules", n)
	}
	if html := evalJS[string](b, `document.querySelector("main").innerHTML`); !strings.Contains(html, "&lt;b&gt;web&lt;/b&gt;") {
		t.Errorf("the group's description is not escaped")
	}

	// Launch A into the group from the launch form.
	aName := "psg-a-" + suffix
	b.open("/launch")
	b.do("fill the launch form", chromedp.SetValue(chromedp.CSS("#name"), aName), chromedp.SetValue(chromedp.CSS("#image"), img),
		chromedp.SetValue(chromedp.CSS("#flavor"), "1"))
	evalJS[bool](b, fmt.Sprintf(`(function(){var s=document.querySelector("#network"); var o=Array.from(s.options).find(function(o){return o.text.indexOf(%q)===0}); if(!o) return false; s.value=o.value; return true})()`, netName))
	if !evalJS[bool](b, fmt.Sprintf(`(function(){var c=document.querySelector('#launch-groups input[value=%q]'); if(!c) return false; c.checked=true; return true})()`, group)) {
		t.Fatalf("the launch form offers no group %s: %s", group, b.text("#launch"))
	}
	b.submit("#launch-go", "/servers?done=launched")
	var aID string
	eventually(t, 20*time.Second, "A listed", func() bool {
		pages, err := servers.List(demo, servers.ListOpts{Name: aName}).AllPages(ctx)
		if err != nil {
			return false
		}
		l, _ := servers.ExtractServers(pages)
		if len(l) == 1 {
			aID = l[0].ID
		}
		return aID != ""
	})
	t.Cleanup(func() { _ = servers.Delete(context.Background(), demo, aID).ExtractErr() })
	bSrv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "psg-b-" + suffix, ImageRef: img, FlavorRef: "1",
		Networks: []servers.Network{{UUID: netID}}}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), demo, bSrv.ID).ExtractErr() })
	h := c.hosts[0]
	a := activeServer(t, acc, anc, aName, aID, h)
	bs := activeServer(t, acc, anc, "psg-b-"+suffix, bSrv.ID, h)
	a.serve(t)
	bs.serve(t)
	// A's group admits nothing yet.
	expectTCP(t, bs, a, a.ip, false, "A's new group has no ingress rule")

	// A's page lists its group.
	b.open("/servers/" + aID)
	if g := b.text("#server-groups"); !strings.Contains(g, group) {
		t.Errorf("A's page lists groups %q, want %s", g, group)
	}

	// The rule, added in the portal, lets B in.
	b.open("/security-groups/" + gid)
	b.do("fill the rule form", chromedp.SetValue(chromedp.CSS("#rule-protocol"), "tcp"),
		chromedp.SetValue(chromedp.CSS("#rule-port-min"), "8080"), chromedp.SetValue(chromedp.CSS("#rule-remote"), "0.0.0.0/0"))
	b.submit("#rule-go", "/security-groups/"+gid+"?done=rule-added")
	if rules := b.text("#rules"); !strings.Contains(rules, "8080") || !strings.Contains(rules, "0.0.0.0/0") {
		t.Errorf("the group's rules after the add: %q", rules)
	}
	start := time.Now()
	eventually(t, 15*time.Second, "B reaches A on 8080 after the portal's rule", func() bool { return bs.fetch(a, a.ip) })
	t.Logf("B reached A %v after the rule was added in the portal", time.Since(start))
	copyShot(t, b.shot("secgroup"), "portal-secgroup.png")

	// A bad rule: the form's message, nothing created.
	b.do("bad port", chromedp.SetValue(chromedp.CSS("#rule-port-min"), "70000"))
	b.submit("#rule-go", "/security-groups/"+gid+"/rules")
	if e := b.text("#error"); !strings.Contains(e, "65535") {
		t.Errorf("port 70000: error %q", e)
	}

	// Deleting the rule refuses B again.
	b.open("/security-groups/" + gid)
	if !evalJS[bool](b, `(function(){window.confirm=function(){return true}; var r=Array.from(document.querySelectorAll("#rules tbody tr")).find(function(r){return r.cells.length>2 && r.cells[2].innerText.trim()==="8080"}); if(!r) return false; r.querySelector("button").click(); return true})()`) {
		t.Fatalf("no 8080 rule to delete: %q", b.text("#rules"))
	}
	b.waitJS("rule deleted", `location.search.indexOf("done=rule-deleted") >= 0 || !!document.querySelector("#error")`, 20*time.Second)
	if e := b.text("#error"); e != "" {
		t.Fatalf("delete rule: %s", e)
	}
	if strings.Contains(b.text("#rules"), "8080") {
		t.Errorf("8080 rule still listed: %q", b.text("#rules"))
	}
	eventually(t, 15*time.Second, "B refused again", func() bool { return !bs.fetch(a, a.ip) })

	// B's page: add the group, then remove it.
	b.open("/servers/" + bSrv.ID)
	b.do("pick the group", chromedp.SetValue(chromedp.CSS("#add-group-name"), group))
	b.submit("#act-add-group", "/servers/"+bSrv.ID+"?done=addSecurityGroup")
	if g := b.text("#server-groups"); !strings.Contains(g, group) || !strings.Contains(g, "default") {
		t.Errorf("B's groups after the add: %q", g)
	}
	b.do("remove the group", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#server-groups button[data-group=%q]`, group))))
	b.waitJS("group removed", `location.search.indexOf("done=removeSecurityGroup") >= 0`, 20*time.Second)
	if g := b.text("#server-group-list"); strings.Contains(g, group) {
		t.Errorf("B's groups after the remove: %q", g)
	}

	// Phone width.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []string{"/security-groups", "/security-groups/" + gid, "/launch", "/servers/" + aID} {
		b.open(p)
		if w := evalJS[int](b, `document.documentElement.scrollWidth - 390`); w > 0 {
			t.Errorf("page %s is %dpx wider than a 390px phone", p, w)
		}
	}
	b.open("/security-groups/" + gid)
	copyShot(t, b.shot("secgroup-phone"), "portal-secgroup-phone.png")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))

	// A throwaway group, deleted from its page.
	b.open("/security-groups")
	b.do("fill the group form", chromedp.SetValue(chromedp.CSS("#secgroup-name"), "psg-tmp-"+suffix))
	b.submit("#secgroup-go", "/security-groups/")
	tmp := strings.TrimPrefix(evalJS[string](b, `location.pathname`), "/security-groups/")
	evalJS[bool](b, `window.confirm = function(){return true}; true`)
	b.submit("#secgroup-delete", "/security-groups?done=sg-deleted")
	if _, err := groups.Get(ctx, dnc, tmp).Extract(); err == nil {
		t.Errorf("group %s still exists after its delete", tmp)
	}

	// Another project sees no group; a reader may not add a rule.
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	other, otherPass := "psg-other-"+suffix, "pw-"+uuid.NewString()[:8]
	admin.run("project", "create", other)
	admin.run("user", "create", "--password", otherPass, "--project", other, other)
	admin.run("role", "add", "--project", other, "--user", other, "member")
	admin.run("user", "create", "--password", otherPass, "--project", "demo", other+"-r")
	admin.run("role", "add", "--project", "demo", "--user", other+"-r", "reader")
	ob := newBrowser(t, c.portalURL(t))
	ob.login(other, otherPass, other)
	ob.open("/security-groups/" + gid)
	if e := ob.text("#error"); e == "" || strings.Contains(ob.text("body"), group) {
		t.Errorf("other project's view of the group: error %q, body %q", e, ob.text("body"))
	}
	ob.open("/security-groups")
	if strings.Contains(ob.text("#secgroups"), group) {
		t.Errorf("other project lists demo's group")
	}
	rb := newBrowser(t, c.portalURL(t))
	rb.login(other+"-r", otherPass, "demo")
	rb.open("/security-groups/" + gid)
	before := evalJS[int](rb, `document.querySelectorAll("#rules tbody tr[data-id]").length`)
	// A reader's write buttons are disabled; the form sent anyway (the
	// button enabled again, as a crafted request would) is refused by
	// the API.
	if !evalJS[bool](rb, `document.querySelector("#rule-go").disabled`) {
		t.Errorf("a reader's Add rule button is enabled")
	}
	rb.do("fill the rule form", chromedp.SetValue(chromedp.CSS("#rule-port-min"), "22"))
	evalJS[bool](rb, `(function(){document.querySelector("#rule-go").disabled=false; return true})()`)
	rb.submit("#rule-go", "/security-groups/"+gid+"/rules")
	if e := rb.text("#error"); e == "" {
		t.Errorf("reader's rule: no refusal shown")
	}
	g, err := groups.Get(ctx, dnc, gid).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Rules) != before {
		t.Errorf("reader's rule was created: %d rules, want %d", len(g.Rules), before)
	}
}
