package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	b.submit("#subnet-go", "/networks/"+netID)
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
