package image_test

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/store"
)

// Image members as Glance has them: the owner shares a shared image with
// a project (pending), the member sees it, accepts it (then it is in its
// default list), rejects it; only the owner adds and removes members,
// only the member sets its status; non-members get 404, readers 403 on
// writes, no or a garbage token 401; members end with their image.
func TestImageMembers(t *testing.T) {
	e := newEnv(t, nil)
	shared := e.register("alice-shared", e.demoPID, "shared", nil)
	private := e.register("alice-private", e.demoPID, "private", nil)
	members := "/v2/images/" + shared + "/members"
	bobs := members + "/" + e.otherPID

	// Nobody but the owner sees it yet.
	e.want(e.do("GET", "/v2/images/"+shared, e.bob, nil), http.StatusNotFound)
	e.want(e.do("GET", members, e.bob, nil), http.StatusNotFound)
	e.wantError(e.do("POST", members, e.bob, map[string]any{"member": e.otherPID}), http.StatusNotFound)
	e.wantError(e.do("POST", "/v2/images/"+private+"/members", e.alice, map[string]any{"member": e.otherPID}), http.StatusForbidden)
	e.wantError(e.do("POST", members, e.reader, map[string]any{"member": e.otherPID}), http.StatusForbidden)
	e.wantError(e.do("POST", members, "", map[string]any{"member": e.otherPID}), http.StatusUnauthorized)
	e.wantError(e.do("POST", members, "garbage", map[string]any{"member": e.otherPID}), http.StatusUnauthorized)
	e.wantError(e.do("POST", members, e.alice, map[string]any{}), http.StatusBadRequest)

	m := e.want(e.do("POST", members, e.alice, map[string]any{"member": e.otherPID}), http.StatusOK).body
	if m["status"] != "pending" || m["member_id"] != e.otherPID || m["image_id"] != shared || m["schema"] != "/v2/schemas/member" {
		t.Fatalf("member %v", m)
	}
	e.wantError(e.do("POST", members, e.alice, map[string]any{"member": e.otherPID}), http.StatusConflict)

	// A pending member sees the image, not in its default list.
	e.want(e.do("GET", "/v2/images/"+shared, e.bob, nil), http.StatusOK)
	list := func(tok, q string) []string {
		return names(e.want(e.do("GET", "/v2/images"+q, tok, nil), http.StatusOK))
	}
	if got := list(e.bob, ""); len(got) != 0 {
		t.Fatalf("bob's default list with a pending membership: %v", got)
	}
	if got := list(e.bob, "?member_status=pending&visibility=shared"); !reflect.DeepEqual(got, []string{"alice-shared"}) {
		t.Fatalf("bob's pending shared list: %v", got)
	}
	e.wantError(e.do("GET", "/v2/images?member_status=bogus", e.bob, nil), http.StatusBadRequest)

	// Only the member sets its status; the owner may not.
	e.wantError(e.do("PUT", bobs, e.alice, map[string]any{"status": "accepted"}), http.StatusForbidden)
	e.wantError(e.do("PUT", bobs, e.bob, map[string]any{"status": "bogus"}), http.StatusBadRequest)
	got := e.want(e.do("PUT", bobs, e.bob, map[string]any{"status": "accepted"}), http.StatusOK).body
	if got["status"] != "accepted" {
		t.Fatalf("accepted member %v", got)
	}
	if l := list(e.bob, ""); !reflect.DeepEqual(l, []string{"alice-shared"}) {
		t.Fatalf("bob's default list with an accepted membership: %v", l)
	}
	// The owner lists every member, a member only itself.
	if ms := e.want(e.do("GET", members, e.alice, nil), http.StatusOK).body["members"].([]any); len(ms) != 1 {
		t.Fatalf("owner's member list %v", ms)
	}
	e.want(e.do("GET", bobs, e.bob, nil), http.StatusOK)
	e.want(e.do("GET", members+"/"+e.adminPID, e.bob, nil), http.StatusNotFound)
	// A member cannot remove itself or write as the owner.
	e.wantError(e.do("DELETE", bobs, e.bob, nil), http.StatusForbidden)
	e.wantError(e.do("DELETE", bobs, e.reader, nil), http.StatusForbidden)
	e.want(e.do("PUT", bobs, e.bob, map[string]any{"status": "rejected"}), http.StatusOK)
	if l := list(e.bob, ""); len(l) != 0 {
		t.Fatalf("bob's default list with a rejected membership: %v", l)
	}
	// The owner removes the member: the image is gone for it.
	e.want(e.do("DELETE", bobs, e.alice, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v2/images/"+shared, e.bob, nil), http.StatusNotFound)
	e.want(e.do("GET", bobs, e.alice, nil), http.StatusNotFound)

	// Members go with their image.
	e.want(e.do("POST", members, e.alice, map[string]any{"member": e.otherPID}), http.StatusOK)
	e.want(e.do("DELETE", "/v2/images/"+shared, e.alice, nil), http.StatusNoContent)
	var n int64
	e.st.DB.Model(&store.ImageMember{}).Where("image_id = ?", shared).Count(&n)
	if n != 0 {
		t.Fatalf("%d members left after the image's delete", n)
	}
}

// created_at / updated_at filters take Glance's operators.
func TestImageTimeFilters(t *testing.T) {
	e := newEnv(t, nil)
	old := e.register("old", e.demoPID, "private", func(i *store.Image) {
		i.CreatedAt = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		i.UpdatedAt = i.CreatedAt
	})
	// Save sets updated_at to now; put it back.
	if err := e.st.DB.Model(&store.Image{}).Where("id = ?", old).UpdateColumn("updated_at", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)).Error; err != nil {
		t.Fatal(err)
	}
	e.register("new", e.demoPID, "private", nil)
	for q, want := range map[string][]string{
		"?created_at=lt:2021-01-01T00:00:00Z":                          {"old"},
		"?created_at=gte:2021-01-01T00:00:00Z":                         {"new"},
		"?created_at=eq:2020-01-01T00:00:00Z":                          {"old"},
		"?created_at=2020-01-01T00:00:00Z":                             {"old"},
		"?created_at=neq:2020-01-01T00:00:00Z":                         {"new"},
		"?updated_at=lte:2020-01-01T00:00:00Z":                         {"old"},
		"?updated_at=gt:2020-01-01T00:00:00Z":                          {"new"},
		"?created_at=gt:2019-01-01T00:00:00Z&created_at=lt:2021-01-01": {"old"},
	} {
		if got := names(e.want(e.do("GET", "/v2/images"+q, e.alice, nil), http.StatusOK)); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", q, got, want)
		}
	}
	e.wantError(e.do("GET", "/v2/images?created_at=gte:yesterday", e.alice, nil), http.StatusBadRequest)
}

// The interoperable import: /v2/info/import offers glance-direct only;
// stage then import makes the image active with the staged bytes;
// web-download is refused, an import without staging is a 409, another
// project's image a 404.
func TestImageImportGlanceDirect(t *testing.T) {
	data := &memData{blobs: map[string][]byte{}}
	e := newEnv(t, data)
	info := e.want(e.do("GET", "/v2/info/import", e.alice, nil), http.StatusOK).body
	if v := info["import-methods"].(map[string]any)["value"]; !reflect.DeepEqual(v, []any{"glance-direct"}) {
		t.Fatalf("import methods %v", v)
	}
	created := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "imp", "container_format": "bare", "disk_format": "qcow2"}), http.StatusCreated)
	if h := created.header.Get("OpenStack-image-import-methods"); h != "glance-direct" {
		t.Errorf("create's OpenStack-image-import-methods header %q, want glance-direct", h)
	}
	id := created.body["id"].(string)
	imp := "/v2/images/" + id + "/import"
	e.wantError(e.do("POST", imp, e.alice, map[string]any{"method": map[string]any{"name": "glance-direct"}}), http.StatusConflict)
	e.wantError(e.do("PUT", "/v2/images/"+id+"/stage", e.bob, []byte("x"), "Content-Type", "application/octet-stream"), http.StatusNotFound)
	e.wantError(e.do("PUT", "/v2/images/"+id+"/stage", e.reader, []byte("x"), "Content-Type", "application/octet-stream"), http.StatusForbidden)
	e.want(e.do("PUT", "/v2/images/"+id+"/stage", e.alice, []byte("qcow bytes"), "Content-Type", "application/octet-stream"), http.StatusNoContent)
	if st := e.want(e.do("GET", "/v2/images/"+id, e.alice, nil), http.StatusOK).body["status"]; st != image.StatusUploading {
		t.Fatalf("staged image status %v", st)
	}
	e.wantError(e.do("POST", imp, e.alice, map[string]any{"method": map[string]any{"name": "web-download", "uri": "http://example.com/x"}}), http.StatusBadRequest)
	e.wantError(e.do("POST", imp, e.bob, map[string]any{"method": map[string]any{"name": "glance-direct"}}), http.StatusNotFound)
	e.wantError(e.do("POST", imp, e.reader, map[string]any{"method": map[string]any{"name": "glance-direct"}}), http.StatusForbidden)
	e.want(e.do("POST", imp, e.alice, map[string]any{"method": map[string]any{"name": "glance-direct"}}), http.StatusAccepted)
	r := e.want(e.do("GET", "/v2/images/"+id, e.alice, nil), http.StatusOK)
	if r.body["status"] != "active" || r.body["size"] != float64(10) || r.body["disk_format"] != "qcow2" || r.body["container_format"] != "bare" {
		t.Fatalf("imported image %s", r.raw)
	}
	if d := e.want(e.do("GET", "/v2/images/"+id+"/file", e.alice, nil), http.StatusOK); string(d.raw) != "qcow bytes" {
		t.Fatalf("imported data %q", d.raw)
	}
	e.wantError(e.do("POST", imp, e.alice, map[string]any{"method": map[string]any{"name": "glance-direct"}}), http.StatusConflict)
	if err := image.Bootable(&store.Image{ID: id, ContainerFormat: "bare", DiskFormat: "qcow2"}); err == nil {
		t.Fatal("a bare qcow2 image is bootable")
	}
	if err := image.Bootable(&store.Image{ID: id, ContainerFormat: "docker", DiskFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
}

// Additional properties as gophercloud's and OSC's create sends them
// ("properties" a string among them), JSON-patched, returned flat and
// filterable.
func TestImageCustomProperties(t *testing.T) {
	e := newEnv(t, nil)
	r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "p", "container_format": "bare", "disk_format": "qcow2",
		"architecture": "x86_64", "os_distro": "cirros", "properties": "{'hypervisor_type': 'qemu'}"}), http.StatusCreated)
	id := r.body["id"].(string)
	if r.body["properties"] != "{'hypervisor_type': 'qemu'}" || r.body["os_distro"] != "cirros" {
		t.Fatalf("created %s", r.raw)
	}
	patch := []map[string]any{{"op": "add", "path": "/hw_disk_bus", "value": "virtio"}, {"op": "replace", "path": "/os_distro", "value": "ubuntu"},
		{"op": "remove", "path": "/architecture"}}
	r = e.want(e.do("PATCH", "/v2/images/"+id, e.alice, patch, "Content-Type", "application/openstack-images-v2.1-json-patch"), http.StatusOK)
	if r.body["hw_disk_bus"] != "virtio" || r.body["os_distro"] != "ubuntu" || r.body["architecture"] != nil {
		t.Fatalf("patched %s", r.raw)
	}
	if got := names(e.want(e.do("GET", "/v2/images?os_distro=ubuntu", e.alice, nil), http.StatusOK)); !reflect.DeepEqual(got, []string{"p"}) {
		t.Fatalf("os_distro filter %v", got)
	}
	if got := names(e.want(e.do("GET", "/v2/images?os_distro=cirros", e.alice, nil), http.StatusOK)); len(got) != 0 {
		t.Fatalf("stale os_distro filter %v", got)
	}
}
