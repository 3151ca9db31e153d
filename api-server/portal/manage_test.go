package portal

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// fakeGlance adds image create, upload and delete to the fake APIs,
// counting what each upload brought.
type fakeGlance struct {
	mu       sync.Mutex
	created  []string
	deleted  []string
	uploaded map[string][32]byte
	sizes    map[string]int64
	capBytes int64 // uploads past it get Glance's 413
}

func newManageEnv(t *testing.T, g *fakeGlance) *env {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	mux.Handle("/", f.handler(t))
	ok := func(r *http.Request) bool { return r.Header.Get("X-Auth-Token") == "tok-demo" }
	mux.HandleFunc("POST /v2/images", func(w http.ResponseWriter, r *http.Request) {
		if !ok(r) {
			w.WriteHeader(401)
			return
		}
		g.mu.Lock()
		id := "up-" + string(rune('a'+len(g.created)))
		g.created = append(g.created, id)
		g.mu.Unlock()
		w.WriteHeader(201)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": id, "status": "queued"})
	})
	mux.HandleFunc("PUT /v2/images/{id}/file", func(w http.ResponseWriter, r *http.Request) {
		if !ok(r) || r.Header.Get("Content-Type") != "application/octet-stream" {
			w.WriteHeader(400)
			return
		}
		h := sha256.New()
		n, _ := io.Copy(h, io.LimitReader(r.Body, g.capBytes+1))
		if n > g.capBytes {
			w.WriteHeader(413)
			_, _ = io.WriteString(w, `{"code": 413, "title": "Request Entity Too Large", "message": "Image exceeds the storage quota: 4096 bytes"}`)
			return
		}
		g.mu.Lock()
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		g.uploaded[r.PathValue("id")], g.sizes[r.PathValue("id")] = sum, n
		g.mu.Unlock()
		w.WriteHeader(204)
	})
	mux.HandleFunc("DELETE /v2/images/{id}", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.deleted = append(g.deleted, r.PathValue("id"))
		g.mu.Unlock()
		w.WriteHeader(204)
	})
	up := httptest.NewServer(mux)
	t.Cleanup(up.Close)
	p, err := New(Options{Endpoints: Endpoints{Identity: up.URL + "/v3", Compute: up.URL + "/v2.1", Image: up.URL, Network: up.URL},
		PageSize: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewServer(p.Handler())
	t.Cleanup(ps.Close)
	return &env{t: t, api: f, portal: ps, client: newClient(t)}
}

// uploadForm is the upload form's multipart body: csrf, name, the file.
func uploadForm(t *testing.T, csrf, name string, data []byte) (*bytes.Buffer, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	if csrf != "" {
		_ = mw.WriteField("csrf", csrf)
	}
	_ = mw.WriteField("name", name)
	fw, err := mw.CreateFormFile("file", "image.tar")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(data)
	_ = mw.Close()
	return &b, mw.FormDataContentType()
}

// TestImageUpload: the upload form's file reaches the image API whole
// (a few MB, sent through as it arrives), after an image create of the
// docker container format; without the CSRF token nothing is created;
// an upload over the image API's cap is refused with its message and
// the image it left is deleted; the script's variant answers JSON.
func TestImageUpload(t *testing.T) {
	g := &fakeGlance{uploaded: map[string][32]byte{}, sizes: map[string]int64{}, capBytes: 8 << 20}
	e := newManageEnv(t, g)
	csrf := e.login("demo")
	data := bytes.Repeat([]byte("docker-save tarball "), 300000) // 6 MB
	b, ct := uploadForm(t, csrf, "web", data)
	resp, err := e.client.Post(e.portal.URL+"/images/upload", ct, b)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/images/up-a?done=uploaded" {
		_, pg := e.get("/images")
		t.Fatalf("upload: %d %s\n%s", resp.StatusCode, resp.Header.Get("Location"), pg)
	}
	if got, want := g.uploaded["up-a"], sha256.Sum256(data); got != want || g.sizes["up-a"] != int64(len(data)) {
		t.Errorf("the image API got %d bytes, not the file's %d", g.sizes["up-a"], len(data))
	}

	// No CSRF token: refused before anything is created.
	b, ct = uploadForm(t, "", "forged", data[:100])
	resp, _ = e.client.Post(e.portal.URL+"/images/upload", ct, b)
	resp.Body.Close()
	if len(g.created) != 1 {
		t.Errorf("an upload without the CSRF token created an image: %v", g.created)
	}

	// Over the cap, from the page's script: JSON with the API's reason,
	// the queued image deleted.
	big := bytes.Repeat([]byte("x"), 9<<20)
	b, ct = uploadForm(t, "", "big", big)
	req, _ := http.NewRequest(http.MethodPost, e.portal.URL+"/images/upload", b)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err = e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg := body(resp)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "storage quota") {
		t.Errorf("over the cap: %d %s", resp.StatusCode, msg)
	}
	if len(g.created) != 2 || len(g.deleted) != 1 || g.deleted[0] != g.created[1] {
		t.Errorf("after the refused upload: created %v, deleted %v", g.created, g.deleted)
	}
}

// TestManageRoutesNeedASession: every new page sends a browser without
// a session to the login page, and every new form refuses a missing
// session; a member gets 403 for the admin pages.
func TestManageRoutesNeedASession(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/images/img-1", "/networks/net-1", "/admin/servers", "/admin/projects", "/admin/quotas", "/admin/migrations"} {
		if st, _ := e.get(p); st != http.StatusSeeOther {
			t.Errorf("GET %s without a session: %d, want 303 to the login", p, st)
		}
	}
	for _, p := range []string{"/images/img-1/delete", "/images/img-1/members", "/images/img-1/accept", "/networks", "/networks/net-1/delete",
		"/networks/net-1/subnets", "/admin/projects", "/admin/users", "/admin/grants", "/admin/quotas/p", "/switch-project"} {
		resp := e.post(p, url.Values{"csrf": {"x"}})
		if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
			t.Errorf("POST %s without a session: %d %s", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	csrf := e.login("demo")
	for _, p := range []string{"/admin/servers", "/admin/projects", "/admin/quotas", "/admin/migrations"} {
		if st, _ := e.get(p); st != http.StatusForbidden {
			t.Errorf("member's GET %s: %d, want 403", p, st)
		}
	}
	resp := e.post("/admin/quotas/p-demo", url.Values{"csrf": {csrf}, "instances": {"100"}})
	if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Errorf("member's quota post: %d, want 403", resp.StatusCode)
	}
	// A project the user has no role on is not switched to.
	resp = e.post("/switch-project", url.Values{"csrf": {csrf}, "project": {"p-admin"}})
	if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("switch to a project without a role: %d, want 404", resp.StatusCode)
	}
}

// TestPrivateKeyDownload: a generated key's page offers it as
// <name>.pem, a data: URL of exactly the key.
func TestPrivateKeyDownload(t *testing.T) {
	e := newEnv(t)
	csrf := e.login("demo")
	resp := e.post("/keypairs", url.Values{"csrf": {csrf}, "name": {"made"}})
	page := body(resp)
	if !strings.Contains(page, `download="made.pem"`) {
		t.Fatalf("no .pem download on the generated key's page:\n%s", page)
	}
	i := strings.Index(page, "data:application/x-pem-file;base64,")
	if i < 0 {
		t.Fatalf("no data: URL:\n%s", page)
	}
	enc := page[i+len("data:application/x-pem-file;base64,"):]
	enc = enc[:strings.IndexByte(enc, '"')]
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || !strings.Contains(string(key), "secret<&>") {
		t.Errorf("the .pem holds %q (%v)", key, err)
	}
}
