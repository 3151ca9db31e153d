package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
)

// UploadBlob streams r to repo as one blob (a chunked upload: neither
// length nor digest is needed up front) and returns its digest and size.
func (c *Client) UploadBlob(ctx context.Context, repo string, r io.Reader) (Descriptor, error) {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return Descriptor{}, err
	}
	dg := digest.Canonical.Digester()
	cr := &countReader{r: io.TeeReader(r, dg.Hash())}
	res, err := c.do(ctx, http.MethodPatch, repo, loc, cr, http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return Descriptor{}, err
	}
	if res.StatusCode != http.StatusAccepted && res.StatusCode != http.StatusNoContent {
		return Descriptor{}, statusError(res, "upload blob data")
	}
	res.Body.Close()
	if loc, err = c.location(res); err != nil {
		return Descriptor{}, err
	}
	d := Descriptor{Digest: dg.Digest().String(), Size: cr.n}
	u, err := url.Parse(loc)
	if err != nil {
		return Descriptor{}, fmt.Errorf("registry: bad upload location %q: %w", loc, err)
	}
	q := u.Query()
	q.Set("digest", d.Digest)
	u.RawQuery = q.Encode()
	res, err = c.do(ctx, http.MethodPut, repo, u.String(), nil, nil)
	if err != nil {
		return Descriptor{}, err
	}
	if res.StatusCode != http.StatusCreated {
		return Descriptor{}, statusError(res, "finish blob upload")
	}
	res.Body.Close()
	return d, nil
}

// UploadBlobOf uploads the blob in r, whose digest (e.g. "sha256:…")
// and size are known, in two requests (the upload's start, then one PUT
// carrying the data and the digest: the spec's monolithic upload) rather
// than UploadBlob's three. The registry checks the digest. Every request
// counts where a registry authenticates each one (htpasswd's bcrypt).
func (c *Client) UploadBlobOf(ctx context.Context, repo string, r io.ReadSeeker, size int64, dgst string) (Descriptor, error) {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return Descriptor{}, err
	}
	u, err := url.Parse(loc)
	if err != nil {
		return Descriptor{}, fmt.Errorf("registry: bad upload location %q: %w", loc, err)
	}
	q := u.Query()
	q.Set("digest", dgst)
	u.RawQuery = q.Encode()
	res, err := c.do(ctx, http.MethodPut, repo, u.String(), &sizedReader{ReadSeeker: r, n: size},
		http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return Descriptor{}, err
	}
	if res.StatusCode != http.StatusCreated {
		return Descriptor{}, statusError(res, "upload blob")
	}
	res.Body.Close()
	return Descriptor{Digest: dgst, Size: size}, nil
}

// sizedReader is a request body of known length (sent with a
// Content-Length, not chunked); it can be rewound for a replay.
type sizedReader struct {
	io.ReadSeeker
	n int64
}

// location resolves an upload's Location header against the registry.
func (c *Client) location(res *http.Response) (string, error) {
	loc := res.Header.Get("Location")
	if loc == "" {
		return "", errors.New("registry: upload response without Location")
	}
	u, err := c.resolve(loc)
	if err != nil {
		return "", fmt.Errorf("registry: bad Location %q: %w", loc, err)
	}
	return u, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// MountBlob makes blob digest of repository from also one of repo's,
// without moving its data (a cross-repository mount).
func (c *Client) MountBlob(ctx context.Context, repo, from, digest string) error {
	q := url.Values{"mount": {digest}, "from": {from}}
	res, err := c.do(ctx, http.MethodPost, repo, "/v2/"+repo+"/blobs/uploads/?"+q.Encode(), nil, nil)
	if err != nil {
		return err
	}
	// 202 means the registry started an upload instead: not mounted.
	if res.StatusCode != http.StatusCreated {
		return statusError(res, "mount blob "+digest+" from "+from)
	}
	res.Body.Close()
	return nil
}

// GetBlob streams blob digest of repo; the caller closes it.
func (c *Client) GetBlob(ctx context.Context, repo, digest string) (io.ReadCloser, error) {
	res, err := c.do(ctx, http.MethodGet, repo, "/v2/"+repo+"/blobs/"+digest, nil, nil)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, statusError(res, "get blob "+digest)
	}
	return res.Body, nil
}

// startUpload starts a blob upload to repo and returns where its data
// goes (the Location the registry answered).
func (c *Client) startUpload(ctx context.Context, repo string) (string, error) {
	res, err := c.do(ctx, http.MethodPost, repo, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusAccepted {
		return "", statusError(res, "start blob upload")
	}
	res.Body.Close()
	return c.location(res)
}
