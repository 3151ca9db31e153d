// Package webterm is the browser terminal both the portal's server page
// and the console proxy's HTML5 console page (Capsule's noVNC answer)
// run: one script, embedded, served by each from its own origin (no CDN,
// works offline).
package webterm

import (
	_ "embed"
	"net/http"
)

//go:embed terminal.js
var script []byte

// Script is the terminal's JavaScript.
func Script() []byte { return script }

// Handler serves the script (GET or HEAD).
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(script)
	})
}
