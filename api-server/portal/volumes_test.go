package portal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestMountPath(t *testing.T) {
	for _, c := range []struct{ device, want string }{
		{"/dev/vdb", "/mnt/v1"}, {"", "/mnt/v1"}, {"/data", "/data"},
	} {
		if got := mountPath(c.device, "v1"); got != c.want {
			t.Errorf("mountPath(%q) = %q, want %q", c.device, got, c.want)
		}
	}
}

func TestParseTags(t *testing.T) {
	tags, msg := parseTags(" web, prod\nweb ,, db ")
	if msg != "" || strings.Join(tags, "|") != "web|prod|db" {
		t.Errorf("tags %q %q", tags, msg)
	}
	if _, msg := parseTags("a/b"); msg == "" {
		t.Errorf("a tag with / accepted")
	}
	if _, msg := parseTags(strings.Repeat("x", 61)); msg == "" {
		t.Errorf("a 61-character tag accepted")
	}
}

// TestLaunchOptions: user data (base64), zone, tags (at 2.52, with
// networks "auto" when none was picked), min and max count reach Nova's
// create body; too much user data and a max below the count are refused
// before Nova is asked.
func TestLaunchOptions(t *testing.T) {
	e := newEnv(t)
	csrf := e.login("demo")
	resp := e.post("/launch", url.Values{"csrf": {csrf}, "name": {"opt"}, "image": {"img-1"}, "flavor": {"1"}, "count": {"2"},
		"max_count": {"3"}, "user_data": {"#!/bin/sh\necho hi\n"}, "zone": {"nova"}, "tags": {"web, prod"}})
	if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "done=launched") {
		t.Fatalf("launch: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	got, _ := json.Marshal(e.api.created)
	want := `[{"availability_zone":"nova","flavorRef":"1","imageRef":"img-1","max_count":3,"min_count":2,"name":"opt","networks":"auto",` +
		`"tags":["web","prod"],"user_data":"IyEvYmluL3NoCmVjaG8gaGkK"}]`
	if string(got) != want {
		t.Errorf("create request:\n got %s\nwant %s", got, want)
	}
	for _, c := range []struct{ field, value, msg string }{
		{"user_data", strings.Repeat("x", maxUserData+1), "User data is at most 49149 bytes"},
		{"max_count", "1", "The most servers must be"},
		{"tags", "a/b", "A tag is 1 to 60 characters"},
	} {
		form := url.Values{"csrf": {csrf}, "name": {"bad"}, "image": {"img-1"}, "flavor": {"1"}, "count": {"2"}}
		form.Set(c.field, c.value)
		resp := e.postBack("/launch", form)
		if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, c.msg) {
			t.Errorf("%s=%.20q: %d, want %q", c.field, c.value, resp.StatusCode, c.msg)
		}
	}
	if len(e.api.created) != 1 {
		t.Errorf("refused forms reached Nova: %d creates", len(e.api.created))
	}
}

// TestVolumeRoutesNeedSessionAndCSRF: without a session the pages send
// to the login (with next), the JSON answers 401; a POST without the
// CSRF token is refused before any API call; a cloud without a Block
// Storage API says so (404) instead of calling one.
func TestVolumeRoutesNeedSessionAndCSRF(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/volumes", "/volumes/v1"} {
		resp, err := e.client.Get(e.portal.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/login?next=") {
			t.Errorf("GET %s without a session: %d %s", p, resp.StatusCode, loc)
		}
	}
	if st, _ := e.get("/api/volumes"); st != http.StatusUnauthorized {
		t.Errorf("GET /api/volumes without a session: %d", st)
	}
	e.login("demo")
	before := len(e.api.requests)
	for _, p := range []string{"/volumes", "/volumes/v1/attach", "/volumes/v1/delete", "/volumes/v1/extend"} {
		resp := e.post(p, url.Values{"server": {"s1"}})
		if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s without CSRF: %d", p, resp.StatusCode)
		}
	}
	if len(e.api.requests) != before {
		t.Errorf("POSTs without CSRF reached the APIs: %v", e.api.requests[before:])
	}
	if st, page := e.get("/volumes"); st != http.StatusNotFound || !strings.Contains(page, "no Block Storage API") {
		t.Errorf("volumes without a Block Storage endpoint: %d", st)
	}
}
