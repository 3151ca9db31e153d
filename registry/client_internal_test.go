package registry

import "testing"

func TestParseChallenge(t *testing.T) {
	p := parseChallenge(`realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"`)
	if p["realm"] != "https://auth.example/token" || p["service"] != "registry.example" || p["scope"] != "repository:a/b:pull,push" {
		t.Errorf("parseChallenge = %v", p)
	}
	p = parseChallenge(`Realm=unquoted, service="s"`)
	if p["realm"] != "unquoted" || p["service"] != "s" {
		t.Errorf("parseChallenge with an unquoted value = %v", p)
	}
	for method, want := range map[string]string{"GET": "repository:a/b:pull", "HEAD": "repository:a/b:pull",
		"DELETE": "repository:a/b:delete", "PATCH": "repository:a/b:pull,push", "POST": "repository:a/b:pull,push"} {
		if got := scopeFor(method, "a/b"); got != want {
			t.Errorf("scopeFor(%s) = %q, want %q", method, got, want)
		}
	}
}
