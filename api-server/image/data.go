package image

import (
	"context"
	"crypto/md5" //nolint:gosec // Glance's checksum is MD5 by definition
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// countingHasher feeds everything read through it to the image checksums.
type countingHasher struct {
	r      io.Reader
	md5    hash.Hash
	sha512 hash.Hash
	n      int64
}

func (c *countingHasher) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.md5.Write(p[:n])
		c.sha512.Write(p[:n])
		c.n += int64(n)
	}
	return n, err
}

// errImageTooLarge: the upload's data went past Options.MaxImageBytes.
var errImageTooLarge = errors.New("image data over the size limit")

// cappedReader passes at most left bytes on and fails with
// errImageTooLarge as soon as the data goes beyond them.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, errImageTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1] // one byte more tells "exactly at the cap" from "over"
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n - 1, errImageTooLarge
	}
	return n, err
}

// tooLarge is Glance's answer to an image over image_size_cap (413).
func (s *Service) tooLarge() error {
	return errdefs.QuotaExceededf("The incoming image is too large: the limit is %d bytes.", s.opts.MaxImageBytes)
}

// uploadImage is PUT /v2/images/{id}/file: only from queued; the data goes
// to the Data backend (the registry) while size and checksums are taken.
func (s *Service) uploadImage(w http.ResponseWriter, r *http.Request) {
	s.receiveData(w, r, StatusActive)
}

// stageImage is PUT /v2/images/{id}/stage (the interoperable import's
// glance-direct): the data is stored as by an upload, and the image waits
// in uploading for POST /import to make it active.
func (s *Service) stageImage(w http.ResponseWriter, r *http.Request) {
	s.receiveData(w, r, StatusUploading)
}

// receiveData stores a request body as an image's data, the image ending
// in status done.
func (s *Service) receiveData(w http.ResponseWriter, r *http.Request, done string) {
	img, c, ok := s.loadVisible(w, r)
	if !ok {
		return
	}
	if !canModify(c, &img) {
		s.respondErr(w, r, errdefs.Forbidden("You are not authorized to upload data to image "+img.ID))
		return
	}
	if s.opts.Data == nil {
		s.respondErr(w, r, errdefs.NotSupported("Image data upload is not available on this Capsule deployment."))
		return
	}
	if img.Status != StatusQueued {
		s.respondErr(w, r, errdefs.Conflict("Image status transition from "+img.Status+" to saving is not allowed"))
		return
	}
	if r.ContentLength > s.opts.MaxImageBytes {
		w.Header().Set("Connection", "close") // the body is not read
		s.respondErr(w, r, s.tooLarge())
		return
	}
	// Claim the image: only one upload may move it out of queued.
	res := s.st.WithContext(r.Context()).Model(&store.Image{}).
		Where("id = ? AND status = ?", img.ID, StatusQueued).Update("status", StatusSaving)
	if res.Error != nil {
		s.internalError(w, r, fmt.Errorf("mark image %s saving: %w", img.ID, res.Error))
		return
	}
	if res.RowsAffected == 0 {
		s.respondErr(w, r, errdefs.Conflict("Image "+img.ID+" is already being uploaded"))
		return
	}
	img.Status = StatusSaving
	// The whole upload, reading and storing, within UploadTimeout: the
	// listener lifted its read deadline for image data.
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.UploadTimeout)
	defer cancel()
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.opts.UploadTimeout))
	body := &cappedReader{r: r.Body, left: s.opts.MaxImageBytes}
	hr := &countingHasher{r: body, md5: md5.New(), sha512: sha512.New()} //nolint:gosec
	ref, err := s.opts.Data.Put(ctx, img, hr)
	if err != nil {
		s.log.WarnContext(r.Context(), "image upload failed", "image", img.ID, "bytes_read", hr.n, "error", err)
		img.Status = StatusQueued
		// Not the request's context: a body cut short may have ended it.
		if serr := s.save(r.WithContext(context.WithoutCancel(r.Context())), &img); serr != nil {
			s.log.ErrorContext(r.Context(), "reset image status after a failed upload", "image", img.ID, "error", serr)
		}
		switch {
		case errors.Is(err, errImageTooLarge):
			w.Header().Set("Connection", "close") // the rest of the body is not read
			s.respondErr(w, r, s.tooLarge())
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
			w.Header().Set("Connection", "close")
			s.fail(w, r, http.StatusRequestTimeout, fmt.Sprintf("The image upload took longer than %s.", s.opts.UploadTimeout))
		default:
			s.respondErr(w, r, errdefs.InvalidArgument("Image upload failed: "+err.Error()))
		}
		return
	}
	size := hr.n
	img.Size = &size
	img.Checksum = hex.EncodeToString(hr.md5.Sum(nil))
	img.RegistryRef = ref
	props := Properties(&img)
	props[propHashAlgo] = "sha512"
	props[propHashValue] = hex.EncodeToString(hr.sha512.Sum(nil))
	setProperties(&img, props)
	img.Status = done
	if err := s.save(r, &img); err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// downloadImage is GET /v2/images/{id}/file.
func (s *Service) downloadImage(w http.ResponseWriter, r *http.Request) {
	img, c, ok := s.loadVisible(w, r)
	if !ok {
		return
	}
	if img.Status == StatusDeactivated && !c.IsAdmin() {
		s.respondErr(w, r, errdefs.Forbidden("The requested image has been deactivated. Image data download is forbidden."))
		return
	}
	if img.Status != StatusActive && img.Status != StatusDeactivated {
		w.WriteHeader(http.StatusNoContent) // no data yet
		return
	}
	if s.opts.Data == nil {
		s.respondErr(w, r, errdefs.NotSupported("Image data download is not available on this Capsule deployment."))
		return
	}
	rc, err := s.opts.Data.Get(r.Context(), img)
	if err != nil {
		s.internalError(w, r, fmt.Errorf("open image %s data: %w", img.ID, err))
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if img.Checksum != "" {
		w.Header().Set("Content-MD5", img.Checksum)
	}
	if img.Size != nil {
		w.Header().Set("Content-Length", strconv.FormatInt(*img.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.log.WarnContext(r.Context(), "image download interrupted", "image", img.ID, "error", err)
	}
}
