package volume_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/volume"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

type stubValidator map[string]*auth.Credentials

func (v stubValidator) Validate(_ context.Context, tok string) (*auth.Credentials, error) {
	if c, ok := v[tok]; ok {
		return c, nil
	}
	return nil, errors.New("invalid token")
}

var callers = stubValidator{
	"admin":  {UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member"}, IsAdminProject: true},
	"alice":  {UserID: "u-alice", ProjectID: "p1", Roles: []string{"member"}},
	"bob":    {UserID: "u-bob", ProjectID: "p2", Roles: []string{"member"}},
	"reader": {UserID: "u-reader", ProjectID: "p1", Roles: []string{"reader"}},
}

// projects maps a token to its project, for URLs.
var projects = map[string]string{"admin": "p-admin", "alice": "p1", "bob": "p2", "reader": "p1", "": "p1", "garbage": "p1"}

type obj = map[string]any

type env struct {
	t   *testing.T
	srv *httptest.Server
	st  *store.Store
	b   *bus.Mem
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := storetest.SQLite(t)
	b := bus.NewMem()
	t.Cleanup(func() { _ = b.Close() })
	now := time.Now().UTC()
	if err := st.DB.Create(&store.Service{UUID: "svc-h1", Host: "h1", Binary: store.ComputeBinary, Zone: "nova", LastHeartbeat: &now}).Error; err != nil {
		t.Fatal(err)
	}
	svc := volume.New(st, b, volume.Options{Validator: callers,
		Config: config.Volume{Quota: config.VolumeQuota{Volumes: 3, Gigabytes: 10, Snapshots: 2}}})
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, st: st, b: b}
}

// do sends a request as token to path (under /v3/<token's project> when
// it starts with "/" but not "/v3").
func (e *env) do(method, path, token string, body any, header ...string) (int, obj, http.Header) {
	e.t.Helper()
	if !strings.HasPrefix(path, "/v3") && path != "/" {
		path = "/v3/" + projects[token] + path
	}
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out obj
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

func (e *env) must(want int, method, path, token string, body any, header ...string) obj {
	e.t.Helper()
	code, out, _ := e.do(method, path, token, body, header...)
	if code != want {
		e.t.Fatalf("%s %s as %s: %d %v, want %d", method, path, token, code, out, want)
	}
	return out
}

// fails checks a Cinder fault: {"<name>": {"code": status, "message": ...}}.
func (e *env) fails(status int, name, method, path, token string, body any) string {
	e.t.Helper()
	code, out, _ := e.do(method, path, token, body)
	f, _ := out[name].(obj)
	if code != status || f == nil || f["code"] != float64(status) || f["message"] == "" {
		e.t.Fatalf("%s %s as %s: %d %v, want %d %s", method, path, token, code, out, status, name)
	}
	return f["message"].(string)
}

// settle plays the host's agent: the volume's creation is done.
func (e *env) settle(id string) {
	e.t.Helper()
	ok, err := store.ChangeVolumeStatus(e.st.DB, id, []store.VolumeStatus{store.VolumeCreating, store.VolumeExtending}, store.VolumeAvailable, nil)
	if err != nil || !ok {
		e.t.Fatalf("settle %s: %v %v", id, ok, err)
	}
}

func (e *env) volume(token string, attrs obj) obj {
	e.t.Helper()
	v := e.must(http.StatusAccepted, "POST", "/volumes", token, obj{"volume": attrs})["volume"].(obj)
	e.settle(v["id"].(string))
	return v
}

// sent decodes the work cast to host h1 of kind.
func (e *env) sent(kind string) []json.RawMessage {
	var out []json.RawMessage
	for _, m := range e.b.Sent(bus.ComputeQueue("h1")) {
		if m.Kind == kind {
			out = append(out, m.Body)
		}
	}
	return out
}

func TestVolumeLifecycle(t *testing.T) {
	e := newEnv(t)
	v := e.must(http.StatusAccepted, "POST", "/volumes", "alice", obj{"volume": obj{"size": 1, "name": "data",
		"description": "d", "metadata": obj{"k": "v"}}})["volume"].(obj)
	id := v["id"].(string)
	if v["status"] != "creating" || v["size"] != float64(1) || v["volume_type"] != "__DEFAULT__" || v["bootable"] != "false" {
		t.Fatalf("created %v", v)
	}
	work := e.sent(protocol.KindVolumeCreate)
	if len(work) != 1 {
		t.Fatalf("create work to h1: %d messages", len(work))
	}
	var vc protocol.VolumeCreate
	if err := json.Unmarshal(work[0], &vc); err != nil || vc.Volume.ID != id || vc.Volume.SizeGB != 1 ||
		vc.Volume.Host != "h1" || vc.Volume.Backend != protocol.BackendLocal {
		t.Fatalf("create work %+v %v", vc, err)
	}
	e.settle(id)
	got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj)
	if got["status"] != "available" || got["name"] != "data" || got["metadata"].(obj)["k"] != "v" {
		t.Fatalf("show %v", got)
	}
	if _, ok := got["os-vol-host-attr:host"]; ok {
		t.Fatalf("a member sees the host: %v", got)
	}
	if adm := e.must(http.StatusOK, "GET", "/volumes/"+id, "admin", nil)["volume"].(obj); adm["os-vol-host-attr:host"] != "h1@local#local" {
		t.Fatalf("admin's view %v", adm)
	}
	upd := e.must(http.StatusOK, "PUT", "/volumes/"+id, "alice", obj{"volume": obj{"name": "renamed"}})["volume"].(obj)
	if upd["name"] != "renamed" || upd["description"] != "d" {
		t.Fatalf("update %v", upd)
	}
	// extend: bigger only, within the quota, then the host grows it
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes/"+id+"/action", "alice", obj{"os-extend": obj{"new_size": 1}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes/"+id+"/action", "alice", obj{"os-extend": obj{"new_size": json.Number("9223372036854775807")}})
	e.fails(http.StatusRequestEntityTooLarge, "overLimit", "POST", "/volumes/"+id+"/action", "alice", obj{"os-extend": obj{"new_size": 11}})
	e.must(http.StatusAccepted, "POST", "/volumes/"+id+"/action", "alice", obj{"os-extend": obj{"new_size": 3}})
	if got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj); got["status"] != "extending" || got["size"] != float64(3) {
		t.Fatalf("extending %v", got)
	}
	if n := len(e.sent(protocol.KindVolumeExtend)); n != 1 {
		t.Fatalf("extend work: %d", n)
	}
	// not while extending
	e.fails(http.StatusBadRequest, "badRequest", "DELETE", "/volumes/"+id, "alice", nil)
	e.settle(id)
	// reset-status is the admins'
	e.fails(http.StatusForbidden, "forbidden", "POST", "/volumes/"+id+"/action", "alice", obj{"os-reset_status": obj{"status": "error"}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes/"+id+"/action", "admin", obj{"os-reset_status": obj{"status": "bogus"}})
	e.must(http.StatusAccepted, "POST", "/volumes/"+id+"/action", "admin", obj{"os-reset_status": obj{"status": "error"}})
	e.must(http.StatusAccepted, "DELETE", "/volumes/"+id, "alice", nil)
	if got := e.must(http.StatusOK, "GET", "/volumes/"+id, "alice", nil)["volume"].(obj); got["status"] != "deleting" {
		t.Fatalf("deleting %v", got)
	}
	if n := len(e.sent(protocol.KindVolumeDelete)); n != 1 {
		t.Fatalf("delete work: %d", n)
	}
}

func TestVolumeQuota(t *testing.T) {
	e := newEnv(t)
	e.volume("alice", obj{"size": 6})
	msg := e.fails(http.StatusRequestEntityTooLarge, "overLimit", "POST", "/volumes", "alice", obj{"volume": obj{"size": 5}})
	if !strings.Contains(msg, "gigabytes") {
		t.Fatalf("quota message %q", msg)
	}
	// another project has its own quota
	e.volume("bob", obj{"size": 10})
	e.volume("alice", obj{"size": 1})
	e.volume("alice", obj{"size": 1})
	e.fails(http.StatusRequestEntityTooLarge, "overLimit", "POST", "/volumes", "alice", obj{"volume": obj{"size": 1}})
	lim := e.must(http.StatusOK, "GET", "/limits", "alice", nil)["limits"].(obj)["absolute"].(obj)
	if lim["maxTotalVolumes"] != float64(3) || lim["totalVolumesUsed"] != float64(3) || lim["totalGigabytesUsed"] != float64(8) {
		t.Fatalf("limits %v", lim)
	}
	// admins raise it
	e.fails(http.StatusForbidden, "forbidden", "PUT", "/os-quota-sets/p1", "alice", obj{"quota_set": obj{"volumes": 5}})
	e.fails(http.StatusForbidden, "forbidden", "GET", "/os-quota-sets/p1", "bob", nil)
	e.must(http.StatusOK, "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": obj{"volumes": 5}})
	qs := e.must(http.StatusOK, "GET", "/os-quota-sets/p1?usage=True", "alice", nil)["quota_set"].(obj)
	if q := qs["volumes"].(obj); q["limit"] != float64(5) || q["in_use"] != float64(3) {
		t.Fatalf("quota set %v", qs)
	}
	e.volume("alice", obj{"size": 1})
}

func TestVolumeSnapshots(t *testing.T) {
	e := newEnv(t)
	v := e.volume("alice", obj{"size": 2})
	vid := v["id"].(string)
	sn := e.must(http.StatusAccepted, "POST", "/snapshots", "alice", obj{"snapshot": obj{"volume_id": vid, "name": "s1"}})["snapshot"].(obj)
	sid := sn["id"].(string)
	if sn["status"] != "creating" || sn["size"] != float64(2) {
		t.Fatalf("snapshot %v", sn)
	}
	// a volume from a snapshot not yet available is refused
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes", "alice", obj{"volume": obj{"snapshot_id": sid}})
	if ok, err := store.ChangeSnapshotStatus(e.st.DB, sid, []store.SnapshotStatus{store.SnapshotCreating}, store.SnapshotAvailable, nil); !ok || err != nil {
		t.Fatal(ok, err)
	}
	// the volume with a snapshot is not deletable
	e.fails(http.StatusBadRequest, "badRequest", "DELETE", "/volumes/"+vid, "alice", nil)
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes", "alice", obj{"volume": obj{"snapshot_id": sid, "size": 1}})
	nv := e.must(http.StatusAccepted, "POST", "/volumes", "alice", obj{"volume": obj{"snapshot_id": sid}})["volume"].(obj)
	if nv["snapshot_id"] != sid || nv["size"] != float64(2) {
		t.Fatalf("volume from snapshot %v", nv)
	}
	var vc protocol.VolumeCreate
	work := e.sent(protocol.KindVolumeCreate)
	if err := json.Unmarshal(work[len(work)-1], &vc); err != nil || vc.SnapshotID != sid {
		t.Fatalf("create from snapshot work %+v %v", vc, err)
	}
	list := e.must(http.StatusOK, "GET", "/snapshots/detail", "alice", nil)["snapshots"].([]any)
	if len(list) != 1 || list[0].(obj)["os-extended-snapshot-attributes:progress"] != "100%" {
		t.Fatalf("snapshots %v", list)
	}
	if l := e.must(http.StatusOK, "GET", "/snapshots", "bob", nil)["snapshots"].([]any); len(l) != 0 {
		t.Fatalf("bob sees %v", l)
	}
	e.must(http.StatusOK, "PUT", "/snapshots/"+sid, "alice", obj{"snapshot": obj{"name": "s2"}})
	e.must(http.StatusAccepted, "DELETE", "/snapshots/"+sid, "alice", nil)
	if n := len(e.sent(protocol.KindSnapshotDelete)); n != 1 {
		t.Fatalf("snapshot delete work: %d", n)
	}
}

func TestVolumeListFiltersAndPaging(t *testing.T) {
	e := newEnv(t)
	e.must(http.StatusOK, "PUT", "/os-quota-sets/p1", "admin", obj{"quota_set": obj{"volumes": -1, "gigabytes": -1}})
	for i, name := range []string{"a", "b", "c", "d"} {
		e.volume("alice", obj{"size": 1, "name": name, "metadata": obj{"n": string(rune('0' + i%2))}})
	}
	l := e.must(http.StatusOK, "GET", "/volumes?name=b", "alice", nil)["volumes"].([]any)
	if len(l) != 1 || l[0].(obj)["name"] != "b" {
		t.Fatalf("by name %v", l)
	}
	l = e.must(http.StatusOK, "GET", `/volumes/detail?metadata={"n":"1"}`, "alice", nil)["volumes"].([]any)
	if len(l) != 2 {
		t.Fatalf("by metadata %v", l)
	}
	page := e.must(http.StatusOK, "GET", "/volumes?limit=3&sort=name:asc", "alice", nil)
	vols := page["volumes"].([]any)
	if len(vols) != 3 || vols[0].(obj)["name"] != "a" || page["volumes_links"] == nil {
		t.Fatalf("page 1 %v", page)
	}
	page = e.must(http.StatusOK, "GET", "/volumes?limit=3&sort=name:asc&marker="+vols[2].(obj)["id"].(string), "alice", nil)
	if vols := page["volumes"].([]any); len(vols) != 1 || vols[0].(obj)["name"] != "d" || page["volumes_links"] != nil {
		t.Fatalf("page 2 %v", page)
	}
	e.fails(http.StatusBadRequest, "badRequest", "GET", "/volumes?sort=bogus", "alice", nil)
	e.fails(http.StatusNotFound, "itemNotFound", "GET", "/volumes?marker=nope", "alice", nil)
	if c := e.must(http.StatusOK, "GET", "/volumes?with_count=true", "alice", nil, "OpenStack-API-Version", "volume 3.45"); c["count"] != float64(4) {
		t.Fatalf("count %v", c)
	}
	if l := e.must(http.StatusOK, "GET", "/volumes/detail", "bob", nil)["volumes"].([]any); len(l) != 0 {
		t.Fatalf("bob sees %v", l)
	}
}

func TestVersionsTypesAndMicroversions(t *testing.T) {
	e := newEnv(t)
	code, root, _ := e.do("GET", "/", "", nil)
	vs, _ := root["versions"].([]any)
	if code != http.StatusMultipleChoices || len(vs) != 1 || vs[0].(obj)["id"] != "v3.0" || vs[0].(obj)["version"] != "3.64" {
		t.Fatalf("root %d %v", code, root)
	}
	_, _, h := e.do("GET", "/types", "alice", nil, "OpenStack-API-Version", "volume 3.10")
	if h.Get("OpenStack-API-Version") != "volume 3.10" {
		t.Fatalf("echoed version %q", h.Get("OpenStack-API-Version"))
	}
	if code, out, _ := e.do("GET", "/types", "alice", nil, "OpenStack-API-Version", "volume 3.99"); code != http.StatusNotAcceptable || out["notAcceptable"] == nil {
		t.Fatalf("3.99: %d %v", code, out)
	}
	types := e.must(http.StatusOK, "GET", "/types", "alice", nil)["volume_types"].([]any)
	if len(types) != 1 || types[0].(obj)["name"] != "__DEFAULT__" {
		t.Fatalf("types %v", types)
	}
	e.must(http.StatusOK, "GET", "/types/default", "alice", nil)
	e.fails(http.StatusNotFound, "itemNotFound", "POST", "/volumes", "alice", obj{"volume": obj{"size": 1, "volume_type": "ssd"}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes", "alice", obj{"volume": obj{"size": 0}})
	// Above Cinder's schema maximum (2^31-1 GiB): a size near 2^63 was
	// stored under an unlimited quota and overflowed every later sum.
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes", "alice", obj{"volume": obj{"size": json.Number("2147483648")}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes", "alice", obj{"volume": obj{"size": json.Number("9223372036854775807")}})
	e.fails(http.StatusBadRequest, "badRequest", "POST", "/volumes", "alice", obj{"volume": obj{"size": 1, "availability_zone": "elsewhere"}})
	e.fails(http.StatusBadRequest, "badRequest", "GET", "/v3/p2/volumes", "alice", nil)
}

// A local volume whose server is being cold-migrated with it is not
// extended or snapshotted until the migration is confirmed or reverted
// (the server runs on a copy meanwhile); afterwards it is.
func TestVolumeRefusedWhileItsServerMigrates(t *testing.T) {
	e := newEnv(t)
	id := e.volume("alice", obj{"size": 1})["id"].(string)
	if err := e.st.DB.Create(&store.VolumeAttachment{ID: "a1", VolumeID: id, InstanceID: "i1", Host: "h1", MountPath: "/data",
		Status: store.AttachmentAttached}).Error; err != nil {
		t.Fatal(err)
	}
	e.st.DB.Model(&store.Volume{}).Where("id = ?", id).Update("status", store.VolumeInUse)
	m := store.Migration{UUID: "m1", InstanceID: "i1", Step: "finished", SourceCompute: "h1", DestCompute: "h2", VolumeIDs: id}
	if err := e.st.DB.Create(&m).Error; err != nil {
		t.Fatal(err)
	}
	hdr := "OpenStack-API-Version"
	for _, c := range []struct {
		path string
		body obj
	}{
		{"/volumes/" + id + "/action", obj{"os-extend": obj{"new_size": 2}}},
		{"/snapshots", obj{"snapshot": obj{"volume_id": id, "force": true}}},
	} {
		code, out, _ := e.do("POST", c.path, "alice", c.body, hdr, "volume 3.64")
		if f, _ := out["badRequest"].(obj); code != 400 || f == nil || !strings.Contains(f["message"].(string), "being migrated") {
			t.Fatalf("POST %s during the migration: %d %v", c.path, code, out)
		}
	}
	e.st.DB.Model(&store.Migration{}).Where("id = ?", m.ID).Update("step", "done")
	if code, out, _ := e.do("POST", "/volumes/"+id+"/action", "alice", obj{"os-extend": obj{"new_size": 2}}, hdr, "volume 3.64"); code != 202 {
		t.Fatalf("extend after the migration: %d %v", code, out)
	}
}
