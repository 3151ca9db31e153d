package registry

import (
	"errors"
	"fmt"

	"github.com/distribution/reference"
)

// Repositories of Capsule's private registry, one per kind of image the
// cloud writes itself.
const (
	ImageRepo     = "capsule/images"     // Glance uploads
	SnapshotRepo  = "capsule/snapshots"  // server snapshots and backups, pushed by compute hosts
	MigrationRepo = "capsule/migrations" // cold-migration commits, one tag per migration
)

// PerImageRepo is the repository of one image under base (ImageRepo or
// SnapshotRepo): every image gets its own, because a registry deletes a
// manifest by digest together with every tag of its repository pointing
// at it, so in a shared repository deleting one image would untag every
// other image with the same content.
func PerImageRepo(base, imageID string) string { return base + "/" + imageID }

// Ref is a parsed image reference: Host/Repo, then :Tag, @Digest or both.
type Ref struct {
	Host   string
	Repo   string
	Tag    string // "" when the reference is by digest only
	Digest string // "" when the reference is by tag only
}

// String returns the reference as Docker writes it.
func (r Ref) String() string {
	s := r.Host + "/" + r.Repo
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Repository is Host/Repo: the reference without its tag or digest.
func (r Ref) Repository() string { return r.Host + "/" + r.Repo }

// Reference is what the registry API names the manifest by: the digest
// when there is one (it pins the content), else the tag.
func (r Ref) Reference() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

// ParseRef parses a fully qualified reference (registry host first, as
// every image Capsule stores is named); a reference without tag or digest
// means the tag "latest".
func ParseRef(s string) (Ref, error) {
	named, err := reference.ParseNamed(s)
	if errors.Is(err, reference.ErrNameNotCanonical) {
		return Ref{}, fmt.Errorf("registry: reference %q does not name a registry host", s)
	}
	if err != nil {
		return Ref{}, fmt.Errorf("registry: bad reference %q: %w", s, err)
	}
	return refOf(named), nil
}

// ParseNormalizedRef parses a reference as docker pull does: a name
// without a registry host is Docker Hub's ("busybox" is
// docker.io/library/busybox:latest).
func ParseNormalizedRef(s string) (Ref, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, fmt.Errorf("registry: bad reference %q: %w", s, err)
	}
	return refOf(named), nil
}

func refOf(named reference.Named) Ref {
	named = reference.TagNameOnly(named)
	r := Ref{Host: reference.Domain(named), Repo: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if c, ok := named.(reference.Digested); ok {
		r.Digest = c.Digest().String()
	}
	return r
}
