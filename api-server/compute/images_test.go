package compute

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// TestImageProxySnapshotFlow is Tempest's snapshot wait below 2.36: the
// snapshot is SAVING (with its server) through the proxy until its push
// lands, then ACTIVE, and the next createImage is accepted.
func TestImageProxySnapshotFlow(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	id := f.create("demo", "snap")
	f.placeActive(id, 2)
	cond := conductor.New(f.st, f.bus, config.Conductor{}, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	resp, _ := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"createImage":{"name":"snap-1","metadata":{"k":"v"}}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("createImage: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	img := loc[strings.LastIndex(loc, "/")+1:]
	v := apiVersion{2, 1}
	body := f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/images/" + img, "", "images", "get_image"})
	got := body["image"].(map[string]any)
	if got["status"] != "SAVING" || got["progress"] != float64(25) || got["server"].(map[string]any)["id"] != id ||
		got["metadata"].(map[string]any)["k"] != "v" || got["metadata"].(map[string]any)["image_type"] != "snapshot" {
		t.Errorf("saving snapshot = %v", got)
	}
	var req protocol.SnapshotInstance
	sent := f.bus.Sent(bus.ComputeQueue("h1"))
	if err := sent[len(sent)-1].Decode(&req); err != nil {
		t.Fatal(err)
	}
	f.snapshotReport(cond, protocol.SnapshotReport{RequestID: req.RequestID, InstanceID: id, ImageID: img, Host: "h1",
		Ref: req.Ref, OK: true, Digest: "sha256:abc", Size: 1234})
	body = f.check(t, ts, v, contractCall{"demo", "GET", "/v2.1/images/" + img, "", "images", "get_image"})
	got = body["image"].(map[string]any)
	if got["status"] != "ACTIVE" || got["progress"] != float64(100) || got["OS-EXT-IMG-SIZE:size"] != float64(1234) ||
		got["minRam"] != float64(128) || got["minDisk"] != float64(1) {
		t.Errorf("active snapshot = %v", got)
	}
	if resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"createImage":{"name":"snap-2"}}`); resp.StatusCode != 202 {
		t.Errorf("second createImage once the first is ACTIVE: %d %v", resp.StatusCode, body)
	}
	// Filters: the server's snapshots, by type and status.
	for q, want := range map[string]int{"server=" + id: 2, "type=snapshot": 2, "status=ACTIVE": 2, "status=SAVING": 1,
		"name=snap-1": 1, "minRam=129": 0, "server=" + imageID: 0} {
		_, body := f.do("GET", "/v2.1/images/detail?"+q, "demo", "")
		if n := len(body["images"].([]any)); n != want {
			t.Errorf("images?%s lists %d, want %d", q, n, want)
		}
	}
}

func TestImageProxyContract(t *testing.T) {
	f := newFixture(t)
	ts := loadTempestSchemas(t)
	size := int64(10)
	f.st.DB.Create(&store.Image{ID: "11111111-2222-3333-4444-000000000001", Name: "mine", Owner: "p-demo", Visibility: "private",
		Status: "active", ContainerFormat: "docker", DiskFormat: "raw", Size: &size, Properties: `{"a":"1","tags":"[\"t\"]"}`})
	f.st.DB.Create(&store.Image{ID: "11111111-2222-3333-4444-000000000002", Name: "theirs", Owner: "p-other", Visibility: "private",
		Status: "queued", ContainerFormat: "docker", DiskFormat: "raw"})
	mine, theirs := "11111111-2222-3333-4444-000000000001", "11111111-2222-3333-4444-000000000002"
	for m := 1; m < 36; m++ {
		v := apiVersion{2, m}
		for _, tok := range []string{"demo", "admin"} {
			body := f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/images", "", "images", "list_images"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/images?limit=1", "", "images", "list_images"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/images/detail", "", "images", "list_images_details"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/images/" + mine, "", "images", "get_image"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/images/" + imageID, "", "images", "get_image"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/images/" + mine + "/metadata", "", "images", "image_metadata"})
			f.check(t, ts, v, contractCall{tok, "GET", "/v2.1/images/" + mine + "/metadata/a", "", "images", "image_meta_item"})
			want := 2
			if tok == "admin" {
				want = 3
			}
			if n := len(body["images"].([]any)); n != want {
				t.Errorf("%s at %s lists %d images, want %d", tok, v, n, want)
			}
		}
	}
	_, body := f.do("GET", "/v2.1/images/"+mine+"/metadata", "demo", "")
	if md := body["metadata"].(map[string]any); len(md) != 1 || md["a"] != "1" {
		t.Errorf("metadata shows internal keys or misses some: %v", md)
	}
	// Writes, each against Tempest's schema.
	v := apiVersion{2, 35}
	body = f.check(t, ts, v, contractCall{"demo", "POST", "/v2.1/images/" + mine + "/metadata", `{"metadata":{"b":"2"}}`, "images", "image_metadata"})
	if md := body["metadata"].(map[string]any); len(md) != 2 || md["b"] != "2" {
		t.Errorf("update metadata = %v", md)
	}
	body = f.check(t, ts, v, contractCall{"demo", "PUT", "/v2.1/images/" + mine + "/metadata", `{"metadata":{"c":"3"}}`, "images", "image_metadata"})
	if md := body["metadata"].(map[string]any); len(md) != 1 || md["c"] != "3" {
		t.Errorf("replace metadata = %v", md)
	}
	f.check(t, ts, v, contractCall{"demo", "PUT", "/v2.1/images/" + mine + "/metadata/d", `{"meta":{"d":"4"}}`, "images", "image_meta_item"})
	f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/images/" + mine + "/metadata/c", "", "images", "delete"})
	var img store.Image
	f.st.DB.Where("id = ?", mine).First(&img)
	if img.Properties != `{"d":"4","tags":"[\"t\"]"}` {
		t.Errorf("stored properties %s: the image's tags must survive metadata writes", img.Properties)
	}
	for _, c := range []struct {
		method, path, body string
		status             int
		fault              string
	}{
		{"DELETE", "/v2.1/images/" + mine + "/metadata/nope", "", 404, "itemNotFound"},
		{"GET", "/v2.1/images/" + mine + "/metadata/nope", "", 404, "itemNotFound"},
		{"PUT", "/v2.1/images/" + mine + "/metadata/x", `{"meta":{"y":"1"}}`, 400, "badRequest"},
		{"PUT", "/v2.1/images/" + mine + "/metadata/x", `{"meta":{"x":"1","y":"2"}}`, 400, "badRequest"},
		{"POST", "/v2.1/images/" + mine + "/metadata", `{"metadata":{"status":"active"}}`, 403, "forbidden"},
		{"POST", "/v2.1/images/" + mine + "/metadata", `{"metadata":{"k":1}}`, 400, "badRequest"},
		// Another project's image does not exist for the caller; a
		// public one is not the caller's to change.
		{"GET", "/v2.1/images/" + theirs, "", 404, "itemNotFound"},
		{"GET", "/v2.1/images/" + theirs + "/metadata", "", 404, "itemNotFound"},
		{"POST", "/v2.1/images/" + theirs + "/metadata", `{"metadata":{"a":"1"}}`, 404, "itemNotFound"},
		{"DELETE", "/v2.1/images/" + theirs, "", 404, "itemNotFound"},
		{"POST", "/v2.1/images/" + imageID + "/metadata", `{"metadata":{"a":"1"}}`, 403, "forbidden"},
		{"DELETE", "/v2.1/images/" + imageID, "", 403, "forbidden"},
	} {
		resp, body := f.do(c.method, c.path, "demo", c.body)
		expectFault(t, resp, body, c.status, c.fault)
	}
	// A reader may look, not change.
	if resp, _ := f.do("GET", "/v2.1/images/"+mine, "read", ""); resp.StatusCode != 200 {
		t.Errorf("reader show: %d", resp.StatusCode)
	}
	for _, c := range [][3]string{{"DELETE", "/v2.1/images/" + mine, ""}, {"POST", "/v2.1/images/" + mine + "/metadata", `{"metadata":{"a":"1"}}`},
		{"DELETE", "/v2.1/images/" + mine + "/metadata/d", ""}} {
		resp, body := f.do(c[0], c[1], "read", c[2])
		expectFault(t, resp, body, 403, "forbidden")
	}
	for _, tok := range []string{"", "garbage"} {
		if resp, _ := f.do("GET", "/v2.1/images", tok, ""); resp.StatusCode != 401 {
			t.Errorf("token %q: %d", tok, resp.StatusCode)
		}
	}
	// Gone from 2.36, as Nova.
	for _, p := range []string{"/v2.1/images", "/v2.1/images/detail", "/v2.1/images/" + mine, "/v2.1/images/" + mine + "/metadata"} {
		resp, body := f.do("GET", p, "demo", "", "X-OpenStack-Nova-API-Version", "2.36")
		expectFault(t, resp, body, 404, "itemNotFound")
	}
	f.check(t, ts, v, contractCall{"demo", "DELETE", "/v2.1/images/" + mine, "", "images", "delete"})
	resp, body := f.do("GET", "/v2.1/images/"+mine, "demo", "")
	expectFault(t, resp, body, 404, "itemNotFound")
	f.check(t, ts, v, contractCall{"admin", "DELETE", "/v2.1/images/" + theirs, "", "images", "delete"})
}

// TestImageProxyListPages: the proxy's list pages in the database, newest
// first with the id breaking ties; a walk over its images_links gives the
// one-page list, filters included, and a marker outside the list is a 400.
func TestImageProxyListPages(t *testing.T) {
	f := newFixture(t)
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i := range 9 {
		img := store.Image{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), Name: fmt.Sprintf("img-%d", i),
			Owner: "p-demo", Visibility: "private", Status: "active", ContainerFormat: "docker", DiskFormat: "raw",
			CreatedAt: base.Add(time.Duration(i/3) * time.Second)}
		if i%2 == 0 {
			img.Properties = `{"image_type":"snapshot"}`
		}
		if i == 8 {
			img.Owner = "p-other" // not the caller's
		}
		if err := f.st.DB.Create(&img).Error; err != nil {
			t.Fatal(err)
		}
	}
	walk := func(path string) []string {
		t.Helper()
		var ids []string
		for pages := 0; path != ""; pages++ {
			resp, body := f.do("GET", path, "demo", "")
			if resp.StatusCode != 200 || pages > 20 {
				t.Fatalf("GET %s: %d %v", path, resp.StatusCode, body)
			}
			for _, i := range body["images"].([]any) {
				ids = append(ids, i.(map[string]any)["id"].(string))
			}
			path = ""
			if links, _ := body["images_links"].([]any); len(links) > 0 {
				u, _ := url.Parse(links[0].(map[string]any)["href"].(string))
				path = u.RequestURI()
			}
		}
		return ids
	}
	for _, q := range []string{"", "type=snapshot", "status=ACTIVE&name=img-3"} {
		one := walk("/v2.1/images/detail?" + q)
		if q == "" && (len(one) != 9 || one[0] != imageID || one[1] != "00000000-0000-0000-0000-000000000007" || slices.Contains(one, "00000000-0000-0000-0000-000000000008")) {
			// The public busybox (made now), then the project's 8, newest first, ties by id descending.
			t.Fatalf("one page: %v", one)
		}
		for _, limit := range []int{1, 2, 4} {
			if got := walk(fmt.Sprintf("/v2.1/images?limit=%d&%s", limit, q)); !slices.Equal(got, one) {
				t.Fatalf("%q by pages of %d: %v, want %v", q, limit, got, one)
			}
		}
	}
	for _, marker := range []string{"00000000-0000-0000-0000-000000000008", "00000000-0000-0000-0000-000000000001&type=snapshot", "nope"} {
		if resp, body := f.do("GET", "/v2.1/images?marker="+marker, "demo", ""); resp.StatusCode != 400 {
			t.Errorf("marker %s: %d %v, want 400", marker, resp.StatusCode, body)
		}
	}
}
