package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
)

// statusJS is the HTTP status of a GET of path in the browser's session.
func statusJS(b *browser, path string) int {
	b.t.Helper()
	return evalJS[int](b, fmt.Sprintf(`fetch(%q, {credentials: "same-origin", redirect: "manual"}).then(function(r){return r.status})`, path))
}

// TestPortalManage: what a tenant manages in the portal besides servers.
// demo uploads a docker-save tarball of the busybox base image on the
// Images page (progress bar, streamed to the image API) and a server
// boots from it; demo creates a network and a subnet (gateway, pool) on
// the Networks page, the server's port is listed there with its server;
// demo shares the image with another project, which accepts it on its
// Images page and then lists it. The other project gets 404 for demo's
// network and, before the share, for the image. Pages fit 390 px;
// screenshots go to docs/.
func TestPortalManage(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	c := startCloud(t, withBridge)
	ctx := context.Background()
	suffix := uuid.NewString()[:6]
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	dnc := c.networkClient(t, "demo", c.demoPass, "demo")
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	other, otherPass := "pm-other-"+suffix, "pw-"+uuid.NewString()[:8]
	admin.run("project", "create", other)
	admin.run("user", "create", "--password", otherPass, "--project", other, other)
	admin.run("role", "add", "--project", other, "--user", other, "member")
	otherID := strings.TrimSpace(admin.run("project", "show", "-f", "value", "-c", "id", other))

	b := newBrowser(t, c.portalURL(t))
	b.login("demo", c.demoPass, "demo")
	ob := newBrowser(t, c.portalURL(t))
	ob.login(other, otherPass, other)

	// Networks: create one and a subnet with a gateway and a pool.
	netName := "pm-net-" + suffix
	b.open("/networks")
	b.do("fill the network form", chromedp.SetValue(chromedp.CSS("#network-name"), netName))
	b.submit("#network-go", "/networks/")
	netID := strings.TrimPrefix(evalJS[string](b, `location.pathname`), "/networks/")
	t.Cleanup(func() { _ = networks.Delete(context.Background(), dnc, netID).ExtractErr() })
	b.do("fill the subnet form", chromedp.SetValue(chromedp.CSS("#subnet-cidr"), "10.84.0.0/24"),
		chromedp.SetValue(chromedp.CSS("#subnet-gateway"), "10.84.0.1"),
		chromedp.SetValue(chromedp.CSS("#subnet-pool-start"), "10.84.0.20"), chromedp.SetValue(chromedp.CSS("#subnet-pool-end"), "10.84.0.40"))
	b.submit("#subnet-go", "/networks/"+netID+"?done=subnet-created")
	if sn := b.text("#subnets"); !strings.Contains(sn, "10.84.0.0/24") || !strings.Contains(sn, "10.84.0.20 – 10.84.0.40") {
		t.Errorf("subnets after the add: %q", sn)
	}
	// A bad CIDR: the form's message, the values kept.
	b.do("bad cidr", chromedp.SetValue(chromedp.CSS("#subnet-cidr"), "10.84.0.0/99"))
	b.do("add the bad subnet", chromedp.Click(chromedp.CSS("#subnet-go")))
	b.waitJS("the refusal", `document.readyState === "complete" && location.search === "" && !!document.querySelector("#error")`, 30*time.Second)
	if e := b.text("#error"); !strings.Contains(e, "CIDR") {
		t.Errorf("bad CIDR: error %q", e)
	}
	if st := statusJS(ob, "/networks/"+netID); st != 404 {
		t.Errorf("other project's GET of demo's network: %d, want 404", st)
	}

	// Images: upload a docker-save tarball of the base image.
	h := c.hosts[0]
	tarball := filepath.Join(t.TempDir(), "pm-image.tar")
	if out, err := h.docker("save", "-o", tarball, c.baseImage); err != nil {
		t.Fatalf("docker save: %v %s", err, out)
	}
	imgName := "pm-img-" + suffix
	b.open("/images")
	b.do("choose the tarball", chromedp.SetValue(chromedp.CSS("#upload-name"), imgName),
		chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{tarball}))
	b.do("upload", chromedp.Click(chromedp.CSS("#upload-go")))
	b.waitJS("upload progress shown", `!document.getElementById("upload-progress").hidden || location.pathname.indexOf("/images/") === 0`, 30*time.Second)
	b.waitJS("uploaded", `location.search.indexOf("done=uploaded") >= 0 || document.querySelector("#upload-status.error") !== null`, 3*time.Minute)
	if e := b.text("#upload-status"); !strings.Contains(evalJS[string](b, `location.search`), "done=uploaded") {
		t.Fatalf("upload failed: %s", e)
	}
	imgID := strings.TrimPrefix(evalJS[string](b, `location.pathname`), "/images/")
	if st := b.text("#image-status"); st != "active" {
		t.Errorf("uploaded image status %q, want active", st)
	}
	copyShot(t, b.shot("image"), "portal-image.png")
	if st := statusJS(ob, "/images/"+imgID); st != 404 {
		t.Errorf("other project's GET of demo's private image: %d, want 404", st)
	}

	// Boot from it on the new network; its port shows on the network's page.
	srvName := "pm-srv-" + suffix
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: srvName, ImageRef: imgID, FlavorRef: "1",
		Networks: []servers.Network{{UUID: netID}}}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), demo, srv.ID).ExtractErr() })
	waitStatus(t, demo, srv.ID, "ACTIVE", 3*time.Minute)
	b.open("/networks/" + netID)
	link := fmt.Sprintf(`#ports a.port-server[href="/servers/%s"]`, srv.ID)
	b.waitJS("the server's port listed", fmt.Sprintf(`!!document.querySelector(%q)`, link), 10*time.Second)
	if s := b.text(link); s != srvName {
		t.Errorf("the port's server is shown as %q, want %s", s, srvName)
	}
	if p := b.text("#ports"); !strings.Contains(p, "10.84.0.") {
		t.Errorf("ports: %q, want an address of 10.84.0.0/24", p)
	}
	copyShot(t, b.shot("network"), "portal-network.png")

	// Share the image with the other project; it accepts.
	b.open("/images/" + imgID)
	b.do("share", chromedp.SetValue(chromedp.CSS("#share-member"), otherID))
	b.submit("#share-go", "/images/"+imgID+"?done=shared")
	if v := b.text("#image-visibility"); v != "shared" {
		t.Errorf("visibility after the share %q, want shared", v)
	}
	if m := b.text("#image-members"); !strings.Contains(m, otherID) || !strings.Contains(m, "pending") {
		t.Errorf("members after the share: %q", m)
	}
	ob.open("/images")
	if strings.Contains(ob.text("#images"), imgName) {
		t.Errorf("the other project lists the image before accepting it")
	}
	if p := ob.text("#shared-pending"); !strings.Contains(p, imgName) {
		t.Fatalf("the other project is not offered the image: %q", p)
	}
	copyShot(t, ob.shot("images-shared"), "portal-images.png")
	ob.submit(fmt.Sprintf(`#shared-pending tr[data-id=%q] .image-accept`, imgID), "/images?done=image-accepted")
	if !strings.Contains(ob.text("#images"), imgName) {
		t.Errorf("the accepted image is not listed: %q", ob.text("#images"))
	}
	// Not its image: no delete button, and a forged delete is refused.
	ob.open("/images/" + imgID)
	if evalJS[bool](ob, `!!document.querySelector("#image-delete")`) {
		t.Errorf("the other project is offered Delete on demo's image")
	}
	evalJS[int](ob, fmt.Sprintf(`fetch("/images/%s/delete", {method: "POST", credentials: "same-origin",
		headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "csrf=" + encodeURIComponent(document.querySelector("input[name=csrf]").value)}).then(function(r){return r.status})`, imgID))
	b.open("/images/" + imgID)
	if m := b.text("#image-members"); !strings.Contains(m, "accepted") {
		t.Errorf("members after the accept: %q", m)
	}
	// Phone width.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []string{"/images", "/images/" + imgID, "/networks", "/networks/" + netID} {
		b.open(p)
		if w := evalJS[int](b, phoneOverflowJS); w > 0 {
			t.Errorf("page %s is %dpx wider than a 390px phone", p, w)
		}
	}
	b.open("/networks/" + netID)
	copyShot(t, b.shot("network-phone"), "portal-network-phone.png")
	b.open("/images")
	copyShot(t, b.shot("images-phone"), "portal-images-phone.png")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))

	portalManageAdmin(t, c, srv.ID, srvName, other, otherID)
	portalManageAccess(t, c, srv.ID, srvName, netID, imgID, other, otherPass)

	// A throwaway network deleted from its page; the image deleted.
	b.open("/networks")
	b.do("fill the network form", chromedp.SetValue(chromedp.CSS("#network-name"), netName+"-tmp"))
	b.submit("#network-go", "/networks/")
	tmp := strings.TrimPrefix(evalJS[string](b, `location.pathname`), "/networks/")
	evalJS[bool](b, `window.confirm = function(){return true}; true`)
	b.submit("#network-delete", "/networks?done=net-deleted")
	if _, err := networks.Get(ctx, dnc, tmp).Extract(); err == nil {
		t.Errorf("network %s still exists after its delete", tmp)
	}
	b.open("/images/" + imgID)
	evalJS[bool](b, `window.confirm = function(){return true}; true`)
	b.submit("#image-delete", "/images?done=image-deleted")
	if strings.Contains(b.text("#images"), imgName) {
		t.Errorf("deleted image still listed")
	}
}

// portalManageAdmin: the admin pages show every project's servers with
// the project's name, the projects and role assignments, a quota edited
// and saved, and the migrations filter; a member gets 403 for each.
func portalManageAdmin(t *testing.T, c *cloud, srvID, srvName, other, otherID string) {
	ab := newBrowser(t, c.portalURL(t))
	ab.login("admin", c.adminPass, "admin")
	ab.open("/admin/servers")
	row := fmt.Sprintf(`#admin-servers tr[data-id=%q]`, srvID)
	if p := ab.text(row + " td.project"); p != "demo" {
		t.Errorf("all servers: demo's server %s shows project %q, want the name demo (row %q)", srvName, p, ab.text(row))
	}
	copyShot(t, ab.shot("admin-servers"), "portal-admin-servers.png")
	ab.open("/admin/projects")
	if p := ab.text("#admin-projects"); !strings.Contains(p, other) || !strings.Contains(p, "demo") {
		t.Errorf("projects: %q", p)
	}
	if a := ab.text("#admin-assignments"); !strings.Contains(a, other) || !strings.Contains(a, "member") {
		t.Errorf("role assignments lack %s's member: %q", other, a)
	}
	// A new project and a user with the member role on it.
	np := other + "-2"
	ab.do("fill the project form", chromedp.SetValue(chromedp.CSS("#project-name"), np))
	ab.submit("#project-go", "/admin/projects?done=project-created")
	if !strings.Contains(ab.text("#admin-projects"), np) {
		t.Errorf("new project %s not listed", np)
	}
	evalJS[bool](ab, fmt.Sprintf(`(function(){var s=document.querySelector("#user-project"); var o=Array.from(s.options).find(function(o){return o.text===%q}); s.value=o.value; return true})()`, np))
	ab.do("fill the user form", chromedp.SetValue(chromedp.CSS("#user-name"), np+"-u"), chromedp.SetValue(chromedp.CSS("#user-password"), "pw-"+np))
	ab.submit("#user-go", "/admin/projects?done=user-created")
	if a := ab.text("#admin-assignments"); !strings.Contains(a, np+"-u") {
		t.Errorf("the new user's role is not listed: %q", a)
	}
	nb := newBrowser(t, c.portalURL(t))
	nb.login(np+"-u", "pw-"+np, np)
	if w := nb.text("#who"); !strings.Contains(w, np) {
		t.Errorf("the user made on the admin page cannot log in to its project: %q", w)
	}
	// A quota edited.
	ab.open("/admin/quotas?project=" + otherID)
	ab.do("set instances", chromedp.SetValue(chromedp.CSS(`#quotas input[name=instances]`), "7"))
	ab.submit("#quota-go", "/admin/quotas?project="+otherID+"&done=quota-saved")
	if v := evalJS[string](ab, `document.querySelector("#quotas input[name=instances]").value`); v != "7" {
		t.Errorf("instances quota after the save: %q, want 7", v)
	}
	copyShot(t, ab.shot("admin-quotas"), "portal-admin-quotas.png")
	ab.open("/admin/migrations?status=nosuchstatus")
	if n := evalJS[int](ab, `document.querySelectorAll("#admin-migrations tbody tr[data-id]").length`); n != 0 {
		t.Errorf("migrations filtered on a status none has: %d rows", n)
	}
	ab.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, p := range []string{"/admin/servers", "/admin/projects", "/admin/quotas", "/admin/migrations"} {
		ab.open(p)
		if w := evalJS[int](ab, phoneOverflowJS); w > 0 {
			t.Errorf("page %s is %dpx wider than a 390px phone", p, w)
		}
	}
	ab.open("/admin/servers")
	copyShot(t, ab.shot("admin-servers-phone"), "portal-admin-servers-phone.png")

	// A member is refused every admin page.
	db := newBrowser(t, c.portalURL(t))
	db.login("demo", c.demoPass, "demo")
	for _, p := range []string{"/admin/servers", "/admin/projects", "/admin/quotas", "/admin/migrations"} {
		if st := statusJS(db, p); st != 403 {
			t.Errorf("member's GET %s: %d, want 403", p, st)
		}
	}
	if evalJS[bool](db, `!!document.querySelector("#admin-link")`) {
		t.Errorf("a member is shown the Admin link")
	}
}

// portalManageAccess: a generated key pair's private key downloads as a
// .pem; a reader of demo sees the write buttons disabled with a reason;
// a user with roles on two projects switches between them and the
// servers list follows.
func portalManageAccess(t *testing.T, c *cloud, srvID, srvName, netID, imgID, other, otherPass string) {
	b := newBrowser(t, c.portalURL(t))
	b.login("demo", c.demoPass, "demo")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	if _, err := chromedp.CallBrowser(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir}); err != nil {
		t.Fatalf("allow downloads: %v", err)
	}
	cancel()
	kp := "pm-key-" + uuid.NewString()[:6]
	b.open("/keypairs")
	b.do("name the key", chromedp.SetValue(chromedp.CSS("#keypair-name"), kp))
	b.submit("#keypair-go", "/keypairs")
	b.waitVisible("#private-key-download", 10*time.Second)
	b.do("download the key", chromedp.Click(chromedp.CSS("#private-key-download")))
	pem := filepath.Join(dir, kp+".pem")
	eventually(t, 20*time.Second, "the .pem downloaded", func() bool {
		st, err := os.Stat(pem)
		return err == nil && st.Size() > 0
	})
	data, _ := os.ReadFile(pem)
	if !strings.Contains(string(data), "-----BEGIN") || !strings.Contains(string(data), "PRIVATE KEY-----") {
		t.Errorf("%s.pem holds no PEM private key: %.80q", kp, data)
	}
	b.open("/keypairs")
	if evalJS[bool](b, `!!document.querySelector("#private-key-download")`) {
		t.Errorf("the private key is offered again after the first answer")
	}

	// A reader of demo.
	admin := c.openstack(t, "admin", c.adminPass, "admin")
	reader, multi := other+"-reader", other+"-multi"
	admin.run("user", "create", "--password", otherPass, "--project", "demo", reader)
	admin.run("role", "add", "--project", "demo", "--user", reader, "reader")
	rb := newBrowser(t, c.portalURL(t))
	rb.login(reader, otherPass, "demo")
	for _, p := range []string{"/servers/" + srvID, "/images", "/images/" + imgID, "/networks", "/networks/" + netID, "/keypairs", "/launch"} {
		rb.open(p)
		rb.waitJS("page scripted", `document.readyState === "complete"`, 10*time.Second)
		n := evalJS[int](rb, `Array.from(document.querySelectorAll("form[method=post] button")).filter(function(b){var a=b.form.getAttribute("action"); return a!=="/logout" && a!=="/switch-project"}).length`)
		enabled := evalJS[int](rb, `Array.from(document.querySelectorAll("form[method=post] button")).filter(function(b){var a=b.form.getAttribute("action"); return a!=="/logout" && a!=="/switch-project" && (!b.disabled || b.title.indexOf("reader")<0)}).length`)
		if n == 0 || enabled != 0 {
			t.Errorf("reader's %s: %d write buttons, %d of them enabled or without the reason", p, n, enabled)
		}
	}
	rb.open("/networks/" + netID)
	copyShot(t, rb.shot("reader"), "portal-reader.png")
	// A reader's write sent anyway is the API's 403, shown; nothing changes.
	refused := evalJS[bool](rb, fmt.Sprintf(`fetch("/networks/%s/delete", {method: "POST", credentials: "same-origin",
		headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "csrf=" + encodeURIComponent(document.querySelector("input[name=csrf]").value)}).then(function(r){return r.text()}).then(function(t){return t.indexOf('id="error"') >= 0})`, netID))
	if !refused {
		t.Errorf("the reader's network delete: no refusal shown")
	}
	if st := statusJS(rb, "/networks/"+netID); st != 200 {
		t.Errorf("the network after the reader's delete: %d, want 200", st)
	}

	// A user with roles on demo and the other project switches.
	admin.run("user", "create", "--password", otherPass, "--project", "demo", multi)
	admin.run("role", "add", "--project", "demo", "--user", multi, "member")
	admin.run("role", "add", "--project", other, "--user", multi, "member")
	mb := newBrowser(t, c.portalURL(t))
	mb.login(multi, otherPass, "demo")
	mb.open("/servers")
	if !strings.Contains(mb.text("#servers"), srvName) {
		t.Fatalf("multi on demo does not list %s: %q", srvName, mb.text("#servers"))
	}
	evalJS[bool](mb, fmt.Sprintf(`(function(){var s=document.querySelector("#switch-project"); var o=Array.from(s.options).find(function(o){return o.text===%q}); s.value=o.value; return true})()`, other))
	mb.submit("#switch-go", "/servers?done=switched")
	if w := mb.text("#who"); !strings.Contains(w, other) {
		t.Errorf("after the switch the header says %q, want project %s", w, other)
	}
	if strings.Contains(mb.text("#servers"), srvName) {
		t.Errorf("after switching to %s the servers list still shows demo's %s", other, srvName)
	}
	if st := statusJS(mb, "/servers/"+srvID); st != 404 {
		t.Errorf("after the switch demo's server answers %d, want 404", st)
	}
	copyShot(t, mb.shot("switched"), "portal-switch.png")
}
