package compute

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
)

// This file holds a small JSON Schema (draft 4) validator and the Tempest
// 33.0.0 compute response schemas it checks against
// (testdata/tempest_schemas.json, made by testdata/gen_tempest_schemas.py).
// Tempest validates every compute response it gets against these, and
// almost all say additionalProperties: false, so a missing key and an extra
// key fail a Tempest test alike. Only the keywords those schemas use are
// implemented; an unknown keyword fails the test rather than pass silently.

// tempestSchema is one Tempest response schema.
type tempestSchema struct {
	Name       string         `json:"-"`
	StatusCode []int          `json:"status_code"`
	Body       map[string]any `json:"response_body"`
}

// tempestSchemas maps "v2_N.module.name" to its schema; an entry exists
// only where the schema changed at that microversion.
type tempestSchemas map[string]*tempestSchema

func loadTempestSchemas(t *testing.T) tempestSchemas {
	t.Helper()
	raw, err := os.ReadFile("testdata/tempest_schemas.json")
	if err != nil {
		t.Fatalf("read Tempest schemas: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out tempestSchemas
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("decode Tempest schemas: %v", err)
	}
	for k, s := range out {
		s.Name = k
	}
	return out
}

// pick returns the schema Tempest uses for module.name at microversion v:
// the entry of the highest microversion directory not above v, which is
// what Tempest's schema_versions_info tables resolve to.
func (ts tempestSchemas) pick(t *testing.T, module, name string, v apiVersion) *tempestSchema {
	t.Helper()
	var best *tempestSchema
	bestMinor := -1
	for k, s := range ts {
		dir, rest, _ := strings.Cut(k, ".")
		if rest != module+"."+name {
			continue
		}
		minor, err := strconv.Atoi(strings.TrimPrefix(dir, "v2_"))
		if err != nil {
			t.Fatalf("bad schema key %q", k)
		}
		if minor <= v.Minor && minor > bestMinor {
			best, bestMinor = s, minor
		}
	}
	if best == nil {
		t.Fatalf("no Tempest schema %s.%s at %s", module, name, v)
	}
	return best
}

// decodeJSON decodes with numbers kept literal, so integer-vs-number is
// checked as Tempest (jsonschema draft 4) does.
func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// validateSchema returns every violation of schema by val, each prefixed
// with the JSON path.
func validateSchema(path string, schema map[string]any, val any) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	for kw := range schema {
		switch kw {
		case "type", "enum", "format", "pattern", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "items", "oneOf",
			"properties", "patternProperties", "additionalProperties", "required":
		default:
			fail("validator does not implement keyword %q", kw)
		}
	}
	if t, ok := schema["type"]; ok && !typeMatches(t, val) {
		fail("type %s, want %v", jsonType(val), t)
		return errs
	}
	if enum, ok := schema["enum"].([]any); ok && !inEnum(enum, val) {
		fail("value %v not in enum %v", val, enum)
	}
	if subs, ok := schema["oneOf"].([]any); ok {
		n := 0
		for _, sub := range subs {
			if len(validateSchema(path, sub.(map[string]any), val)) == 0 {
				n++
			}
		}
		if n != 1 {
			fail("value %v matches %d of oneOf %v, want exactly 1", val, n, subs)
		}
	}
	switch x := val.(type) {
	case string:
		errs = append(errs, validateString(path, schema, x)...)
	case []any:
		if m, ok := schema["maxItems"].(json.Number); ok {
			if n, _ := m.Int64(); int64(len(x)) > n {
				fail("%d items, at most %d allowed", len(x), n)
			}
		}
		if m, ok := schema["minItems"].(json.Number); ok {
			if n, _ := m.Int64(); int64(len(x)) < n {
				fail("%d items, at least %d required", len(x), n)
			}
		}
		if u, _ := schema["uniqueItems"].(bool); u {
			seen := map[string]bool{}
			for _, it := range x {
				b, _ := json.Marshal(it)
				if seen[string(b)] {
					fail("item %s repeated, items must be unique", b)
				}
				seen[string(b)] = true
			}
		}
		if items, ok := schema["items"].(map[string]any); ok {
			for i, it := range x {
				errs = append(errs, validateSchema(fmt.Sprintf("%s[%d]", path, i), items, it)...)
			}
		}
	case map[string]any:
		errs = append(errs, validateObject(path, schema, x)...)
	}
	return errs
}

func validateString(path string, schema map[string]any, s string) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	if f, ok := schema["format"].(string); ok && !formatMatches(f, s) {
		fail("%q is not a valid %s", s, f)
	}
	if p, ok := schema["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(s) {
		fail("%q does not match %s", s, p)
	}
	if m, ok := schema["minLength"].(json.Number); ok {
		if n, _ := m.Int64(); int64(utf8.RuneCountInString(s)) < n {
			fail("%q shorter than %d", s, n)
		}
	}
	if m, ok := schema["maxLength"].(json.Number); ok {
		if n, _ := m.Int64(); int64(utf8.RuneCountInString(s)) > n {
			fail("%q longer than %d", s, n)
		}
	}
	return errs
}

func validateObject(path string, schema map[string]any, obj map[string]any) []string {
	var errs []string
	props, _ := schema["properties"].(map[string]any)
	patterns, _ := schema["patternProperties"].(map[string]any)
	if req, ok := schema["required"].([]any); ok {
		for _, k := range req {
			if _, present := obj[k.(string)]; !present {
				errs = append(errs, fmt.Sprintf("%s: required key %q missing", path, k))
			}
		}
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := obj[k]
		matched := false
		if sub, ok := props[k].(map[string]any); ok {
			matched = true
			errs = append(errs, validateSchema(path+"."+k, sub, v)...)
		}
		for p, sub := range patterns {
			if regexp.MustCompile(p).MatchString(k) {
				matched = true
				errs = append(errs, validateSchema(path+"."+k, sub.(map[string]any), v)...)
			}
		}
		if matched {
			continue
		}
		switch ap := schema["additionalProperties"].(type) {
		case bool:
			if !ap {
				errs = append(errs, fmt.Sprintf("%s: key %q not allowed (additionalProperties: false)", path, k))
			}
		case map[string]any:
			errs = append(errs, validateSchema(path+"."+k, ap, v)...)
		}
	}
	return errs
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case json.Number:
		if strings.ContainsAny(x.String(), ".eE") {
			return "number"
		}
		return "integer"
	}
	return fmt.Sprintf("%T", v)
}

func typeMatches(want any, v any) bool {
	got := jsonType(v)
	one := func(w string) bool { return w == got || (w == "number" && got == "integer") }
	switch w := want.(type) {
	case string:
		return one(w)
	case []any:
		for _, x := range w {
			if one(x.(string)) {
				return true
			}
		}
	}
	return false
}

func inEnum(enum []any, v any) bool {
	b, _ := json.Marshal(v)
	for _, e := range enum {
		eb, _ := json.Marshal(e)
		if bytes.Equal(b, eb) {
			return true
		}
	}
	return false
}

// iso8601 accepts what oslo_utils.timeutils.parse_isotime does for the
// shapes Nova emits: date, time, optional fraction, optional zone.
var iso8601 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$`)

func formatMatches(format, s string) bool {
	switch format {
	case "iso8601-date-time":
		return iso8601.MatchString(s)
	case "ipv4":
		a, err := netip.ParseAddr(s)
		return err == nil && a.Is4()
	case "ipv6":
		a, err := netip.ParseAddr(s)
		return err == nil && a.Is6() && a.Zone() == ""
	case "uuid":
		_, err := uuid.Parse(s)
		return err == nil && len(s) == 36
	case "uri":
		u, err := url.Parse(s)
		return err == nil && u.Scheme != "" && u.Host != ""
	case "base64":
		_, err := base64.StdEncoding.DecodeString(s)
		return err == nil
	}
	return false
}

func TestSchemaValidatorCatchesMismatches(t *testing.T) {
	ts := loadTempestSchemas(t)
	s := ts.pick(t, "flavors", "list_flavors", apiVersion{2, 1})
	good, _ := decodeJSON([]byte(`{"flavors":[{"id":"1","name":"a","links":[{"rel":"self","href":"http://h/v2.1/flavors/1"}]}]}`))
	if errs := validateSchema("body", s.Body, good); len(errs) != 0 {
		t.Errorf("valid body rejected: %v", errs)
	}
	for _, bad := range []string{
		`{"flavors":[{"id":"1","name":"a","links":[],"description":null}]}`, // extra key
		`{"flavors":[{"id":1,"name":"a","links":[]}]}`,                      // int id
		`{"flavors":[{"name":"a","links":[]}]}`,                             // missing id
	} {
		v, _ := decodeJSON([]byte(bad))
		if errs := validateSchema("body", s.Body, v); len(errs) == 0 {
			t.Errorf("invalid body accepted: %s", bad)
		}
	}
	if ts.pick(t, "limits", "get_limit", apiVersion{2, 38}).Name != "v2_36.limits.get_limit" {
		t.Error("pick does not take the highest schema at or below the microversion")
	}
	if jsonType(json.Number("1.0")) != "number" || jsonType(json.Number("1")) != "integer" {
		t.Error("integer/number distinction lost")
	}
}
