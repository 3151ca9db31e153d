package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// The image proxy: Nova's /images API (deprecated at 2.36, gone from it:
// 404 as any unknown path), served from the Glance side's records, as
// Tempest and older clients use below 2.36 to wait for a snapshot.

// ImageDeleter deletes an image as Glance does (package image's Service):
// the proxy's DELETE must drop the registry data as Glance's does.
type ImageDeleter interface {
	DeleteImage(ctx context.Context, c *auth.Credentials, id string) error
}

// imageProxy answers the proxy's paths from 2.36 on as Nova does.
func (s *Service) imageProxy(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if versionOf(r.Context()).AtLeast(36) {
			writeFault(w, errdefs.NotFound("The resource could not be found."))
			return
		}
		h(w, r)
	}
}

func (s *Service) imageRoutes(mux *http.ServeMux, p string) {
	mux.HandleFunc("GET "+p+"/images", s.imageProxy(s.authed(s.listProxyImages(false))))
	mux.HandleFunc("GET "+p+"/images/detail", s.imageProxy(s.authed(s.listProxyImages(true))))
	mux.HandleFunc("GET "+p+"/images/{id}", s.imageProxy(s.authed(s.showProxyImage)))
	mux.HandleFunc("DELETE "+p+"/images/{id}", s.imageProxy(s.writer(s.deleteProxyImage)))
	mux.HandleFunc("GET "+p+"/images/{id}/metadata", s.imageProxy(s.authed(s.listImageMetadata)))
	mux.HandleFunc("POST "+p+"/images/{id}/metadata", s.imageProxy(s.writer(s.setImageMetadata(false))))
	mux.HandleFunc("PUT "+p+"/images/{id}/metadata", s.imageProxy(s.writer(s.setImageMetadata(true))))
	mux.HandleFunc("GET "+p+"/images/{id}/metadata/{key}", s.imageProxy(s.authed(s.showImageMetadataItem)))
	mux.HandleFunc("PUT "+p+"/images/{id}/metadata/{key}", s.imageProxy(s.writer(s.putImageMetadataItem)))
	mux.HandleFunc("DELETE "+p+"/images/{id}/metadata/{key}", s.imageProxy(s.writer(s.deleteImageMetadataItem)))
}

// novaImageStatus and novaImageProgress are Nova's views of Glance's
// status (nova/api/openstack/compute/views/images.py).
func novaImageStatus(glance string) string {
	switch glance {
	case image.StatusActive:
		return "ACTIVE"
	case image.StatusQueued, image.StatusSaving:
		return "SAVING"
	case "deleted", "pending_delete":
		return "DELETED"
	case image.StatusKilled:
		return "ERROR"
	}
	return "UNKNOWN"
}

func novaImageProgress(glance string) int {
	switch glance {
	case image.StatusQueued:
		return 25
	case image.StatusSaving:
		return 50
	case image.StatusActive:
		return 100
	}
	return 0
}

func novaTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func (s *Service) imageLinks(r *http.Request, id string) []map[string]string {
	glance := httpapi.HostURL(httpapi.Scheme(r), s.opts.PublicHost, s.opts.ImagePort)
	return append(s.links(r, "images", id),
		map[string]string{"rel": "alternate", "type": "application/vnd.openstack.image", "href": glance + "/images/" + id})
}

// proxyImageView is Nova's image: Glance's record in Nova's words; a
// snapshot names its server.
func (s *Service) proxyImageView(r *http.Request, img *store.Image, detail bool) map[string]any {
	v := map[string]any{"id": img.ID, "name": img.Name, "links": s.imageLinks(r, img.ID)}
	if !detail {
		return v
	}
	meta := image.AdditionalProperties(img)
	v["status"] = novaImageStatus(img.Status)
	v["progress"] = novaImageProgress(img.Status)
	v["minRam"] = img.MinRAM
	v["minDisk"] = img.MinDisk
	v["metadata"] = meta
	v["created"] = novaTime(img.CreatedAt)
	v["updated"] = novaTime(img.UpdatedAt)
	v["OS-EXT-IMG-SIZE:size"] = img.Size
	if srv := meta["instance_uuid"]; srv != "" {
		v["server"] = map[string]any{"id": srv, "links": s.links(r, "servers", srv)}
	}
	return v
}

// visibleImage loads image id when the caller may see it (Glance's rule:
// admins, public and community images, the owner's).
func (s *Service) visibleImage(ctx context.Context, id string) (*store.Image, error) {
	c := auth.FromContext(ctx)
	var img store.Image
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&img).Error
	if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && !imageVisible(c, &img)) {
		return nil, errdefs.NotFound("Image not found.")
	}
	if err != nil {
		return nil, fmt.Errorf("load image %s: %w", id, err)
	}
	return &img, nil
}

func imageVisible(c *auth.Credentials, img *store.Image) bool {
	return c.IsAdmin() || img.Visibility == image.VisibilityPublic || img.Visibility == image.VisibilityCommunity ||
		(img.Owner != "" && img.Owner == c.ProjectID)
}

func (s *Service) listProxyImages(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		c := auth.FromContext(ctx)
		q := r.URL.Query()
		db := s.st.WithContext(ctx).Model(&store.Image{})
		if !c.IsAdmin() {
			db = db.Where("visibility IN ? OR owner = ?", []string{image.VisibilityPublic, image.VisibilityCommunity}, c.ProjectID)
		}
		if name := q.Get("name"); name != "" {
			db = db.Where("name = ?", name)
		}
		for key, col := range map[string]string{"minRam": "min_ram", "minDisk": "min_disk"} {
			if v := q.Get(key); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					writeFault(w, errdefs.InvalidArgumentf("Invalid %s filter [%s]", key, v))
					return
				}
				db = db.Where(col+" >= ?", n)
			}
		}
		if cs := q.Get("changes-since"); cs != "" {
			t, err := time.Parse(time.RFC3339, cs)
			if err != nil {
				writeFault(w, errdefs.InvalidArgument("Invalid changes-since value"))
				return
			}
			db = db.Where("updated_at >= ?", t.UTC())
		}
		// Nova's status, server (the snapshot's instance_uuid) and type
		// (image_type) filters, on the Nova view: checked on each row the
		// database pages out.
		keep := func(img *store.Image) bool {
			if st := q.Get("status"); st != "" && !strings.EqualFold(st, novaImageStatus(img.Status)) {
				return false
			}
			props := image.AdditionalProperties(img)
			if srv := q.Get("server"); srv != "" && props["instance_uuid"] != lastSegment(srv) {
				return false
			}
			if typ := q.Get("type"); typ != "" && props["image_type"] != typ {
				return false
			}
			return true
		}
		var from *store.Image
		if m := q.Get("marker"); m != "" {
			// The marker must be an image of this very list.
			var mk store.Image
			err := db.Session(&gorm.Session{}).Where("id = ?", m).Take(&mk).Error
			if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
				s.fail(w, r, fmt.Errorf("list images: marker: %w", err))
				return
			}
			if err != nil || !keep(&mk) {
				writeFault(w, errdefs.InvalidArgumentf("marker [%s] not found", m))
				return
			}
			from = &mk
		}
		limit, ok := pageLimit(w, r)
		if !ok {
			return
		}
		order := []image.SortKey{{Key: "created_at", Desc: true}, {Key: "id", Desc: true}}
		imgs, more, err := image.Page(db, order, from, limit, keep)
		if err != nil {
			s.fail(w, r, fmt.Errorf("list images: %w", err))
			return
		}
		items := make([]any, 0, len(imgs))
		for i := range imgs {
			items = append(items, s.proxyImageView(r, &imgs[i], detail))
		}
		out := map[string]any{"images": items}
		if more && limit > 0 {
			out["images_links"] = s.nextLinks(r, "images", detail, limit, imgs[len(imgs)-1].ID)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Service) showProxyImage(w http.ResponseWriter, r *http.Request) {
	img, err := s.visibleImage(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"image": s.proxyImageView(r, img, true)})
}

func (s *Service) deleteProxyImage(w http.ResponseWriter, r *http.Request) {
	if s.opts.Images == nil {
		writeFault(w, errdefs.New(errdefs.ErrNotSupported, "Image delete is not available here."))
		return
	}
	err := s.opts.Images.DeleteImage(r.Context(), auth.FromContext(r.Context()), r.PathValue("id"))
	if errdefs.IsNotFound(err) {
		err = errdefs.NotFound("Image not found.")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	noContent(w, http.StatusNoContent)
}

func (s *Service) listImageMetadata(w http.ResponseWriter, r *http.Request) {
	img, err := s.visibleImage(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"metadata": image.AdditionalProperties(img)})
}

func (s *Service) showImageMetadataItem(w http.ResponseWriter, r *http.Request) {
	img, err := s.visibleImage(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	key := r.PathValue("key")
	v, ok := image.AdditionalProperties(img)[key]
	if !ok {
		writeFault(w, errdefs.NotFound("Image metadata key not found"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"meta": map[string]string{key: v}})
}

// updateImageMetadata changes image id's additional properties under its
// row lock, as its owner (or an admin) only, within the metadata_items
// quota unless shrink; it returns the properties after the change.
func (s *Service) updateImageMetadata(w http.ResponseWriter, r *http.Request, shrink bool,
	change func(props map[string]string) error) (map[string]string, bool) {
	ctx := r.Context()
	c := auth.FromContext(ctx)
	max := -1
	if !shrink {
		var ok bool
		if max, ok = s.metadataLimit(w, r); !ok {
			return nil, false
		}
	}
	id := r.PathValue("id")
	var out map[string]string
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var img store.Image
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Take(&img).Error
		if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && !imageVisible(c, &img)) {
			return errdefs.NotFound("Image not found.")
		}
		if err != nil {
			return fmt.Errorf("load image %s: %w", id, err)
		}
		if !c.IsAdmin() && img.Owner != c.ProjectID {
			return errdefs.Forbidden("You are not authorized to update image " + id)
		}
		all := image.Properties(&img)
		props := image.AdditionalProperties(&img)
		for k := range props {
			delete(all, k)
		}
		if err := change(props); err != nil {
			return err
		}
		if max >= 0 && len(props) > max {
			return metadataOverQuota(max)
		}
		for k, v := range props {
			all[k] = v
		}
		raw := ""
		if len(all) > 0 {
			b, err := json.Marshal(all)
			if err != nil {
				return err
			}
			raw = string(b)
		}
		out = props
		return tx.Model(&store.Image{}).Where("id = ?", id).
			Updates(map[string]any{"properties": raw, "updated_at": s.opts.Now()}).Error
	})
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	return out, true
}

func checkImageKeys(in map[string]string) error {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := image.SettableProperty(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) setImageMetadata(replace bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Metadata map[string]any `json:"metadata"`
		}
		if !decodeBody(w, r, &req) {
			return
		}
		if req.Metadata == nil {
			writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute metadata. Value: 'metadata' is a required property"))
			return
		}
		in, ok := decodeStringMap(w, req.Metadata, "metadata")
		if !ok {
			return
		}
		if err := checkImageKeys(in); err != nil {
			s.fail(w, r, err)
			return
		}
		m, ok := s.updateImageMetadata(w, r, false, func(props map[string]string) error {
			if replace {
				clear(props)
			}
			for k, v := range in {
				props[k] = v
			}
			return nil
		})
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"metadata": m})
		}
	}
}

func (s *Service) putImageMetadataItem(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Meta map[string]any `json:"meta"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	key := r.PathValue("key")
	in, ok := decodeStringMap(w, req.Meta, "meta")
	if !ok {
		return
	}
	if len(in) > 1 {
		writeFault(w, errdefs.InvalidArgument("Request body contains too many items"))
		return
	}
	if _, found := in[key]; !found {
		writeFault(w, errdefs.InvalidArgument("Request body and URI mismatch"))
		return
	}
	if err := checkImageKeys(in); err != nil {
		s.fail(w, r, err)
		return
	}
	if _, ok := s.updateImageMetadata(w, r, false, func(props map[string]string) error {
		props[key] = in[key]
		return nil
	}); ok {
		writeJSON(w, http.StatusOK, map[string]any{"meta": in})
	}
}

func (s *Service) deleteImageMetadataItem(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if _, ok := s.updateImageMetadata(w, r, true, func(props map[string]string) error {
		if _, found := props[key]; !found {
			return errdefs.NotFound("Image metadata key not found")
		}
		delete(props, key)
		return nil
	}); ok {
		noContent(w, http.StatusNoContent)
	}
}
