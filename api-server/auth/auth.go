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
	// IsAdminProject: the token is scoped to the cloud's admin project
	// (Keystone's is_admin_project), where the admin role is cloud-wide.
	IsAdminProject bool
	// AppCredID is the application credential the token came from ("" for
	// other tokens); a restricted one may not manage credentials.
	AppCredID         string
	AppCredRestricted bool
	// System: the token is system-scoped (Keystone's scope {"system":
	// {"all": true}}). It carries no project: the identity API takes its
	// admin role as a cloud administrator's (IsSystemAdmin); the other
	// services, whose policies are project-scoped, refuse it.
	System bool
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

// IsAdmin reports whether the caller is a cloud administrator: the admin
// role in a token scoped to the admin project (Keystone's admin_project
// rule, "role:admin and is_admin_project:True"). The admin role on any
// other project administers that project only: it writes there like a
// member and sees nothing of other projects.
func (c *Credentials) IsAdmin() bool { return c.HasRole("admin") && c.IsAdminProject }

// IsSystemAdmin reports whether the caller holds the admin role on the
// system (Keystone's "role:admin and system_scope:all").
func (c *Credentials) IsSystemAdmin() bool { return c.System && c.HasRole("admin") }

// CanWrite reports whether the caller may change resources: a token that
// carries only "reader" may not. The admin role implies member (Keystone's
// implied roles), on any project.
func (c *Credentials) CanWrite() bool { return c.HasRole("admin") || c.HasRole("member") }

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
