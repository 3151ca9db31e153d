package image_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// walk is every image of a list, in order, walking its next links.
func (e *env) walk(tok, path string) (ids []string, rows []map[string]any, pages int) {
	e.t.Helper()
	for path != "" {
		r := e.want(e.do("GET", path, tok, nil), http.StatusOK)
		pages++
		for _, i := range r.body["images"].([]any) {
			img := i.(map[string]any)
			ids = append(ids, img["id"].(string))
			rows = append(rows, img)
		}
		path, _ = r.body["next"].(string)
		if pages > 200 {
			e.t.Fatalf("%s: next never ends", path)
		}
	}
	return ids, rows, pages
}

// TestListImagesPagesInDatabase: the list pages in the database, and a
// walk over small pages gives exactly the one-page list (each image once,
// in order) for every visibility, member status, sort and filter, on
// SQLite and PostgreSQL.
func TestListImagesPagesInDatabase(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		e := newEnvOn(t, st, nil)
		base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		n := 0
		add := func(name, owner, vis string, mutate func(*store.Image)) string {
			n++
			i := n
			return e.register(fmt.Sprintf("%s-%02d", name, i), owner, vis, func(img *store.Image) {
				img.Name = name                                            // names repeat: the id breaks ties
				img.CreatedAt = base.Add(time.Duration(i/3) * time.Second) // three images a second
				if i%4 == 0 {
					img.Size = nil
				} else {
					sz := int64(100 * (i % 5))
					img.Size = &sz
				}
				if i%3 == 0 {
					img.Properties = `{"image_type":"backup","tags":"[\\"even\\"]"}`
				}
				if mutate != nil {
					mutate(img)
				}
			})
		}
		var alices []string
		for i := range 14 {
			alices = append(alices, add([]string{"x", "y", "z"}[i%3], e.demoPID, "private", nil))
		}
		var public []string
		for range 4 {
			public = append(public, add("pub", e.adminPID, "public", nil))
		}
		community := add("com", e.otherPID, "community", nil)
		hidden := add("hid", e.demoPID, "private", func(img *store.Image) { img.Hidden = true })
		member := func(img, status string) {
			if err := st.DB.Create(&store.ImageMember{ImageID: img, MemberID: e.demoPID, Status: status}).Error; err != nil {
				t.Fatal(err)
			}
		}
		accepted := add("sh", e.otherPID, "shared", nil)
		member(accepted, "accepted")
		pending := add("sh", e.otherPID, "shared", nil)
		member(pending, "pending")
		rejected := add("sh", e.otherPID, "shared", nil)
		member(rejected, "rejected")
		notMember := add("sh", e.otherPID, "shared", nil)
		bobs := add("bob", e.otherPID, "private", nil)

		sameSet := func(q string, got []string, want ...string) {
			t.Helper()
			if !slices.Equal(sorted(got), sorted(want)) {
				t.Fatalf("%s: listed %d images %v, want %d %v", q, len(got), got, len(want), want)
			}
		}
		// Which images each caller sees: the visibility rules, unchanged.
		all, _, _ := e.walk(e.alice, "/v2/images?limit=1000")
		sameSet("alice default", all, append(append(slices.Clone(alices), public...), accepted)...)
		all, _, _ = e.walk(e.alice, "/v2/images?visibility=all&limit=1000")
		sameSet("alice all", all, append(append(slices.Clone(alices), public...), accepted, community)...)
		all, _, _ = e.walk(e.alice, "/v2/images?visibility=shared&member_status=all")
		sameSet("alice shared, any status", all, accepted, pending, rejected)
		all, _, _ = e.walk(e.alice, "/v2/images?visibility=shared&member_status=pending")
		sameSet("alice shared, pending", all, pending)
		all, _, _ = e.walk(e.alice, "/v2/images?os_hidden=true")
		sameSet("alice hidden", all, hidden)
		all, _, _ = e.walk(e.bob, "/v2/images?visibility=private")
		sameSet("bob private", all, bobs)
		all, _, _ = e.walk(e.admin, "/v2/images?visibility=all&limit=1000")
		if len(all) != n-1 { // all but the hidden one
			t.Fatalf("admin, visibility=all: %d images, want %d", len(all), n-1)
		}
		all, _, _ = e.walk(e.admin, "/v2/images")
		if slices.Contains(all, community) || !slices.Contains(all, notMember) || !slices.Contains(all, bobs) {
			t.Fatalf("admin default list %v: other tenants' community images are left out, the rest is in", all)
		}

		for _, tok := range []string{e.alice, e.admin} {
			for _, q := range []string{"", "sort_key=name&sort_dir=asc", "sort=size:desc,name:asc", "sort_key=created_at&sort_dir=asc",
				"image_type=backup", "tag=even&sort_key=name", "visibility=all&sort_key=owner&sort_key=size&sort_dir=asc&sort_dir=desc",
				"size_min=100&sort_key=size", "name=in:x,pub&sort_key=status", "created_at=gte:2026-12-01T10:00:03Z"} {
				one, oneRows, _ := e.walk(tok, "/v2/images?limit=1000&"+q)
				for _, limit := range []int{1, 2, 5} {
					got, _, pages := e.walk(tok, fmt.Sprintf("/v2/images?limit=%d&%s", limit, q))
					if !slices.Equal(got, one) {
						t.Fatalf("%s by pages of %d:\n%v\nwant the one-page list\n%v", q, limit, got, one)
					}
					if want := max(1, (len(one)+limit-1)/limit); pages != want && pages != want+1 {
						t.Fatalf("%s: %d images in %d pages of %d", q, len(one), pages, limit)
					}
				}
				checkOrder(t, q, oneRows)
			}
		}
		// A marker outside the list (another's private image, or one the
		// filters leave out) is a 400, as before.
		e.wantError(e.do("GET", "/v2/images?marker="+bobs, e.alice, nil), http.StatusBadRequest)
		e.wantError(e.do("GET", "/v2/images?image_type=backup&marker="+alices[0], e.alice, nil), http.StatusBadRequest)
	})
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// checkOrder checks a list's rows follow its sort keys, the id last.
func checkOrder(t *testing.T, q string, rows []map[string]any) {
	t.Helper()
	v, _ := url.ParseQuery(q)
	type key struct {
		name string
		desc bool
	}
	var keys []key
	if s := v.Get("sort"); s != "" {
		for _, part := range strings.Split(s, ",") {
			k, d, _ := strings.Cut(part, ":")
			keys = append(keys, key{k, d != "asc"})
		}
	} else {
		for i, k := range v["sort_key"] {
			dirs := v["sort_dir"]
			d := "desc"
			if i < len(dirs) {
				d = dirs[i]
			}
			keys = append(keys, key{k, d == "desc"})
		}
		if len(keys) == 0 {
			keys = []key{{"created_at", v.Get("sort_dir") != "asc"}}
		}
	}
	keys = append(keys, key{"id", keys[len(keys)-1].desc})
	cmpVal := func(a, b any) int {
		switch x := a.(type) {
		case nil:
			if b == nil {
				return 0
			}
			return -1
		case float64:
			if b == nil {
				return 1
			}
			y := b.(float64)
			return map[bool]int{true: -1, false: 1}[x < y] * map[bool]int{true: 0, false: 1}[x == y]
		case string:
			return strings.Compare(x, b.(string))
		}
		return 0
	}
	for i := 1; i < len(rows); i++ {
		for _, k := range keys {
			c := cmpVal(rows[i-1][k.name], rows[i][k.name])
			if k.desc {
				c = -c
			}
			if c < 0 {
				break
			}
			if c > 0 {
				t.Fatalf("%s: row %d (%v=%v) before row %d (%v=%v)", q, i-1, k.name, rows[i-1][k.name], i, k.name, rows[i][k.name])
			}
		}
	}
}

// TestImagesListQueriesDoNotGrowWithImages: a page of images costs the
// same queries for 3 images as for 30 (none per image).
func TestImagesListQueriesDoNotGrowWithImages(t *testing.T) {
	e := newEnv(t, nil)
	var queries atomic.Int64
	count := func(*gorm.DB) { queries.Add(1) }
	for _, err := range []error{
		e.st.DB.Callback().Query().After("gorm:query").Register("test:count_query", count),
		e.st.DB.Callback().Row().After("gorm:row").Register("test:count_row", count),
		e.st.DB.Callback().Raw().After("gorm:raw").Register("test:count_raw", count),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	shared := 0
	add := func(n int) {
		for i := range n {
			e.register(fmt.Sprintf("img-%d-%d", shared, i), e.demoPID, "private", nil)
			if i%2 == 0 {
				shared++
				sh := e.register(fmt.Sprintf("sh-%d", shared), e.otherPID, "shared", nil)
				if err := e.st.DB.Create(&store.ImageMember{ImageID: sh, MemberID: e.demoPID, Status: "accepted"}).Error; err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	listed := func(q string) (int, int64) {
		t.Helper()
		queries.Store(0)
		r := e.want(e.do("GET", "/v2/images?limit=1000&"+q, e.alice, nil), http.StatusOK)
		return len(r.body["images"].([]any)), queries.Load()
	}
	add(3)
	qs := []string{"", "visibility=all&sort_key=name", "marker=" + e.register("first", e.demoPID, "private", func(img *store.Image) {
		img.CreatedAt = time.Now().Add(time.Hour)
	})}
	few, fewQ := map[string]int{}, map[string]int64{}
	for _, q := range qs {
		few[q], fewQ[q] = listed(q)
	}
	add(30)
	for _, q := range qs {
		n, c := listed(q)
		if n <= few[q] {
			t.Fatalf("%q: listed %d then %d images", q, few[q], n)
		}
		if c > fewQ[q] {
			t.Errorf("%q: %d images listed in %d queries, %d in %d: the list queries per image", q, few[q], fewQ[q], n, c)
		}
	}
}
