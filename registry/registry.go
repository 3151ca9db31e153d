// Package registry is a small client of the Docker Registry HTTP API v2,
// for the images the control plane itself is responsible for (a cold
// migration's commit, say): resolve a tag to its manifest digest, delete a
// manifest by digest, list a repository's tags. Pushing and pulling stay
// with the Docker daemons on the compute hosts.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/config"
)

// Manifest media types a tag may resolve to. The Accept header must list
// them all: a registry answers a request that accepts none of a
// manifest's type with 404 (OCI) or a converted schema-1 manifest with
// another digest (Docker), and deleting that digest would miss the tag.
const (
	MediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaOCIIndex       = "application/vnd.oci.image.index.v1+json"
)

var manifestAccept = strings.Join([]string{MediaDockerManifest, MediaDockerList, MediaOCIManifest, MediaOCIIndex}, ", ")

// ErrNotFound: the repository, tag or manifest does not exist.
var ErrNotFound = errors.New("registry: not found")

// ErrDeleteDisabled: the registry refuses deletes (distribution answers
// 405 unless REGISTRY_STORAGE_DELETE_ENABLED=true).
var ErrDeleteDisabled = errors.New("registry: deletes are disabled on this registry")

// Client talks to one registry.
type Client struct {
	// Address is host:port (plain HTTP, as Capsule's private registry
	// runs), or a URL with its scheme (https://host:port).
	Address  string
	Username string // basic auth, when set
	Password string
	HTTP     *http.Client // default: a client with a 60 s timeout
}

// New returns a client for the configured private registry.
func New(cfg config.Registry) *Client {
	return &Client{Address: cfg.Address, Username: cfg.Username, Password: cfg.Password}
}

// Descriptor is what a tag resolves to.
type Descriptor struct {
	Digest    string // sha256:...
	MediaType string
	Size      int64
}

// Ref is a parsed image reference host/repo:tag or host/repo@digest.
type Ref struct {
	Host   string
	Repo   string
	Tag    string // "" when the reference is by digest
	Digest string // "" when the reference is by tag
}

// String returns the reference as Docker writes it.
func (r Ref) String() string {
	if r.Digest != "" {
		return r.Host + "/" + r.Repo + "@" + r.Digest
	}
	return r.Host + "/" + r.Repo + ":" + r.Tag
}

// ParseRef parses a fully qualified reference (registry host first); a
// reference without tag or digest means the tag "latest".
func ParseRef(s string) (Ref, error) {
	host, rest, ok := strings.Cut(s, "/")
	if !ok || host == "" || rest == "" || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return Ref{}, fmt.Errorf("registry: reference %q does not name a registry host", s)
	}
	if repo, dg, ok := strings.Cut(rest, "@"); ok {
		if repo == "" || !strings.HasPrefix(dg, "sha256:") {
			return Ref{}, fmt.Errorf("registry: bad digest reference %q", s)
		}
		return Ref{Host: host, Repo: repo, Digest: dg}, nil
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		if rest[:i] == "" || rest[i+1:] == "" {
			return Ref{}, fmt.Errorf("registry: bad reference %q", s)
		}
		return Ref{Host: host, Repo: rest[:i], Tag: rest[i+1:]}, nil
	}
	return Ref{Host: host, Repo: rest, Tag: "latest"}, nil
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 60 * time.Second}
}

func (c *Client) base() string {
	if strings.HasPrefix(c.Address, "http://") || strings.HasPrefix(c.Address, "https://") {
		return strings.TrimSuffix(c.Address, "/")
	}
	return "http://" + c.Address
}

// host is Address without its scheme, as image references name it.
func (c *Client) host() string {
	h := strings.TrimPrefix(strings.TrimPrefix(c.Address, "https://"), "http://")
	return strings.TrimSuffix(h, "/")
}

func (c *Client) do(ctx context.Context, method, path string, hdr http.Header) (*http.Response, error) {
	target := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		target = c.base() + path
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, fmt.Errorf("registry: %s %s: %w", method, path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("registry: %s %s: %w", method, path, err)
	}
	return res, nil
}

// statusError turns an unexpected answer into an error (and closes it).
func statusError(res *http.Response, what string) error {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	res.Body.Close()
	switch res.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case http.StatusMethodNotAllowed:
		return fmt.Errorf("%s: %w", what, ErrDeleteDisabled)
	}
	return fmt.Errorf("registry: %s: %s: %s", what, res.Status, strings.TrimSpace(string(b)))
}

func manifestPath(repo, reference string) string {
	return "/v2/" + repo + "/manifests/" + url.PathEscape(reference)
}

// Resolve returns what reference (a tag or a digest) of repo points to.
// A HEAD answers with the digest in Docker-Content-Digest; a registry
// that leaves it out gets a GET, whose body's SHA-256 is the digest.
func (c *Client) Resolve(ctx context.Context, repo, reference string) (Descriptor, error) {
	what := "resolve " + repo + ":" + reference
	hdr := http.Header{"Accept": {manifestAccept}}
	res, err := c.do(ctx, http.MethodHead, manifestPath(repo, reference), hdr)
	if err != nil {
		return Descriptor{}, err
	}
	if res.StatusCode != http.StatusOK {
		return Descriptor{}, statusError(res, what)
	}
	res.Body.Close()
	d := Descriptor{Digest: res.Header.Get("Docker-Content-Digest"), MediaType: mediaType(res), Size: res.ContentLength}
	if d.Digest != "" {
		return d, nil
	}
	res, err = c.do(ctx, http.MethodGet, manifestPath(repo, reference), hdr)
	if err != nil {
		return Descriptor{}, err
	}
	if res.StatusCode != http.StatusOK {
		return Descriptor{}, statusError(res, what)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return Descriptor{}, fmt.Errorf("registry: %s: read manifest: %w", what, err)
	}
	sum := sha256.Sum256(body)
	return Descriptor{Digest: "sha256:" + hex.EncodeToString(sum[:]), MediaType: mediaType(res), Size: int64(len(body))}, nil
}

func mediaType(res *http.Response) string {
	mt, _, _ := strings.Cut(res.Header.Get("Content-Type"), ";")
	return strings.TrimSpace(mt)
}

// DeleteManifest deletes the manifest digest of repo, and with it every
// tag pointing at it. ErrNotFound when it is not there.
func (c *Client) DeleteManifest(ctx context.Context, repo, digest string) error {
	if !strings.HasPrefix(digest, "sha256:") {
		return fmt.Errorf("registry: delete %s: %q is not a digest", repo, digest)
	}
	res, err := c.do(ctx, http.MethodDelete, manifestPath(repo, digest), nil)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusAccepted && res.StatusCode != http.StatusOK {
		return statusError(res, "delete "+repo+"@"+digest)
	}
	res.Body.Close()
	return nil
}

// Tags lists repo's tags, following the registry's pagination. A
// repository that does not exist has none.
func (c *Client) Tags(ctx context.Context, repo string) ([]string, error) {
	var out []string
	next := "/v2/" + repo + "/tags/list?n=1000"
	for next != "" {
		res, err := c.do(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		if res.StatusCode == http.StatusNotFound {
			res.Body.Close()
			return out, nil
		}
		if res.StatusCode != http.StatusOK {
			return nil, statusError(res, "list tags of "+repo)
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(&page)
		res.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("registry: list tags of %s: %w", repo, err)
		}
		out = append(out, page.Tags...)
		next = nextLink(res.Header.Get("Link"))
	}
	return out, nil
}

// nextLink reads an RFC 5988 Link header: `</v2/...?last=x&n=1000>; rel="next"`.
func nextLink(h string) string {
	if h == "" || !strings.Contains(h, `rel="next"`) {
		return ""
	}
	start, end := strings.Index(h, "<"), strings.Index(h, ">")
	if start < 0 || end <= start {
		return ""
	}
	return h[start+1 : end]
}

// DeleteImage removes the image ref (host/repo:tag) from this client's
// registry: the manifest digest when known (what was pushed), else the
// one the tag resolves to now. Already gone is success, so a retry after
// a crash is harmless. A reference to another registry is refused: the
// control plane only deletes what it pushed.
func (c *Client) DeleteImage(ctx context.Context, ref, digest string) error {
	r, err := ParseRef(ref)
	if err != nil {
		return err
	}
	if r.Host != c.host() {
		return fmt.Errorf("registry: %s is not in registry %s", ref, c.host())
	}
	if digest == "" {
		digest = r.Digest
	}
	if digest == "" {
		d, err := c.Resolve(ctx, r.Repo, r.Tag)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		digest = d.Digest
	}
	if err := c.DeleteManifest(ctx, r.Repo, digest); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}
