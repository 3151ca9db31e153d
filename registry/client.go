// Package registry is Capsule's one client of the Docker Registry HTTP
// API v2 (the Distribution spec) and its one image-reference parser (on
// github.com/distribution/reference). The control plane uses it for the
// images it is responsible for: Glance uploads and downloads (blobs and
// manifests), deleting a snapshot's, backup's or cold migration's tag,
// listing tags; the Docker driver reads pushed manifests' layer sizes
// with it. Pushing and pulling images to run them stay with the Docker
// daemons on the compute hosts.
package registry

import (
	"bytes"
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
	"sync"
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

// ErrNotFound: the repository, tag, manifest or blob does not exist.
var ErrNotFound = errors.New("registry: not found")

// ErrDeleteDisabled: the registry refuses deletes (distribution answers
// 405 unless REGISTRY_STORAGE_DELETE_ENABLED=true).
var ErrDeleteDisabled = errors.New("registry: deletes are disabled on this registry")

// StatusError is an answer the client did not expect. errors.Is matches
// ErrNotFound on a 404 and ErrDeleteDisabled on a 405.
type StatusError struct {
	What   string // the operation, e.g. "put manifest"
	Code   int
	Status string // e.g. "404 Not Found"
	Body   string // the start of the registry's answer
}

func (e *StatusError) Error() string {
	return "registry: " + e.What + ": " + e.Status + ": " + e.Body
}

// Is lets errors.Is(err, ErrNotFound) and ErrDeleteDisabled see the status.
func (e *StatusError) Is(target error) bool {
	return target == ErrNotFound && e.Code == http.StatusNotFound ||
		target == ErrDeleteDisabled && e.Code == http.StatusMethodNotAllowed
}

// Client talks to one registry. Credentials, when set, go with every
// request as a basic login; a registry that answers with a bearer
// challenge gets a token from the realm it names (with that login), kept
// for the scope it was asked for until it expires.
type Client struct {
	// Address is host:port (plain HTTP, as Capsule's private registry
	// runs), or a URL with its scheme (https://host:port).
	Address  string
	Username string
	Password string
	HTTP     *http.Client // default: a client with a 60 s timeout

	// probeTLS: Address has no scheme and is tried with HTTPS first,
	// then plain HTTP when the registry speaks only that (Remote).
	probeTLS bool

	mu     sync.Mutex
	plain  bool             // probeTLS found a plain-HTTP registry
	tokens map[string]token // bearer tokens by scope
}

type token struct {
	authorization string
	expires       time.Time
}

// New returns a client for the configured private registry.
func New(cfg config.Registry) *Client {
	return &Client{Address: cfg.Address, Username: cfg.Username, Password: cfg.Password}
}

// Remote returns a client for the registry at host reached the way
// dockerd reaches it: HTTPS, or plain HTTP when the registry speaks only
// that (an insecure registry such as a loopback one). Docker Hub's name
// docker.io is served at registry-1.docker.io. Its HTTP client has no
// timeout: callers bound the wait with their context.
func Remote(host, username, password string) *Client {
	if host == "docker.io" {
		host = "registry-1.docker.io"
	}
	return &Client{Address: host, Username: username, Password: password, HTTP: http.DefaultClient, probeTLS: true}
}

// At returns a client for the registry at host with this client's login
// and HTTP client: c itself when host is c's.
func (c *Client) At(host string) *Client {
	if host == c.Host() {
		return c
	}
	return &Client{Address: host, Username: c.Username, Password: c.Password, HTTP: c.HTTP, probeTLS: c.probeTLS}
}

// Host is Address without its scheme, as image references name it.
func (c *Client) Host() string {
	h := strings.TrimPrefix(strings.TrimPrefix(c.Address, "https://"), "http://")
	return strings.TrimSuffix(h, "/")
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 60 * time.Second}
}

// base is the registry's root URL, without a trailing slash.
func (c *Client) base() string {
	if strings.HasPrefix(c.Address, "http://") || strings.HasPrefix(c.Address, "https://") {
		return strings.TrimSuffix(c.Address, "/")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.probeTLS && !c.plain {
		return "https://" + c.Host()
	}
	return "http://" + c.Host()
}

// resolve turns a Location header or a Link target into an absolute URL.
func (c *Client) resolve(ref string) (string, error) {
	base, err := url.Parse(c.base() + "/")
	if err != nil {
		return "", err
	}
	u, err := base.Parse(ref)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// do sends one request for repo's resources; target is a path under the
// registry root or an absolute URL (an upload location). A body that
// cannot be read twice (a stream) is sent once: a challenge it meets is
// the caller's failure.
func (c *Client) do(ctx context.Context, method, repo, target string, body io.Reader, hdr http.Header) (*http.Response, error) {
	scope := scopeFor(method, repo)
	res, err := c.send(ctx, method, target, body, hdr, c.authorization(scope))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusUnauthorized || !replayable(body) {
		return res, nil
	}
	authz, ok, err := c.answer(ctx, res, scope)
	if err != nil {
		res.Body.Close()
		return nil, fmt.Errorf("registry %s %s: %w", method, target, err)
	}
	if !ok {
		return res, nil
	}
	res.Body.Close()
	if s, ok := body.(io.Seeker); ok {
		if _, err := s.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("registry %s %s: rewind body: %w", method, target, err)
		}
	}
	return c.send(ctx, method, target, body, hdr, authz)
}

// replayable reports whether a request body can be sent again.
func replayable(body io.Reader) bool {
	if body == nil {
		return true
	}
	_, ok := body.(io.Seeker)
	return ok
}

// send sends one request with authz, switching a probing client to plain
// HTTP (once, for good) when the registry does not speak TLS.
func (c *Client) send(ctx context.Context, method, target string, body io.Reader, hdr http.Header, authz string) (*http.Response, error) {
	for {
		u := target
		if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
			u = c.base() + target
		}
		req, err := http.NewRequestWithContext(ctx, method, u, body)
		if err != nil {
			return nil, fmt.Errorf("registry request %s %s: %w", method, target, err)
		}
		if sr, ok := body.(*sizedReader); ok {
			req.ContentLength = sr.n
			if sr.n == 0 {
				req.Body = http.NoBody
			}
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		res, err := c.httpClient().Do(req)
		if err == nil {
			return res, nil
		}
		// Only a registry that speaks plain HTTP on its port is asked
		// again without TLS: a TLS failure is no reason to send a login
		// in clear.
		if errors.Is(err, http.ErrSchemeMismatch) && strings.HasPrefix(u, "https://") && c.switchToPlain() {
			target = "http://" + strings.TrimPrefix(u, "https://")
			continue
		}
		return nil, fmt.Errorf("registry %s %s: %w", method, target, err)
	}
}

// switchToPlain records that a probing client's registry speaks plain
// HTTP; false when the client does not probe.
func (c *Client) switchToPlain() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.probeTLS {
		return false
	}
	c.plain = true
	return true
}

// statusError turns an unexpected answer into an error (and closes it).
func statusError(res *http.Response, what string) error {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	res.Body.Close()
	return &StatusError{What: what, Code: res.StatusCode, Status: res.Status, Body: strings.TrimSpace(string(b))}
}

// ---- authentication ----

// scopeFor is the token scope a request of method on repo needs.
func scopeFor(method, repo string) string {
	if repo == "" { // the API version check
		return ""
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		return "repository:" + repo + ":pull"
	case http.MethodDelete:
		return "repository:" + repo + ":delete"
	}
	return "repository:" + repo + ":pull,push"
}

// authorization is the Authorization header a request for scope starts
// with: a bearer token obtained for it earlier and still valid, else the
// basic login, else none.
func (c *Client) authorization(scope string) string {
	c.mu.Lock()
	t, ok := c.tokens[scope]
	c.mu.Unlock()
	if ok && time.Now().Before(t.expires) {
		return t.authorization
	}
	if c.Username != "" {
		return basicAuth(c.Username, c.Password)
	}
	return ""
}

func basicAuth(user, pass string) string {
	req := http.Request{Header: http.Header{}}
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

// answer answers a 401's WWW-Authenticate challenge: the Authorization to
// send again, or false when there is nothing better to send than what
// was sent (to a basic challenge: the login, when there is one, went
// with the request).
func (c *Client) answer(ctx context.Context, res *http.Response, scope string) (string, bool, error) {
	challenge := res.Header.Get("WWW-Authenticate")
	kind, params, _ := strings.Cut(challenge, " ")
	switch strings.ToLower(kind) {
	case "bearer":
		t, err := c.fetchToken(ctx, challenge, params, scope)
		if err != nil {
			return "", false, err
		}
		c.mu.Lock()
		if c.tokens == nil {
			c.tokens = map[string]token{}
		}
		c.tokens[scope] = t
		c.mu.Unlock()
		return t.authorization, true, nil
	}
	// No challenge, or one of a kind the client does not speak: the
	// 401 stands.
	return "", false, nil
}

// fetchToken asks the challenge's realm for a token (with the login, when
// there is one) for the scope the registry named, else for scope.
func (c *Client) fetchToken(ctx context.Context, challenge, params, scope string) (token, error) {
	p := parseChallenge(params)
	if p["realm"] == "" {
		return token{}, fmt.Errorf("bearer challenge without a realm: %q", challenge)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p["realm"], nil)
	if err != nil {
		return token{}, fmt.Errorf("registry token: %w", err)
	}
	q := req.URL.Query()
	if p["service"] != "" {
		q.Set("service", p["service"])
	}
	if p["scope"] != "" {
		scope = p["scope"]
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	req.URL.RawQuery = q.Encode()
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return token{}, fmt.Errorf("registry token: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return token{}, fmt.Errorf("registry token from %s: %s", p["realm"], res.Status)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&body); err != nil {
		return token{}, fmt.Errorf("registry token: %w", err)
	}
	if body.Token == "" {
		body.Token = body.AccessToken
	}
	if body.Token == "" {
		return token{}, errors.New("registry token: the realm answered no token")
	}
	// The spec's default lifetime is 60 s; a token is not reused in its
	// last 10 s, so that it does not expire in flight.
	life := time.Duration(max(body.ExpiresIn, 60)-10) * time.Second
	return token{authorization: "Bearer " + body.Token, expires: time.Now().Add(life)}, nil
}

// parseChallenge splits `realm="x",service="y"` into its parameters.
func parseChallenge(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		s = strings.TrimLeft(s, " ,")
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				v, s = rest[1:], ""
			} else {
				v, s = rest[1:1+end], rest[2+end:]
			}
		} else {
			v, s, _ = strings.Cut(rest, ",")
		}
		out[strings.ToLower(strings.TrimSpace(k))] = v
	}
	return out
}

// ---- manifests and tags ----

// manifestAccept lists every manifest type, for resolving and deleting.
var manifestAccept = strings.Join([]string{MediaDockerManifest, MediaDockerList, MediaOCIManifest, MediaOCIIndex}, ", ")

// imageAccept lists the single-image manifest types, whose layers the
// readers of Manifest want.
var imageAccept = MediaDockerManifest + ", " + MediaOCIManifest

// maxManifest bounds a manifest read into memory.
const maxManifest = 4 << 20

// Descriptor names a blob or manifest: what a tag resolves to, a
// manifest's config and layers, an uploaded blob.
type Descriptor struct {
	MediaType string `json:"mediaType,omitempty"`
	Digest    string `json:"digest"` // sha256:...
	Size      int64  `json:"size"`
}

// Manifest is an image manifest (Docker schema 2 or OCI).
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Size is the compressed size of the image: config plus layers.
func (m Manifest) Size() int64 {
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

func manifestPath(repo, reference string) string {
	return "/v2/" + repo + "/manifests/" + url.PathEscape(reference)
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func mediaType(res *http.Response) string {
	mt, _, _ := strings.Cut(res.Header.Get("Content-Type"), ";")
	return strings.TrimSpace(mt)
}

// Resolve returns what reference (a tag or a digest) of repo points to.
// A HEAD answers with the digest in Docker-Content-Digest; a registry
// that leaves it out gets a GET, whose body's SHA-256 is the digest.
func (c *Client) Resolve(ctx context.Context, repo, reference string) (Descriptor, error) {
	what := "resolve " + repo + ":" + reference
	hdr := http.Header{"Accept": {manifestAccept}}
	res, err := c.do(ctx, http.MethodHead, repo, manifestPath(repo, reference), nil, hdr)
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
	body, mt, err := c.getManifest(ctx, repo, reference, manifestAccept, what)
	if err != nil {
		return Descriptor{}, err
	}
	return Descriptor{Digest: digestOf(body), MediaType: mt, Size: int64(len(body))}, nil
}

// RawManifest returns the manifest reference of repo as stored, and its
// media type, in one of the single-image types.
func (c *Client) RawManifest(ctx context.Context, repo, reference string) ([]byte, string, error) {
	return c.getManifest(ctx, repo, reference, imageAccept, "get manifest")
}

func (c *Client) getManifest(ctx context.Context, repo, reference, accept, what string) ([]byte, string, error) {
	res, err := c.do(ctx, http.MethodGet, repo, manifestPath(repo, reference), nil, http.Header{"Accept": {accept}})
	if err != nil {
		return nil, "", err
	}
	if res.StatusCode != http.StatusOK {
		return nil, "", statusError(res, what)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxManifest))
	if err != nil {
		return nil, "", fmt.Errorf("registry: %s: read manifest %s of %s: %w", what, reference, repo, err)
	}
	return body, mediaType(res), nil
}

// Manifest reads and decodes the image manifest reference (a tag or a
// digest) of repo.
func (c *Client) Manifest(ctx context.Context, repo, reference string) (Manifest, error) {
	body, _, err := c.RawManifest(ctx, repo, reference)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return Manifest{}, fmt.Errorf("registry: bad manifest %s of %s: %w", reference, repo, err)
	}
	return m, nil
}

// ImageSize returns the compressed size (config plus layers) of the image
// ref, in whichever registry ref names, with this client's login.
func (c *Client) ImageSize(ctx context.Context, ref string) (int64, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return 0, err
	}
	m, err := c.At(r.Host).Manifest(ctx, r.Repo, r.Reference())
	if err != nil {
		return 0, err
	}
	return m.Size(), nil
}

// PutManifest stores manifest (of mediaType) in repo under tag and
// returns its digest.
func (c *Client) PutManifest(ctx context.Context, repo, tag, mediaType string, manifest []byte) (string, error) {
	res, err := c.do(ctx, http.MethodPut, repo, manifestPath(repo, tag), bytes.NewReader(manifest),
		http.Header{"Content-Type": {mediaType}})
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusCreated {
		return "", statusError(res, "put manifest")
	}
	res.Body.Close()
	return digestOf(manifest), nil
}

// DeleteManifest deletes the manifest digest of repo, and with it every
// tag pointing at it. ErrNotFound when it is not there.
func (c *Client) DeleteManifest(ctx context.Context, repo, digest string) error {
	if !strings.HasPrefix(digest, "sha256:") {
		return fmt.Errorf("registry: delete %s: %q is not a digest", repo, digest)
	}
	res, err := c.do(ctx, http.MethodDelete, repo, manifestPath(repo, digest), nil, nil)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusAccepted && res.StatusCode != http.StatusOK {
		return statusError(res, "delete manifest "+repo+"@"+digest)
	}
	res.Body.Close()
	return nil
}

// DeleteImage removes the image ref (host/repo:tag or host/repo@digest)
// from this client's registry: the manifest digest when known (what was
// pushed), else the one the tag resolves to now. Already gone is success,
// so a retry after a crash is harmless. A reference to another registry
// is refused: the control plane only deletes what it pushed.
func (c *Client) DeleteImage(ctx context.Context, ref, digest string) error {
	r, err := ParseRef(ref)
	if err != nil {
		return err
	}
	if r.Host != c.Host() {
		return fmt.Errorf("registry: %s is not in registry %s", ref, c.Host())
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

// ReleaseImage deletes the image ref (host/repo:tag or host/repo@digest)
// from this client's registry unless another image still uses its
// manifest. others are the references every other image still holds (the
// database's rows); those outside ref's repository do not matter. Since a
// registry deletes a manifest with every tag of its repository pointing
// at it, the manifest stays while another reference names the same tag,
// or names a tag or digest of the same repository that resolves to the
// same manifest (images uploaded to a shared repository before each got
// its own, PerImageRepo). The last image to go takes the manifest along,
// so nothing leaks. Already gone is success; a reference another image
// holds that cannot be resolved keeps the manifest (an error): never
// delete what may still be used.
func (c *Client) ReleaseImage(ctx context.Context, ref string, others []string) error {
	r, err := ParseRef(ref)
	if err != nil {
		return err
	}
	if r.Host != c.Host() {
		return fmt.Errorf("registry: %s is not in registry %s", ref, c.Host())
	}
	var sameRepo []Ref
	for _, o := range others {
		or, err := ParseRef(o)
		if err != nil || or.Host != r.Host || or.Repo != r.Repo {
			continue
		}
		if or == r {
			return nil // another image holds this very reference
		}
		sameRepo = append(sameRepo, or)
	}
	digest := r.Digest
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
	for _, o := range sameRepo {
		od := o.Digest
		if od == "" {
			d, err := c.Resolve(ctx, o.Repo, o.Tag)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("registry: keep %s: cannot tell whether %s shares its manifest: %w", ref, o, err)
			}
			od = d.Digest
		}
		if od == digest {
			return nil // deleting the manifest would untag o
		}
	}
	if err := c.DeleteManifest(ctx, r.Repo, digest); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// Tags lists repo's tags, following the registry's pagination. A
// repository that does not exist has none.
func (c *Client) Tags(ctx context.Context, repo string) ([]string, error) {
	var out []string
	next := "/v2/" + repo + "/tags/list?n=1000"
	for next != "" {
		res, err := c.do(ctx, http.MethodGet, repo, next, nil, nil)
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

// Ping asks the registry's API version check (GET /v2/): nil when it
// speaks the v2 API and accepts this client's login; a *StatusError
// (401 when the login is missing or wrong) otherwise.
func (c *Client) Ping(ctx context.Context) error {
	res, err := c.do(ctx, http.MethodGet, "", "/v2/", nil, nil)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return statusError(res, "ping")
	}
	res.Body.Close()
	return nil
}
