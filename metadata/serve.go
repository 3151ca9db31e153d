package metadata

import (
	"net/http"
	"strings"
)

// IsPasswordPath says whether path is the password endpoint of the
// OpenStack layout (openstack/<version>/password, from 2013-04-04, or
// latest), where a server may POST its password.
func IsPasswordPath(path string) bool {
	p := strings.Trim(path, "/")
	version, ok := strings.CutPrefix(p, "openstack/")
	if !ok {
		return false
	}
	version, ok = strings.CutSuffix(version, "/password")
	if !ok {
		return false
	}
	if version == "latest" {
		return true
	}
	for _, v := range OpenStackVersions[1:] {
		if v == version {
			return true
		}
	}
	return false
}

// Serve answers one request of a server for its own tree t, as Nova's
// metadata API does: GET (or HEAD) of a file or a directory listing; 404
// for what the tree lacks (user data a server was booted without, say);
// 405 for other methods (the password endpoint's POST is the caller's,
// see IsPasswordPath).
func Serve(w http.ResponseWriter, r *http.Request, t Tree) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	body, ok := t.Lookup(r.URL.Path)
	if !ok {
		http.Error(w, "404 Not Found", http.StatusNotFound)
		return
	}
	if strings.HasSuffix(r.URL.Path, ".json") {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}
