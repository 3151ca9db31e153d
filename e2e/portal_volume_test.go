package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// TestPortalVolumes: demo creates a volume on the Volumes page (the
// quota shown), attaches it to a running server from the volume's page,
// and what the server writes at the mount path the page shows is there
// inside the server; the server's page lists it and detaches it; the
// volume grows and is deleted. Another project's user gets 404 for it, a
// reader of demo finds the write buttons disabled and the API's refusal
// when posting anyway; the pages fit a 390 px phone. On the same cloud,
// portalLaunchOptions launches with the launch form's options.
func TestPortalVolumes(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	// A usage point every second, so the usage history has points within
	// the test (the default is one a minute).
	c := startCloud(t, withBridge, func(t *testing.T, c *cloud) { c.agentExtra += "  usage_interval: 1s\n" })
	ctx := context.Background()
	suffix := uuid.NewString()[:6]
	dnc := c.networkClient(t, "demo", c.demoPass, "demo")
	netID, _ := tenantNetwork(t, dnc, "pvol-net-"+suffix, "10.84.0.0/24", nil)
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	acc := c.computeClient(t, "admin", c.adminPass, "admin")
	anc := c.networkClient(t, "admin", c.adminPass, "admin")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	srvName := "pvol-srv-" + suffix
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: srvName, ImageRef: img, FlavorRef: "1",
		Networks: []servers.Network{{UUID: netID}}}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), demo, srv.ID).ExtractErr() })
	cli := c.openstack(t, "demo", c.demoPass, "demo")

	b := newBrowser(t, c.portalURL(t))
	b.login("demo", c.demoPass, "demo")

	// The launch form's options share this cloud (and the browser).
	t.Run("launch options", func(t *testing.T) {
		portalLaunchOptions(t, c, b, "pvol-net-"+suffix, img)
	})

	// Create: listed creating, then available without a reload.
	name := "pvol-" + suffix
	b.open("/volumes")
	if q := b.text("#volume-quota"); !strings.Contains(q, "volumes") || !strings.Contains(q, "GB") {
		t.Errorf("volume quota line: %q", q)
	}
	b.do("fill the volume form", chromedp.SetValue(chromedp.CSS("#volume-name"), name), chromedp.SetValue(chromedp.CSS("#volume-size"), "1"))
	b.submit("#volume-go", "/volumes?done=created")
	volID := evalJS[string](b, fmt.Sprintf(`(function(){var r=Array.from(document.querySelectorAll("#volumes tbody tr[data-id]")).find(function(r){return r.cells[0].innerText.trim()===%q}); return r? r.getAttribute("data-id"):""})()`, name))
	if volID == "" {
		t.Fatalf("the new volume is not listed: %q", b.text("#volumes"))
	}
	t.Cleanup(func() { _, _ = cli.try("volume", "delete", "--force", volID) })
	rowStatus := fmt.Sprintf(`(document.querySelector('#volumes tr[data-id=%q] .vstatus')||{}).textContent`, volID)
	b.waitJS("volume available in the list", rowStatus+` === "available"`, 2*time.Minute)
	if q := b.text("#volume-quota"); !strings.Contains(q, "1 of") {
		t.Errorf("quota after one 1 GB volume: %q", q)
	}

	// Attach from the volume's page to the running server.
	a := activeServer(t, acc, anc, srvName, srv.ID, c.hosts[0])
	b.open("/volumes/" + volID)
	b.do("pick the server", chromedp.SetValue(chromedp.CSS("#attach-server"), srv.ID))
	b.submit("#attach-go", "/volumes/"+volID)
	b.waitJS("volume in-use on its page", `(document.querySelector("#volume-status")||{}).textContent === "in-use"`, 3*time.Minute)
	mnt := "/mnt/" + volID
	if got := b.text("#volume-attached"); !strings.Contains(got, srvName) || !strings.Contains(got, mnt) {
		t.Errorf("volume page's attachment: %q, want %s at %s", got, srvName, mnt)
	}
	copyShot(t, b.shot("volume"), "portal-volume.png")

	// Inside the server, at the path the page shows.
	if out, err := a.exec("sh", "-c", "echo portal-volume-"+suffix+" > "+mnt+"/hello && sync && cat "+mnt+"/hello"); err != nil ||
		strings.TrimSpace(out) != "portal-volume-"+suffix {
		t.Fatalf("write and read %s in the server: %v %q", mnt, err, out)
	}
	if out, _ := a.exec("sh", "-c", "grep -c ' "+mnt+" ' /proc/mounts"); strings.TrimSpace(out) != "1" {
		t.Errorf("%s is not a mount in the server: %q", mnt, out)
	}

	// The list shows where it is attached.
	b.open("/volumes")
	if got := b.text(fmt.Sprintf(`#volumes tr[data-id=%q] .vattached`, volID)); !strings.Contains(got, srvName) {
		t.Errorf("list's Attached to: %q", got)
	}
	copyShot(t, b.shot("volumes"), "portal-volumes.png")

	// The server's page lists it; detach from there.
	b.open("/servers/" + srv.ID)
	if got := b.text("#server-volume-list"); !strings.Contains(got, name) || !strings.Contains(got, mnt) {
		t.Errorf("server page's volumes: %q", got)
	}
	evalJS[bool](b, `window.confirm = function(){return true}; true`)
	b.do("detach", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#server-volumes button[data-volume=%q]`, volID))))
	b.waitJS("detach requested", `location.search.indexOf("done=detach") >= 0 || !!document.querySelector("#error")`, 30*time.Second)
	if e := b.text("#error"); e != "" {
		t.Fatalf("detach: %s", e)
	}
	eventually(t, 3*time.Minute, "volume available after the detach", func() bool {
		out, _ := cli.try("volume", "show", volID, "-f", "value", "-c", "status")
		return strings.TrimSpace(out) == "available"
	})
	if out, _ := a.exec("sh", "-c", "grep -c ' "+mnt+" ' /proc/mounts"); strings.TrimSpace(out) != "0" {
		t.Errorf("%s still mounted after the detach: %q", mnt, out)
	}
	// Extend the available volume from its page (the button is
	// disabled while it is attached).
	b.open("/volumes/" + volID)
	b.do("new size", chromedp.SetValue(chromedp.CSS("#extend-size"), "2"))
	// Back on the volume's page; its script reloads it without the
	// "?done=extend" once the volume settles, which can be before the
	// check sees the first load, so only the path is awaited.
	b.submit("#extend-go", "/volumes/"+volID)
	eventually(t, 3*time.Minute, "volume 2 GB and available", func() bool {
		size, _ := cli.try("volume", "show", volID, "-f", "value", "-c", "size")
		st, _ := cli.try("volume", "show", volID, "-f", "value", "-c", "status")
		return strings.TrimSpace(size) == "2" && strings.TrimSpace(st) == "available"
	})
	// And attach again from the server's page: the data is still there.
	b.open("/servers/" + srv.ID)
	b.do("pick the volume", chromedp.SetValue(chromedp.CSS("#attach-volume-id"), volID))
	b.submit("#act-attach-volume", "/servers/"+srv.ID+"?done=attach")
	eventually(t, 3*time.Minute, "volume in-use again", func() bool {
		out, _ := cli.try("volume", "show", volID, "-f", "value", "-c", "status")
		return strings.TrimSpace(out) == "in-use"
	})
	if out, err := a.exec("cat", mnt+"/hello"); err != nil || strings.TrimSpace(out) != "portal-volume-"+suffix {
		t.Errorf("data after re-attach from the server page: %v %q", err, out)
	}

	// The server's usage history (kept by the cloud from the agent's
	// points): the page draws points on a time axis, with disk IO after
	// the writes above.
	portalUsageHistory(t, b, srv.ID)

	// Phone width: no page wider than the phone, the status in view.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []string{"/volumes", "/volumes/" + volID, "/servers/" + srv.ID} {
		b.open(p)
		if w := evalJS[int](b, `document.documentElement.scrollWidth - 390`); w > 0 {
			t.Errorf("page %s is %dpx wider than a 390px phone", p, w)
		}
	}
	b.open("/volumes")
	if r := evalJS[float64](b, fmt.Sprintf(`document.querySelector('#volumes tr[data-id=%q] .vstatus').getBoundingClientRect().right`, volID)); r > 390 || r <= 0 {
		t.Errorf("the volume's status is at x=%.0f at 390 px, out of view", r)
	}
	copyShot(t, b.shot("volumes-phone"), "portal-volumes-phone.png")
	b.open("/volumes/" + volID)
	for _, sel := range []string{"#extend-go", "#volume-status", "#volume-detach"} {
		if r := evalJS[float64](b, `document.querySelector("`+sel+`").getBoundingClientRect().right`); r > 390 || r <= 0 {
			t.Errorf("%s ends at x=%.0f at 390 px", sel, r)
		}
	}
	copyShot(t, b.shot("volume-phone"), "portal-volume-phone.png")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))

	// Another project: 404 for the volume and for attaching it; a reader
	// of demo: buttons disabled, the API's 403 when posted anyway.
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	other, otherPass := "pvol-other-"+suffix, "pw-"+uuid.NewString()[:8]
	admin.run("project", "create", other)
	admin.run("user", "create", "--password", otherPass, "--project", other, other)
	admin.run("role", "add", "--project", other, "--user", other, "member")
	admin.run("user", "create", "--password", otherPass, "--project", "demo", other+"-r")
	admin.run("role", "add", "--project", "demo", "--user", other+"-r", "reader")
	ob := newBrowser(t, c.portalURL(t))
	ob.login(other, otherPass, other)
	ob.open("/volumes/" + volID)
	if e := ob.text("#error"); e == "" || strings.Contains(ob.text("main"), name) {
		t.Errorf("other project's view of the volume: error %q, main %q", e, ob.text("main"))
	}
	if st := evalJS[int](ob, `fetch("/volumes/`+volID+`").then(function(r){return r.status})`); st != 404 {
		t.Errorf("other project's GET /volumes/%s: %d, want 404", volID, st)
	}
	if st := evalJS[int](ob, `fetch("/api/servers/`+srv.ID+`/usage?period=hour").then(function(r){return r.status})`); st != 404 {
		t.Errorf("other project's usage history of demo's server: %d, want 404", st)
	}
	ob.open("/volumes")
	if strings.Contains(ob.text("#volumes"), name) {
		t.Errorf("other project lists demo's volume")
	}
	rb := newBrowser(t, c.portalURL(t))
	rb.login(other+"-r", otherPass, "demo")
	rb.open("/volumes/" + volID)
	for _, sel := range []string{"#extend-go", "#volume-delete", "#volume-detach"} {
		if !evalJS[bool](rb, `document.querySelector("`+sel+`").disabled`) {
			t.Errorf("reader: %s is enabled", sel)
		}
	}
	rb.open("/volumes")
	if !evalJS[bool](rb, `document.querySelector("#volume-go").disabled`) {
		t.Errorf("reader: Create volume is enabled")
	}
	rb.open("/volumes/" + volID)
	evalJS[bool](rb, `(function(){var b=document.querySelector("#extend-go"); b.disabled=false; document.querySelector("#extend-size").value="3"; return true})()`)
	// The refusal comes back to the page the form is on, so the path
	// alone does not say the answer arrived: wait for its message.
	rb.submit("#extend-go", "/volumes/"+volID)
	rb.waitJS("the reader's extend refused", `document.readyState === "complete" && !!document.querySelector("#error") && document.querySelector("#error").innerText.trim() !== ""`, 30*time.Second)
	if out, _ := cli.try("volume", "show", volID, "-f", "value", "-c", "size"); strings.TrimSpace(out) != "2" {
		t.Errorf("reader's extend changed the size: %q", out)
	}

	// Delete: detach first (the page refuses while attached), then delete.
	if _, err := cli.try("server", "remove", "volume", srv.ID, volID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "volume available", func() bool {
		out, _ := cli.try("volume", "show", volID, "-f", "value", "-c", "status")
		return strings.TrimSpace(out) == "available"
	})
	b.open("/volumes/" + volID)
	evalJS[bool](b, `window.confirm = function(){return true}; true`)
	b.submit("#volume-delete", "/volumes?done=deleted")
	eventually(t, 2*time.Minute, "volume gone", func() bool {
		_, err := cli.try("volume", "show", volID)
		return err != nil
	})
}

// portalLaunchOptions launches two servers from the launch form with
// user data (from the file picker), a tag, an availability zone and a
// count of 2, after the quota preview said what the launch uses and
// refused a count the quota cannot hold; both servers exist with them.
func portalLaunchOptions(t *testing.T, c *cloud, b *browser, netName, img string) {
	// The subtest's t for the browser's failures.
	b = &browser{t: t, ctx: b.ctx, base: b.base, dir: b.dir}
	acc := c.computeClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	suffix := uuid.NewString()[:6]
	name := "plo-" + suffix
	ud := "#!/bin/sh\necho launched-from-the-portal-" + suffix + "\n"
	file := filepath.Join(t.TempDir(), "init.sh")
	if err := os.WriteFile(file, []byte(ud), 0o644); err != nil {
		t.Fatal(err)
	}
	b.open("/launch")
	b.do("fill the launch form", chromedp.SetValue(chromedp.CSS("#name"), name), chromedp.SetValue(chromedp.CSS("#image"), img),
		chromedp.SetValue(chromedp.CSS("#flavor"), "1"), chromedp.SetValue(chromedp.CSS("#tags"), "portal-"+suffix+", web"),
		chromedp.SetUploadFiles(chromedp.CSS("#user-data-file"), []string{file}))
	evalJS[bool](b, fmt.Sprintf(`(function(){var s=document.querySelector("#network"); var o=Array.from(s.options).find(function(o){return o.text.indexOf(%q)===0}); if(!o) return false; s.value=o.value; return true})()`, netName))
	b.waitJS("user data read from the file", fmt.Sprintf(`document.querySelector("#user-data").value === %q`, ud), 10*time.Second)
	if got := b.text("#user-data-size"); !strings.Contains(got, fmt.Sprintf("%d of 49149 bytes", len(ud))) {
		t.Errorf("user data size line: %q", got)
	}
	if zones := evalJS[int](b, `document.querySelectorAll("#zone option").length`); zones < 2 {
		t.Errorf("the zone picker has %d options, want (any) and the cloud's zones", zones)
	}
	evalJS[bool](b, `(function(){var z=document.querySelector("#zone"); z.value=z.options[1].value; return true})()`)
	setCount := func(n string) {
		evalJS[bool](b, `(function(){var c=document.querySelector("#count"); c.value=`+strconv.Quote(n)+`; c.dispatchEvent(new Event("input")); return true})()`)
	}
	// A count past the quota: Launch disabled with the reason.
	setCount("99")
	if !evalJS[bool](b, `document.querySelector("#launch-go").disabled`) {
		t.Errorf("Launch is enabled for 99 servers")
	}
	if why := b.text("#launch-why"); !strings.Contains(why, "quota") || !strings.Contains(why, "servers") {
		t.Errorf("the reason for 99 servers: %q", why)
	}
	setCount("2")
	if evalJS[bool](b, `document.querySelector("#launch-go").disabled`) {
		t.Fatalf("Launch disabled for 2 servers: %q", b.text("#launch-why"))
	}
	if p := b.text("#quota-preview"); !strings.Contains(p, "This launch uses 2 servers") || !strings.Contains(p, "vCPUs") || !strings.Contains(p, "MB RAM") {
		t.Errorf("quota preview for 2: %q", p)
	}
	b.shot("launch-options")
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	if w := evalJS[int](b, `document.documentElement.scrollWidth - 390`); w > 0 {
		t.Errorf("the launch form is %dpx wider than a 390px phone", w)
	}
	for _, sel := range []string{"#launch-go", "#quota-preview", "#user-data", "#max-count"} {
		if r := evalJS[float64](b, `document.querySelector("`+sel+`").getBoundingClientRect().right`); r > 390 || r <= 0 {
			t.Errorf("%s ends at x=%.0f at 390 px", sel, r)
		}
	}
	b.shot("launch-options-phone")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))
	b.submit("#launch-go", "/servers?done=launched")

	// Both servers, with the user data, the tags and the zone.
	var found []map[string]any
	eventually(t, 60*time.Second, "two servers launched", func() bool {
		st, body := rawV(t, acc, "2.26", "GET", "servers/detail?all_tenants=1&name=^"+name, "")
		if st != 200 {
			return false
		}
		list, _ := body["servers"].([]any)
		found = found[:0]
		for _, s := range list {
			found = append(found, s.(map[string]any))
		}
		return len(found) == 2
	})
	for _, s := range found {
		id := s["id"].(string)
		t.Cleanup(func() { _ = servers.Delete(context.Background(), demo, id).ExtractErr() })
		raw, _ := s["OS-EXT-SRV-ATTR:user_data"].(string)
		if dec, err := base64.StdEncoding.DecodeString(raw); err != nil || string(dec) != ud {
			t.Errorf("server %s user data %q (%v), want %q", s["name"], dec, err, ud)
		}
		tags := fmt.Sprint(s["tags"])
		if !strings.Contains(tags, "portal-"+suffix) || !strings.Contains(tags, "web") {
			t.Errorf("server %s tags %s", s["name"], tags)
		}
		if z, _ := s["OS-EXT-AZ:availability_zone"].(string); z == "" {
			t.Errorf("server %s has no availability zone", s["name"])
		}
	}
	for _, s := range found {
		waitStatus(t, acc, s["id"].(string), "ACTIVE", 2*time.Minute)
	}
}

// portalUsageHistory checks the server page's usage history: points on
// each chart for the last hour, a time axis, the day and week views, and
// the charts within a 390 px phone.
func portalUsageHistory(t *testing.T, b *browser, id string) {
	t.Helper()
	b.open("/servers/" + id)
	b.waitJS("usage history points", `parseInt(document.querySelector("#history-cpu").getAttribute("data-points")||"0",10) >= 5 && `+
		`parseInt(document.querySelector("#history-net").getAttribute("data-points")||"0",10) >= 10`, 90*time.Second)
	if n := evalJS[int](b, `document.querySelectorAll("#history-cpu polyline, #history-cpu circle").length`); n == 0 {
		t.Errorf("the CPU history has no line")
	}
	if ticks := evalJS[int](b, `document.querySelectorAll("#history-mem text.tick").length`); ticks != 4 {
		t.Errorf("the memory chart's time axis has %d labels, want 4", ticks)
	}
	if msg := b.text("#history-msg"); !strings.Contains(msg, "points, one per 1 s") {
		t.Errorf("history line: %q", msg)
	}
	copyShot(t, b.shot("usage-history"), "portal-usage-history.png")
	b.do("day", chromedp.Click(chromedp.CSS(`#history button[data-period="day"]`)))
	b.waitJS("day view", `document.querySelector('#history button[data-period="day"]').getAttribute("aria-pressed")==="true" && `+
		`parseInt(document.querySelector("#history-cpu").getAttribute("data-points")||"0",10) >= 5`, 30*time.Second)
	b.do("week", chromedp.Click(chromedp.CSS(`#history button[data-period="week"]`)))
	// The week shows 10-interval averages (10 s here).
	b.waitJS("week view", `/one per 10 s/.test(document.querySelector("#history-msg").textContent)`, 30*time.Second)
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.open("/servers/" + id)
	for _, sel := range []string{"#history-cpu", "#history-net", `#history button[data-period="week"]`} {
		if r := evalJS[float64](b, `document.querySelector('`+sel+`').getBoundingClientRect().right`); r > 390 || r <= 0 {
			t.Errorf("%s ends at x=%.0f at 390 px", sel, r)
		}
	}
	b.waitJS("phone usage history points", `parseInt(document.querySelector("#history-cpu").getAttribute("data-points")||"0",10) >= 5`, 30*time.Second)
	evalJS[bool](b, `document.querySelector("#history").scrollIntoView(); true`)
	copyShot(t, b.shot("usage-history-phone"), "portal-usage-history-phone.png")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))
}
