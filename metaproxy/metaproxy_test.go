package metaproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/protocol"
)

// fakePorts names the server behind a remote address from a table, as the
// OVS port table does for vif.
type fakePorts map[string]string

func (fakePorts) Bridges() []string { return []string{"br"} }
func (fakePorts) ListenMetadata(context.Context, string) (net.Listener, error) {
	return nil, errors.New("not in this test")
}
func (fakePorts) MetadataPortHealthy(context.Context, string) (bool, error) { return true, nil }
func (f fakePorts) MetadataClient(_ context.Context, _ string, remote net.IP) (string, string, error) {
	if id, ok := f[remote.String()]; ok {
		return id, "port-" + id, nil
	}
	return "", "", errors.New("no such port")
}

func request(h http.Handler, remote, path string) (int, string) {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = remote + ":40000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// Each token is answered with its own server's tree, never another's;
// an unknown token and a server the control plane does not place here
// get 404; a tree is fetched once per TTL.
func TestHandlerServesTheServerOfTheToken(t *testing.T) {
	fetches := map[string]int{}
	fetch := func(_ context.Context, id string) (protocol.InstanceMetadata, error) {
		fetches[id]++
		if id == "gone" {
			return protocol.InstanceMetadata{}, errdefs.NotFoundf("server gone is not on host h")
		}
		return protocol.InstanceMetadata{UUID: id, Name: "name-" + id}, nil
	}
	s := New(fakePorts{"169.254.1.7": "a", "169.254.1.8": "b", "169.254.1.9": "gone"}, fetch, nil, time.Minute, nil)
	h := s.Handler("br")
	for remote, want := range map[string]string{"169.254.1.7": `"uuid":"a"`, "169.254.1.8": `"uuid":"b"`} {
		code, body := request(h, remote, "/openstack/latest/meta_data.json")
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s, want %s", remote, code, body, want)
		}
	}
	if code, body := request(h, "169.254.1.7", "/latest/meta-data/instance-id"); code != 200 || body != "i-a" {
		t.Errorf("instance-id: %d %q", code, body)
	}
	if fetches["a"] != 1 {
		t.Errorf("a fetched %d times within its TTL, want 1", fetches["a"])
	}
	for _, remote := range []string{"169.254.1.10", "169.254.1.9"} {
		if code, _ := request(h, remote, "/openstack/latest/meta_data.json"); code != 404 {
			t.Errorf("%s: %d, want 404", remote, code)
		}
	}
}

func TestHandlerControlPlaneDown(t *testing.T) {
	fetch := func(context.Context, string) (protocol.InstanceMetadata, error) {
		return protocol.InstanceMetadata{}, errdefs.Unavailablef("bus timeout")
	}
	h := New(fakePorts{"169.254.1.7": "a"}, fetch, nil, time.Minute, nil).Handler("br")
	if code, _ := request(h, "169.254.1.7", "/openstack/latest/meta_data.json"); code != 503 {
		t.Errorf("control plane down: %d, want 503", code)
	}
}

// A server posts its password once to its own tree's password endpoint
// (2013-04-04 on, or latest) and reads it back at once; a second post is
// 409, more than 256 bytes 400, a PUT 400, a post to another path 405,
// and the post is stored for the server of the token, never another.
func TestHandlerPasswordPost(t *testing.T) {
	stored := map[string]string{}
	fetch := func(_ context.Context, id string) (protocol.InstanceMetadata, error) {
		return protocol.InstanceMetadata{UUID: id, Password: stored[id]}, nil
	}
	post := func(_ context.Context, id, pw string) error {
		if stored[id] != "" {
			return errdefs.Conflictf("server %s already has a password", id)
		}
		stored[id] = pw
		return nil
	}
	h := New(fakePorts{"169.254.1.7": "a", "169.254.1.8": "b"}, fetch, post, time.Minute, nil).Handler("br")
	send := func(method, remote, path, body string) (int, string) {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.RemoteAddr = remote + ":40000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	if code, body := send(http.MethodGet, "169.254.1.7", "/openstack/latest/password", ""); code != 200 || body != "" {
		t.Fatalf("password before a post: %d %q", code, body)
	}
	if code, _ := send(http.MethodPost, "169.254.1.7", "/openstack/2013-04-04/password", "enc-a"); code != 200 {
		t.Fatalf("post: %d", code)
	}
	// Read back at once although a's tree was cached before the post.
	if code, body := send(http.MethodGet, "169.254.1.7", "/openstack/latest/password", ""); code != 200 || body != "enc-a" {
		t.Errorf("password after the post: %d %q", code, body)
	}
	if code, _ := send(http.MethodPost, "169.254.1.7", "/openstack/latest/password", "again"); code != 409 {
		t.Errorf("second post: %d, want 409", code)
	}
	if code, body := send(http.MethodGet, "169.254.1.8", "/openstack/latest/password", ""); code != 200 || body != "" {
		t.Errorf("b reads %d %q, want its own empty password", code, body)
	}
	if code, _ := send(http.MethodPost, "169.254.1.8", "/openstack/latest/password", strings.Repeat("x", 257)); code != 400 {
		t.Errorf("257 bytes: %d, want 400", code)
	}
	if code, _ := send(http.MethodPut, "169.254.1.8", "/openstack/latest/password", "x"); code != 400 {
		t.Errorf("PUT: %d, want 400", code)
	}
	for _, p := range []string{"/openstack/latest/meta_data.json", "/openstack/2012-08-10/password"} {
		if code, _ := send(http.MethodPost, "169.254.1.8", p, "x"); code != 405 {
			t.Errorf("POST %s: %d, want 405", p, code)
		}
	}
	if code, _ := send(http.MethodPost, "169.254.1.8", "/openstack/latest/password", strings.Repeat("y", 256)); code != 200 {
		t.Errorf("256 bytes: %d, want 200", code)
	}
	if stored["a"] != "enc-a" || stored["b"] != strings.Repeat("y", 256) {
		t.Errorf("stored %v", stored)
	}
	if code, _ := send(http.MethodPost, "169.254.1.99", "/openstack/latest/password", "z"); code != 404 {
		t.Errorf("post from no known port: %d, want 404", code)
	}
}
