package compute

import (
	"context"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

// countRowLoads counts the full reads of an instance row (SELECT * FROM
// instances) on f's store from now on.
func (f *fixture) countRowLoads() *atomic.Int64 {
	f.t.Helper()
	var n atomic.Int64
	err := f.st.DB.Callback().Query().After("gorm:query").Register("rowcache_test:count", func(db *gorm.DB) {
		if db.Statement.Table == "instances" && strings.HasPrefix(db.Statement.SQL.String(), "SELECT * FROM") {
			n.Add(1)
		}
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return &n
}

// TestShowRowCache: the show reads a server's row whole only when its
// row_version changed since the last show, and sees every kind of write at
// once: a rename through the API, a state change through package
// instance, raw SQL (another process's write, which nothing in this
// process hears of). Visibility is the show's as before: another project's
// server and a deleted one are 404 even while their row is kept. On
// SQLite and PostgreSQL (their version queries differ).
func TestShowRowCache(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		f := newFixtureOn(t, st)
		id := f.create("demo", "first")
		loads := f.countRowLoads()
		show := func(token string) (int, map[string]any) {
			t.Helper()
			resp, body := f.do("GET", "/v2.1/servers/"+id, token, "")
			if resp.StatusCode != 200 {
				return resp.StatusCode, nil
			}
			return 200, body["server"].(map[string]any)
		}
		// expect shows id as token, wants its name, status and how many
		// full row reads the show made.
		expect := func(step, token, name, status string, reads int64) {
			t.Helper()
			before := loads.Load()
			code, srv := show(token)
			if code != 200 {
				t.Fatalf("%s: show %d", step, code)
			}
			if srv["name"] != name || srv["status"] != status {
				t.Errorf("%s: name %v status %v, want %s %s", step, srv["name"], srv["status"], name, status)
			}
			if got := loads.Load() - before; got != reads {
				t.Errorf("%s: %d full row reads, want %d", step, got, reads)
			}
		}
		expect("first show", "demo", "first", "BUILD", 1)
		expect("unchanged", "demo", "first", "BUILD", 0)
		expect("unchanged, as admin", "admin", "first", "BUILD", 0)

		// A rename through the API (its own full read is the PUT's).
		if resp, body := f.do("PUT", "/v2.1/servers/"+id, "demo", `{"server":{"name":"renamed"}}`); resp.StatusCode != 200 {
			t.Fatalf("rename: %d %v", resp.StatusCode, body)
		}
		expect("after rename", "demo", "renamed", "BUILD", 1)
		expect("unchanged after rename", "demo", "renamed", "BUILD", 0)

		// A build's state changes through the instance domain layer.
		ctx := context.Background()
		now := time.Now().UTC()
		if ok, err := instance.Place(st.DB.WithContext(ctx), id, "h1", "nova", now); err != nil || !ok {
			t.Fatalf("place: %v %v", ok, err)
		}
		if ok, err := instance.Launched(st.DB.WithContext(ctx), id, lifecycle.Running, now); err != nil || !ok {
			t.Fatalf("launched: %v %v", ok, err)
		}
		expect("after launch", "demo", "renamed", "ACTIVE", 1)

		// Another process's write: raw SQL nothing here hears of.
		if err := st.DB.Exec("UPDATE instances SET name = 'elsewhere' WHERE id = ?", id).Error; err != nil {
			t.Fatal(err)
		}
		expect("after another process's write", "demo", "elsewhere", "ACTIVE", 1)
		expect("unchanged after raw write", "admin", "elsewhere", "ACTIVE", 0)

		// A kept row is still another project's: 404, no full read.
		before := loads.Load()
		if code, _ := show("other"); code != 404 {
			t.Errorf("other project's show: %d, want 404", code)
		}
		if got := loads.Load() - before; got != 0 {
			t.Errorf("other project's show read the row %d times", got)
		}

		// Deleted (soft: the row stays, and is kept here): 404.
		if err := instance.MarkDeleted(ctx, st, id, time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		for _, token := range []string{"demo", "admin"} {
			if code, _ := show(token); code != 404 {
				t.Errorf("deleted server's show as %s: %d, want 404", token, code)
			}
		}
	})
}

// An id PostgreSQL refuses as text (a NUL byte, invalid UTF-8) is bad
// input or unknown on both databases, never a 500 from the show's
// version query, which gorm's error mapping does not see.
func TestShowBadTextID(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		f := newFixtureOn(t, st)
		for _, id := range []string{"a%00b", "a%ffb"} {
			for _, token := range []string{"demo", "admin"} {
				resp, body := f.do("GET", "/v2.1/servers/"+id, token, "")
				if resp.StatusCode != 400 && resp.StatusCode != 404 {
					t.Errorf("GET /servers/%s as %s: %d %v, want 400 or 404", id, token, resp.StatusCode, body)
				}
			}
		}
	})
}

// TestRowCacheCopies: a kept row is handed out as a copy (pointers
// included), and an older read never replaces a newer one.
func TestRowCacheCopies(t *testing.T) {
	c := newRowCache(2)
	desc := "d"
	at := time.Now()
	c.put(&store.Instance{ID: "a", Name: "a", Description: &desc, LaunchedAt: &at, RowVersion: 3})
	got, ok := c.get("a", 3)
	if !ok || got.Name != "a" || *got.Description != "d" {
		t.Fatalf("get = %+v %v", got, ok)
	}
	got.Name = "changed"
	*got.Description = "changed"
	*got.LaunchedAt = time.Time{}
	again, _ := c.get("a", 3)
	if again.Name != "a" || *again.Description != "d" || again.LaunchedAt.IsZero() {
		t.Errorf("a caller's change reached the kept row: %+v", again)
	}
	if _, ok := c.get("a", 4); ok {
		t.Error("version 4 served from a row kept at 3")
	}
	c.put(&store.Instance{ID: "a", Name: "older", RowVersion: 2})
	if got, ok := c.get("a", 3); !ok || got.Name != "a" {
		t.Errorf("an older read replaced the kept row: %+v %v", got, ok)
	}
	c.put(&store.Instance{ID: "b"})
	c.put(&store.Instance{ID: "c"})
	if len(c.rows) != 2 {
		t.Errorf("%d rows kept, cap 2", len(c.rows))
	}
}

// TestCloneInstanceDeep: cloneInstance copies every pointer of
// store.Instance (a field added later must be added there), and the model
// has no slice or map a copy would share.
func TestCloneInstanceDeep(t *testing.T) {
	var inst store.Instance
	v := reflect.ValueOf(&inst).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case reflect.Slice, reflect.Map, reflect.Interface, reflect.Chan, reflect.Func:
			t.Errorf("store.Instance.%s is a %s: cloneInstance must copy it", v.Type().Field(i).Name, f.Kind())
		}
	}
	cp := cloneInstance(inst)
	c := reflect.ValueOf(&cp).Elem()
	for i := range v.NumField() {
		if v.Field(i).Kind() == reflect.Pointer && v.Field(i).Pointer() == c.Field(i).Pointer() {
			t.Errorf("cloneInstance shares store.Instance.%s", v.Type().Field(i).Name)
		}
	}
}
