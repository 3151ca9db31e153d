package network

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/store"
)

// attrs is one resource object of a request body, decoded lazily so each
// attribute can be type-checked the way Neutron's converters do (e.g.
// "100" accepted for an integer, "True" for a boolean).
type attrs map[string]json.RawMessage

// inputError is a 400 InvalidInput reason.
type inputError string

func (e inputError) Error() string { return string(e) }

func inputErr(format string, args ...any) error { return inputError(fmt.Sprintf(format, args...)) }

// readBody decodes {"<one>": {...}} or, for bulk creates, {"<many>": [...]}.
// bulk reports which form arrived.
func readBody(r *http.Request, one, many string) (objs []attrs, bulk bool, err error) {
	var body map[string]json.RawMessage
	if err := httpapi.ReadJSON(r, &body); err != nil {
		return nil, false, inputErr("%v", err)
	}
	if raw, ok := body[one]; ok && len(body) == 1 {
		var a attrs
		if err := json.Unmarshal(raw, &a); err != nil || a == nil {
			return nil, false, inputErr("Resource body for '%s' must be an object", one)
		}
		return []attrs{a}, false, nil
	}
	if raw, ok := body[many]; ok && many != "" && len(body) == 1 {
		if err := json.Unmarshal(raw, &objs); err != nil || len(objs) == 0 {
			return nil, true, inputErr("Resources body for '%s' must be a non-empty list of objects", many)
		}
		for _, o := range objs {
			if o == nil {
				return nil, true, inputErr("Resources body for '%s' must be a non-empty list of objects", many)
			}
		}
		return objs, true, nil
	}
	return nil, false, inputErr("Unable to find '%s' in request body", one)
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// unknown returns an error naming the keys not in allowed.
func (a attrs) unknown(allowed ...string) error {
	var bad []string
	for k := range a {
		if !slices.Contains(allowed, k) {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return inputErr("Unrecognized attribute(s) '%s'", strings.Join(bad, ", "))
}

func (a attrs) has(key string) bool { _, ok := a[key]; return ok }

// str returns a string attribute (nil when absent).
func (a attrs) str(key string) (*string, error) {
	raw, ok := a[key]
	if !ok {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, inputErr("'%s' is not a valid string for %s", strings.TrimSpace(string(raw)), key)
	}
	return &s, nil
}

// nullableStr returns present, and the value or nil for JSON null.
func (a attrs) nullableStr(key string) (bool, *string, error) {
	raw, ok := a[key]
	if !ok {
		return false, nil, nil
	}
	if isNull(raw) {
		return true, nil, nil
	}
	s, err := a.str(key)
	return true, s, err
}

// boolean accepts true/false and the strings Neutron's convert_to_boolean
// does ("True", "false", "1", "0").
func (a attrs) boolean(key string) (*bool, error) {
	raw, ok := a[key]
	if !ok {
		return nil, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return &b, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if v, ok := parseBool(s); ok {
			return &v, nil
		}
	}
	return nil, inputErr("'%s' cannot be converted to boolean", strings.Trim(strings.TrimSpace(string(raw)), `"`))
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "true", "1", "t", "yes", "y", "on":
		return true, true
	case "false", "0", "f", "no", "n", "off":
		return false, true
	}
	return false, false
}

// integer accepts 100 and "100" (OSC sends provider:segmentation_id as a
// string).
func (a attrs) integer(key string) (*int, error) {
	raw, ok := a[key]
	if !ok || isNull(raw) {
		return nil, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return &n, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			return &v, nil
		}
	}
	return nil, inputErr("'%s' is not an integer", strings.Trim(strings.TrimSpace(string(raw)), `"`))
}

// decode unmarshals an attribute into v; ok is false when absent or null.
func (a attrs) decode(key string, v any) (bool, error) {
	raw, ok := a[key]
	if !ok || isNull(raw) {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, inputErr("invalid value for %s: %s", key, strings.TrimSpace(string(raw)))
	}
	return true, nil
}

// emptyList accepts an attribute only when absent, null or an empty list
// (features Capsule does not have, like allowed_address_pairs).
func (a attrs) emptyList(key string) error {
	var v []json.RawMessage
	if ok, err := a.decode(key, &v); err != nil || (ok && len(v) > 0) {
		return inputErr("%s is not supported", key)
	}
	return nil
}

// ownerProject picks the project of a new resource: the caller's, or for an
// admin the one in project_id/tenant_id. ok is false when a non-admin
// names another project.
func ownerProject(a attrs, callerProject string, admin bool) (string, bool, error) {
	p := callerProject
	for _, k := range []string{"project_id", "tenant_id"} {
		v, err := a.str(k)
		if err != nil {
			return "", false, err
		}
		if v != nil && *v != "" {
			if *v != callerProject && !admin {
				return "", false, nil
			}
			p = *v
		}
	}
	return p, true, nil
}

// readUpdate reads the body of an update of one resource (key one): a
// single object that sets none of readOnly and nothing beyond allowed.
// Otherwise it answers Neutron's 400 and returns false.
func readUpdate(w http.ResponseWriter, r *http.Request, one string, readOnly, allowed []string) (attrs, bool) {
	objs, bulk, err := readBody(r, one, "")
	if err != nil || bulk {
		badRequest(w, errText(err, "Unable to find '"+one+"' in request body"))
		return nil, false
	}
	a := objs[0]
	for _, k := range readOnly {
		if a.has(k) {
			badRequest(w, "Cannot update read-only attribute "+k)
			return nil, false
		}
	}
	if err := a.unknown(allowed...); err != nil {
		badRequest(w, err.Error())
		return nil, false
	}
	return a, true
}

// ifMatch reads Neutron's compare-and-swap constraint: an If-Match entity
// tag revision_number=N (quoted or not, among other tags). nil when there
// is none; otherwise it answers 400 for a malformed or repeated one and
// returns false.
func ifMatch(w http.ResponseWriter, r *http.Request) (*int, bool) {
	var rev *int
	for _, h := range r.Header.Values("If-Match") {
		for _, tag := range strings.Split(h, ",") {
			tag = strings.Trim(strings.TrimPrefix(strings.TrimSpace(tag), "W/"), `"`)
			v, ok := strings.CutPrefix(tag, "revision_number=")
			if !ok {
				continue
			}
			if rev != nil {
				badRequest(w, "Multiple revision_number etags are not supported.")
				return nil, false
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				badRequest(w, "Revision number etag must be in the format of revision_number=<int>")
				return nil, false
			}
			rev = &n
		}
	}
	return rev, true
}

// revisionMatches answers Neutron's 412 and returns false when the
// request's If-Match names another revision than current (deletes check
// the row they loaded).
func revisionMatches(w http.ResponseWriter, r *http.Request, current int) bool {
	rev, ok := ifMatch(w, r)
	if !ok {
		return false
	}
	if err := store.CheckRevision(rev, current); err != nil {
		writeFault(w, err)
		return false
	}
	return true
}
