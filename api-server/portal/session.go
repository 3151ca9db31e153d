package portal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"
)

// maxSessionTTL caps a portal session's life whatever its token's.
const maxSessionTTL = 12 * time.Hour

const (
	sessionCookie = "capsule_session"
	loginCookie   = "capsule_login" // the login form's CSRF token, before a session exists
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
)

// session is what the portal keeps of a login, server-side: the user's
// Keystone token and what pages show about it. The browser holds only a
// random session ID (the cookie) that maps to it; the token never leaves
// the portal. What it says about roles only shapes pages: the APIs decide
// what the token may do.
type session struct {
	Token     string
	User      string
	Project   string
	ProjectID string
	Admin     bool
	// Reader: the token carries neither member nor admin, so the APIs
	// refuse its changes; pages disable their write buttons.
	Reader bool
	// Projects are those the user has a role on (the project switcher).
	Projects []Project
	Expires  time.Time
	// flashes are what failed forms left for the page they redirect to
	// (POST-redirect-GET: a reload shows the error, never re-posts),
	// by page; guarded by the sessions' lock.
	flashes map[string]flash
}

// flash is a failed form's error and the values the user typed.
type flash struct {
	Status int
	Error  string
	Form   map[string]string
}

// keys derives CSRF tokens.
type keys struct{ secret []byte }

func newKeys(secret string) keys {
	if secret != "" {
		return keys{secret: []byte(secret)}
	}
	return keys{secret: []byte(randomToken())}
}

func (k keys) mac(parts ...string) []byte {
	h := hmac.New(sha256.New, k.secret)
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

// sessions maps session IDs to sessions. IDs are 256 random bits; the map
// is keyed by their hash, so a lookup's timing says nothing of a valid ID.
// Sessions live in this process: a restart logs everyone out, which only
// costs a new login.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	now  func() time.Time
}

func newSessions() *sessions {
	return &sessions{byID: map[string]*session{}, now: time.Now}
}

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// add keeps sess and returns its new ID, dropping expired sessions first.
func (ss *sessions) add(sess *session) string {
	id := randomToken()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	for k, s := range ss.byID {
		if !now.Before(s.Expires) {
			delete(ss.byID, k)
		}
	}
	ss.byID[sessionKey(id)] = sess
	return id
}

// get returns the live session of id, nil if none (unknown, ended or
// expired).
func (ss *sessions) get(id string) *session {
	if id == "" {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := sessionKey(id)
	s := ss.byID[k]
	if s == nil {
		return nil
	}
	if !ss.now().Before(s.Expires) {
		delete(ss.byID, k)
		return nil
	}
	return s
}

// setFlash keeps f for the next GET of page in sess (replacing any).
func (ss *sessions) setFlash(sess *session, page string, f flash) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if sess.flashes == nil {
		sess.flashes = map[string]flash{}
	}
	sess.flashes[page] = f
}

// takeFlash returns and forgets sess's flash for page.
func (ss *sessions) takeFlash(sess *session, page string) (flash, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f, ok := sess.flashes[page]
	delete(sess.flashes, page)
	return f, ok
}

// remove ends the session of id (logout).
func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, sessionKey(id))
}

// csrf is the session's CSRF token: bound to the Keystone token, so it
// changes with every login and a token of another session never matches.
func (k keys) csrf(s *session) string { return hex.EncodeToString(k.mac("csrf", s.Token)) }

// checkCSRF accepts a POST only with the session's CSRF token in the form
// field or the header.
func checkCSRF(r *http.Request, want string) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never on Linux
	}
	return hex.EncodeToString(b)
}

// setCookie writes an HttpOnly, SameSite=Strict cookie; Secure when the
// browser reached the portal over TLS, directly or through a proxy that
// says so (browsers drop Secure cookies on plain http, so a portal on
// http://localhost could not keep a session otherwise). Trusting the
// header is safe here: a client that lies about it only loses its own
// session.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, expires time.Time) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")}
	if value == "" {
		c.MaxAge = -1
	} else if !expires.IsZero() {
		c.Expires = expires
	}
	http.SetCookie(w, c)
}
