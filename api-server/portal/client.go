package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
)

// APIError is a refusal from an upstream OpenStack API, carrying the
// message that service wrote for humans (Nova's, Neutron's, Keystone's),
// so pages can show it as it is.
type APIError struct {
	Status  int
	Service string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Service, e.Message, e.Status)
}

// statusOf returns the upstream status of err, 0 when it is no APIError.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// upstream is one call to an API: the portal is a client like any other,
// sending the user's token and nothing more.
type upstream struct {
	client *http.Client
	log    *slog.Logger
}

// do sends method url with the token (if any) and a JSON body (if not
// nil), decodes a 2xx JSON answer into out (if not nil) and returns the
// response headers. Any other status becomes an *APIError.
func (u upstream) do(ctx context.Context, service, token, method, url string, body, out any) (http.Header, error) {
	return u.doAt(ctx, service, "", token, method, url, body, out)
}

// doAt is do at a microversion of service ("" = the API's default, e.g.
// compute 2.1):
// pages ask for one only where a field or a call needs it, so the
// bodies they parse stay the plain 2.1 ones elsewhere.
func (u upstream) doAt(ctx context.Context, service, version, token, method, url string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s request: %w", service, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("build %s request: %w", service, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if addr := clientAddress(ctx); addr != "" {
		req.Header.Set("X-Forwarded-For", addr)
	}
	if version != "" {
		req.Header.Set("OpenStack-API-Version", service+" "+version)
		if service == "compute" {
			req.Header.Set("X-OpenStack-Nova-API-Version", version)
		}
	}
	resp, err := u.client.Do(req)
	if err != nil {
		// The user gets a plain sentence; the address and cause go to
		// the log, not to the page.
		u.log.Warn("portal: API call failed", "service", service, "method", method, "url", url, "err", err)
		return nil, &APIError{Status: http.StatusBadGateway, Service: service,
			Message: "The " + service + " service cannot be reached right now; try again in a moment."}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		u.log.Warn("portal: reading an API answer failed", "service", service, "method", method, "url", url, "err", err)
		return nil, &APIError{Status: http.StatusBadGateway, Service: service,
			Message: "The " + service + " service's answer was cut short; try again in a moment."}
	}
	if resp.StatusCode/100 != 2 {
		return resp.Header, &APIError{Status: resp.StatusCode, Service: service, Message: errorMessage(resp.StatusCode, data)}
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.Header, fmt.Errorf("decode %s answer to %s %s: %w", service, method, url, err)
		}
	}
	return resp.Header, nil
}

// errorMessage digs the human message out of an OpenStack error body:
// Nova {"<fault>": {"message"}}, Keystone {"error": {"message"}}, Neutron
// {"NeutronError": {"message"}}, Glance's plain text or {"message"}.
func errorMessage(status int, body []byte) string {
	var m map[string]any
	if json.Unmarshal(body, &m) == nil {
		if s, ok := m["message"].(string); ok && s != "" {
			return s
		}
		for _, v := range m {
			if inner, ok := v.(map[string]any); ok {
				if s, ok := inner["message"].(string); ok && s != "" {
					return s
				}
			}
		}
	}
	text := strings.TrimSpace(string(body))
	if text != "" && len(text) < 500 && !strings.HasPrefix(text, "{") && !strings.HasPrefix(text, "<") {
		return text
	}
	return http.StatusText(status)
}

type clientAddressKey struct{}

// withClientAddress marks ctx with the browser's address: the identity
// service throttles failed logins per source address, and every portal
// login reaches it from the portal's own address otherwise (it believes
// X-Forwarded-For from loopback only).
func withClientAddress(ctx context.Context, r *http.Request) context.Context {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return context.WithValue(ctx, clientAddressKey{}, host)
}

func clientAddress(ctx context.Context) string {
	a, _ := ctx.Value(clientAddressKey{}).(string)
	return a
}
