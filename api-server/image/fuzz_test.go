package image

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/internal/fuzzhttp"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// Native fuzz targets for the image API's decoders and validators: image
// creation, JSON-patch updates, tags, uploads and the list's filters and
// sort. Their seeds run as ordinary tests; deploy/test.sh runs each for a
// few seconds with -fuzz. A rejected input is a 4xx Glance error, never a
// 5xx or a panic.

type fuzzCallers map[string]*auth.Credentials

func (v fuzzCallers) Validate(_ context.Context, tok string) (*auth.Credentials, error) {
	if c, ok := v[tok]; ok {
		return c, nil
	}
	return nil, errors.New("invalid token")
}

// discardData takes any upload and serves empty data.
type discardData struct{}

func (discardData) Put(_ context.Context, img store.Image, r io.Reader) (string, error) {
	_, err := io.Copy(io.Discard, r)
	return "registry.test/fuzz/" + img.ID + ":latest", err
}
func (discardData) Get(context.Context, store.Image) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("")), nil
}

type fuzzImages struct {
	h     http.Handler
	image string // a queued private image of project p1
}

func newFuzzImages(tb testing.TB) *fuzzImages {
	tb.Helper()
	callers := fuzzCallers{
		"admin": {UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member"}, IsAdminProject: true},
		"alice": {UserID: "u-alice", ProjectID: "p1", Roles: []string{"member"}},
	}
	s := New(storetest.SQLite(tb), Options{Validator: callers, Data: discardData{}})
	fi := &fuzzImages{h: s.Handler()}
	rec := fuzzhttp.Do(fi.h, "POST", "/v2/images", "alice", []byte(`{"name":"i","container_format":"docker","disk_format":"raw"}`))
	if rec.Code != http.StatusCreated {
		tb.Fatalf("create image: %d %s", rec.Code, rec.Body)
	}
	var out struct{ ID string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		tb.Fatal(err)
	}
	fi.image = out.ID
	return fi
}

func FuzzImageCreate(f *testing.F) {
	for _, s := range []string{`{"name":"a","container_format":"docker","disk_format":"raw","visibility":"shared","tags":["x"],"min_disk":1,"min_ram":2,"protected":true,"os_hidden":true,"custom":"v"}`,
		`{"id":"11111111-2222-4333-8444-555555555555","name":null}`, `{"visibility":"public"}`, `{"min_ram":-1}`, `{"min_disk":1e400}`,
		`{"tags":["` + strings.Repeat("t", 300) + `"]}`, `{"status":"active","size":1,"checksum":"x","owner":"p2"}`, `{"container_format":"bare","disk_format":"vhdx"}`} {
		f.Add([]byte(s), false)
	}
	fi := newFuzzImages(f)
	f.Fuzz(func(t *testing.T, body []byte, admin bool) {
		tok := "alice"
		if admin {
			tok = "admin"
		}
		fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "POST", "/v2/images", tok, body), "create image")
	})
}

func FuzzImagePatch(f *testing.F) {
	for _, s := range []string{`[{"op":"replace","path":"/name","value":"n"}]`, `[{"op":"add","path":"/tags/-","value":"t"}]`,
		`[{"op":"remove","path":"/custom"}]`, `[{"op":"add","path":"/x~1y","value":1}]`, `[{"replace":"/min_ram","value":"5"}]`,
		`[{"op":"move","from":"/a","path":"/b"}]`, `[{"op":"replace","path":"/visibility","value":"public"}]`, `[{"op":"add","path":"/","value":{}}]`,
		`[{"op":"replace","path":"/tags","value":[1,2]}]`, `[{"op":"replace","path":"/protected","value":"yes"}]`, `{}`, `[]`, `[null]`} {
		f.Add([]byte(s), "application/openstack-images-v2.1-json-patch")
	}
	f.Add([]byte(`[{"op":"replace","path":"/name","value":"n"}]`), "application/json")
	fi := newFuzzImages(f)
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "PATCH", "/v2/images/"+fi.image, "alice", body, "Content-Type", contentType), "patch image")
	})
}

func FuzzImageTagsAndUpload(f *testing.F) {
	for _, s := range []string{"t", "", " ", strings.Repeat("t", 256), "a/b", "\xed\xa0\x80"} {
		f.Add(s, []byte("data"))
	}
	fi := newFuzzImages(f)
	f.Fuzz(func(t *testing.T, tag string, data []byte) {
		p := "/v2/images/" + fi.image
		fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "PUT", p+"/tags/"+url.PathEscape(tag), "alice", nil), "add tag")
		fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "DELETE", p+"/tags/"+url.PathEscape(tag), "alice", nil), "delete tag")
		fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "PUT", p+"/file", "alice", data, "Content-Type", "application/octet-stream"), "upload",
			http.StatusConflict)
	})
}

func FuzzImageListQuery(f *testing.F) {
	for _, q := range []string{"sort=name:asc,created_at:desc", "sort_key=name&sort_dir=asc&sort_key=id", "sort=name&sort_key=id",
		"limit=-1", "marker=x", "created_at=gt:2020-01-01T00:00:00Z", "updated_at=lte:notadate", "size_min=10&size_max=-1",
		"visibility=all&member_status=all", "tag=a&tag=b", "name=in:a,b", "os_hidden=maybe", "protected=true", "id=in:,"} {
		f.Add(q)
	}
	fi := newFuzzImages(f)
	f.Fuzz(func(t *testing.T, q string) {
		for _, tok := range []string{"alice", "admin"} {
			fuzzhttp.Check(t, fuzzhttp.Do(fi.h, "GET", "/v2/images?"+q, tok, nil), "list images")
		}
	})
}
