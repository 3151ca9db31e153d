package compute

import (
	"net/http"
	"strconv"

	"github.com/capsule-cloud/capsule/errdefs"
)

// maxPageSize caps "limit", as Nova's osapi_max_limit does.
const maxPageSize = 1000

// pageOf applies Nova's marker/limit paging to items already in list
// order: items after the one whose id is "marker", at most "limit" of them.
// more reports that items remain after the page. A bad limit or an unknown
// marker is a 400, written here (ok=false).
func pageOf[T any](w http.ResponseWriter, r *http.Request, items []T, id func(*T) string) (out []T, limit int, more bool, ok bool) {
	q := r.URL.Query()
	if m := q.Get("marker"); m != "" {
		idx := -1
		for i := range items {
			if id(&items[i]) == m {
				idx = i
				break
			}
		}
		if idx < 0 {
			writeFault(w, errdefs.InvalidArgumentf("marker [%s] not found", m))
			return nil, 0, false, false
		}
		items = items[idx+1:]
	}
	limit, ok = pageLimit(w, r)
	if !ok {
		return nil, 0, false, false
	}
	if limit >= 0 && len(items) > limit {
		return items[:limit], limit, true, true
	}
	return items, limit, false, true
}

// pageLimit is the request's "limit", capped at maxPageSize (-1: none). A
// bad one is a 400, written here (ok=false).
func pageLimit(w http.ResponseWriter, r *http.Request) (limit int, ok bool) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return -1, true
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 {
		writeFault(w, errdefs.InvalidArgument("limit param must be an integer"))
		return 0, false
	}
	return min(n, maxPageSize), true
}

// nextLinks is the "<coll>_links" value pointing at the page after the one
// ending with lastID.
func (s *Service) nextLinks(r *http.Request, coll string, detail bool, limit int, lastID string) []map[string]string {
	nq := r.URL.Query()
	nq.Set("limit", strconv.Itoa(limit))
	nq.Set("marker", lastID)
	path := "/v2.1/" + coll
	if detail {
		path += "/detail"
	}
	return []map[string]string{link("next", s.baseURL(r)+path+"?"+nq.Encode())}
}
