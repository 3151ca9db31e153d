package image

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
	"github.com/google/uuid"
	"gorm.io/gorm"
)

// apiError is a client error with its status.
func badRequest(format string, a ...any) error { return errdefs.InvalidArgumentf(format, a...) }

func forbidden(format string, a ...any) error { return errdefs.Forbiddenf(format, a...) }

// statusOf maps an error kind to the Image API's status (the shared
// table; Glance answers its quota and size limits 413).
func statusOf(k errdefs.Kind) int { return httpapi.StatusOf(k, http.StatusRequestEntityTooLarge) }

// respondErr answers err as a Glance error: a classified error (package
// errdefs) with its kind's status and safe message, anything else logged
// and answered 500 without details.
func (s *Service) respondErr(w http.ResponseWriter, r *http.Request, err error) {
	switch k := errdefs.KindOf(err); k {
	case "":
		s.internalError(w, r, err)
	case errdefs.ErrInternal:
		s.log.ErrorContext(r.Context(), "image request failed", "error", err, "request_id", httpapi.RequestID(r.Context()))
		fallthrough
	default:
		s.fail(w, r, statusOf(k), errdefs.Message(err))
	}
}

func asString(key string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", badRequest("Invalid value for %s: must be a string", key)
	}
	return s, nil
}

func asBool(key string, v any) (bool, error) {
	switch b := v.(type) {
	case bool:
		return b, nil
	case string: // Glance accepts "True"/"False" strings too
		if p, err := parseBool(b); err == nil {
			return p, nil
		}
	}
	return false, badRequest("Invalid value for %s: must be a boolean", key)
}

func asNonNegInt(key string, v any) (int, error) {
	f, ok := v.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
		return 0, badRequest("Invalid value for %s: must be a non-negative integer", key)
	}
	return int(f), nil
}

// setAttr applies key=value to img (and its props) on create or update,
// enforcing what Glance lets a caller change.
func setAttr(c *auth.Credentials, img *store.Image, props map[string]string, key string, val any, creating bool) error {
	if slices.Contains(reserved, key) {
		return forbidden("Attribute '%s' is reserved.", key)
	}
	switch key {
	case "id":
		if !creating {
			return forbidden("Attribute 'id' is read-only.")
		}
		s, err := asString(key, val)
		if err != nil {
			return err
		}
		if _, err := uuid.Parse(s); err != nil {
			return badRequest("Invalid value for id: %q is not a UUID", s)
		}
		img.ID = s
	case "name":
		if val == nil {
			img.Name = ""
			return nil
		}
		s, err := asString(key, val)
		if err != nil {
			return err
		}
		if len(s) > 255 {
			return badRequest("Invalid value for name: longer than 255 characters")
		}
		img.Name = s
	case "container_format", "disk_format":
		if !creating && img.Status != StatusQueued {
			return forbidden("Attribute %s can be only replaced for a queued image.", key)
		}
		allowed := containerFormats
		target := &img.ContainerFormat
		if key == "disk_format" {
			allowed, target = diskFormats, &img.DiskFormat
		}
		if val == nil {
			*target = ""
			return nil
		}
		s, err := asString(key, val)
		if err != nil {
			return err
		}
		if !slices.Contains(allowed, s) {
			return badRequest("Invalid value '%s' for %s: must be one of %s", s, key, strings.Join(allowed, ", "))
		}
		*target = s
	case "visibility":
		s, err := asString(key, val)
		if err != nil {
			return err
		}
		if !slices.Contains([]string{VisibilityPublic, VisibilityPrivate, VisibilityShared, VisibilityCommunity}, s) {
			return badRequest("Invalid value '%s' for visibility", s)
		}
		if s == VisibilityPublic && !c.IsAdmin() {
			return forbidden("You are not authorized to publicize images (admin only).")
		}
		img.Visibility = s
	case "protected", "os_hidden":
		b, err := asBool(key, val)
		if err != nil {
			return err
		}
		if key == "protected" {
			img.Protected = b
		} else {
			img.Hidden = b
		}
	case "min_disk", "min_ram":
		n, err := asNonNegInt(key, val)
		if err != nil {
			return err
		}
		if key == "min_disk" {
			img.MinDisk = n
		} else {
			img.MinRAM = n
		}
	case "owner":
		s, _ := val.(string)
		if val != nil && s == "" {
			return badRequest("Invalid value for owner")
		}
		if s != img.Owner && !c.IsAdmin() {
			return forbidden("Only admins may set an image's owner to another project.")
		}
		img.Owner = s
	case "tags":
		list, ok := val.([]any)
		if !ok {
			return badRequest("Invalid value for tags: must be a list of strings")
		}
		var tags []string
		for _, t := range list {
			ts, ok := t.(string)
			if !ok || ts == "" || len(ts) > 255 {
				return badRequest("Invalid tag %v", t)
			}
			if !slices.Contains(tags, ts) {
				tags = append(tags, ts)
			}
		}
		setTags(props, tags)
	default:
		// "properties" is an additional property like any other (a
		// string: gophercloud sends and reads it so).
		if slices.Contains(baseAttrs, key) || key == "" || len(key) > 255 {
			return forbidden("Attribute '%s' is read-only.", key)
		}
		s, err := asString(key, val)
		if err != nil {
			return err
		}
		props[key] = s
	}
	return nil
}

func (s *Service) createImage(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	if !c.CanWrite() {
		s.respondErr(w, r, errdefs.Forbidden("You are not authorized to create images."))
		return
	}
	var body map[string]any
	if err := httpapi.ReadJSON(r, &body); err != nil {
		s.respondErr(w, r, errdefs.InvalidArgument(err.Error()))
		return
	}
	img := store.Image{ID: uuid.NewString(), Status: StatusQueued, Visibility: VisibilityShared, Owner: c.ProjectID}
	props := map[string]string{}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic error reporting
	for _, k := range keys {
		if err := setAttr(c, &img, props, k, body[k], true); err != nil {
			s.respondErr(w, r, err)
			return
		}
	}
	setProperties(&img, props)
	if err := s.st.WithContext(r.Context()).Create(&img).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			s.respondErr(w, r, errdefs.Conflict("An image with identifier "+img.ID+" already exists"))
			return
		}
		s.internalError(w, r, fmt.Errorf("create image: %w", err))
		return
	}
	w.Header().Set("Location", httpapi.BaseURL(r)+"/v2/images/"+img.ID)
	// Glance names the import methods a new image can take in this header;
	// openstacksdk reads it (not /v2/info/import) before staging an import.
	w.Header().Set("OpenStack-image-import-methods", strings.Join(importMethods, ","))
	httpapi.WriteJSON(w, http.StatusCreated, View(&img))
}

// patchOp is one JSON-patch operation, in the RFC 6902 form
// ({"op":"replace","path":"/name","value":…}) sdk/OSC send or the older
// form ({"replace":"/name","value":…}) Tempest sends.
type patchOp struct {
	Op      string `json:"op"`
	Path    string `json:"path"`
	Value   any    `json:"value"`
	Add     string `json:"add"`
	Replace string `json:"replace"`
	Remove  string `json:"remove"`
}

func (p *patchOp) normalise() error {
	if p.Op == "" {
		switch {
		case p.Add != "":
			p.Op, p.Path = "add", p.Add
		case p.Replace != "":
			p.Op, p.Path = "replace", p.Replace
		case p.Remove != "":
			p.Op, p.Path = "remove", p.Remove
		}
	}
	if p.Op != "add" && p.Op != "replace" && p.Op != "remove" {
		return badRequest("Unsupported patch operation %q: use add, replace or remove", p.Op)
	}
	if !strings.HasPrefix(p.Path, "/") || strings.Count(p.Path, "/") != 1 {
		return badRequest("Invalid JSON pointer %q for this resource", p.Path)
	}
	// JSON pointer unescaping: ~1 is "/", ~0 is "~".
	p.Path = strings.NewReplacer("~1", "/", "~0", "~").Replace(p.Path[1:])
	return nil
}

func (s *Service) patchImage(w http.ResponseWriter, r *http.Request) {
	ct := strings.ToLower(r.Header.Get("Content-Type"))
	if !strings.HasPrefix(ct, "application/openstack-images-v2.1-json-patch") &&
		!strings.HasPrefix(ct, "application/openstack-images-v2.0-json-patch") {
		s.fail(w, r, http.StatusUnsupportedMediaType,
			"Unsupported Content-Type: use application/openstack-images-v2.1-json-patch")
		return
	}
	img, c, ok := s.loadVisible(w, r)
	if !ok {
		return
	}
	if !canModify(c, &img) {
		s.respondErr(w, r, errdefs.Forbidden("You are not authorized to modify image "+img.ID))
		return
	}
	var ops []patchOp
	if err := httpapi.ReadJSON(r, &ops); err != nil {
		s.respondErr(w, r, errdefs.InvalidArgument(err.Error()))
		return
	}
	props := Properties(&img)
	for i := range ops {
		op := &ops[i]
		if err := op.normalise(); err != nil {
			s.respondErr(w, r, err)
			return
		}
		isProp := !slices.Contains(baseAttrs, op.Path) && !slices.Contains(reserved, op.Path)
		switch op.Op {
		case "remove":
			if !isProp {
				s.respondErr(w, r, errdefs.Forbidden("Attribute '"+op.Path+"' cannot be removed."))
				return
			}
			if _, has := props[op.Path]; !has || isInternalProp(op.Path) {
				s.respondErr(w, r, errdefs.Conflict("Property "+op.Path+" does not exist."))
				return
			}
			delete(props, op.Path)
			continue
		case "replace":
			if _, has := props[op.Path]; isProp && !has {
				s.respondErr(w, r, errdefs.Conflict("Property "+op.Path+" does not exist."))
				return
			}
		}
		if err := setAttr(c, &img, props, op.Path, op.Value, false); err != nil {
			s.respondErr(w, r, err)
			return
		}
	}
	setProperties(&img, props)
	if err := s.save(r, &img); err != nil {
		s.internalError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, View(&img))
}

// save writes every mutable column of img (zero values included).
func (s *Service) save(r *http.Request, img *store.Image) error {
	err := s.st.WithContext(r.Context()).Model(img).
		Select("name", "owner", "visibility", "status", "container_format", "disk_format", "size", "checksum",
			"registry_ref", "min_disk", "min_ram", "protected", "hidden", "properties", "updated_at").
		Updates(img).Error
	if err != nil {
		return fmt.Errorf("update image %s: %w", img.ID, err)
	}
	return nil
}

func (s *Service) addTag(w http.ResponseWriter, r *http.Request) {
	s.changeTags(w, r, true)
}

func (s *Service) deleteTag(w http.ResponseWriter, r *http.Request) {
	s.changeTags(w, r, false)
}

func (s *Service) changeTags(w http.ResponseWriter, r *http.Request, add bool) {
	img, c, ok := s.loadVisible(w, r)
	if !ok {
		return
	}
	if !canModify(c, &img) {
		s.respondErr(w, r, errdefs.Forbidden("You are not authorized to modify image "+img.ID))
		return
	}
	tag := r.PathValue("tag")
	props := Properties(&img)
	tags := tagsOf(props)
	has := slices.Contains(tags, tag)
	switch {
	case add && !has:
		if len(tag) > 255 {
			s.respondErr(w, r, errdefs.InvalidArgument("Tag is longer than 255 characters"))
			return
		}
		tags = append(tags, tag)
	case !add && !has:
		s.respondErr(w, r, errdefs.NotFound("Tag "+tag+" not found on image "+img.ID))
		return
	case !add:
		tags = slices.DeleteFunc(tags, func(t string) bool { return t == tag })
	default:
		w.WriteHeader(http.StatusNoContent)
		return
	}
	setTags(props, tags)
	setProperties(&img, props)
	if err := s.save(r, &img); err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) deactivate(w http.ResponseWriter, r *http.Request) {
	s.setActive(w, r, false)
}

func (s *Service) reactivate(w http.ResponseWriter, r *http.Request) {
	s.setActive(w, r, true)
}

// setActive flips an image between active and deactivated (admin only,
// Glance's default policy).
func (s *Service) setActive(w http.ResponseWriter, r *http.Request, active bool) {
	img, c, ok := s.loadVisible(w, r)
	if !ok {
		return
	}
	if !c.IsAdmin() {
		s.respondErr(w, r, errdefs.Forbidden("You are not authorized to change the activation of image "+img.ID))
		return
	}
	if img.Status != StatusActive && img.Status != StatusDeactivated {
		s.respondErr(w, r, errdefs.Forbidden("Not allowed to change the activation of an image in status '"+img.Status+"'"))
		return
	}
	img.Status = StatusDeactivated
	if active {
		img.Status = StatusActive
	}
	if err := s.save(r, &img); err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
