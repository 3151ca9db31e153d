package portal

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Images: upload a docker-save tarball (streamed from the browser to the
// image API, never held whole by the portal), delete the project's own
// images, share one with another project (Glance image members) and
// accept or reject what other projects share with this one. The user's
// token decides as everywhere: another project's private image is
// Glance's 404, a reader's change its 403.

// ImageDetail is one image as its page shows it.
type ImageDetail struct {
	Image
	Owner           string `json:"owner"`
	ContainerFormat string `json:"container_format"`
	DiskFormat      string `json:"disk_format"`
	CreatedAt       string `json:"created_at"`
	Protected       bool   `json:"protected"`
}

// ImageMember is a project an image is shared with, and its answer.
type ImageMember struct {
	Member    string `json:"member_id"`
	Status    string `json:"status"`
	UpdatedAt string `json:"updated_at"`
}

func (s *Server) image(ctx context.Context, sess *session, id string) (*ImageDetail, error) {
	var im ImageDetail
	_, err := s.up.do(ctx, "image", sess.Token, http.MethodGet, s.ep.Image+"/v2/images/"+url.PathEscape(id), nil, &im)
	return &im, err
}

// sharedPending lists the images other projects shared with this one that
// it has not answered yet (Glance lists only accepted ones by default).
func (s *Server) sharedPending(ctx context.Context, sess *session) ([]ImageDetail, error) {
	var body struct {
		Images []ImageDetail `json:"images"`
	}
	q := url.Values{"visibility": {"shared"}, "member_status": {"pending"}}
	_, err := s.up.do(ctx, "image", sess.Token, http.MethodGet, s.ep.Image+"/v2/images?"+q.Encode(), nil, &body)
	var out []ImageDetail
	for _, im := range body.Images {
		if im.Owner != sess.ProjectID {
			out = append(out, im)
		}
	}
	return out, err
}

func (s *Server) imageMembers(ctx context.Context, sess *session, id string) ([]ImageMember, error) {
	var body struct {
		Members []ImageMember `json:"members"`
	}
	_, err := s.up.do(ctx, "image", sess.Token, http.MethodGet, s.ep.Image+"/v2/images/"+url.PathEscape(id)+"/members", nil, &body)
	return body.Members, err
}

// patchImage applies a Glance JSON patch (its own media type; Glance
// refuses plain JSON on PATCH).
func (s *Server) patchImage(ctx context.Context, sess *session, id string, ops []map[string]any) error {
	b, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("encode image patch: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, s.ep.Image+"/v2/images/"+url.PathEscape(id), strings.NewReader(string(b)))
	if err != nil {
		return fmt.Errorf("build image patch: %w", err)
	}
	req.Header.Set("Content-Type", "application/openstack-images-v2.1-json-patch")
	return s.send(req, sess, "image")
}

// send runs req with the session's token, the browser's address and no
// answer body wanted; a non-2xx answer becomes an *APIError.
func (s *Server) send(req *http.Request, sess *session, service string) error {
	req.Header.Set("X-Auth-Token", sess.Token)
	req.Header.Set("Accept", "application/json")
	if addr := clientAddress(req.Context()); addr != "" {
		req.Header.Set("X-Forwarded-For", addr)
	}
	client := s.up.client
	if req.Method == http.MethodPut {
		// Image data takes as long as the user's line needs: the
		// request's context (the browser's connection) bounds it, not
		// the API client's timeout.
		client = &http.Client{Transport: s.up.client.Transport}
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return fmt.Errorf("%s call ended: %w", service, ctxErr)
		}
		s.log.Warn("portal: API call failed", "service", service, "method", req.Method, "url", req.URL.String(), "err", err)
		return &APIError{Status: http.StatusBadGateway, Service: service,
			Message: "The " + service + " service cannot be reached right now; try again in a moment."}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return &APIError{Status: resp.StatusCode, Service: service, Message: errorMessage(resp.StatusCode, data)}
	}
	return nil
}

// imagesData is the Images page.
type imagesData struct {
	Images  []ImageDetail
	Pending []ImageDetail // shared with this project, not answered yet
	Project string        // this project's ID, what others share with
	Reader  bool
}

// Mine says the image belongs to the session's project.
func (d imagesData) Mine(im ImageDetail) bool { return im.Owner == d.Project }

func (s *Server) imagesPage(w http.ResponseWriter, r *http.Request, sess *session) {
	var body struct {
		Images []ImageDetail `json:"images"`
	}
	if _, err := s.up.do(r.Context(), "image", sess.Token, http.MethodGet, s.ep.Image+"/v2/images?limit=1000", nil, &body); err != nil {
		s.fail(w, r, sess, "Images", err)
		return
	}
	sortImages(body.Images)
	d := imagesData{Images: body.Images, Project: sess.ProjectID}
	d.Pending, _ = s.sharedPending(r.Context(), sess)
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "images"); ok {
		status, errMsg = f.Status, f.Error
	}
	s.render(w, r, status, "images", view{Title: "Images", Nav: "images", Sess: sess, Data: d, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done"))})
}

func sortImages(im []ImageDetail) {
	for i := 1; i < len(im); i++ {
		for j := i; j > 0 && im[j].Name < im[j-1].Name; j-- {
			im[j], im[j-1] = im[j-1], im[j]
		}
	}
}

// imageData is an image's page.
type imageData struct {
	Image   *ImageDetail
	Mine    bool
	Members []ImageMember
	// MyStatus is this project's answer to an image shared with it
	// ("" when it is no member).
	MyStatus string
}

func (s *Server) imagePage(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	im, err := s.image(r.Context(), sess, id)
	if err != nil {
		s.fail(w, r, sess, "Image", err)
		return
	}
	d := imageData{Image: im, Mine: im.Owner == sess.ProjectID}
	if im.Visibility == "shared" || d.Mine {
		ms, err := s.imageMembers(r.Context(), sess, id)
		if err == nil {
			if d.Mine {
				d.Members = ms
			} else {
				for _, m := range ms {
					if m.Member == sess.ProjectID {
						d.MyStatus = m.Status
					}
				}
			}
		}
	}
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "image "+id); ok {
		status, errMsg = f.Status, f.Error
	}
	s.render(w, r, status, "image", view{Title: "Image " + im.Name, Nav: "images", Sess: sess, Data: d, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done"))})
}

// imageResult ends an image form: back to the image's page with the
// outcome, or its refusal (POST-redirect-GET). A 404 (no such image, or
// another project's) is a page of its own.
func (s *Server) imageResult(w http.ResponseWriter, r *http.Request, sess *session, id, done string, err error) {
	if err != nil {
		st := statusOf(err)
		if st == http.StatusUnauthorized || st == http.StatusNotFound || st == 0 {
			s.fail(w, r, sess, "Image", err)
			return
		}
		s.sess.setFlash(sess, "image "+id, flash{Status: st, Error: messageOf(err)})
		http.Redirect(w, r, "/images/"+url.PathEscape(id), http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/images/"+url.PathEscape(id)+"?done="+done, http.StatusSeeOther)
}

func (s *Server) imageDeletePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	_, err := s.up.do(r.Context(), "image", sess.Token, http.MethodDelete, s.ep.Image+"/v2/images/"+url.PathEscape(id), nil, nil)
	if err != nil {
		s.imageResult(w, r, sess, id, "", err)
		return
	}
	s.log.Info("portal: image deleted", "user", sess.User, "project", sess.Project, "image", id)
	http.Redirect(w, r, "/images?done=image-deleted", http.StatusSeeOther)
}

// imageSharePost shares the image with a project: Glance takes members
// on "shared" images only, so a private one becomes shared first (which
// alone shows it to nobody new).
func (s *Server) imageSharePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id, member := r.PathValue("id"), strings.TrimSpace(r.PostFormValue("member"))
	if member == "" {
		s.imageResult(w, r, sess, id, "", &APIError{Status: http.StatusBadRequest, Service: "portal",
			Message: "Give the ID of the project to share the image with."})
		return
	}
	im, err := s.image(r.Context(), sess, id)
	if err == nil && im.Visibility == "private" {
		err = s.patchImage(r.Context(), sess, id, []map[string]any{{"op": "replace", "path": "/visibility", "value": "shared"}})
	}
	if err == nil {
		_, err = s.up.do(r.Context(), "image", sess.Token, http.MethodPost, s.ep.Image+"/v2/images/"+url.PathEscape(id)+"/members",
			map[string]string{"member": member}, nil)
	}
	s.imageResult(w, r, sess, id, "shared", err)
}

func (s *Server) imageUnsharePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	_, err := s.up.do(r.Context(), "image", sess.Token, http.MethodDelete,
		s.ep.Image+"/v2/images/"+url.PathEscape(id)+"/members/"+url.PathEscape(r.PathValue("member")), nil, nil)
	s.imageResult(w, r, sess, id, "unshared", err)
}

// imageAnswerPost is this project's answer to an image shared with it:
// accepted lists it with the project's images, rejected hides it.
func (s *Server) imageAnswerPost(w http.ResponseWriter, r *http.Request, sess *session) {
	id, answer := r.PathValue("id"), r.PathValue("answer")
	status := map[string]string{"accept": "accepted", "reject": "rejected"}[answer]
	if status == "" {
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Sess: sess, Error: "There is no page at " + r.URL.Path + "."})
		return
	}
	_, err := s.up.do(r.Context(), "image", sess.Token, http.MethodPut,
		s.ep.Image+"/v2/images/"+url.PathEscape(id)+"/members/"+url.PathEscape(sess.ProjectID), map[string]string{"status": status}, nil)
	if err != nil {
		s.imageResult(w, r, sess, id, "", err)
		return
	}
	http.Redirect(w, r, "/images?done=image-"+status, http.StatusSeeOther)
}

// defaultCleanup bounds deleting what a failed upload left.
const defaultCleanup = 30 * time.Second

// IsUpload tells the portal's requests that carry image data (the
// upload form): the listener lets them stream, without its body limit
// and timeouts; the image API's own size cap bounds them.
func IsUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.TrimRight(r.URL.Path, "/") == "/images/upload"
}

// imageUploadPost creates an image and streams the form's file into it.
// The form is multipart with csrf and name before the file, read part by
// part: the tarball goes from the browser to the image API as it
// arrives and is never buffered whole here (the page's script sends the
// same form with a progress bar; without script it is a plain post).
// The CSRF token comes in the X-CSRF-Token header or the first field.
func (s *Server) imageUploadPost(w http.ResponseWriter, r *http.Request) {
	sess := s.session(r)
	script := r.Header.Get(csrfHeader) != ""
	answer := func(status int, msg string) {
		if script {
			writeJSON(w, status, map[string]string{"error": msg})
			return
		}
		if sess == nil {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		s.sess.setFlash(sess, "images", flash{Status: status, Error: msg})
		http.Redirect(w, r, "/images", http.StatusSeeOther)
	}
	if sess == nil {
		answer(http.StatusUnauthorized, "Your session has ended: log in again.")
		return
	}
	want := s.keys.csrf(sess)
	csrfOK := script && checkCSRF(r, want)
	mr, err := r.MultipartReader()
	if err != nil {
		answer(http.StatusBadRequest, "Send the image as a file of the upload form.")
		return
	}
	var name string
	for {
		p, err := mr.NextPart()
		if err != nil {
			answer(http.StatusBadRequest, "The form had no file: choose a docker-save tarball.")
			return
		}
		switch p.FormName() {
		case csrfField:
			v, _ := io.ReadAll(io.LimitReader(p, 256))
			if !script {
				csrfOK = len(v) > 0 && subtle.ConstantTimeCompare(v, []byte(want)) == 1
			}
		case "name":
			v, _ := io.ReadAll(io.LimitReader(p, 1024))
			name = strings.TrimSpace(string(v))
		case "file":
			if !csrfOK {
				answer(http.StatusForbidden, "The form's security token (CSRF) is missing or wrong. Reload the page and try again.")
				return
			}
			if name == "" {
				name = strings.TrimSuffix(p.FileName(), ".tar")
			}
			if name == "" {
				answer(http.StatusBadRequest, "Give the image a name.")
				return
			}
			id, err := s.uploadImage(r.Context(), sess, name, p)
			if err != nil {
				if statusOf(err) == http.StatusUnauthorized && !script {
					s.fail(w, r, sess, "Upload", err)
					return
				}
				st := statusOf(err)
				if st < 400 {
					st = http.StatusBadGateway
				}
				answer(st, "The upload failed: "+messageOf(err))
				return
			}
			s.log.Info("portal: image uploaded", "user", sess.User, "project", sess.Project, "image", id, "name", name)
			if script {
				writeJSON(w, http.StatusCreated, map[string]string{"id": id, "location": "/images/" + id + "?done=uploaded"})
				return
			}
			http.Redirect(w, r, "/images/"+url.PathEscape(id)+"?done=uploaded", http.StatusSeeOther)
			return
		}
	}
}

// uploadImage creates a docker image record and streams data into it; an
// image whose data did not arrive whole is deleted again (a queued image
// without data boots nothing).
func (s *Server) uploadImage(ctx context.Context, sess *session, name string, data *multipart.Part) (string, error) {
	var created struct {
		ID string `json:"id"`
	}
	if _, err := s.up.do(ctx, "image", sess.Token, http.MethodPost, s.ep.Image+"/v2/images",
		map[string]string{"name": name, "container_format": "docker", "disk_format": "raw"}, &created); err != nil {
		return "", err
	}
	u := s.ep.Image + "/v2/images/" + url.PathEscape(created.ID) + "/file"
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, data)
	if err == nil {
		req.Header.Set("Content-Type", "application/octet-stream")
		err = s.send(req, sess, "image")
	}
	if err != nil {
		// The request's context may be gone with the browser: clean up
		// on a context of our own.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultCleanup)
		defer cancel()
		if _, derr := s.up.do(cctx, "image", sess.Token, http.MethodDelete, s.ep.Image+"/v2/images/"+url.PathEscape(created.ID), nil, nil); derr != nil {
			s.log.Warn("portal: delete the image of a failed upload", "image", created.ID, "err", derr)
		}
		if !errors.As(err, new(*APIError)) {
			err = &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "the file did not arrive whole"}
		}
		return "", err
	}
	return created.ID, nil
}

// manageDone are the notices of the images, networks and admin pages.
var manageDone = map[string]string{
	"uploaded":        "Image uploaded: servers can boot from it now.",
	"image-deleted":   "Image deleted.",
	"shared":          "Image shared: the project sees it once it accepts (Images → Shared with this project).",
	"unshared":        "The project no longer shares the image.",
	"image-accepted":  "Shared image accepted: it is listed with the project's images and can be launched.",
	"image-rejected":  "Shared image rejected: it is no longer offered.",
	"net-created":     "Network created: add a subnet so servers on it get addresses.",
	"net-deleted":     "Network deleted.",
	"subnet-created":  "Subnet created.",
	"subnet-deleted":  "Subnet deleted.",
	"project-created": "Project created.",
	"user-created":    "User created and given the role.",
	"role-granted":    "Role granted.",
	"quota-saved":     "Quota saved.",
	"switched":        "Switched project: the pages show this project now.",
}
