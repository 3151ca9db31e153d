// Package httpapi holds the small HTTP helpers every Capsule API service
// shares: request ids, JSON bodies, trailing-slash tolerance, access logs
// and externally visible URLs.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// RequestIDHeader is the response header OpenStack services report the
// request id in.
const RequestIDHeader = "x-openstack-request-id"

type requestIDKey struct{}

// RequestID returns the request id WithRequestID stored in ctx, "" if none.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// ContextWithRequestID returns ctx carrying id (for callers that start
// work outside an HTTP request, and for tests).
func ContextWithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// NewRequestID returns a fresh OpenStack-style request id, req-<uuid>.
func NewRequestID() string { return "req-" + uuid.NewString() }

// WithRequestID gives every request a fresh req-<uuid> id, stores it in
// the request context and sends it as x-openstack-request-id plus any
// extraHeaders (Nova also sends x-compute-request-id). The header is set
// before next runs so error responses carry it too. Nesting is harmless:
// an inner WithRequestID keeps the id an outer one chose.
func WithRequestID(next http.Handler, extraHeaders ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := RequestID(r.Context())
		if id == "" {
			id = NewRequestID()
			r = r.WithContext(ContextWithRequestID(r.Context(), id))
		}
		w.Header().Set(RequestIDHeader, id)
		for _, h := range extraHeaders {
			w.Header().Set(h, id)
		}
		next.ServeHTTP(w, r)
	})
}

// TrimSlash makes "/x/" route like "/x": clients join endpoint and path
// inconsistently, and OpenStack services accept both forms. The root "/"
// is left alone.
func TrimSlash(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") {
			r2 := r.Clone(r.Context())
			r2.URL.Path = strings.TrimRight(p, "/")
			if r2.URL.Path == "" {
				r2.URL.Path = "/"
			}
			r2.URL.RawPath = ""
			r = r2
		}
		next.ServeHTTP(w, r)
	})
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

// Flush lets streaming handlers (image download) flush through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type accessLoggedKey struct{}

// AccessLog logs one line per request with its id, status and duration.
// Only the outermost AccessLog logs, so a service handler may log on its
// own and still be wrapped by a server that logs too.
func AccessLog(log *slog.Logger, service string, next http.Handler) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(accessLoggedKey{}) != nil {
			next.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), accessLoggedKey{}, true))
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		id := RequestID(r.Context())
		if id == "" { // WithRequestID wrapped inside this logger
			id = w.Header().Get(RequestIDHeader)
		}
		lvl := slog.LevelInfo
		if rec.status >= 500 {
			lvl = slog.LevelError
		}
		log.LogAttrs(r.Context(), lvl, "http request",
			slog.String("service", service),
			slog.String("request_id", id),
			slog.String("method", r.Method),
			slog.String("path", r.URL.RequestURI()),
			slog.Int("status", rec.status),
			slog.Int("bytes", rec.bytes),
			slog.Duration("duration", time.Since(start)))
	})
}

// WriteJSON writes v as a JSON body with status. For 204 and 304 it writes
// headers only: clients (Tempest) reject bodies on those.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	if status == http.StatusNoContent || status == http.StatusNotModified || v == nil {
		w.WriteHeader(status)
		return
	}
	body, err := json.Marshal(v)
	if err != nil {
		slog.Error("encode JSON response", "error", err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"code":500,"title":"Internal Server Error","message":"response encoding failed"}}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// MaxBodyBytes bounds request bodies decoded by ReadJSON.
const MaxBodyBytes = 1 << 20

// ErrEmptyBody is returned by ReadJSON for a request without a body.
var ErrEmptyBody = errors.New("request body is empty")

// ReadJSON decodes the request body into v, rejecting bodies above
// MaxBodyBytes and trailing garbage.
func ReadJSON(r *http.Request, v any) error {
	if r.Body == nil {
		return ErrEmptyBody
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return ErrEmptyBody
		}
		return fmt.Errorf("malformed JSON request body: %w", err)
	}
	if dec.InputOffset() > MaxBodyBytes {
		return fmt.Errorf("request body larger than %d bytes", MaxBodyBytes)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("malformed JSON request body: trailing data after the JSON value")
	}
	return nil
}

// Scheme returns the scheme the client used, honouring a proxy's
// X-Forwarded-Proto.
func Scheme(r *http.Request) string {
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		return p
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// HostName returns the host part (no port) of the Host the client used.
func HostName(r *http.Request) string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.Trim(h, "[]")
}

// BaseURL returns scheme://host[:port] exactly as the client addressed
// this server; version documents must link there (clients follow them).
func BaseURL(r *http.Request) string {
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return Scheme(r) + "://" + host
}

// PublicURL returns scheme://host:port for another service on the host the
// client used, e.g. the catalog's compute endpoint from an identity
// request. port 0 keeps the request's own port.
func PublicURL(r *http.Request, port int) string {
	if port == 0 {
		return BaseURL(r)
	}
	return Scheme(r) + "://" + net.JoinHostPort(HostName(r), strconv.Itoa(port))
}

// HostURL returns scheme://host:port, bracketing IPv6 literals.
func HostURL(scheme, host string, port int) string {
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}
