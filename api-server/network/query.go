package network

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
)

// view is a resource as the API shows it. Lists are filtered, sorted,
// paged and projected on views, so every attribute a caller can see is
// also one it can filter on, with the same value.
type view = map[string]any

// reserved query parameters are not attribute filters.
var reserved = map[string]bool{"fields": true, "limit": true, "marker": true, "sort_key": true,
	"sort_dir": true, "page_reverse": true}

// listQuery applies a GET collection request's query to views (already
// limited to what the caller may see) and writes {coll: [...]} with
// <coll>_links when a limit left more behind. known are the attribute
// names filters may use; notFound answers a marker that names nothing.
func listQuery(w http.ResponseWriter, r *http.Request, coll string, views []view, known map[string]bool, notFound func(id string)) {
	q := r.URL.Query()
	for k, vals := range q {
		if reserved[k] {
			continue
		}
		switch {
		case k == "tags" || k == "tags-any" || k == "not-tags" || k == "not-tags-any":
			views = slices.DeleteFunc(views, func(v view) bool { return !matchTags(v, k, vals) })
		case k == "fixed_ips" && known["fixed_ips"]:
			views = slices.DeleteFunc(views, func(v view) bool { return !matchFixedIPs(v, vals) })
		case known[k]:
			views = slices.DeleteFunc(views, func(v view) bool { return !matchAny(v[k], vals) })
		default:
			badRequest(w, fmt.Sprintf("[%s] is invalid attribute for filtering", k))
			return
		}
	}
	if keys := q["sort_key"]; len(keys) > 0 {
		for _, k := range keys {
			if !known[k] {
				badRequest(w, fmt.Sprintf("%s is invalid attribute for sort_key", k))
				return
			}
		}
		dirs := q["sort_dir"]
		sort.SliceStable(views, func(i, j int) bool {
			for n, k := range keys {
				c := compare(views[i][k], views[j][k])
				if c == 0 {
					continue
				}
				if n < len(dirs) && strings.EqualFold(dirs[n], "desc") {
					return c > 0
				}
				return c < 0
			}
			return false
		})
	}
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(views, func(v view) bool { return v["id"] == m })
		if i < 0 {
			notFound(m)
			return
		}
		views = views[i+1:]
	}
	n, ok := parseLimit(w, r)
	if !ok {
		return
	}
	writePage(w, r, coll, views, n)
}

// parseLimit reads the request's limit (0 when absent); false when it
// answered an invalid one.
func parseLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return 0, true
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 {
		invalidInput(w, fmt.Sprintf("'%s' is not a valid limit", l))
		return 0, false
	}
	return n, true
}

// writePage writes {coll: views[:limit]} projected to the request's
// fields, with <coll>_links to the next page when views has more than
// limit entries (limit 0: all of them, no link).
func writePage(w http.ResponseWriter, r *http.Request, coll string, views []view, limit int) {
	q := r.URL.Query()
	out := map[string]any{}
	if limit > 0 && len(views) > limit {
		views = views[:limit]
		next := url.Values{}
		for k, v := range q {
			if k != "marker" {
				next[k] = v
			}
		}
		next.Set("marker", fmt.Sprint(views[limit-1]["id"]))
		out[coll+"_links"] = []map[string]string{{"rel": "next",
			"href": httpapi.BaseURL(r) + r.URL.Path + "?" + next.Encode()}}
	}
	fields := q["fields"]
	items := make([]view, 0, len(views))
	for _, v := range views {
		items = append(items, projectFields(v, fields))
	}
	out[coll] = items
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// projectFields keeps only fields (all when none are asked for).
func projectFields(v view, fields []string) view {
	if len(fields) == 0 {
		return v
	}
	out := view{}
	for _, f := range fields {
		if x, ok := v[f]; ok {
			out[f] = x
		}
	}
	return out
}

// matchAny reports whether the attribute value equals one of the filter
// values (repeated parameters are OR).
func matchAny(val any, filters []string) bool {
	for _, f := range filters {
		if match(val, f) {
			return true
		}
	}
	return false
}

func match(val any, f string) bool {
	switch v := val.(type) {
	case nil:
		return f == "" || f == "None" || f == "null"
	case string:
		return v == f
	case *string:
		if v == nil {
			return f == "" || f == "None" || f == "null"
		}
		return *v == f
	case bool:
		b, ok := parseBool(f)
		return ok && b == v
	case int:
		return strconv.Itoa(v) == f
	case *int:
		return v != nil && strconv.Itoa(*v) == f
	case []string:
		return slices.Contains(v, f)
	}
	return fmt.Sprint(val) == f
}

// matchTags applies a tag filter (standard-attr-tag): its values are
// comma-separated tags (repeated parameters add to the list); "tags"
// keeps resources with all of them, "tags-any" with one of them,
// "not-tags" drops those with all of them, "not-tags-any" those with one.
func matchTags(v view, filter string, vals []string) bool {
	var want []string
	for _, val := range vals {
		for _, t := range strings.Split(val, ",") {
			if t != "" {
				want = append(want, t)
			}
		}
	}
	have, _ := v["tags"].([]string)
	all, any := len(want) > 0, false
	for _, t := range want {
		in := slices.Contains(have, t)
		all = all && in
		any = any || in
	}
	switch filter {
	case "tags":
		return all
	case "tags-any":
		return any
	case "not-tags":
		return !all
	default: // not-tags-any
		return !any
	}
}

// matchFixedIPs: every fixed_ips=key=value filter must match one of the
// port's fixed IPs.
func matchFixedIPs(v view, filters []string) bool {
	ips, _ := v["fixed_ips"].([]map[string]string)
	for _, f := range filters {
		key, val, ok := strings.Cut(f, "=")
		if !ok {
			return false
		}
		found := false
		for _, ip := range ips {
			switch key {
			case "ip_address", "subnet_id":
				found = found || ip[key] == val
			case "ip_address_substr":
				found = found || strings.Contains(ip["ip_address"], val)
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func compare(a, b any) int {
	switch x := a.(type) {
	case int:
		if y, ok := b.(int); ok {
			return x - y
		}
	case *int:
		if y, ok := b.(*int); ok && x != nil && y != nil {
			return *x - *y
		}
	case bool:
		if y, ok := b.(bool); ok {
			switch {
			case x == y:
				return 0
			case !x:
				return -1
			}
			return 1
		}
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

// keysOf is the set of attribute names of a sample view.
func keysOf(v view) map[string]bool {
	out := make(map[string]bool, len(v))
	for k := range v {
		out[k] = true
	}
	return out
}

// showOne writes {name: view} projected to the request's fields.
func showOne(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	httpapi.WriteJSON(w, status, map[string]any{name: projectFields(v, r.URL.Query()["fields"])})
}
