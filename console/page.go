package console

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/internal/webterm"
)

// The HTML5 console page: Capsule's answer to a noVNC console. A
// container has no framebuffer, so the page runs a terminal (package
// webterm's script) on the server's serial console instead of a VNC
// viewer. Loading the page spends the URL's token (a second load is
// refused with 401) and hands the page a second single-use token, valid
// for a minute at most, for its own websocket to PathPrefix+"/serial".

// pagePath is the page under PathPrefix; the token is in the query as
// noVNC's vnc_auto.html takes it (path=%3Ftoken%3D...), or as token=.
const pagePath = "/novnc/vnc_auto.html"

// pageTokenTTL bounds the page's own websocket token.
const pageTokenTTL = time.Minute

//go:embed page/console.html page/console.css
var pageAssets embed.FS

var pageTemplate = template.Must(template.ParseFS(pageAssets, "page/console.html"))

// pageView is what the page shows: a terminal, or why there is none.
type pageView struct {
	Static   string // the static files' URL, relative to the page
	ID, Name string
	WS       string // the websocket's URL, relative to the page
	Status   int
	Error    string
}

// pageToken is the token of a page URL: noVNC's path=?token=..., or
// token=.
func pageToken(q url.Values) string {
	if t := q.Get("token"); t != "" {
		return t
	}
	path := q.Get("path")
	if _, query, ok := strings.Cut(path, "?"); ok {
		if v, err := url.ParseQuery(query); err == nil {
			return v.Get("token")
		}
	}
	return ""
}

// servePage spends a novnc token and answers the console page.
func (p *Proxy) servePage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		p.renderPage(w, http.StatusMethodNotAllowed, pageView{Error: "A console page is opened with GET."})
		return
	}
	tok, ok := p.consume(r.Context(), pageToken(r.URL.Query()), TypeNoVNC)
	if !ok {
		p.renderPage(w, http.StatusUnauthorized, pageView{Error: "This console URL is invalid, already used or expired: " +
			"a console URL works once. Ask for a new one (openstack console url show --novnc SERVER)."})
		return
	}
	inst, status, msg := p.liveInstance(r.Context(), tok)
	if inst == nil {
		p.renderPage(w, status, pageView{Error: msg})
		return
	}
	ttl := min(pageTokenTTL, p.opts.TokenTTL)
	inner, err := p.newToken(r.Context(), inst.ID, tok.ProjectID, TypeSerial, ttl)
	if err != nil {
		p.opts.Log.Error("console page token", "instance", inst.ID, "err", err)
		p.renderPage(w, http.StatusInternalServerError, pageView{Error: "The console could not be prepared; ask for a new URL."})
		return
	}
	p.opts.Log.Info("console page served", "instance", inst.ID, "project", tok.ProjectID)
	name := inst.Name
	if name == "" {
		name = inst.ID
	}
	p.renderPage(w, http.StatusOK, pageView{ID: inst.ID, Name: name, WS: "../serial?token=" + inner})
}

// renderPage writes the page (or its refusal) with headers that keep it
// out of caches and referrers (its websocket token is in it) and let it
// run only its own script and style.
func (p *Proxy) renderPage(w http.ResponseWriter, status int, v pageView) {
	v.Static = "../static/"
	v.Status = status
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, v); err != nil {
		p.opts.Log.Error("console page", "err", err)
		http.Error(w, "console page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	// Dashboards embed consoles in a frame (Horizon does): framing is
	// allowed; the single-use token is the credential.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// serveStatic serves the page's script and style.
func (p *Proxy) serveStatic(w http.ResponseWriter, r *http.Request, name string) {
	switch name {
	case "terminal.js":
		webterm.Handler().ServeHTTP(w, r)
	case "console.css":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, _ := pageAssets.ReadFile("page/console.css")
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(b)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}
