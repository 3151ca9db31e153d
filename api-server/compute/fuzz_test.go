package compute

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/fuzzhttp"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Native fuzz targets for the compute API's request decoders and
// validators. Their seeds run as ordinary tests; deploy/test.sh runs each
// for a few seconds with -fuzz. Every rejected input must be a 4xx Nova
// fault (a decoder's error of kind InvalidArgument), never a 5xx or a
// panic; the inputs that once broke them are seeds here.

// fuzzCloud is a compute service on SQLite with one flavor, the base
// image and one server of project p-demo, built once per fuzz target.
type fuzzCloud struct {
	h      http.Handler
	st     *store.Store
	server string
}

// activate puts the fuzzed server back on its host, ACTIVE, unlocked and
// with no task, as an agent would leave it: each iteration then reaches
// past the state checks, whatever the previous one did.
func (c *fuzzCloud) activate(tb testing.TB) {
	tb.Helper()
	err := c.st.DB.Model(&store.Instance{}).Where("id = ?", c.server).Updates(map[string]any{
		"host": "h1", "vm_state": string(lifecycle.Active), "task_state": "", "power_state": 1, "locked": false}).Error
	if err != nil {
		tb.Fatal(err)
	}
}

func newFuzzCloud(tb testing.TB) *fuzzCloud {
	tb.Helper()
	st := storetest.SQLite(tb)
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(st.DB.Create(&store.Flavor{FlavorID: "1", Name: "m1.tiny", VCPUs: 1, MemoryMB: 128, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error)
	must(st.DB.Create(&store.Image{ID: imageID, Name: "busybox", Owner: "p-admin", Visibility: "public", Status: "active",
		ContainerFormat: "docker", DiskFormat: "raw", RegistryRef: "127.0.0.1:5050/capsule/busybox:latest"}).Error)
	b := bus.NewMem(bus.MemNoHistory())
	tb.Cleanup(func() { b.Close() })
	// The server's host answers, as a live agent does: a console output
	// call gets a log; every other message is taken. Without it a valid
	// os-getConsoleOutput is the 503 of a host that did not answer.
	must(b.Consume(context.Background(), bus.ComputeQueue("h1"), func(_ context.Context, m bus.Message) (any, error) {
		if m.Kind == protocol.KindConsoleOutput {
			return protocol.ConsoleOutputReply{Output: "capsule-init: system ready\n"}, nil
		}
		return nil, nil
	}))
	v := stubValidator{
		"demo":  {UserID: "u-demo", ProjectID: "p-demo", Roles: []string{"member", "reader"}},
		"admin": {UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member"}, IsAdminProject: true},
	}
	svc := New(st, b, Options{PublicHost: "127.0.0.1", ComputePort: 8774, Validator: v, CallTimeout: 100 * time.Millisecond,
		DefaultQuota: Quota{Instances: 1000, Cores: 1000, RAM: 1 << 30}})
	c := &fuzzCloud{h: svc.Handler(), st: st}
	rec := fuzzhttp.Do(c.h, "POST", "/v2.1/servers", "demo",
		[]byte(`{"server":{"name":"fz","imageRef":"`+imageID+`","flavorRef":"1","networks":"none"}}`),
		"X-OpenStack-Nova-API-Version", "2.37")
	if rec.Code != http.StatusAccepted {
		tb.Fatalf("create the fuzzed server: %d %s", rec.Code, rec.Body)
	}
	var out struct{ Server struct{ ID string } }
	must(json.Unmarshal(rec.Body.Bytes(), &out))
	c.server = out.Server.ID
	c.activate(tb)
	return c
}

// microversions seeds the version header targets.
var fuzzMicroversions = []string{"2.1", "2.26", "latest", "2.", "3.0", "2.99999999999999999999", "-2.-1", "", " 2.1 ", "2.1.1", "0x2.1"}

func FuzzParseVersion(f *testing.F) {
	for _, s := range fuzzMicroversions {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := parseVersion(s)
		if !ok {
			return
		}
		if back, ok := parseVersion(v.String()); !ok || back != v {
			t.Fatalf("parseVersion(%q) = %v, which does not parse back (%v, %v)", s, v, back, ok)
		}
	})
}

func FuzzMicroversionHeaders(f *testing.F) {
	for _, s := range fuzzMicroversions {
		f.Add(s, "compute "+s)
	}
	f.Add("2.26", "volume 2.1")
	f.Add("", "COMPUTE latest")
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, legacy, modern string) {
		rec := fuzzhttp.Do(c.h, "GET", "/v2.1/servers/"+c.server, "demo", nil,
			"X-OpenStack-Nova-API-Version", legacy, "OpenStack-API-Version", modern)
		fuzzhttp.Check(t, rec, "GET server with microversion headers")
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest && rec.Code != http.StatusNotAcceptable {
			t.Fatalf("microversion %q / %q: %d %s", legacy, modern, rec.Code, rec.Body)
		}
	})
}

func FuzzServerCreate(f *testing.F) {
	for _, s := range []string{
		`{"server":{"name":"a","imageRef":"` + imageID + `","flavorRef":"1","networks":"none"}}`,
		`{"server":{"name":"a","imageRef":"` + imageID + `","flavorRef":"1","networks":"auto","metadata":{"k":"v"},"key_name":"k","user_data":"aGk=","availability_zone":"nova","min_count":1,"max_count":2,"tags":["a"],"description":"d","security_groups":[{"name":"default"}]}}`,
		`{"server":{"name":"a","flavorRef":"1","networks":[{"uuid":"11111111-2222-4333-8444-555555555555","fixed_ip":"10.0.0.5"},{"port":"x"}],"block_device_mapping_v2":[{"boot_index":0,"uuid":"` + imageID + `","source_type":"image","destination_type":"local","delete_on_termination":true}]}}`,
		`{"server":{"name":"a","imageRef":"` + imageID + `","flavorRef":"1","networks":"none"},"os:scheduler_hints":{"group":"g","same_host":["x"],"different_host":"y","query":"[]"}}`,
		`{"server":{"name":"a","imageRef":"` + imageID + `","flavorRef":"http://x/flavors/1","networks":[]}}`,
		`{"server":{"name":"` + "\xed\xa0\x80" + `","imageRef":1e400,"flavorRef":[]}}`,
		`{"server":null}`, `[]`, `{"server":{"name":"a","min_count":9223372036854775808}}`,
	} {
		f.Add([]byte(s))
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "POST", "/v2.1/servers", "demo", body), "create server")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "POST", "/v2.1/servers", "demo", body, "X-OpenStack-Nova-API-Version", "2.90"),
			"create server at 2.90")
	})
}

func FuzzServerAction(f *testing.F) {
	for _, s := range []string{`{"os-start":null}`, `{"os-stop":null}`, `{"reboot":{"type":"HARD"}}`, `{"lock":{"locked_reason":"x"}}`,
		`{"os-getConsoleOutput":{"length":-1}}`, `{"os-getConsoleOutput":{"length":"9223372036854775808"}}`,
		`{"resize":{"flavorRef":"1","OS-DCF:diskConfig":"AUTO"}}`, `{"confirmResize":null}`, `{"revertResize":null}`,
		`{"createImage":{"name":"s","metadata":{"k":"v"}}}`, `{"createBackup":{"name":"b","backup_type":"daily","rotation":1}}`,
		`{"migrate":{"host":"h"}}`, `{"os-migrateLive":{"host":null,"block_migration":"auto"}}`, `{"evacuate":{}}`,
		`{"rebuild":{"imageRef":"` + imageID + `","name":"n","metadata":{"a":"b"},"key_name":null,"description":"d"}}`,
		`{"os-resetState":{"state":"error"}}`, `{"shelve":null}`, `{"pause":null,"unpause":null}`, `{}`, `{"":1}`,
	} {
		f.Add([]byte(s), "2.90", false)
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, body []byte, version string, admin bool) {
		c.activate(t)
		tok := "demo"
		if admin {
			tok = "admin"
		}
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "POST", "/v2.1/servers/"+c.server+"/action", tok, body,
			"X-OpenStack-Nova-API-Version", version), "server action")
	})
}

func FuzzServerUpdate(f *testing.F) {
	for _, s := range []string{`{"server":{"name":"x","description":"d"}}`, `{"server":{"accessIPv4":"1.2.3.4","accessIPv6":"::1"}}`,
		`{"server":{"name":""}}`, `{"server":{"name":1}}`} {
		f.Add([]byte(s))
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		c.activate(t)
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "PUT", "/v2.1/servers/"+c.server, "demo", body, "X-OpenStack-Nova-API-Version", "2.19"),
			"update server")
	})
}

func FuzzMetadata(f *testing.F) {
	for _, s := range []string{`{"metadata":{"k":"v"}}`, `{"metadata":{"":"v"}}`, `{"metadata":{"k":1}}`, `{"meta":{"k":"v"}}`,
		`{"metadata":{"` + string(make([]byte, 300)) + `":"v"}}`} {
		f.Add([]byte(s), "k")
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		c.activate(t)
		base := "/v2.1/servers/" + c.server + "/metadata"
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "POST", base, "demo", body), "set metadata")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "PUT", base, "demo", body), "replace metadata")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "PUT", base+"/"+url.PathEscape(key), "demo", body), "put metadata item")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "GET", base+"/"+url.PathEscape(key), "demo", nil), "get metadata item")
	})
}

func FuzzTags(f *testing.F) {
	for _, s := range []string{`{"tags":["a","b"]}`, `{"tags":[]}`, `{"tags":["a,b"]}`, `{"tags":["/"]}`, `{"tags":null}`} {
		f.Add([]byte(s), "t1")
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, body []byte, tag string) {
		c.activate(t)
		base := "/v2.1/servers/" + c.server + "/tags"
		hdr := []string{"X-OpenStack-Nova-API-Version", "2.26"}
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "PUT", base, "demo", body, hdr...), "replace tags")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "PUT", base+"/"+url.PathEscape(tag), "demo", nil, hdr...), "add tag")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "GET", base+"/"+url.PathEscape(tag), "demo", nil, hdr...), "check tag")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "DELETE", base+"/"+url.PathEscape(tag), "demo", nil, hdr...), "delete tag")
	})
}

// FuzzServerListQuery: the list filters (tags, name regex, changes-since,
// paging, sorting) of GET /servers/detail.
func FuzzServerListQuery(f *testing.F) {
	for _, q := range []string{"name=fz", "name=%ED%A0%80", "name=(", "tags=a,b&not-tags-any=c", "changes-since=2020-01-01T00:00:00Z",
		"limit=-1&marker=x", "sort_key=display_name&sort_dir=asc", "all_tenants=1&project_id=p", "status=ACTIVE&flavor=1&image=x",
		"ip=10.0.0.1&ip6=::1", "changes-before=notadate", "locked=true", "deleted=true"} {
		f.Add(q)
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, q string) {
		for _, tok := range []string{"demo", "admin"} {
			fuzzhttp.Check(t, fuzzhttp.Do(c.h, "GET", "/v2.1/servers/detail?"+q, tok, nil, "X-OpenStack-Nova-API-Version", "2.66"),
				"list servers")
		}
	})
}

func FuzzNameFilter(f *testing.F) {
	for _, s := range []string{"fz", "\xed\xa0\x80", "(", "a.*b", "[", "\\"} {
		f.Add(s, "fz-1")
	}
	f.Fuzz(func(t *testing.T, filter, name string) {
		match := nameFilter(filter)
		_ = match(name)
	})
}

func FuzzFlavorCreate(f *testing.F) {
	for _, s := range []string{`{"flavor":{"name":"f","ram":128,"vcpus":1,"disk":1}}`,
		`{"flavor":{"name":"f","ram":128,"vcpus":1,"disk":1,"id":"auto","swap":0,"rxtx_factor":1.0,"os-flavor-access:is_public":false,"OS-FLV-EXT-DATA:ephemeral":0,"description":"d"}}`,
		`{"flavor":{"name":"f","ram":1e400,"vcpus":-1,"disk":"1"}}`, `{"flavor":{"name":"f","ram":9223372036854775807,"vcpus":2147483648,"disk":1}}`,
		`{"flavor":{"name":"","ram":128,"vcpus":1,"disk":1,"id":""}}`} {
		f.Add([]byte(s))
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "POST", "/v2.1/flavors", "admin", body, "X-OpenStack-Nova-API-Version", "2.55"), "create flavor")
	})
}

func FuzzExtraSpecs(f *testing.F) {
	for _, s := range []string{`{"extra_specs":{"quota:cpu_quota":"50000","quota:cpu_period":"100000"}}`,
		`{"extra_specs":{"hw:cpu_policy":"dedicated"}}`, `{"extra_specs":{"quota:disk_write_bytes_sec":"1e30"}}`,
		`{"extra_specs":{"quota:vif_inbound_average":"-1","quota:vif_inbound_burst":"9223372036854775808"}}`,
		`{"extra_specs":{"quota:cpu_quota":1.5}}`, `{"extra_specs":{"":""}}`, `{"quota:cpu_shares":"10"}`} {
		f.Add([]byte(s), "quota:cpu_quota")
	}
	c := newFuzzCloud(f)
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "POST", "/v2.1/flavors/1/os-extra_specs", "admin", body), "set extra specs")
		fuzzhttp.Check(t, fuzzhttp.Do(c.h, "PUT", "/v2.1/flavors/1/os-extra_specs/"+url.PathEscape(key), "admin", body), "put extra spec")
	})
}

func FuzzKeypairInput(f *testing.F) {
	for _, s := range []string{`{"keypair":{"name":"k","public_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"}}`,
		`{"keypair":{"name":"k","type":"x509","user_id":"u"}}`, `{"keypair":{"name":"k","public_key":"ssh-rsa AAAA"}}`, `{"keypair":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var body map[string]json.RawMessage
		if json.Unmarshal(raw, &body) != nil {
			return
		}
		for _, v := range []apiVersion{{2, 1}, {2, 10}, {2, 92}} {
			if _, err := parseKeypairInput(body, v); err != nil && errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
				t.Fatalf("parseKeypairInput(%s): %v, not an InvalidArgument", raw, err)
			}
		}
	})
}

func FuzzServerGroupInput(f *testing.F) {
	for _, s := range []string{`{"server_group":{"name":"g","policies":["affinity"]}}`,
		`{"server_group":{"name":"g","policy":"anti-affinity","rules":{"max_server_per_host":2}}}`,
		`{"server_group":{"name":"g","policy":"anti-affinity","rules":{"max_server_per_host":"x"}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var body map[string]any
		if json.Unmarshal(raw, &body) != nil {
			return
		}
		for _, v := range []apiVersion{{2, 1}, {2, 64}} {
			if _, _, _, err := parseServerGroup(body, v); err != nil && errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
				t.Fatalf("parseServerGroup(%s): %v, not an InvalidArgument", raw, err)
			}
		}
	})
}

func FuzzQuotaUpdate(f *testing.F) {
	for _, s := range []string{`{"quota_set":{"instances":10,"cores":-1,"ram":"51200","force":true}}`,
		`{"quota_set":{"instances":9223372036854775808}}`, `{"quota_set":{"metadata_items":1.5,"key_pairs":null}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var body map[string]any
		if json.Unmarshal(raw, &body) != nil {
			return
		}
		for _, v := range []apiVersion{{2, 1}, {2, 36}, {2, 57}} {
			if _, err := parseQuotaUpdate(body, v); err != nil && errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
				t.Fatalf("parseQuotaUpdate(%s): %v, not an InvalidArgument", raw, err)
			}
		}
	})
}

func FuzzRebuildAndBackupInput(f *testing.F) {
	for _, s := range []string{`{"imageRef":"x","name":"n","metadata":{"a":"b"},"key_name":"k","user_data":"aGk=","description":null}`,
		`{"name":"b","backup_type":"daily","rotation":1,"metadata":{}}`, `{"rotation":-1}`, `null`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, v := range []apiVersion{{2, 1}, {2, 54}, {2, 90}} {
			if _, err := parseRebuild(raw, v); err != nil && errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
				t.Fatalf("parseRebuild(%s): %v, not an InvalidArgument", raw, err)
			}
		}
		if _, err := parseBackup(raw); err != nil && errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Fatalf("parseBackup(%s): %v, not an InvalidArgument", raw, err)
		}
	})
}

func FuzzTagFilter(f *testing.F) {
	for _, q := range []string{"tags=a,b", "tags-any=a&not-tags=b,c", "not-tags-any=,", "tags="} {
		f.Add(q, "a,b")
	}
	f.Fuzz(func(t *testing.T, q, tags string) {
		vals, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		if tf, ok := parseTagFilter(vals); ok {
			_ = tf.match([]string{tags})
		}
	})
}

// A tag is free text (Nova allows any character but , and /): the
// Location of an added tag must escape it, a raw control character in a
// header breaks the client's connection (found by the HTTP fuzzer).
func TestAddTagLocationEscapesTheTag(t *testing.T) {
	c := newFuzzCloud(t)
	rec := fuzzhttp.Do(c.h, "PUT", "/v2.1/servers/"+c.server+"/tags/%00%1B", "demo", nil, "X-OpenStack-Nova-API-Version", "2.26")
	fuzzhttp.Check(t, rec, "add tag")
	if loc := rec.Header().Get("Location"); rec.Code != http.StatusCreated || !strings.HasSuffix(loc, "/tags/%00%1B") {
		t.Fatalf("add tag: %d, Location %q", rec.Code, loc)
	}
}

// A migration id beyond int64 was a 500 (SQLite refuses uint64 values
// with the high bit set); found by the HTTP fuzzer.
func TestServerMigrationIDOutOfRange(t *testing.T) {
	c := newFuzzCloud(t)
	for _, mid := range []string{"9223372036854775808", "18446744073709551615", "-1", "0", "9223372036854775807"} {
		rec := fuzzhttp.Do(c.h, "GET", "/v2.1/servers/"+c.server+"/migrations/"+mid, "admin", nil, "X-OpenStack-Nova-API-Version", "latest")
		fuzzhttp.Check(t, rec, "show migration "+mid)
		if rec.Code != http.StatusNotFound {
			t.Errorf("migration %s: %d %s, want 404", mid, rec.Code, rec.Body)
		}
	}
}

// FuzzAggregateInput sends create, update and action bodies to
// os-aggregates as an admin (against a registered host h1): every one is
// answered with a 2xx or a 4xx Nova fault, never a 5xx.
func FuzzAggregateInput(f *testing.F) {
	for _, s := range []string{`{"aggregate":{"name":"a","availability_zone":"z"}}`, `{"aggregate":{"name":"a","availability_zone":null}}`,
		`{"add_host":{"host":"h1"}}`, `{"remove_host":{"host":"h1"}}`, `{"set_metadata":{"metadata":{"availability_zone":"z2","k":null}}}`,
		`{"set_metadata":{"metadata":{"availability_zone":""}}}`, `{"aggregate":{}}`, `null`, `[]`} {
		f.Add([]byte(s), "1")
	}
	c := newFuzzCloud(f)
	now := time.Now().UTC()
	if err := c.st.DB.Create(&store.Service{UUID: "svc-h1", Host: "h1", Binary: store.ComputeBinary, LastHeartbeat: &now}).Error; err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, id string) {
		for _, call := range [][2]string{{"POST", "/v2.1/os-aggregates"}, {"PUT", "/v2.1/os-aggregates/" + url.PathEscape(id)},
			{"POST", "/v2.1/os-aggregates/" + url.PathEscape(id) + "/action"}} {
			rec := fuzzhttp.Do(c.h, call[0], call[1], "admin", raw, "X-OpenStack-Nova-API-Version", "latest")
			fuzzhttp.Check(t, rec, call[0]+" "+call[1])
		}
	})
}
