// Package image is Capsule's Glance v2: image records backed by references
// in the private registry. It lists, shows, creates, updates and deletes
// image records; image data (upload/download) goes through an optional
// Data backend, since images live in the registry, not here.
package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// Data moves image bits in and out of the registry. Put stores the
// uploaded data for img and returns the registry reference it now lives
// at; Get streams it back. A Service without Data answers 501 to uploads
// and downloads.
type Data interface {
	Put(ctx context.Context, img store.Image, r io.Reader) (registryRef string, err error)
	Get(ctx context.Context, img store.Image) (io.ReadCloser, error)
}

// Deleter is implemented by Data backends that can drop an image's data
// when its record is deleted. others are the registry references the
// remaining images hold in the repository of img's: data one of them
// still uses stays.
type Deleter interface {
	Delete(ctx context.Context, img store.Image, others []string) error
}

// Options configure the image service.
type Options struct {
	// Validator checks X-Auth-Token (the identity service). Required.
	Validator auth.Validator
	Data      Data
	Logger    *slog.Logger
	// MaxImageBytes caps one upload's data (Glance's image_size_cap):
	// beyond it the upload gets a 413. Default DefaultMaxImageBytes.
	MaxImageBytes int64
	// UploadTimeout bounds one upload, reading the body and storing it
	// (the listener lifts its own timeouts for image data). Default
	// DefaultUploadTimeout.
	UploadTimeout time.Duration
}

// Upload bounds by default: 10 GiB is far beyond a container image a
// server boots from (they are tens to hundreds of MiB) and within what
// the registry's disk is expected to hold; an hour moves it at 3 MB/s.
const (
	DefaultMaxImageBytes int64 = 10 << 30
	DefaultUploadTimeout       = time.Hour
)

// Service is the image API.
type Service struct {
	st   *store.Store
	opts Options
	log  *slog.Logger
}

// New returns the image service over st.
func New(st *store.Store, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxImageBytes <= 0 {
		opts.MaxImageBytes = DefaultMaxImageBytes
	}
	if opts.UploadTimeout <= 0 {
		opts.UploadTimeout = DefaultUploadTimeout
	}
	return &Service{st: st, opts: opts, log: opts.Logger.With("service", "image")}
}

// Handler serves the image port.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	authed := identity.RequireToken(s.opts.Validator, s.respondErr)
	h := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, authed(fn)) }

	// Discovery answers without a token.
	mux.HandleFunc("GET /{$}", s.versions)
	mux.HandleFunc("GET /versions", s.versions)
	mux.HandleFunc("GET /v2", s.versions)

	h("GET /v2/images", s.listImages)
	h("POST /v2/images", s.createImage)
	h("GET /v2/images/{id}", s.getImage)
	h("PATCH /v2/images/{id}", s.patchImage)
	h("DELETE /v2/images/{id}", s.deleteImage)
	h("PUT /v2/images/{id}/file", s.uploadImage)
	h("GET /v2/images/{id}/file", s.downloadImage)
	h("PUT /v2/images/{id}/stage", s.stageImage)
	h("POST /v2/images/{id}/import", s.importImage)
	h("GET /v2/info/import", s.importInfo)
	h("POST /v2/images/{id}/actions/deactivate", s.deactivate)
	h("POST /v2/images/{id}/actions/reactivate", s.reactivate)
	h("PUT /v2/images/{id}/tags/{tag}", s.addTag)
	h("DELETE /v2/images/{id}/tags/{tag}", s.deleteTag)
	h("GET /v2/images/{id}/members", s.listMembers)
	h("POST /v2/images/{id}/members", s.createMember)
	h("GET /v2/images/{id}/members/{member}", s.getMember)
	h("PUT /v2/images/{id}/members/{member}", s.updateMember)
	h("DELETE /v2/images/{id}/members/{member}", s.deleteMember)
	h("GET /v2/schemas/image", s.imageSchema)
	h("GET /v2/schemas/images", s.imagesSchema)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.respondErr(w, r, errdefs.NotFound("The resource could not be found."))
	})
	return httpapi.WithRequestID(httpapi.AccessLog(s.opts.Logger, "image", httpapi.TrimSlash(mux)))
}

// fail writes the JSON error body clients of Glance accept:
// {"code":404,"title":"Not Found","message":"..."}.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	title := http.StatusText(status)
	if title == "" {
		title = "Error"
	}
	httpapi.WriteJSON(w, status, map[string]any{"code": status, "title": title, "message": msg})
}

// internalError logs err and answers 500 without details; a store's
// refusal of the request's own text (store/pgtext.go) is a 400.
func (s *Service) internalError(w http.ResponseWriter, r *http.Request, err error) {
	if errdefs.IsInvalidArgument(err) {
		s.respondErr(w, r, err)
		return
	}
	s.log.ErrorContext(r.Context(), "image request failed", "error", err,
		"request_id", httpapi.RequestID(r.Context()))
	s.fail(w, r, http.StatusInternalServerError, "The server failed to handle the request.")
}

func (s *Service) storeError(w http.ResponseWriter, r *http.Request, err error, id string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.respondErr(w, r, errdefs.NotFound("No image found with ID "+id))
	case errors.Is(err, store.ErrConflict):
		s.respondErr(w, r, errdefs.Conflictf("An image with identifier %s already exists", id))
	default:
		s.internalError(w, r, err)
	}
}

// versions is the version document: 300 as Glance (and Tempest) have it.
// Only CURRENT/SUPPORTED statuses: gophercloud rejects EXPERIMENTAL.
func (s *Service) versions(w http.ResponseWriter, r *http.Request) {
	href := httpapi.BaseURL(r) + "/v2/"
	var vs []map[string]any
	for minor := 9; minor >= 0; minor-- {
		status := "SUPPORTED"
		if minor == 9 {
			status = "CURRENT"
		}
		vs = append(vs, map[string]any{"id": fmt.Sprintf("v2.%d", minor), "status": status,
			"links": []map[string]string{{"rel": "self", "href": href}}})
	}
	httpapi.WriteJSON(w, http.StatusMultipleChoices, map[string]any{"versions": vs})
}

// TooLarge answers a request body over the listener's limit with Glance's
// 413. Image data (IsDataTransfer) is not under that limit.
func (s *Service) TooLarge(w http.ResponseWriter, r *http.Request, msg string) {
	s.fail(w, r, http.StatusRequestEntityTooLarge, msg)
}

// IsDataTransfer tells the requests that carry image data (upload and
// download of /v2/images/{id}/file, the import's stage): they stream, so the listener's small
// JSON body limit and its read and write timeouts do not apply to them;
// the upload path bounds itself.
func IsDataTransfer(r *http.Request) bool {
	if r.Method != http.MethodPut && r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	rest, ok := strings.CutPrefix(strings.TrimRight(r.URL.Path, "/"), "/v2/images/")
	if !ok {
		return false
	}
	id, tail, ok := strings.Cut(rest, "/")
	return ok && id != "" && (tail == "file" || (tail == "stage" && r.Method == http.MethodPut))
}
