package httpapi

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Limits bound what one client may hold of a listener: how long it may
// take to send its headers and body, how long a response may take to
// write, how long an idle keep-alive connection stays open, and how large
// its headers and body may be. A slow or huge request from one tenant must
// not pin goroutines, memory or sockets of the API.
type Limits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration // headers and body
	WriteTimeout      time.Duration // from the end of the headers to the end of the response
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	MaxBodyBytes      int64
}

// DefaultLimits are the limits of a listener whose config says nothing.
// The write timeout leaves room for the slowest synchronous handler (a
// call to an agent bounded by api.call_timeout, 30 s by default).
func DefaultLimits() Limits {
	return Limits{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second, WriteTimeout: 120 * time.Second,
		IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10, MaxBodyBytes: MaxBodyBytes}
}

// orDefault fills the zero fields of l from DefaultLimits.
func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	return l
}

// Listener is one HTTP endpoint Capsule serves.
type Listener struct {
	Addr    string
	Handler http.Handler
	Limits  Limits
	// TooLarge answers a request whose body is over Limits.MaxBodyBytes
	// with a 413 and msg in the API's own error format; nil answers plain
	// text.
	TooLarge TooLargeFunc
	// Streaming tells the requests that carry bulk data (Glance's image
	// data): they get neither the body limit nor the read and write
	// timeouts, and bound themselves. nil: none.
	Streaming func(r *http.Request) bool
	// TLS, when set, serves the listener over TLS only (see LoadTLS and
	// Serve); a plain-HTTP client gets a 400 and no API answer.
	TLS *tls.Config
}

// TooLargeFunc writes a 413 carrying msg in an API's error format.
type TooLargeFunc func(w http.ResponseWriter, r *http.Request, msg string)

// NewServer returns the http.Server of l: every Capsule listener (the four
// APIs, the portal, the agent's metrics) is built here so none is served
// without timeouts and size limits.
func NewServer(l Listener) *http.Server {
	lim := l.Limits.orDefault()
	h := LimitBody(l.Handler, lim.MaxBodyBytes, l.TooLarge, l.Streaming)
	return &http.Server{Addr: l.Addr, Handler: h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout, ReadTimeout: lim.ReadTimeout, WriteTimeout: lim.WriteTimeout,
		IdleTimeout: lim.IdleTimeout, MaxHeaderBytes: lim.MaxHeaderBytes, TLSConfig: l.TLS}
}

// LimitBody refuses request bodies over max bytes with tooLarge (a 413):
// at once when Content-Length says so, else when the handler reads past
// max, in which case whatever the handler answers is replaced by the 413
// (it saw a truncated body). Requests streaming(r) says carry bulk data
// pass unlimited, and their connection's read and write deadlines are
// lifted: those handlers bound themselves.
func LimitBody(next http.Handler, max int64, tooLarge TooLargeFunc, streaming func(*http.Request) bool) http.Handler {
	if tooLarge == nil {
		tooLarge = func(w http.ResponseWriter, _ *http.Request, msg string) {
			http.Error(w, msg, http.StatusRequestEntityTooLarge)
		}
	}
	msg := TooLargeMessage(max)
	refuse := tooLarge
	tooLarge = func(w http.ResponseWriter, r *http.Request, msg string) {
		// Refused before the API's own middleware ran: still an id to
		// quote, as every OpenStack answer has.
		if w.Header().Get(RequestIDHeader) == "" {
			w.Header().Set(RequestIDHeader, NewRequestID())
		}
		refuse(w, r, msg)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if streaming != nil && streaming(r) {
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Time{})
			_ = rc.SetWriteDeadline(time.Time{})
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > max {
			w.Header().Set("Connection", "close") // the body is not read
			tooLarge(w, r, msg)
			return
		}
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		body := &limitedBody{rc: r.Body, left: max}
		r.Body = body
		lw := &limitWriter{ResponseWriter: w, body: body, answer: func() {
			w.Header().Set("Connection", "close")
			tooLarge(w, r, msg)
		}}
		next.ServeHTTP(lw, r)
		if body.exceeded() && !lw.replaced {
			lw.replace()
		}
	})
}

// errBodyTooLarge is what a handler reading past the limit gets.
var errBodyTooLarge = errors.New("request body too large")

// limitedBody reads at most left bytes of rc and remembers whether the
// client sent more.
type limitedBody struct {
	rc   io.ReadCloser
	mu   sync.Mutex
	left int64
	over bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		b.over = true
		return int(b.left), errBodyTooLarge
	}
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

func (b *limitedBody) exceeded() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

// limitWriter replaces the handler's answer with the 413 once the body
// went over the limit.
type limitWriter struct {
	http.ResponseWriter
	body     *limitedBody
	answer   func()
	replaced bool
	wrote    bool
}

func (l *limitWriter) replace() {
	l.replaced = true
	if !l.wrote {
		l.answer()
	}
}

func (l *limitWriter) WriteHeader(code int) {
	if l.replaced {
		return
	}
	if l.body.exceeded() {
		l.replace()
		return
	}
	l.wrote = true
	l.ResponseWriter.WriteHeader(code)
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if !l.wrote && !l.replaced {
		l.WriteHeader(http.StatusOK)
	}
	if l.replaced {
		return len(p), nil
	}
	return l.ResponseWriter.Write(p)
}

// Flush passes through to streaming handlers.
func (l *limitWriter) Flush() {
	if f, ok := l.ResponseWriter.(http.Flusher); ok && !l.replaced {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (l *limitWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// TooLargeMessage is the message of a 413 for a body over max bytes.
func TooLargeMessage(max int64) string {
	return "Request is too large: the body is limited to " + strconv.FormatInt(max, 10) + " bytes."
}
