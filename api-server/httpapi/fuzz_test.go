package httpapi

import (
	"bytes"
	"net/http/httptest"
	"testing"
)

// FuzzReadJSON: the body decoder every API shares never panics and
// rejects what is not exactly one JSON value within MaxBodyBytes.
func FuzzReadJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1} x`, `{"a":1}{}`, ``, `   `, `[` + string(bytes.Repeat([]byte("["), 10000)), `"\ud800"`,
		`{"a":1e400}`, "\xff", `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v any
		err := ReadJSON(httptest.NewRequest("POST", "/", bytes.NewReader(body)), &v)
		if err == nil && len(bytes.TrimSpace(body)) == 0 {
			t.Fatalf("an empty body decoded")
		}
	})
}
