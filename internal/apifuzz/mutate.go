package apifuzz

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
)

// The mutator turns a valid request body (a tree of maps, slices and
// scalars, as encoding/json decodes it) into a hostile one: a field of
// the wrong type, a huge or negative number, a long, unicode or NUL-laden
// string, a missing or unknown key, deep nesting. Most bodies get one to
// three mutations; some none (valid requests reach the deeper code), some
// are replaced by raw bytes that are not JSON at all.

// oddStrings are string values that break naive code.
var oddStrings = []string{
	"", " ", "\x00", "a\x00b", "ü€😀", "\u202e\u0007\x1b[31m", "../../etc/passwd", "%00", "%2F..%2F", "' OR 1=1 --",
	"<script>alert(1)</script>", "null", "true", "-1", "0", "1e309", "NaN", "Infinity", "\xed\xa0\x80", "\xff\xfe",
	"10.0.0.1", "::1", "0.0.0.0/0", "fe80::/10", "255.255.255.255", "10.0.0.0/33", "1.2.3.4/-1", "::/0", "ff:ff:ff:ff:ff:ff",
	"00:00:00:00:00:00", "2.1", "2.999", "latest", "auto", "default", "SOFT", "HARD", "active", "error",
	"11111111-2222-4333-8444-555555555555", "00000000-0000-0000-0000-000000000000", "*", "%", "_", "\\", "\"",
	"1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-13-45T99:99:99", "gt:2020-01-01T00:00:00Z",
}

// oddNumbers are numeric values (raw JSON) that break naive code.
var oddNumbers = []json.Number{"0", "-1", "1", "2147483647", "2147483648", "-2147483649", "4294967296",
	"9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
	"1e308", "-1e308", "1e400", "1.5", "-0", "0.0000001", "123456789012345678901234567890"}

// oddValue returns a hostile JSON value.
func oddValue(rng *rand.Rand) any {
	switch rng.IntN(12) {
	case 0:
		return nil
	case 1:
		return rng.IntN(2) == 0
	case 2, 3:
		return oddNumbers[rng.IntN(len(oddNumbers))]
	case 4, 5:
		return oddStrings[rng.IntN(len(oddStrings))]
	case 6:
		return strings.Repeat(string(rune('a'+rng.IntN(26))), []int{256, 4097, 65536}[rng.IntN(3)])
	case 7:
		return []any{}
	case 8:
		return map[string]any{}
	case 9:
		return deepValue(rng, 1+rng.IntN(200))
	case 10:
		n := []int{2, 100, 5000}[rng.IntN(3)]
		a := make([]any, n)
		for i := range a {
			a[i] = oddStrings[rng.IntN(len(oddStrings))]
		}
		return a
	default:
		m := map[string]any{}
		for range 1 + rng.IntN(4) {
			m[oddStrings[rng.IntN(len(oddStrings))]] = oddStrings[rng.IntN(len(oddStrings))]
		}
		return m
	}
}

// deepValue nests depth arrays or objects.
func deepValue(rng *rand.Rand, depth int) any {
	var v any = "x"
	for range depth {
		if rng.IntN(2) == 0 {
			v = []any{v}
		} else {
			v = map[string]any{"a": v}
		}
	}
	return v
}

// mutate returns v with n random changes; v itself is not modified.
func mutate(rng *rand.Rand, v any, n int) any {
	for range n {
		v = mutateOnce(rng, v)
	}
	return v
}

// mutateOnce changes one node of v, picked by walking down from the root
// and stopping at each level with some probability.
func mutateOnce(rng *rand.Rand, v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t)+1)
		for k, x := range t {
			out[k] = x
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		switch r := rng.IntN(10); {
		case len(keys) == 0 || r == 0:
			out[oddStrings[rng.IntN(len(oddStrings))]] = oddValue(rng) // an unknown key
		case r == 1:
			delete(out, keys[rng.IntN(len(keys))])
		case r == 2:
			out[keys[rng.IntN(len(keys))]] = oddValue(rng)
		default:
			k := keys[rng.IntN(len(keys))]
			out[k] = mutateOnce(rng, t[k])
		}
		return out
	case []any:
		out := append([]any(nil), t...)
		switch r := rng.IntN(8); {
		case len(out) == 0 || r == 0:
			out = append(out, oddValue(rng))
		case r == 1:
			out = out[:rng.IntN(len(out))]
		case r == 2 && len(t) < 100 && scalars(t): // copies of containers would compound into gigabytes
			for range []int{1, 50, 2000}[rng.IntN(3)] {
				out = append(out, t[rng.IntN(len(t))])
			}
		default:
			i := rng.IntN(len(out))
			out[i] = mutateOnce(rng, out[i])
		}
		return out
	case string:
		switch rng.IntN(6) {
		case 0:
			return t + oddStrings[rng.IntN(len(oddStrings))]
		case 1:
			if len(t) < 1024 { // repeated mutations must not compound into gigabytes
				return strings.Repeat(t+"x", 1+rng.IntN(300))
			}
		case 2:
			if t != "" {
				return t[:rng.IntN(len(t))]
			}
		}
		return oddValue(rng)
	default:
		return oddValue(rng)
	}
}

// rawBodies are bodies that are not (valid) JSON or are JSON of the
// wrong kind altogether.
var rawBodies = []string{"", "{", "}", "[", "null", "true", "0", "\"s\"", "[]", "{}", "{\"a\":}", "{\"a\":1,}",
	"{\"a\":1}{\"b\":2}", "{\"a\":1} trailing", "\xff\xfe\x00", "{\"a\":\"\\ud800\"}", "{\"a\":1e999999}",
	"{\"\":{\"\":{\"\":null}}}", "<xml/>", "a=b&c=d", "{\"a\":\"\x00\"}", "\ufeff{}", "{\"a\":01}", "{'a':1}",
	"[" + strings.Repeat("[", 100000), strings.Repeat("{\"a\":", 20000) + "1" + strings.Repeat("}", 20000)}

// rawBody returns a body that is not a mutated valid one.
func rawBody(rng *rand.Rand, valid []byte) []byte {
	switch rng.IntN(5) {
	case 0:
		if len(valid) > 1 {
			return valid[:rng.IntN(len(valid))] // truncated
		}
	case 1:
		b := make([]byte, 1+rng.IntN(512))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	case 2:
		if len(valid) > 0 { // one byte flipped
			b := append([]byte(nil), valid...)
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
			return b
		}
	}
	return []byte(rawBodies[rng.IntN(len(rawBodies))])
}

// oddPathValue is a hostile value for a path parameter.
func oddPathValue(rng *rand.Rand) string {
	switch rng.IntN(6) {
	case 0:
		return strings.Repeat("a", []int{255, 256, 4096}[rng.IntN(3)])
	case 1:
		return string(oddNumbers[rng.IntN(len(oddNumbers))])
	default:
		s := oddStrings[rng.IntN(len(oddStrings))]
		if s == "" {
			s = " "
		}
		return s
	}
}

// microversions are values for the compute microversion headers.
var microversions = []string{"2.1", "2.19", "2.26", "2.37", "2.47", "2.53", "2.55", "2.64", "2.79", "2.90", "2.96", "latest",
	"2.", "2", "3.0", "1.1", "2.0", "2.9999", "2.99999999999999999999", "-2.-1", "abc", "", " 2.1 ", "2.1.1", "0x2.1", "2.01"}

// oddHeaders returns header changes for a request: microversions, content
// types, accept, and unknown or oversized headers.
func oddHeaders(rng *rand.Rand, service string) map[string]string {
	h := map[string]string{}
	if service == "compute" && rng.IntN(2) == 0 {
		v := microversions[rng.IntN(len(microversions))]
		switch rng.IntN(4) {
		case 0:
			h["X-OpenStack-Nova-API-Version"] = v
		case 1:
			h["OpenStack-API-Version"] = "compute " + v
		case 2:
			h["OpenStack-API-Version"] = []string{"volume 2.1", "compute", "compute  latest", "COMPUTE 2.26", v}[rng.IntN(5)]
		default:
			h["X-OpenStack-Nova-API-Version"] = v
			h["OpenStack-API-Version"] = "compute " + microversions[rng.IntN(len(microversions))]
		}
	}
	if rng.IntN(8) == 0 {
		h["Content-Type"] = []string{"text/plain", "application/xml", "application/json; charset=latin1", "",
			"multipart/form-data; boundary=x", "application/openstack-images-v2.1-json-patch", "application/octet-stream"}[rng.IntN(7)]
	}
	if rng.IntN(10) == 0 {
		h["Accept"] = []string{"application/xml", "text/html", "*/*", "application/json;q=0"}[rng.IntN(4)]
	}
	if rng.IntN(20) == 0 {
		h["X-Fuzz-"+strings.Repeat("h", rng.IntN(50))] = strings.Repeat("v", rng.IntN(8000))
	}
	return h
}

// scalars reports whether a holds no arrays or objects.
func scalars(a []any) bool {
	for _, v := range a {
		switch v.(type) {
		case []any, map[string]any:
			return false
		}
	}
	return true
}
