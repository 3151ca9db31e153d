package image_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env runs identity and image on their own test servers, with the
// catalog pointing at them.
type env struct {
	t        *testing.T
	st       *store.Store
	idSrv    *httptest.Server
	imgSrv   *httptest.Server
	admin    string // token, project "admin", roles admin+member
	alice    string // token, project "demo", member
	bob      string // token, project "other", member
	reader   string // token, project "demo", reader only
	adminPID string
	demoPID  string
	otherPID string
}

func port(t *testing.T, u string) int {
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(pu.Port())
	return p
}

func newEnv(t *testing.T, data image.Data, tune ...func(*image.Options)) *env {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite", filepath.Join(t.TempDir(), "capsule.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newEnvOn(t, st, data, tune...)
}

// newEnvOn is newEnv on the store st.
func newEnvOn(t *testing.T, st *store.Store, data image.Data, tune ...func(*image.Options)) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, st: st}
	for _, r := range []string{"admin", "member", "reader"} {
		if _, err := identity.EnsureRole(ctx, st, r); err != nil {
			t.Fatal(err)
		}
	}
	for name, dst := range map[string]*string{"admin": &e.adminPID, "demo": &e.demoPID, "other": &e.otherPID} {
		p, err := identity.EnsureProject(ctx, st, name, "")
		if err != nil {
			t.Fatal(err)
		}
		*dst = p.ID
	}
	for _, u := range [][2]string{{"admin", "admin"}, {"alice", "demo"}, {"bob", "other"}, {"rita", "demo"}} {
		if _, err := identity.EnsureUser(ctx, st, u[0], "pw-"+u[0], u[1], identity.MinPasswordHashRounds); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range [][3]string{{"admin", "admin", "admin"}, {"admin", "admin", "member"}, {"alice", "demo", "member"},
		{"bob", "other", "member"}, {"rita", "demo", "reader"}} {
		if err := identity.Grant(ctx, st, g[0], g[1], g[2]); err != nil {
			t.Fatal(err)
		}
	}
	// Start both servers first so the catalog can name their ports.
	var idH, imgH http.Handler
	e.idSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { idH.ServeHTTP(w, r) }))
	t.Cleanup(e.idSrv.Close)
	e.imgSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { imgH.ServeHTTP(w, r) }))
	t.Cleanup(e.imgSrv.Close)
	ids := identity.New(st, identity.Options{PublicHost: "127.0.0.1", Logger: quiet(), PasswordHashRounds: identity.MinPasswordHashRounds,
		Ports: identity.Ports{Identity: port(t, e.idSrv.URL), Image: port(t, e.imgSrv.URL)}})
	idH = ids.Handler()
	opts := image.Options{Validator: ids, Data: data, Logger: quiet()}
	for _, f := range tune {
		f(&opts)
	}
	imgH = image.New(st, opts).Handler()
	e.admin = e.token("admin")
	e.alice = e.token("alice")
	e.bob = e.token("bob")
	e.reader = e.token("rita")
	return e
}

func (e *env) token(user string) string {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"auth": map[string]any{"identity": map[string]any{"methods": []string{"password"},
		"password": map[string]any{"user": map[string]any{"name": user, "domain": map[string]any{"id": "default"}, "password": "pw-" + user}}}}})
	res, err := http.Post(e.idSrv.URL+"/v3/auth/tokens", "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		e.t.Fatalf("token for %s: %d", user, res.StatusCode)
	}
	return res.Header.Get("X-Subject-Token")
}

type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (e *env) do(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, e.imgSrv.URL+path, rd)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 && res.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("%s %s: bad JSON %q", method, path, raw)
		}
	}
	if res.Header.Get("x-openstack-request-id") == "" {
		e.t.Errorf("%s %s: no request id", method, path)
	}
	return out
}

func (e *env) want(r resp, status int) resp {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

func (e *env) wantError(r resp, status int) {
	e.t.Helper()
	e.want(r, status)
	if r.body["code"] != float64(status) || r.body["title"] == "" || r.body["message"] == "" {
		e.t.Fatalf("error body %s", r.raw)
	}
}

// register adds an image row directly.
func (e *env) register(name, owner string, vis string, mutate func(*store.Image)) string {
	e.t.Helper()
	img, err := image.Register(context.Background(), e.st, name, "127.0.0.1:5050/capsule/"+name+":latest", 1000, owner, vis == "public")
	if err != nil {
		e.t.Fatal(err)
	}
	if vis != "public" || mutate != nil {
		img.Visibility = vis
		if mutate != nil {
			mutate(&img)
		}
		if err := e.st.DB.Save(&img).Error; err != nil {
			e.t.Fatal(err)
		}
	}
	return img.ID
}

func names(r resp) []string {
	var out []string
	for _, i := range r.body["images"].([]any) {
		out = append(out, i.(map[string]any)["name"].(string))
	}
	sort.Strings(out)
	return out
}

func TestVersions(t *testing.T) {
	e := newEnv(t, nil)
	for _, p := range []string{"/", "/versions"} {
		r := e.want(e.do("GET", p, "", nil), http.StatusMultipleChoices)
		vs := r.body["versions"].([]any)
		first := vs[0].(map[string]any)
		if first["id"] != "v2.9" || first["status"] != "CURRENT" {
			t.Fatalf("versions %s", r.raw)
		}
		for _, v := range vs {
			v := v.(map[string]any)
			if v["status"] != "CURRENT" && v["status"] != "SUPPORTED" {
				t.Fatalf("status %v", v["status"])
			}
			if href := v["links"].([]any)[0].(map[string]any)["href"]; href != e.imgSrv.URL+"/v2/" {
				t.Fatalf("href %v", href)
			}
		}
	}
}

var glanceTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

func TestImageShapeAndShow(t *testing.T) {
	e := newEnv(t, nil)
	id := e.register("busybox", e.adminPID, "public", func(img *store.Image) {
		img.Properties = `{"image_type":"snapshot","instance_uuid":"abc","tags":"[\"t1\"]"}`
	})
	// Register is idempotent by name + reference.
	again, err := image.Register(context.Background(), e.st, "busybox", "127.0.0.1:5050/capsule/busybox:latest", 1000, e.adminPID, true)
	if err != nil || again.ID != id {
		t.Fatalf("Register not idempotent: %v %v", again.ID, err)
	}
	r := e.want(e.do("GET", "/v2/images/"+id, e.alice, nil), http.StatusOK)
	b := r.body
	want := []string{"checksum", "container_format", "created_at", "disk_format", "file", "id", "image_type", "instance_uuid",
		"min_disk", "min_ram", "name", "os_hash_algo", "os_hash_value", "os_hidden", "owner", "protected", "schema", "self",
		"size", "status", "tags", "updated_at", "virtual_size", "visibility"}
	var got []string
	for k := range b {
		got = append(got, k)
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("keys %v\nwant %v", got, want)
	}
	if b["container_format"] != "docker" || b["disk_format"] != "raw" || b["status"] != "active" || b["size"] != float64(1000) ||
		b["self"] != "/v2/images/"+id || b["file"] != "/v2/images/"+id+"/file" || b["schema"] != "/v2/schemas/image" ||
		b["image_type"] != "snapshot" || b["owner"] != e.adminPID || b["checksum"] != nil ||
		!reflect.DeepEqual(b["tags"], []any{"t1"}) {
		t.Fatalf("image %s", r.raw)
	}
	if !glanceTime.MatchString(b["created_at"].(string)) || !glanceTime.MatchString(b["updated_at"].(string)) {
		t.Fatalf("dates %v %v", b["created_at"], b["updated_at"])
	}
	e.wantError(e.do("GET", "/v2/images/nope", e.alice, nil), http.StatusNotFound)
	e.wantError(e.do("GET", "/v2/images/"+id, "", nil), http.StatusUnauthorized)
	e.wantError(e.do("GET", "/v2/images/"+id, "bad", nil), http.StatusUnauthorized)
	e.want(e.do("GET", "/v2/images/"+id+"/", e.alice, nil), http.StatusOK) // trailing slash
	s := e.want(e.do("GET", "/v2/schemas/image", e.alice, nil), http.StatusOK)
	if s.body["name"] != "image" {
		t.Fatalf("schema %s", s.raw)
	}
	e.want(e.do("GET", "/v2/schemas/images", e.alice, nil), http.StatusOK)
}

func TestVisibility(t *testing.T) {
	e := newEnv(t, nil)
	e.register("pub", e.adminPID, "public", nil)
	adminPriv := e.register("admin-private", e.adminPID, "private", nil)
	e.register("alice-private", e.demoPID, "private", nil)
	e.register("alice-shared", e.demoPID, "shared", nil)
	bobPriv := e.register("bob-private", e.otherPID, "private", nil)
	comm := e.register("bob-community", e.otherPID, "community", nil)
	e.register("alice-hidden", e.demoPID, "private", func(i *store.Image) { i.Hidden = true })

	list := func(tok, q string) []string {
		return names(e.want(e.do("GET", "/v2/images"+q, tok, nil), http.StatusOK))
	}
	if got := list(e.alice, ""); !reflect.DeepEqual(got, []string{"alice-private", "alice-shared", "pub"}) {
		t.Fatalf("alice default list %v", got)
	}
	if got := list(e.bob, ""); !reflect.DeepEqual(got, []string{"bob-community", "bob-private", "pub"}) {
		t.Fatalf("bob default list %v", got)
	}
	if got := list(e.alice, "?visibility=community"); !reflect.DeepEqual(got, []string{"bob-community"}) {
		t.Fatalf("community list %v", got)
	}
	if got := list(e.alice, "?visibility=private"); !reflect.DeepEqual(got, []string{"alice-private"}) {
		t.Fatalf("private list %v", got)
	}
	if got := list(e.alice, "?os_hidden=true"); !reflect.DeepEqual(got, []string{"alice-hidden"}) {
		t.Fatalf("hidden list %v", got)
	}
	if got := list(e.admin, ""); !reflect.DeepEqual(got, []string{"admin-private", "alice-private", "alice-shared", "bob-private", "pub"}) {
		t.Fatalf("admin default list %v", got)
	}
	e.wantError(e.do("GET", "/v2/images?visibility=bogus", e.alice, nil), http.StatusBadRequest)
	e.want(e.do("GET", "/v2/images/"+adminPriv, e.alice, nil), http.StatusNotFound)
	e.want(e.do("GET", "/v2/images/"+bobPriv, e.alice, nil), http.StatusNotFound)
	e.want(e.do("GET", "/v2/images/"+comm, e.alice, nil), http.StatusOK)
	e.want(e.do("GET", "/v2/images/"+bobPriv, e.admin, nil), http.StatusOK)
}

func TestPagingFiltersAndSort(t *testing.T) {
	e := newEnv(t, nil)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, n := range []string{"img-c", "img-a", "img-e", "img-b", "img-d"} {
		i := i
		e.register(n, e.demoPID, "private", func(img *store.Image) {
			img.CreatedAt = base.Add(time.Duration(i) * time.Minute)
			sz := int64(100 * (i + 1))
			img.Size = &sz
			if i%2 == 0 {
				img.Properties = `{"image_type":"backup","tags":"[\"even\"]"}`
			}
		})
	}
	// Default order: created_at desc.
	var seen []string
	path := "/v2/images?limit=2"
	pages := 0
	for path != "" {
		r := e.want(e.do("GET", path, e.alice, nil), http.StatusOK)
		pages++
		if r.body["first"] == nil || r.body["schema"] != "/v2/schemas/images" {
			t.Fatalf("list envelope %s", r.raw)
		}
		for _, i := range r.body["images"].([]any) {
			seen = append(seen, i.(map[string]any)["name"].(string))
		}
		next, _ := r.body["next"].(string)
		path = next
		if pages > 5 {
			t.Fatal("next never ends")
		}
	}
	if want := []string{"img-d", "img-b", "img-e", "img-a", "img-c"}; !reflect.DeepEqual(seen, want) || pages != 3 {
		t.Fatalf("paged %v in %d pages, want %v in 3", seen, pages, want)
	}
	// Exactly one page: no next.
	r := e.want(e.do("GET", "/v2/images?limit=5", e.alice, nil), http.StatusOK)
	if _, has := r.body["next"]; has {
		t.Fatalf("next on the last page: %s", r.raw)
	}
	r = e.want(e.do("GET", "/v2/images?sort_key=name&sort_dir=asc", e.alice, nil), http.StatusOK)
	var order []string
	for _, i := range r.body["images"].([]any) {
		order = append(order, i.(map[string]any)["name"].(string))
	}
	if !slices.IsSorted(order) || len(order) != 5 {
		t.Fatalf("sorted by name %v", order)
	}
	r = e.want(e.do("GET", "/v2/images?sort=size:desc", e.alice, nil), http.StatusOK)
	if n := r.body["images"].([]any)[0].(map[string]any)["name"]; n != "img-d" {
		t.Fatalf("sort=size:desc first %v", n)
	}
	check := func(q string, want ...string) {
		t.Helper()
		if got := names(e.want(e.do("GET", "/v2/images"+q, e.alice, nil), http.StatusOK)); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: %v, want %v", q, got, want)
		}
	}
	check("?name=img-b", "img-b")
	check("?tag=even", "img-c", "img-d", "img-e")
	check("?image_type=backup", "img-c", "img-d", "img-e")
	check("?size_min=300&size_max=400", "img-b", "img-e")
	check("?status=queued")
	check("?container_format=docker&disk_format=raw", "img-a", "img-b", "img-c", "img-d", "img-e")
	e.wantError(e.do("GET", "/v2/images?marker=nope", e.alice, nil), http.StatusBadRequest)
	e.wantError(e.do("GET", "/v2/images?sort_key=bogus", e.alice, nil), http.StatusBadRequest)
	e.wantError(e.do("GET", "/v2/images?limit=x", e.alice, nil), http.StatusBadRequest)
}

func TestDelete(t *testing.T) {
	e := newEnv(t, nil)
	pub := e.register("pub", e.adminPID, "public", nil)
	mine := e.register("mine", e.demoPID, "private", nil)
	prot := e.register("prot", e.demoPID, "private", func(i *store.Image) { i.Protected = true })
	e.wantError(e.do("DELETE", "/v2/images/"+pub, e.alice, nil), http.StatusForbidden)
	e.wantError(e.do("DELETE", "/v2/images/"+mine, e.bob, nil), http.StatusNotFound)
	e.wantError(e.do("DELETE", "/v2/images/"+mine, e.reader, nil), http.StatusForbidden)
	e.wantError(e.do("DELETE", "/v2/images/"+prot, e.alice, nil), http.StatusForbidden)
	r := e.want(e.do("DELETE", "/v2/images/"+mine, e.alice, nil), http.StatusNoContent)
	if len(r.raw) != 0 {
		t.Fatal("204 with a body")
	}
	e.want(e.do("GET", "/v2/images/"+mine, e.alice, nil), http.StatusNotFound)
	e.want(e.do("DELETE", "/v2/images/"+pub, e.admin, nil), http.StatusNoContent)
}

func TestCreatePatchTags(t *testing.T) {
	e := newEnv(t, nil)
	r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "snap", "container_format": "docker",
		"disk_format": "raw", "tags": []string{"a"}, "owner_specified.openstack.md5": "", "min_ram": 64}), http.StatusCreated)
	id := r.body["id"].(string)
	if r.body["status"] != "queued" || r.body["visibility"] != "shared" || r.body["size"] != nil || r.body["owner"] != e.demoPID ||
		r.body["owner_specified.openstack.md5"] != "" || r.body["min_ram"] != float64(64) {
		t.Fatalf("created %s", r.raw)
	}
	e.wantError(e.do("POST", "/v2/images", e.alice, map[string]any{"id": id}), http.StatusConflict)
	e.wantError(e.do("POST", "/v2/images", e.alice, map[string]any{"status": "active"}), http.StatusForbidden)
	e.wantError(e.do("POST", "/v2/images", e.alice, map[string]any{"visibility": "public"}), http.StatusForbidden)
	e.wantError(e.do("POST", "/v2/images", e.alice, map[string]any{"disk_format": "floppy"}), http.StatusBadRequest)
	e.wantError(e.do("POST", "/v2/images", e.reader, map[string]any{"name": "x"}), http.StatusForbidden)

	patch := func(tok string, ops any, ct string) resp {
		b, _ := json.Marshal(ops)
		return e.do("PATCH", "/v2/images/"+id, tok, b, "Content-Type", ct)
	}
	const ct21 = "application/openstack-images-v2.1-json-patch"
	r = e.want(patch(e.alice, []map[string]any{{"op": "replace", "path": "/name", "value": "snap2"},
		{"op": "add", "path": "/hw_cpu_cores", "value": "1"}, {"op": "add", "path": "/speed", "value": "fast"}}, ct21), http.StatusOK)
	if r.body["name"] != "snap2" || r.body["hw_cpu_cores"] != "1" {
		t.Fatalf("patched %s", r.raw)
	}
	// Tempest's older patch form.
	r = e.want(patch(e.alice, []map[string]any{{"remove": "/speed"}, {"replace": "/min_disk", "value": 1}},
		"application/openstack-images-v2.0-json-patch"), http.StatusOK)
	if _, has := r.body["speed"]; has || r.body["min_disk"] != float64(1) {
		t.Fatalf("patched (2.0) %s", r.raw)
	}
	e.wantError(patch(e.alice, []map[string]any{{"op": "remove", "path": "/speed"}}, ct21), http.StatusConflict)
	e.wantError(patch(e.alice, []map[string]any{{"op": "replace", "path": "/status", "value": "active"}}, ct21), http.StatusForbidden)
	e.wantError(patch(e.alice, []map[string]any{{"op": "replace", "path": "/name", "value": "x"}}, "application/json"), http.StatusUnsupportedMediaType)
	e.wantError(patch(e.bob, []map[string]any{{"op": "replace", "path": "/name", "value": "x"}}, ct21), http.StatusNotFound)

	e.want(e.do("PUT", "/v2/images/"+id+"/tags/b", e.alice, nil), http.StatusNoContent)
	e.want(e.do("DELETE", "/v2/images/"+id+"/tags/a", e.alice, nil), http.StatusNoContent)
	e.wantError(e.do("DELETE", "/v2/images/"+id+"/tags/a", e.alice, nil), http.StatusNotFound)
	r = e.want(e.do("GET", "/v2/images/"+id, e.alice, nil), http.StatusOK)
	if !reflect.DeepEqual(r.body["tags"], []any{"b"}) {
		t.Fatalf("tags %v", r.body["tags"])
	}
	// No Data backend: upload is a clear 501, download of a queued image 204.
	e.wantError(e.do("PUT", "/v2/images/"+id+"/file", e.alice, []byte("data"), "Content-Type", "application/octet-stream"), http.StatusNotImplemented)
	e.want(e.do("GET", "/v2/images/"+id+"/file", e.alice, nil), http.StatusNoContent)
}

// memData is an in-memory Data backend for the upload test.
type memData struct{ blobs map[string][]byte }

func (m *memData) Put(_ context.Context, img store.Image, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	m.blobs[img.ID] = b
	return "mem/" + img.ID, nil
}

func (m *memData) Get(_ context.Context, img store.Image) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m.blobs[img.ID])), nil
}

func TestUploadDownloadWithDataBackend(t *testing.T) {
	data := &memData{blobs: map[string][]byte{}}
	e := newEnv(t, data)
	r := e.want(e.do("POST", "/v2/images", e.alice, map[string]any{"name": "up", "container_format": "docker", "disk_format": "raw"}), http.StatusCreated)
	id := r.body["id"].(string)
	e.want(e.do("PUT", "/v2/images/"+id+"/file", e.alice, []byte("hello world"), "Content-Type", "application/octet-stream"), http.StatusNoContent)
	e.wantError(e.do("PUT", "/v2/images/"+id+"/file", e.alice, []byte("again"), "Content-Type", "application/octet-stream"), http.StatusConflict)
	r = e.want(e.do("GET", "/v2/images/"+id, e.alice, nil), http.StatusOK)
	if r.body["status"] != "active" || r.body["size"] != float64(11) || r.body["checksum"] != "5eb63bbbe01eeed093cb22bb8f5acdc3" ||
		r.body["os_hash_algo"] != "sha512" || len(r.body["os_hash_value"].(string)) != 128 {
		t.Fatalf("uploaded image %s", r.raw)
	}
	d := e.want(e.do("GET", "/v2/images/"+id+"/file", e.alice, nil), http.StatusOK)
	if string(d.raw) != "hello world" || d.header.Get("Content-MD5") != "5eb63bbbe01eeed093cb22bb8f5acdc3" {
		t.Fatalf("download %q %v", d.raw, d.header)
	}
	e.wantError(e.do("POST", "/v2/images/"+id+"/actions/deactivate", e.alice, nil), http.StatusForbidden)
	e.want(e.do("POST", "/v2/images/"+id+"/actions/deactivate", e.admin, nil), http.StatusNoContent)
	e.wantError(e.do("GET", "/v2/images/"+id+"/file", e.alice, nil), http.StatusForbidden)
	e.want(e.do("POST", "/v2/images/"+id+"/actions/reactivate", e.admin, nil), http.StatusNoContent)
	e.want(e.do("GET", "/v2/images/"+id+"/file", e.alice, nil), http.StatusOK)
}
