package image

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Image statuses and visibilities (Glance's).
const (
	StatusQueued      = "queued"
	StatusSaving      = "saving"
	StatusUploading   = "uploading" // staged, awaiting import
	StatusActive      = "active"
	StatusDeactivated = "deactivated"
	StatusKilled      = "killed"

	VisibilityPublic    = "public"
	VisibilityPrivate   = "private"
	VisibilityShared    = "shared"
	VisibilityCommunity = "community"
)

// Formats Glance accepts.
var (
	containerFormats = []string{"bare", "ovf", "ova", "aki", "ari", "ami", "docker", "compressed"}
	diskFormats      = []string{"raw", "qcow2", "vhd", "vhdx", "vmdk", "vdi", "iso", "ploop", "aki", "ari", "ami"}
)

// Keys of store.Image.Properties that hold base attributes the schema has
// no column for; they are rendered as those attributes, never as
// additional properties. tags holds a JSON-encoded list.
const (
	propTags        = "tags"
	propHashAlgo    = "os_hash_algo"
	propHashValue   = "os_hash_value"
	propVirtualSize = "virtual_size"
)

// reserved are attributes a client may not set: Glance answers 403.
var reserved = []string{"status", "size", "checksum", "created_at", "updated_at", "self", "file", "schema",
	"location", "locations", "direct_url", "virtual_size", "os_hash_algo", "os_hash_value", "deleted",
	"deleted_at", "stores"}

// baseAttrs are the schema's own attributes; everything else is an
// additional property.
var baseAttrs = []string{"id", "name", "status", "visibility", "protected", "os_hidden", "owner",
	"container_format", "disk_format", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
	"min_disk", "min_ram", "tags", "created_at", "updated_at", "self", "file", "schema", "locations",
	"direct_url", "member_status"}

// Properties decodes an image's property map (additional properties plus
// the internal keys above).
func Properties(img *store.Image) map[string]string {
	props := map[string]string{}
	if img.Properties != "" {
		_ = json.Unmarshal([]byte(img.Properties), &props)
	}
	return props
}

func setProperties(img *store.Image, props map[string]string) {
	if len(props) == 0 {
		img.Properties = ""
		return
	}
	b, _ := json.Marshal(props)
	img.Properties = string(b)
}

func tagsOf(props map[string]string) []string {
	tags := []string{}
	if v := props[propTags]; v != "" {
		_ = json.Unmarshal([]byte(v), &tags)
	}
	return tags
}

func setTags(props map[string]string, tags []string) {
	if len(tags) == 0 {
		delete(props, propTags)
		return
	}
	b, _ := json.Marshal(tags)
	props[propTags] = string(b)
}

func isInternalProp(k string) bool {
	return k == propTags || k == propHashAlgo || k == propHashValue || k == propVirtualSize
}

func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func glanceTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// View renders img as Glance does: every base attribute present (null
// when unset) and additional properties as flat top-level strings (a
// "properties" one too: gophercloud decodes that key as a string).
func View(img *store.Image) map[string]any {
	props := Properties(img)
	v := map[string]any{
		"id": img.ID, "name": orNull(img.Name), "status": img.Status, "visibility": img.Visibility,
		"protected": img.Protected, "os_hidden": img.Hidden, "owner": orNull(img.Owner),
		"container_format": orNull(img.ContainerFormat), "disk_format": orNull(img.DiskFormat),
		"size": nil, "virtual_size": nil, "checksum": orNull(img.Checksum),
		"os_hash_algo": orNull(props[propHashAlgo]), "os_hash_value": orNull(props[propHashValue]),
		"min_disk": img.MinDisk, "min_ram": img.MinRAM, "tags": tagsOf(props),
		"created_at": glanceTime(img.CreatedAt), "updated_at": glanceTime(img.UpdatedAt),
		"self": "/v2/images/" + img.ID, "file": "/v2/images/" + img.ID + "/file", "schema": "/v2/schemas/image",
	}
	if img.Size != nil {
		v["size"] = *img.Size
	}
	if vs, err := strconv.ParseInt(props[propVirtualSize], 10, 64); err == nil {
		v["virtual_size"] = vs
	}
	for k, val := range props {
		if isInternalProp(k) || slices.Contains(baseAttrs, k) {
			continue
		}
		v[k] = val
	}
	return v
}

// canSee reports whether the caller may see img at all; memberOf are the
// images the caller's project is a member of (any status: Glance shows a
// shared image to its pending and rejected members too).
func canSee(c *auth.Credentials, img *store.Image, memberOf map[string]string) bool {
	if c.IsAdmin() || img.Visibility == VisibilityPublic || img.Visibility == VisibilityCommunity {
		return true
	}
	if img.Visibility == VisibilityShared {
		if _, ok := memberOf[img.ID]; ok {
			return true
		}
	}
	return img.Owner != "" && img.Owner == c.ProjectID
}

// CanUse reports whether c may see (and boot) img: its own, public,
// community, or shared with c's project (the Compute API's check).
func CanUse(ctx context.Context, st *store.Store, c *auth.Credentials, img *store.Image) (bool, error) {
	memberOf, err := memberships(ctx, st, c, img)
	if err != nil {
		return false, err
	}
	return canSee(c, img, memberOf), nil
}

// memberships are the caller's memberships, read only when img (nil: a
// list) is a shared image of another project.
func memberships(ctx context.Context, st *store.Store, c *auth.Credentials, img *store.Image) (map[string]string, error) {
	if c.IsAdmin() || (img != nil && (img.Visibility != VisibilityShared || img.Owner == c.ProjectID)) {
		return nil, nil
	}
	return st.ImageMemberships(ctx, c.ProjectID)
}

// canModify reports whether the caller may change or delete img.
func canModify(c *auth.Credentials, img *store.Image) bool {
	if c.IsAdmin() {
		return true
	}
	return c.CanWrite() && img.Owner != "" && img.Owner == c.ProjectID
}

func (s *Service) load(ctx context.Context, id string) (store.Image, error) {
	var img store.Image
	err := s.st.WithContext(ctx).Where("id = ?", id).Take(&img).Error
	return img, store.NotFound(err, "image "+id)
}

// loadVisible loads image id, answering 404 when it is missing or the
// caller may not see it (Glance does not reveal other tenants' images).
func (s *Service) loadVisible(w http.ResponseWriter, r *http.Request) (store.Image, *auth.Credentials, bool) {
	id := r.PathValue("id")
	c := auth.FromContext(r.Context())
	img, err := s.load(r.Context(), id)
	if err == nil {
		var ok bool
		if ok, err = CanUse(r.Context(), s.st, c, &img); err == nil && !ok {
			err = fmt.Errorf("image %s: %w", id, store.ErrNotFound)
		}
	}
	if err != nil {
		s.storeError(w, r, err, id)
		return img, c, false
	}
	return img, c, true
}

func (s *Service) getImage(w http.ResponseWriter, r *http.Request) {
	img, _, ok := s.loadVisible(w, r)
	if !ok {
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, View(&img))
}

func (s *Service) deleteImage(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteImage(r.Context(), auth.FromContext(r.Context()), r.PathValue("id")); err != nil {
		s.respondErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// DeleteImage deletes image id as c, as Glance does (NotFound when c may
// not see it, Forbidden when c may not change it or it is protected), and
// drops its registry data: Glance's DELETE, also behind the Compute API's
// image proxy.
func (s *Service) DeleteImage(ctx context.Context, c *auth.Credentials, id string) error {
	img, err := s.load(ctx, id)
	if err == nil {
		var ok bool
		if ok, err = CanUse(ctx, s.st, c, &img); err == nil && !ok {
			err = fmt.Errorf("image %s: %w", id, store.ErrNotFound)
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return errdefs.NotFound("No image found with ID " + id)
	}
	if err != nil {
		return err
	}
	if !canModify(c, &img) {
		return errdefs.Forbidden("You are not authorized to delete image " + img.ID)
	}
	if img.Protected {
		return errdefs.Forbidden("Image " + img.ID + " is protected and cannot be deleted.")
	}
	var gone int64
	err = s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("id = ?", img.ID).Delete(&store.Image{})
		if res.Error != nil {
			return res.Error
		}
		gone = res.RowsAffected
		return tx.Where("image_id = ?", img.ID).Delete(&store.ImageMember{}).Error
	})
	if err != nil {
		return fmt.Errorf("delete image %s: %w", img.ID, err)
	}
	if gone == 0 {
		return errdefs.NotFound("No image found with ID " + img.ID)
	}
	// The row is gone, so the image is deleted for clients; a registry
	// tag left behind is only wasted space, hence best effort. Counted
	// after the row went: of concurrent deletes of images sharing data,
	// the last one sees no other and removes it.
	if del, ok := s.opts.Data.(Deleter); ok && img.RegistryRef != "" {
		if err := s.deleteData(ctx, del, img); err != nil {
			s.log.WarnContext(ctx, "delete image data", "image", img.ID, "ref", img.RegistryRef, "error", err)
		}
	}
	return nil
}

// AdditionalProperties are img's additional properties (Nova's image
// "metadata"): its property map without the keys that hold base
// attributes.
func AdditionalProperties(img *store.Image) map[string]string {
	props := Properties(img)
	for k := range props {
		if isInternalProp(k) || slices.Contains(baseAttrs, k) {
			delete(props, k)
		}
	}
	return props
}

// SettableProperty reports why a client may not set additional property
// k (Glance's 403 for a reserved attribute), or nil.
func SettableProperty(k string) error {
	if slices.Contains(reserved, k) || slices.Contains(baseAttrs, k) || isInternalProp(k) {
		return errdefs.Forbiddenf("Attribute '%s' is read-only.", k)
	}
	return nil
}

// deleteData has del drop the data of the deleted image img, telling it
// which references the remaining images hold in img's repository.
func (s *Service) deleteData(ctx context.Context, del Deleter, img store.Image) error {
	ref, err := registry.ParseRef(img.RegistryRef)
	if err != nil {
		return nil // not a reference Capsule stored
	}
	others, err := s.st.ImageRefsIn(ctx, ref.Repository())
	if err != nil {
		return err
	}
	return del.Delete(ctx, img, others)
}

// ---- list ----

// listParams are GET /v2/images query keys that are not property filters.
var listParams = []string{"limit", "marker", "sort_key", "sort_dir", "sort", "visibility", "member_status",
	"name", "status", "owner", "container_format", "disk_format", "size_min", "size_max", "tag", "os_hidden",
	"id", "protected", "created_at", "updated_at", "checksum", "os_hash_value"}

var sortKeys = []string{"name", "status", "container_format", "disk_format", "size", "id", "created_at",
	"updated_at", "visibility", "owner", "min_disk", "min_ram"}

// parseSort reads sort_key/sort_dir (repeatable) or sort=key:dir,...;
// default created_at desc, with id as the tie-breaker so paging is stable.
func parseSort(q url.Values) ([]SortKey, error) {
	var specs []SortKey
	if v := q.Get("sort"); v != "" {
		if q.Has("sort_key") || q.Has("sort_dir") {
			return nil, errors.New("the 'sort' parameter cannot be combined with sort_key/sort_dir")
		}
		for _, part := range strings.Split(v, ",") {
			key, dir, _ := strings.Cut(strings.TrimSpace(part), ":")
			specs = append(specs, SortKey{Key: key, Desc: dir == "" || dir == "desc"})
			if dir != "" && dir != "asc" && dir != "desc" {
				return nil, fmt.Errorf("invalid sort direction %q", dir)
			}
		}
	} else {
		keys, dirs := q["sort_key"], q["sort_dir"]
		for i, k := range keys {
			dir := "desc"
			if i < len(dirs) {
				dir = dirs[i]
			} else if len(dirs) == 1 {
				dir = dirs[0]
			}
			if dir != "asc" && dir != "desc" {
				return nil, fmt.Errorf("invalid sort direction %q", dir)
			}
			specs = append(specs, SortKey{Key: k, Desc: dir == "desc"})
		}
		if len(keys) == 0 {
			dir := q.Get("sort_dir")
			if dir != "" && dir != "asc" && dir != "desc" {
				return nil, fmt.Errorf("invalid sort direction %q", dir)
			}
			specs = []SortKey{{Key: "created_at", Desc: dir != "asc"}}
		}
	}
	for _, sp := range specs {
		if !slices.Contains(sortKeys, sp.Key) {
			return nil, fmt.Errorf("invalid sort key %q", sp.Key)
		}
	}
	if !slices.ContainsFunc(specs, func(sp SortKey) bool { return sp.Key == "id" }) {
		specs = append(specs, SortKey{Key: "id", Desc: specs[len(specs)-1].Desc})
	}
	return specs, nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on", "t", "y":
		return true, nil
	case "false", "0", "no", "off", "f", "n":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q", v)
}

// filter is one predicate built from the query.
type filter func(img *store.Image, props map[string]string) bool

// buildFilters turns the list query into predicates (visibility rules
// included). Glance's "in:a,b" operator is supported for the string
// attributes that are commonly filtered.
//
// memberOf are the caller's image memberships: another project's shared
// image is listed when the caller's membership has the member_status
// asked for (accepted by default, or all).
func buildFilters(c *auth.Credentials, q url.Values, memberOf map[string]string) ([]filter, error) {
	var fs []filter
	own := func(img *store.Image) bool { return img.Owner != "" && img.Owner == c.ProjectID }
	memberStatus := cmp.Or(q.Get("member_status"), MemberAccepted)
	if !slices.Contains([]string{MemberAccepted, MemberPending, MemberRejected, "all"}, memberStatus) {
		return nil, fmt.Errorf("invalid member_status value: %s", memberStatus)
	}
	sharedWithMe := func(img *store.Image) bool {
		st, ok := memberOf[img.ID]
		return ok && img.Visibility == VisibilityShared && !own(img) && (memberStatus == "all" || st == memberStatus)
	}
	// A member's view of an image shared with it depends on its status.
	visible := func(img *store.Image) bool {
		if _, member := memberOf[img.ID]; member && img.Visibility == VisibilityShared && !own(img) && !c.IsAdmin() {
			return sharedWithMe(img)
		}
		return canSee(c, img, memberOf)
	}
	switch vis := q.Get("visibility"); vis {
	case "":
		// Default: own images, public ones, those shared with the caller
		// (accepted); admins see everything but other tenants'
		// community images.
		fs = append(fs, func(img *store.Image, _ map[string]string) bool {
			if own(img) || img.Visibility == VisibilityPublic || sharedWithMe(img) {
				return true
			}
			return c.IsAdmin() && img.Visibility != VisibilityCommunity
		})
	case "all":
		fs = append(fs, func(img *store.Image, _ map[string]string) bool { return visible(img) })
	case VisibilityPublic, VisibilityCommunity, VisibilityPrivate, VisibilityShared:
		fs = append(fs, func(img *store.Image, _ map[string]string) bool {
			return img.Visibility == vis && visible(img)
		})
	default:
		return nil, fmt.Errorf("invalid visibility value: %s", vis)
	}
	hidden := false
	if v := q.Get("os_hidden"); v != "" {
		b, err := parseBool(v)
		if err != nil {
			return nil, fmt.Errorf("os_hidden: %w", err)
		}
		hidden = b
	}
	fs = append(fs, func(img *store.Image, _ map[string]string) bool { return img.Hidden == hidden })

	strAttr := map[string]func(*store.Image) string{
		"name": func(i *store.Image) string { return i.Name }, "status": func(i *store.Image) string { return i.Status },
		"owner": func(i *store.Image) string { return i.Owner }, "id": func(i *store.Image) string { return i.ID },
		"container_format": func(i *store.Image) string { return i.ContainerFormat },
		"disk_format":      func(i *store.Image) string { return i.DiskFormat },
		"checksum":         func(i *store.Image) string { return i.Checksum },
	}
	for key, get := range strAttr {
		if !q.Has(key) {
			continue
		}
		want := q.Get(key)
		var set []string
		if rest, ok := strings.CutPrefix(want, "in:"); ok {
			set = strings.Split(rest, ",")
		} else {
			set = []string{want}
		}
		fs = append(fs, func(img *store.Image, _ map[string]string) bool { return slices.Contains(set, get(img)) })
	}
	if v := q.Get("protected"); v != "" {
		b, err := parseBool(v)
		if err != nil {
			return nil, fmt.Errorf("protected: %w", err)
		}
		fs = append(fs, func(img *store.Image, _ map[string]string) bool { return img.Protected == b })
	}
	for _, k := range []string{"size_min", "size_max"} {
		if !q.Has(k) {
			continue
		}
		n, err := strconv.ParseInt(q.Get(k), 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid %s value %q", k, q.Get(k))
		}
		isMin := k == "size_min"
		fs = append(fs, func(img *store.Image, _ map[string]string) bool {
			if img.Size == nil {
				return false
			}
			if isMin {
				return *img.Size >= n
			}
			return *img.Size <= n
		})
	}
	for _, k := range []string{"created_at", "updated_at"} {
		for _, v := range q[k] {
			f, err := timeFilter(k, v)
			if err != nil {
				return nil, err
			}
			fs = append(fs, f)
		}
	}
	if tags := q["tag"]; len(tags) > 0 {
		fs = append(fs, func(_ *store.Image, props map[string]string) bool {
			have := tagsOf(props)
			for _, t := range tags {
				if !slices.Contains(have, t) {
					return false
				}
			}
			return true
		})
	}
	// Any other key filters on an additional property (Tempest filters
	// backups by image_type, backup_type and instance_uuid).
	for k, vals := range q {
		if slices.Contains(listParams, k) || len(vals) == 0 {
			continue
		}
		want := vals[0]
		fs = append(fs, func(_ *store.Image, props map[string]string) bool {
			v, ok := props[k]
			return ok && !isInternalProp(k) && v == want
		})
	}
	return fs, nil
}

// timeFilter is a created_at/updated_at filter: [op:]time with Glance's
// operators eq, neq, gt, gte, lt, lte (eq when none) and an ISO 8601 time.
func timeFilter(key, v string) (filter, error) {
	op, val, ok := strings.Cut(v, ":")
	switch op {
	case "eq", "neq", "gt", "gte", "lt", "lte":
	default:
		op, val, ok = "eq", v, true
	}
	var at time.Time
	var err error
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if at, err = time.Parse(layout, val); err == nil {
			break
		}
	}
	if !ok || err != nil {
		return nil, fmt.Errorf("invalid %s filter %q: expected [eq|neq|gt|gte|lt|lte:]<ISO 8601 time>", key, v)
	}
	// Glance stores whole seconds.
	at = at.UTC().Truncate(time.Second)
	return func(img *store.Image, _ map[string]string) bool {
		t := img.CreatedAt
		if key == "updated_at" {
			t = img.UpdatedAt
		}
		c := t.UTC().Truncate(time.Second).Compare(at)
		switch op {
		case "neq":
			return c != 0
		case "gt":
			return c > 0
		case "gte":
			return c >= 0
		case "lt":
			return c < 0
		case "lte":
			return c <= 0
		}
		return c == 0
	}, nil
}

func (s *Service) listImages(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	q := r.URL.Query()
	limit := 25
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.respondErr(w, r, errdefs.InvalidArgument("limit param must be a non-negative integer"))
			return
		}
		limit = min(n, 1000)
	}
	specs, err := parseSort(q)
	if err != nil {
		s.respondErr(w, r, errdefs.InvalidArgument(err.Error()))
		return
	}
	memberOf, err := memberships(r.Context(), s.st, c, nil)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	filters, err := buildFilters(c, q, memberOf)
	if err != nil {
		s.respondErr(w, r, errdefs.InvalidArgument(err.Error()))
		return
	}
	// The database narrows the rows (visibility, column filters) and
	// pages them in the list's order; the filters above, exact for every
	// query key (properties, tags and times among them), keep or drop
	// each row read.
	keep := func(img *store.Image) bool {
		props := Properties(img)
		return !slices.ContainsFunc(filters, func(f filter) bool { return !f(img, props) })
	}
	scope := listScope(s.st.WithContext(r.Context()).Model(&store.Image{}), c, q)
	var from *store.Image
	if marker := q.Get("marker"); marker != "" {
		// The marker must be an image of this very list (else 400).
		var m store.Image
		err := s.st.WithContext(r.Context()).Where("id = ?", marker).Take(&m).Error
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			s.internalError(w, r, fmt.Errorf("list images: marker: %w", err))
			return
		}
		if err != nil || !keep(&m) {
			s.respondErr(w, r, errdefs.InvalidArgument("marker not found: "+marker))
			return
		}
		from = &m
	}
	matched, more, err := Page(scope, specs, from, limit, keep)
	if err != nil {
		s.internalError(w, r, fmt.Errorf("list images: %w", err))
		return
	}
	out := make([]map[string]any, 0, len(matched))
	for i := range matched {
		out = append(out, View(&matched[i]))
	}
	first := url.Values{}
	for k, v := range q {
		if k != "marker" {
			first[k] = v
		}
	}
	body := map[string]any{"images": out, "schema": "/v2/schemas/images", "first": withQuery("/v2/images", first)}
	// next only when more remain: openstacksdk follows it until absent.
	if more && len(matched) > 0 {
		next := url.Values{}
		for k, v := range first {
			next[k] = v
		}
		next.Set("marker", matched[len(matched)-1].ID)
		body["next"] = withQuery("/v2/images", next)
	}
	httpapi.WriteJSON(w, http.StatusOK, body)
}

func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// ---- register (bootstrap) ----

// Register records an active image backed by registryRef, owned by owner
// (a project id), public or private. It is idempotent: an image with the
// same name and reference is returned as it is.
func Register(ctx context.Context, st *store.Store, name, registryRef string, size int64, owner string, public bool) (store.Image, error) {
	var img store.Image
	err := st.WithContext(ctx).Where("name = ? AND registry_ref = ?", name, registryRef).
		Order("created_at").Take(&img).Error
	if err == nil {
		return img, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return img, fmt.Errorf("look up image %s: %w", name, err)
	}
	vis := VisibilityPrivate
	if public {
		vis = VisibilityPublic
	}
	img = store.Image{ID: uuid.NewString(), Name: name, Owner: owner, Visibility: vis, Status: StatusActive,
		ContainerFormat: "docker", DiskFormat: "raw", RegistryRef: registryRef}
	if size > 0 {
		img.Size = &size
	}
	if err := st.WithContext(ctx).Create(&img).Error; err != nil {
		return img, fmt.Errorf("register image %s: %w", name, err)
	}
	return img, nil
}

// Bootable is nil for an image a server can boot from: a docker image
// (container_format docker: a `docker save` upload, a snapshot or a
// registered registry image). Glance keeps any other format's bytes, but
// a container cannot run a disk image: Nova's 400 ImageUnacceptable.
func Bootable(img *store.Image) error {
	if img.ContainerFormat == "docker" || img.ContainerFormat == "" && img.RegistryRef != "" && img.DiskFormat == "" {
		return nil
	}
	return errdefs.InvalidArgumentf("Image %s is unacceptable: its container_format is %q and disk_format %q; "+
		"only container_format docker images (docker save tarballs) can boot a server on this cloud.",
		img.ID, img.ContainerFormat, img.DiskFormat)
}
