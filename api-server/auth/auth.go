// Package auth carries the caller's validated Keystone credentials through
// a request's context, and the policy checks every API service shares.
package auth

import (
	"context"
	"strings"
	"time"
)

// Credentials are what a validated token says about the caller.
type Credentials struct {
	TokenID     string
	UserID      string
	UserName    string
	DomainID    string
	ProjectID   string // "" for an unscoped token
	ProjectName string
	Roles       []string // role names, lower case
	ExpiresAt   time.Time
}

// HasRole reports whether the caller holds role (case-insensitive).
func (c *Credentials) HasRole(role string) bool {
	for _, r := range c.Roles {
		if strings.EqualFold(r, role) {
			return true
		}
	}
	return false
}

// IsAdmin reports whether the caller has the admin role.
func (c *Credentials) IsAdmin() bool { return c.HasRole("admin") }

// CanWrite reports whether the caller may change resources: a token that
// carries only "reader" may not.
func (c *Credentials) CanWrite() bool { return c.IsAdmin() || c.HasRole("member") }

type ctxKey struct{}

// WithCredentials returns ctx carrying c.
func WithCredentials(ctx context.Context, c *Credentials) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the caller's credentials, nil when unauthenticated.
func FromContext(ctx context.Context) *Credentials {
	c, _ := ctx.Value(ctxKey{}).(*Credentials)
	return c
}

// Validator validates a token string; the identity service implements it.
type Validator interface {
	Validate(ctx context.Context, token string) (*Credentials, error)
}
