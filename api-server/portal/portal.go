// Package portal is the tenant web portal: server-rendered pages, a few
// lines of script for live status, and all of it embedded in the binary
// (no CDN, fonts or scripts from the internet).
//
// The portal is a client of the public APIs like any other: it logs the
// user in at Keystone and calls Nova, Glance and Neutron over HTTP with
// the user's token, so a tenant sees and does exactly what the APIs let
// that token see and do. It holds no database handle and no state of its
// own: the session is a signed cookie carrying the Keystone token.
package portal

import (
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/internal/webterm"
)

//go:embed static templates
var assets embed.FS

// Options configure a portal.
type Options struct {
	// Endpoints are the API base URLs the portal calls (Identity is
	// required; see Endpoints for their shapes).
	Endpoints Endpoints
	// Secret keys the CSRF tokens; empty means a random key per process.
	// Sessions themselves live in the portal process (the cookie is a
	// random session ID), so they end when it restarts.
	Secret string
	// AdminProject is the identity service's admin project (config
	// api.admin_project, default "admin"; "*" any): the admin pages show
	// only for the admin role there, the one the APIs treat as cloud admin.
	AdminProject string
	// PageSize is the servers list's page (default 20).
	PageSize int
	// Client calls the APIs (default: a client with a 60s timeout).
	Client *http.Client
	Logger *slog.Logger
}

// Server is the portal's HTTP handler set.
type Server struct {
	ep       Endpoints
	admin    string // the admin project's name
	up       upstream
	keys     keys
	sess     *sessions
	throttle *loginLimiter
	log      *slog.Logger
	pages    map[string]*template.Template
	page     int
}

// New returns a portal calling the APIs at opts.Endpoints.
func New(opts Options) (*Server, error) {
	if opts.Endpoints.Identity == "" || opts.Endpoints.Compute == "" || opts.Endpoints.Image == "" || opts.Endpoints.Network == "" {
		return nil, errors.New("portal: every API endpoint (identity, compute, image, network) is required")
	}
	s := &Server{ep: trimEndpoints(opts.Endpoints), keys: newKeys(opts.Secret), sess: newSessions(), log: opts.Logger, page: opts.PageSize,
		throttle: newLoginLimiter(time.Now)}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.page <= 0 {
		s.page = 20
	}
	s.admin = opts.AdminProject
	if s.admin == "" {
		s.admin = "admin"
	}
	s.up.client, s.up.log = opts.Client, s.log
	if s.up.client == nil {
		s.up.client = &http.Client{Timeout: 60 * time.Second}
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	s.pages = pages
	return s, nil
}

func trimEndpoints(e Endpoints) Endpoints {
	t := func(s string) string { return strings.TrimRight(s, "/") }
	return Endpoints{Identity: t(e.Identity), Compute: t(e.Compute), Image: t(e.Image), Network: t(e.Network), Volume: t(e.Volume)}
}

var funcs = template.FuncMap{
	"pct": func(used, max int) int {
		if max <= 0 {
			return 0
		}
		p := used * 100 / max
		if p > 100 {
			p = 100
		}
		return p
	},
	"limit": func(n int) string {
		if n < 0 {
			return "unlimited"
		}
		return strconv.Itoa(n)
	},
	"join":      joinOr,
	"pemURL":    pemURL,
	"addr":      addrOf,
	"net":       netOf,
	"list":      func(v ...string) []string { return v },
	"statusCSS": statusClass,
	"deref": func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	},
	"num": func(p *float64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatFloat(*p, 'g', 6, 64)
	},
	"has": func(list, item string) bool {
		for _, s := range strings.Fields(list) {
			if s == item {
				return true
			}
		}
		return false
	},
}

// parsePages parses each page template together with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		out[base] = t
	}
	return out, nil
}

// statusClass is the CSS class of a server status badge.
func statusClass(status string) string {
	switch status {
	case "ACTIVE":
		return "ok"
	case "ERROR":
		return "bad"
	case "SHUTOFF", "PAUSED", "SUSPENDED", "DELETED":
		return "off"
	}
	return "busy"
}

// Handler serves the portal.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	// The terminal's script is shared with the console proxy's page.
	mux.Handle("GET /static/terminal.js", webterm.Handler())
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		// Browsers ask for it whatever the page links: the same icon.
		b, _ := assets.ReadFile("static/favicon.svg")
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "max-age=86400")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.loginPost)
	mux.HandleFunc("POST /logout", s.authed(s.logout))
	mux.HandleFunc("POST /switch-project", s.authed(s.switchProjectPost))
	mux.HandleFunc("GET /{$}", s.authed(s.overview))
	mux.HandleFunc("GET /servers", s.authed(s.serversPage))
	mux.HandleFunc("GET /api/servers", s.authedJSON(s.serversJSON))
	mux.HandleFunc("GET /api/servers/{id}", s.authedJSON(s.serverJSON))
	mux.HandleFunc("GET /api/servers/{id}/diagnostics", s.authedJSON(s.diagnosticsJSON))
	mux.HandleFunc("GET /api/servers/{id}/migration", s.authedJSON(s.serverMigrationJSON))
	mux.HandleFunc("GET /launch", s.authed(s.launchPage))
	mux.HandleFunc("POST /launch", s.authed(s.launchPost))
	mux.HandleFunc("POST /servers/bulk", s.authed(s.bulkPost))
	mux.HandleFunc("GET /servers/{id}", s.authed(s.serverPage))
	mux.HandleFunc("GET /servers/{id}/console", s.authed(s.consolePage))
	mux.HandleFunc("GET /servers/{id}/terminal", s.terminal)
	mux.HandleFunc("GET /servers/{id}/confirm", s.authed(s.confirmPage))
	mux.HandleFunc("POST /servers/{id}/action", s.authed(s.actionPost))
	mux.HandleFunc("GET /keypairs", s.authed(s.keypairsPage))
	mux.HandleFunc("POST /keypairs", s.authed(s.keypairsPost))
	mux.HandleFunc("POST /keypairs/{name}/delete", s.authed(s.keypairDeletePost))
	mux.HandleFunc("GET /security-groups", s.authed(s.groupsPage))
	mux.HandleFunc("POST /security-groups", s.authed(s.groupCreatePost))
	mux.HandleFunc("GET /security-groups/{id}", s.authed(s.groupPage))
	mux.HandleFunc("POST /security-groups/{id}/delete", s.authed(s.groupDeletePost))
	mux.HandleFunc("POST /security-groups/{id}/rules", s.authed(s.ruleCreatePost))
	mux.HandleFunc("POST /security-groups/{id}/rules/{rule}/delete", s.authed(s.ruleDeletePost))
	s.volumeRoutes(mux)
	mux.HandleFunc("GET /images", s.authed(s.imagesPage))
	mux.HandleFunc("GET /api/images", s.authedJSON(s.imagesJSON))
	mux.HandleFunc("POST /images/upload", s.imageUploadPost)
	mux.HandleFunc("GET /images/{id}", s.authed(s.imagePage))
	mux.HandleFunc("POST /images/{id}/delete", s.authed(s.imageDeletePost))
	mux.HandleFunc("POST /images/{id}/members", s.authed(s.imageSharePost))
	mux.HandleFunc("POST /images/{id}/members/{member}/delete", s.authed(s.imageUnsharePost))
	mux.HandleFunc("POST /images/{id}/{answer}", s.authed(s.imageAnswerPost))
	mux.HandleFunc("GET /flavors", s.authed(s.flavorsPage))
	mux.HandleFunc("GET /networks", s.authed(s.networksPage))
	mux.HandleFunc("POST /networks", s.authed(s.networkCreatePost))
	mux.HandleFunc("GET /networks/{id}", s.authed(s.networkPage))
	mux.HandleFunc("POST /networks/{id}/delete", s.authed(s.networkDeletePost))
	mux.HandleFunc("POST /networks/{id}/subnets", s.authed(s.subnetCreatePost))
	mux.HandleFunc("POST /networks/{id}/subnets/{subnet}/delete", s.authed(s.subnetDeletePost))
	mux.HandleFunc("GET /hosts", s.authed(s.adminOnly(s.hostsPage)))
	mux.HandleFunc("POST /hosts/{host}/{op}", s.authed(s.adminOnly(s.hostEnablePost)))
	mux.HandleFunc("GET /hosts/{host}/evacuate", s.authed(s.adminOnly(s.evacuatePage)))
	mux.HandleFunc("POST /hosts/{host}/evacuate", s.authed(s.adminOnly(s.evacuatePost)))
	mux.HandleFunc("POST /admin/servers/{id}/{op}", s.authed(s.adminOnly(s.migratePost)))
	mux.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/servers", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /admin/servers", s.authed(s.adminOnly(s.adminServersPage)))
	mux.HandleFunc("GET /admin/projects", s.authed(s.adminOnly(s.adminProjectsPage)))
	mux.HandleFunc("POST /admin/projects", s.authed(s.adminOnly(s.adminProjectPost)))
	mux.HandleFunc("POST /admin/users", s.authed(s.adminOnly(s.adminUserPost)))
	mux.HandleFunc("POST /admin/grants", s.authed(s.adminOnly(s.adminGrantPost)))
	mux.HandleFunc("GET /admin/quotas", s.authed(s.adminOnly(s.adminQuotasPage)))
	mux.HandleFunc("POST /admin/quotas/{project}", s.authed(s.adminOnly(s.adminQuotaPost)))
	mux.HandleFunc("GET /admin/migrations", s.authed(s.adminOnly(s.adminMigrationsPage)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Error: "There is no page at " + r.URL.Path + "."})
	})
	return securityHeaders(mux)
}

// securityHeaders forbids framing and any script, style or image not
// served by the portal itself.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// view is what every page template gets.
type view struct {
	Title  string
	Nav    string
	Sess   *session
	CSRF   string
	Notice string
	Error  string
	Data   any
}

type sessHandler func(w http.ResponseWriter, r *http.Request, sess *session)

// authed runs h with the session, sending the browser to the login page
// without one; POSTs must carry the session's CSRF token.
func (s *Server) authed(h sessHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.session(r)
		if sess == nil {
			// Back to the page asked for after the login (a GET only:
			// a form's POST cannot be replayed).
			to := "/login"
			if r.Method == http.MethodGet && r.URL.Path != "/" {
				to += "?" + url.Values{"next": {r.URL.RequestURI()}}.Encode()
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && !checkCSRF(r, s.keys.csrf(sess)) {
			s.render(w, r, http.StatusForbidden, "error", view{Title: "Forbidden", Sess: sess, CSRF: s.keys.csrf(sess),
				Error: "The form's security token (CSRF) is missing or wrong. Reload the page and try again."})
			return
		}
		h(w, r, sess)
	}
}

// authedJSON is authed for the pages' scripts: errors are JSON.
func (s *Server) authedJSON(h sessHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.session(r)
		if sess == nil {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Your session has ended: log in again."})
			return
		}
		h(w, r, sess)
	}
}

func (s *Server) session(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	return s.sess.get(c.Value)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	t, ok := s.pages[page]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	if v.Sess != nil && v.CSRF == "" {
		v.CSRF = s.keys.csrf(v.Sess)
	}
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		s.log.Error("portal: render page", "page", page, "err", err)
		http.Error(w, "The page could not be rendered.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// fail shows an API error as a page: an expired or revoked token sends
// the user to log in again; anything else shows the API's own message.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, sess *session, title string, err error) {
	st := statusOf(err)
	if st == http.StatusUnauthorized {
		setCookie(w, r, sessionCookie, "", time.Time{})
		q := url.Values{"expired": {"1"}}
		if r.Method == http.MethodGet {
			q.Set("next", r.URL.RequestURI())
		}
		http.Redirect(w, r, "/login?"+q.Encode(), http.StatusSeeOther)
		return
	}
	var msg string
	var ae *APIError
	if errors.As(err, &ae) {
		msg = ae.Message
	} else {
		s.log.Error("portal: "+title, "err", err)
		st = http.StatusBadGateway
		msg = "The cloud's API gave an answer the portal does not understand. Try again later."
	}
	if st < 400 {
		st = http.StatusBadGateway
	}
	s.render(w, r, st, "error", view{Title: title, Sess: sess, Error: msg})
}

// failJSON is fail for the pages' scripts.
func (s *Server) failJSON(w http.ResponseWriter, err error) {
	st := statusOf(err)
	msg := "The cloud's API cannot be reached."
	var ae *APIError
	if errors.As(err, &ae) {
		msg = ae.Message
	}
	if st < 400 {
		st = http.StatusBadGateway
	}
	writeJSON(w, st, map[string]string{"error": msg})
}
