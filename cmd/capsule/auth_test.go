package main

import (
	"context"
	"strings"
	"testing"
)

// A stale OS_CACERT (a file that is not there) stops the CLI only for an
// https cloud, as the openstack CLI, which opens the CA for https only.
func TestStaleCACertOnlyMattersForHTTPS(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	t.Setenv("OS_USERNAME", "u")
	t.Setenv("OS_PASSWORD", "p")
	t.Setenv("OS_PROJECT_NAME", "p")
	t.Setenv("OS_USER_DOMAIN_NAME", "Default")
	t.Setenv("OS_PROJECT_DOMAIN_NAME", "Default")
	t.Setenv("OS_CACERT", "/nonexistent/ca.pem")
	for _, c := range []struct {
		url       string
		wantCAErr bool
	}{
		{"http://127.0.0.1:1/v3", false},
		{"https://127.0.0.1:1/v3", true},
	} {
		t.Setenv("OS_AUTH_URL", c.url)
		err := (&cli{}).authenticate(context.Background())
		if err == nil {
			t.Fatalf("%s: authenticated against a closed port", c.url)
		}
		if got := strings.Contains(err.Error(), "OS_CACERT"); got != c.wantCAErr {
			t.Errorf("%s: error %q; want an OS_CACERT error: %v", c.url, err, c.wantCAErr)
		}
	}
}
