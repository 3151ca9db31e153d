package portal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

const (
	sessionCookie = "capsule_session"
	loginCookie   = "capsule_login" // the login form's CSRF token, before a session exists
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
)

// session is what the session cookie carries: the user's Keystone token
// and what pages show about it. It is signed, not encrypted; it is
// HttpOnly so page scripts cannot read the token, and what it says about
// roles only shapes pages: the APIs decide what the token may do.
type session struct {
	Token     string    `json:"t"`
	User      string    `json:"u"`
	Project   string    `json:"p"`
	ProjectID string    `json:"pid"`
	Admin     bool      `json:"a"`
	Expires   time.Time `json:"e"`
}

// keys signs session cookies and derives CSRF tokens.
type keys struct{ secret []byte }

func newKeys(secret string) keys {
	if secret != "" {
		return keys{secret: []byte(secret)}
	}
	// A key per process: sessions end when the portal restarts, which
	// only costs users a new login.
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

func (k keys) encode(s *session) string {
	b, _ := json.Marshal(s)
	payload := base64.RawURLEncoding.EncodeToString(b)
	return payload + "." + base64.RawURLEncoding.EncodeToString(k.mac("session", payload))
}

func (k keys) decode(v string) (*session, bool) {
	payload, sig, ok := strings.Cut(v, ".")
	if !ok {
		return nil, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, k.mac("session", payload)) {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, false
	}
	var s session
	if json.Unmarshal(b, &s) != nil || s.Token == "" || time.Now().After(s.Expires) {
		return nil, false
	}
	return &s, true
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
