package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// defaultTypeName and defaultTypeID are Capsule's one volume type, named
// as Cinder's default type.
const (
	defaultTypeName = "__DEFAULT__"
	defaultTypeID   = "c5f4d0b8-3c59-5b8a-9a8e-6c1f0d7e2a01"
)

// volumeView is a volume as Cinder shows it (detail).
func (s *Service) volumeView(r *http.Request, c *auth.Credentials, v *store.Volume, att *store.VolumeAttachment) map[string]any {
	attachments := []any{}
	if att != nil && att.Status != store.AttachmentAttaching {
		attachments = append(attachments, map[string]any{
			"id": v.ID, "attachment_id": att.ID, "volume_id": v.ID, "server_id": att.InstanceID,
			"host_name": att.Host, "device": att.Device, "attached_at": cinderTime(att.CreatedAt)})
	}
	var snap any
	if v.SnapshotID != "" {
		snap = v.SnapshotID
	}
	out := map[string]any{
		"id": v.ID, "name": v.Name, "description": v.Description, "size": v.SizeGB, "status": string(v.Status),
		"availability_zone": v.AvailabilityZone, "created_at": cinderTime(v.CreatedAt), "updated_at": cinderTime(v.UpdatedAt),
		"attachments": attachments, "bootable": strconv.FormatBool(v.Bootable), "encrypted": false, "multiattach": false,
		"metadata": jsonMap(v.Metadata), "snapshot_id": snap, "source_volid": nil, "user_id": v.UserID,
		"volume_type": defaultTypeName, "volume_type_id": defaultTypeID, "replication_status": nil,
		"consistencygroup_id": nil, "group_id": nil, "provider_id": nil, "service_uuid": nil, "shared_targets": false,
		"cluster_name": nil, "encryption_key_id": nil, "consumes_quota": true,
		"os-vol-tenant-attr:tenant_id":   v.ProjectID,
		"os-vol-mig-status-attr:migstat": nil,
		"os-vol-mig-status-attr:name_id": nil,
		"links":                          s.links(r, "volumes", v.ID),
	}
	if m := imageMetadata(v); len(m) > 0 {
		out["volume_image_metadata"] = m
	}
	if c.IsAdmin() {
		host := any(nil)
		if v.Host != "" {
			host = v.Host + "@" + v.Backend + "#" + v.Backend
		}
		out["os-vol-host-attr:host"] = host
	}
	return out
}

func (s *Service) links(r *http.Request, coll, id string) []map[string]string {
	base := httpapi.BaseURL(r)
	c := creds(r)
	return []map[string]string{
		{"rel": "self", "href": base + "/v3/" + c.ProjectID + "/" + coll + "/" + id},
		{"rel": "bookmark", "href": base + "/" + c.ProjectID + "/" + coll + "/" + id},
	}
}

// loadVolume returns volume id when c may see it (404 otherwise, as for a
// volume that does not exist).
func (s *Service) loadVolume(tx *gorm.DB, c *auth.Credentials, id string) (*store.Volume, error) {
	v, err := store.GetVolume(tx, id)
	if err != nil {
		return nil, err
	}
	if !c.IsAdmin() && v.ProjectID != c.ProjectID {
		return nil, store.ErrVolumeNotFound.Newf("Volume %s could not be found.", id)
	}
	return v, nil
}

func (s *Service) attachmentOf(tx *gorm.DB, id string) (*store.VolumeAttachment, error) {
	m, err := store.VolumeAttachments(tx, []string{id})
	if err != nil {
		return nil, err
	}
	if a, ok := m[id]; ok {
		return &a, nil
	}
	return nil, nil
}

// refuseWhileMoving refuses work on local volume v while the server it is
// attached to is in a cold migration: until the confirm or revert the
// server runs on a copy on the target and the volume's host keeps the
// other one, so an extend or a snapshot would act on one copy of two.
func (s *Service) refuseWhileMoving(tx *gorm.DB, v *store.Volume, action string) error {
	if v.Backend != protocol.BackendLocal || v.Status != store.VolumeInUse {
		return nil
	}
	att, err := s.attachmentOf(tx, v.ID)
	if err != nil || att == nil {
		return err
	}
	var n int64
	err = tx.Model(&store.Migration{}).Where("instance_id = ? AND step NOT IN ?", att.InstanceID, []string{"", "done", "delete_tag"}).Count(&n).Error
	if err != nil {
		return fmt.Errorf("migrations of server %s: %w", att.InstanceID, err)
	}
	if n > 0 {
		return store.ErrVolumeStatus.Newf("Invalid volume: Volume %s is attached to server %s, which is being migrated with it; %s it once the migration is confirmed or reverted.",
			v.ID, att.InstanceID, action)
	}
	return nil
}

func (s *Service) getVolume(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	db := s.st.WithContext(r.Context())
	v, err := s.loadVolume(db, c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	att, err := s.attachmentOf(db, v.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"volume": s.volumeView(r, c, v, att)})
}

// listQuery is a list's filters, sort and page.
type listQuery struct {
	limit  int
	marker string
	sorts  [][2]string // key, direction
	offset int
}

// maxLimit is Cinder's osapi_max_limit.
const maxLimit = 1000

// parseList reads limit, marker, offset and sort (sort=k:dir,... or
// sort_key/sort_dir) with the sort keys allowed.
func parseList(q url.Values, keys map[string]string) (listQuery, error) {
	lq := listQuery{limit: maxLimit, marker: q.Get("marker")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return lq, errdefs.InvalidArgument("limit must be an integer 0 or greater")
		}
		lq.limit = min(n, maxLimit)
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return lq, errdefs.InvalidArgument("offset must be an integer 0 or greater")
		}
		lq.offset = n
	}
	add := func(k, dir string) error {
		if dir == "" {
			dir = "desc"
		}
		dir = strings.ToLower(dir)
		if dir != "asc" && dir != "desc" {
			return errdefs.InvalidArgument("Unknown sort direction, must be 'desc' or 'asc'")
		}
		col, ok := keys[k]
		if !ok {
			return errdefs.InvalidArgument("Invalid input received: Invalid sort key " + k)
		}
		lq.sorts = append(lq.sorts, [2]string{col, dir})
		return nil
	}
	if v := q.Get("sort"); v != "" {
		for _, part := range strings.Split(v, ",") {
			k, dir, _ := strings.Cut(strings.TrimSpace(part), ":")
			if err := add(k, dir); err != nil {
				return lq, err
			}
		}
	} else if k := q.Get("sort_key"); k != "" {
		if err := add(k, q.Get("sort_dir")); err != nil {
			return lq, err
		}
	}
	if len(lq.sorts) == 0 {
		lq.sorts = [][2]string{{"created_at", "desc"}}
	}
	return lq, nil
}

var volumeSortKeys = map[string]string{"created_at": "created_at", "updated_at": "updated_at", "id": "id",
	"name": "name", "size": "size_gb", "status": "status", "display_name": "name"}

// metadataFilter parses Cinder's metadata filter: a JSON (or Python
// repr) object of key/values.
func metadataFilter(v string) (map[string]string, error) {
	out := map[string]string{}
	if err := json.Unmarshal([]byte(v), &out); err == nil {
		return out, nil
	}
	if err := json.Unmarshal([]byte(strings.ReplaceAll(v, "'", `"`)), &out); err != nil {
		return nil, errdefs.InvalidArgument("Invalid metadata filter: " + v)
	}
	return out, nil
}

// page applies a list's sort and marker to rows already filtered (in
// memory: a project's volumes are few) and returns the page.
func page[T any](rows []T, lq listQuery, id func(T) string, less func(a, b T, col string) int) ([]T, bool, error) {
	slices.SortStableFunc(rows, func(a, b T) int {
		for _, s := range lq.sorts {
			c := less(a, b, s[0])
			if s[1] == "desc" {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return strings.Compare(id(a), id(b))
	})
	start := 0
	if lq.marker != "" {
		i := slices.IndexFunc(rows, func(t T) bool { return id(t) == lq.marker })
		if i < 0 {
			return nil, false, errdefs.NotFoundf("Marker %s could not be found.", lq.marker)
		}
		start = i + 1
	}
	start += lq.offset
	if start > len(rows) {
		start = len(rows)
	}
	rows = rows[start:]
	more := len(rows) > lq.limit
	if more {
		rows = rows[:lq.limit]
	}
	return rows, more, nil
}

func compareVolumes(a, b store.Volume, col string) int {
	switch col {
	case "updated_at":
		return a.UpdatedAt.Compare(b.UpdatedAt)
	case "id":
		return strings.Compare(a.ID, b.ID)
	case "name":
		return strings.Compare(a.Name, b.Name)
	case "size_gb":
		return a.SizeGB - b.SizeGB
	case "status":
		return strings.Compare(string(a.Status), string(b.Status))
	}
	return a.CreatedAt.Compare(b.CreatedAt)
}

// nextLink is the href of the page after the last item.
func nextLink(r *http.Request, last string) string {
	q := r.URL.Query()
	q.Set("marker", last)
	q.Del("offset")
	return httpapi.BaseURL(r) + r.URL.Path + "?" + q.Encode()
}

func (s *Service) listVolumes(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := creds(r)
		q := r.URL.Query()
		lq, err := parseList(q, volumeSortKeys)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		db := s.st.WithContext(r.Context())
		tx := db.Model(&store.Volume{})
		if c.IsAdmin() && isTrue(q.Get("all_tenants")) {
			if p := q.Get("project_id"); p != "" {
				tx = tx.Where("project_id = ?", p)
			}
		} else {
			tx = tx.Where("project_id = ?", c.ProjectID)
		}
		if v := q.Get("name"); v != "" {
			tx = tx.Where("name = ?", v)
		}
		if v := q.Get("status"); v != "" {
			tx = tx.Where("status = ?", v)
		}
		if v := q.Get("bootable"); v != "" {
			tx = tx.Where("bootable = ?", isTrue(v))
		}
		if v := q.Get("availability_zone"); v != "" {
			tx = tx.Where("availability_zone = ?", v)
		}
		var meta map[string]string
		if v := q.Get("metadata"); v != "" {
			if meta, err = metadataFilter(v); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		var rows []store.Volume
		if err := tx.Find(&rows).Error; err != nil {
			s.fail(w, r, fmt.Errorf("list volumes: %w", err))
			return
		}
		if len(meta) > 0 {
			rows = slices.DeleteFunc(rows, func(v store.Volume) bool {
				m := jsonMap(v.Metadata)
				for k, want := range meta {
					if m[k] != want {
						return true
					}
				}
				return false
			})
		}
		total := len(rows)
		rows, more, err := page(rows, lq, func(v store.Volume) string { return v.ID }, compareVolumes)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		ids := make([]string, len(rows))
		for i, v := range rows {
			ids[i] = v.ID
		}
		atts, err := store.VolumeAttachments(db, ids)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out := make([]any, 0, len(rows))
		for i := range rows {
			v := &rows[i]
			if !detail {
				out = append(out, map[string]any{"id": v.ID, "name": v.Name, "links": s.links(r, "volumes", v.ID)})
				continue
			}
			var att *store.VolumeAttachment
			if a, ok := atts[v.ID]; ok {
				att = &a
			}
			out = append(out, s.volumeView(r, c, v, att))
		}
		body := map[string]any{"volumes": out}
		if more && len(rows) > 0 {
			body["volumes_links"] = []map[string]string{{"rel": "next", "href": nextLink(r, rows[len(rows)-1].ID)}}
		}
		if atLeast(r, 45) && isTrue(q.Get("with_count")) {
			body["count"] = total
		}
		httpapi.WriteJSON(w, http.StatusOK, body)
	}
}

func isTrue(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && b || strings.EqualFold(v, "yes") || v == "1"
}

// createVolumeBody is POST /volumes's body (Cinder's names; the v1 names
// display_name/display_description are accepted as Cinder does).
type createVolumeBody struct {
	Volume *struct {
		Size               json.Number       `json:"size"`
		Name               *string           `json:"name"`
		DisplayName        *string           `json:"display_name"`
		Description        *string           `json:"description"`
		DisplayDescription *string           `json:"display_description"`
		ImageRef           string            `json:"imageRef"`
		ImageID            string            `json:"image_id"`
		SnapshotID         string            `json:"snapshot_id"`
		SourceVolID        string            `json:"source_volid"`
		VolumeType         string            `json:"volume_type"`
		AvailabilityZone   string            `json:"availability_zone"`
		Metadata           map[string]string `json:"metadata"`
		Multiattach        bool              `json:"multiattach"`
		BackupID           string            `json:"backup_id"`
	} `json:"volume"`
}

// checkType accepts the default type by name or id (or none).
func checkType(t string) error {
	if t == "" || t == defaultTypeName || t == defaultTypeID {
		return nil
	}
	return errdefs.NotFoundf("Volume type with name %s could not be found.", t)
}

func (s *Service) quotaDefaults() map[string]int {
	q := s.opts.Config.Quota
	return map[string]int{store.QuotaVolumes: q.Volumes, store.QuotaGigabytes: q.Gigabytes, store.QuotaSnapshots: q.Snapshots,
		store.QuotaPerVolumeGigabytes: -1}
}

func (s *Service) createVolume(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "volume:create") {
		return
	}
	var body createVolumeBody
	if !readBody(w, r, &body) {
		return
	}
	if body.Volume == nil {
		badRequest(w, "Missing required element 'volume' in request body.")
		return
	}
	b := body.Volume
	name, desc := "", ""
	for _, p := range []*string{b.DisplayName, b.Name} {
		if p != nil {
			name = *p
		}
	}
	for _, p := range []*string{b.DisplayDescription, b.Description} {
		if p != nil {
			desc = *p
		}
	}
	if len(name) > 255 || len(desc) > 255 {
		badRequest(w, "Invalid input received: name and description must be at most 255 characters")
		return
	}
	if b.ImageRef == "" {
		b.ImageRef = b.ImageID
	}
	if b.SourceVolID != "" || b.BackupID != "" {
		badRequest(w, "Invalid input received: creating a volume from another volume or a backup is not supported")
		return
	}
	if b.Multiattach {
		badRequest(w, "Invalid input received: multiattach volumes are not supported")
		return
	}
	if err := checkType(b.VolumeType); err != nil {
		s.fail(w, r, err)
		return
	}
	zone := s.opts.Config.AvailabilityZone
	if b.AvailabilityZone != "" && b.AvailabilityZone != zone {
		badRequest(w, "Invalid input received: Availability zone '"+b.AvailabilityZone+"' is invalid.")
		return
	}
	for k, v := range b.Metadata {
		if k == "" || len(k) > 255 || len(v) > 255 {
			badRequest(w, "Invalid input received: metadata keys must be 1 to 255 characters and values at most 255")
			return
		}
	}
	size := 0
	if b.Size != "" {
		n, err := strconv.Atoi(string(b.Size))
		if err != nil || n <= 0 {
			badRequest(w, fmt.Sprintf("Invalid input received: Invalid volume: Volume size '%s' must be an integer and greater than 0.", b.Size))
			return
		}
		if n > store.MaxVolumeSizeGB {
			badRequest(w, fmt.Sprintf("Invalid input for field/attribute size. Value: %d. %d is greater than the maximum of %d", n, n, store.MaxVolumeSizeGB))
			return
		}
		size = n
	}
	ctx := r.Context()
	db := s.st.WithContext(ctx)
	now := time.Now().UTC()
	v := &store.Volume{ID: uuid.NewString(), ProjectID: c.ProjectID, UserID: c.UserID, Name: name, Description: desc,
		Status: store.VolumeCreating, VolumeType: defaultTypeName, AvailabilityZone: zone, Backend: s.opts.Config.Backend,
		Metadata: encodeMap(b.Metadata), CreatedAt: now, UpdatedAt: now}
	work := protocol.VolumeCreate{RequestID: httpapi.RequestID(ctx)}
	switch {
	case b.SnapshotID != "" && b.ImageRef != "":
		badRequest(w, "Invalid input received: only one of snapshot_id and imageRef may be given")
		return
	case b.SnapshotID != "":
		sn, err := s.loadSnapshot(db, c, b.SnapshotID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if sn.Status != store.SnapshotAvailable {
			badRequest(w, "Invalid snapshot: Originating snapshot status must be one of 'available' values")
			return
		}
		if size == 0 {
			size = sn.SizeGB
		}
		if size < sn.SizeGB {
			badRequest(w, fmt.Sprintf("Invalid input received: Volume size '%d'GB cannot be smaller than the snapshot size %dGB. They must be >= original snapshot size.", size, sn.SizeGB))
			return
		}
		v.SnapshotID, v.Host, v.Backend = sn.ID, sn.Host, sn.Backend
		work.SnapshotID = sn.ID
	case b.ImageRef != "":
		img, err := s.visibleImage(db, c, b.ImageRef)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if size == 0 {
			badRequest(w, "Invalid input received: size is required")
			return
		}
		if img.MinDisk > size {
			badRequest(w, fmt.Sprintf("Invalid input received: Volume size %dGB cannot be smaller than the image minDisk size %dGB.", size, img.MinDisk))
			return
		}
		v.ImageID, v.Bootable = img.ID, true
		work.ImageRef = img.RegistryRef
	}
	if size == 0 {
		badRequest(w, "Invalid input received: Invalid volume: Volume size '' must be an integer and greater than 0.")
		return
	}
	v.SizeGB = size
	if v.Host == "" {
		host, err := s.pickHost(db, now)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if host == "" {
			// Cinder accepts the request and the volume goes to error
			// when no backend can take it.
			v.Status, v.ErrorMessage = store.VolumeError, "No valid backend was found: no compute host is up"
		}
		v.Host = host
	}
	var out outbox.Batch
	err := db.Transaction(func(tx *gorm.DB) error {
		guard := store.VolumeQuotaGuard(c.ProjectID, map[string]int{store.QuotaVolumes: 1, store.QuotaGigabytes: size, store.QuotaPerVolumeGigabytes: size}, s.quotaDefaults())
		if err := guard(tx); err != nil {
			return err
		}
		if err := tx.Create(v).Error; err != nil {
			return fmt.Errorf("create volume: %w", err)
		}
		if v.Host == "" {
			return nil
		}
		work.Volume = volumeSpec(v)
		return cast(tx, &out, v.Host, protocol.KindVolumeCreate, work)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"volume": s.volumeView(r, c, v, nil)})
}

// volumeSpec is v as an agent needs it.
func volumeSpec(v *store.Volume) protocol.VolumeSpec {
	return protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: v.Host}
}

// pickHost chooses the compute host a new volume's data goes to: an
// enabled host that heartbeats, the one holding the fewest gigabytes of
// volumes ("" when none is up).
func (s *Service) pickHost(db *gorm.DB, now time.Time) (string, error) {
	var svcs []store.Service
	err := db.Where("binary_name = ? AND disabled = ? AND forced_down = ? AND last_heartbeat > ?",
		store.ComputeBinary, false, false, now.Add(-s.opts.ServiceDownTime)).Order("host").Find(&svcs).Error
	if err != nil {
		return "", fmt.Errorf("compute hosts: %w", err)
	}
	best, bestGB := "", -1
	for _, svc := range svcs {
		var gb int64
		if err := db.Model(&store.Volume{}).Select("COALESCE(SUM(size_gb), 0)").Where("host = ?", svc.Host).Scan(&gb).Error; err != nil {
			return "", fmt.Errorf("volumes of host %s: %w", svc.Host, err)
		}
		if bestGB < 0 || int(gb) < bestGB {
			best, bestGB = svc.Host, int(gb)
		}
	}
	return best, nil
}

func (s *Service) visibleImage(db *gorm.DB, c *auth.Credentials, id string) (*store.Image, error) {
	var img store.Image
	err := db.Where("id = ?", id).Take(&img).Error
	if errors.Is(err, gorm.ErrRecordNotFound) || err == nil && !(c.IsAdmin() || img.Visibility == "public" ||
		img.Visibility == "community" || img.Owner != "" && img.Owner == c.ProjectID) {
		return nil, errdefs.NotFoundf("Image %s could not be found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	if img.Status != "active" || img.RegistryRef == "" {
		return nil, errdefs.InvalidArgumentf("Invalid image identifier or unable to access requested image: image %s is not active.", id)
	}
	return &img, nil
}

type updateVolumeBody struct {
	Volume *struct {
		Name               *string           `json:"name"`
		DisplayName        *string           `json:"display_name"`
		Description        *string           `json:"description"`
		DisplayDescription *string           `json:"display_description"`
		Metadata           map[string]string `json:"metadata"`
	} `json:"volume"`
}

func (s *Service) updateVolume(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "volume:update") {
		return
	}
	var body updateVolumeBody
	if !readBody(w, r, &body) {
		return
	}
	if body.Volume == nil {
		badRequest(w, "Missing required element 'volume' in request body.")
		return
	}
	db := s.st.WithContext(r.Context())
	v, err := s.loadVolume(db, c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	set := map[string]any{"updated_at": time.Now().UTC()}
	b := body.Volume
	for _, p := range []*string{b.DisplayName, b.Name} {
		if p != nil {
			if len(*p) > 255 {
				badRequest(w, "Invalid input received: name must be at most 255 characters")
				return
			}
			set["name"] = *p
		}
	}
	for _, p := range []*string{b.DisplayDescription, b.Description} {
		if p != nil {
			if len(*p) > 255 {
				badRequest(w, "Invalid input received: description must be at most 255 characters")
				return
			}
			set["description"] = *p
		}
	}
	if b.Metadata != nil {
		set["metadata"] = encodeMap(b.Metadata)
	}
	if err := db.Model(&store.Volume{}).Where("id = ?", v.ID).Updates(set).Error; err != nil {
		s.fail(w, r, fmt.Errorf("update volume %s: %w", v.ID, err))
		return
	}
	s.getVolume(w, r)
}

// deletable are the statuses Cinder deletes a volume from.
var deletable = []store.VolumeStatus{store.VolumeAvailable, store.VolumeError, store.VolumeErrorDeleting, store.VolumeErrorExtending}

func (s *Service) deleteVolume(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "volume:delete") {
		return
	}
	cascade := isTrue(r.URL.Query().Get("cascade"))
	ctx := r.Context()
	db := s.st.WithContext(ctx)
	var out outbox.Batch
	err := db.Transaction(func(tx *gorm.DB) error {
		v, err := s.loadVolume(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		att, err := s.attachmentOf(tx, v.ID)
		if err != nil {
			return err
		}
		var snaps []store.VolumeSnapshot
		if err := tx.Where("volume_id = ?", v.ID).Find(&snaps).Error; err != nil {
			return fmt.Errorf("snapshots of volume %s: %w", v.ID, err)
		}
		if att != nil || !slices.Contains(deletable, v.Status) || len(snaps) > 0 && !cascade {
			return store.ErrVolumeStatus.New("Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.")
		}
		for _, sn := range snaps {
			if sn.Status == store.SnapshotDeleting {
				continue
			}
			if sn.Status == store.SnapshotCreating {
				return store.ErrVolumeStatus.New("Invalid volume: Snapshot of the volume is being created.")
			}
			if err := s.beginSnapshotDelete(tx, &out, &sn); err != nil {
				return err
			}
		}
		if v.Host == "" {
			// Never placed: there is nothing on any host.
			return tx.Where("id = ? AND status IN ?", v.ID, deletable).Delete(&store.Volume{}).Error
		}
		ok, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{v.Status}, store.VolumeDeleting, nil)
		if err != nil {
			return err
		}
		if !ok {
			return errdefs.Conflictf("Volume %s changed meanwhile; try again.", v.ID)
		}
		return cast(tx, &out, v.Host, protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: httpapi.RequestID(ctx), Volume: volumeSpec(v)})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	w.WriteHeader(http.StatusAccepted)
}

// volumeAction serves POST /volumes/{id}/action: os-extend, os-reserve,
// os-unreserve, os-set_bootable, the image metadata actions and, for
// admins, os-reset_status.
func (s *Service) volumeAction(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	name, raw, ok := readAction(w, r)
	if !ok {
		return
	}
	switch name {
	case "os-extend":
		s.extend(w, r, c, raw)
	case "os-reset_status":
		s.resetStatus(w, r, c, raw)
	case "os-reserve":
		s.reserve(w, r, c)
	case "os-unreserve":
		s.unreserve(w, r, c)
	case "os-set_bootable":
		s.setBootable(w, r, c, raw)
	case "os-set_image_metadata":
		s.setImageMetadata(w, r, c, raw)
	case "os-unset_image_metadata":
		s.unsetImageMetadata(w, r, c, raw)
	case "os-show_image_metadata":
		s.showImageMetadata(w, r, c)
	default:
		badRequest(w, "There is no such action: "+name)
	}
}

func (s *Service) extend(w http.ResponseWriter, r *http.Request, c *auth.Credentials, raw json.RawMessage) {
	if !canWrite(w, c, "volume:extend") {
		return
	}
	var b struct {
		NewSize json.Number `json:"new_size"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		badRequest(w, "Invalid input for field/attribute os-extend: "+err.Error())
		return
	}
	newSize, err := strconv.Atoi(string(b.NewSize))
	if err != nil || newSize <= 0 {
		badRequest(w, "Invalid input for field/attribute new_size. Value: "+string(b.NewSize)+". must be an integer greater than 0")
		return
	}
	if newSize > store.MaxVolumeSizeGB {
		badRequest(w, fmt.Sprintf("Invalid input for field/attribute new_size. Value: %d. %d is greater than the maximum of %d", newSize, newSize, store.MaxVolumeSizeGB))
		return
	}
	ctx := r.Context()
	db := s.st.WithContext(ctx)
	var out outbox.Batch
	err = db.Transaction(func(tx *gorm.DB) error {
		v, err := s.loadVolume(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		from := []store.VolumeStatus{store.VolumeAvailable}
		if atLeast(r, 42) {
			from = append(from, store.VolumeInUse)
		}
		if !slices.Contains(from, v.Status) {
			return store.ErrVolumeStatus.Newf("Invalid volume: Volume %s status must be available%s to extend, but current status is: %s.",
				v.ID, map[bool]string{true: " or in-use", false: ""}[atLeast(r, 42)], v.Status)
		}
		if newSize <= v.SizeGB {
			return errdefs.InvalidArgumentf("Invalid input received: New size for extend must be greater than current size. (current: %d, extended: %d).", v.SizeGB, newSize)
		}
		if err := s.refuseWhileMoving(tx, v, "extend"); err != nil {
			return err
		}
		guard := store.VolumeQuotaGuard(v.ProjectID, map[string]int{store.QuotaGigabytes: newSize - v.SizeGB, store.QuotaPerVolumeGigabytes: newSize}, s.quotaDefaults())
		if err := guard(tx); err != nil {
			return err
		}
		ok, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{v.Status}, store.VolumeExtending, map[string]any{"size_gb": newSize})
		if err != nil {
			return err
		}
		if !ok {
			return errdefs.Conflictf("Volume %s changed meanwhile; try again.", v.ID)
		}
		work := protocol.VolumeExtend{RequestID: httpapi.RequestID(ctx), OldSizeGB: v.SizeGB}
		v.SizeGB = newSize
		work.Volume = volumeSpec(v)
		host := v.Host
		if att, err := s.attachmentOf(tx, v.ID); err != nil {
			return err
		} else if att != nil {
			// A mounted volume grows online where it is mounted.
			work.InstanceID, host = att.InstanceID, att.Host
		}
		return cast(tx, &out, host, protocol.KindVolumeExtend, work)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Service) resetStatus(w http.ResponseWriter, r *http.Request, c *auth.Credentials, raw json.RawMessage) {
	if !c.IsAdmin() {
		writeError(w, http.StatusForbidden, "Policy doesn't allow volume_extension:volume_admin_actions:reset_status to be performed.")
		return
	}
	var b struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		badRequest(w, "Invalid input for field/attribute os-reset_status: "+err.Error())
		return
	}
	to := store.VolumeStatus(strings.ToLower(b.Status))
	if !slices.Contains(store.ResettableVolumeStatuses, to) {
		badRequest(w, "Must specify a valid status")
		return
	}
	db := s.st.WithContext(r.Context())
	v, err := s.loadVolume(db, c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := store.ResetVolumeStatus(db, v.ID, to); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (s *Service) getVolumeMetadata(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	v, err := s.loadVolume(s.st.WithContext(r.Context()), c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"metadata": jsonMap(v.Metadata)})
}

// setVolumeMetadata merges (POST) or replaces (PUT) a volume's metadata.
func (s *Service) setVolumeMetadata(replace bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := creds(r)
		if !canWrite(w, c, "volume:update_volume_metadata") {
			return
		}
		var body struct {
			Metadata map[string]string `json:"metadata"`
		}
		if !readBody(w, r, &body) {
			return
		}
		if body.Metadata == nil {
			badRequest(w, "Malformed request body: metadata is required")
			return
		}
		var result map[string]string
		err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
			v, err := s.loadVolume(tx, c, r.PathValue("id"))
			if err != nil {
				return err
			}
			m := jsonMap(v.Metadata)
			if replace {
				m = map[string]string{}
			}
			for k, val := range body.Metadata {
				if k == "" || len(k) > 255 || len(val) > 255 {
					return errdefs.InvalidArgument("Invalid input received: metadata keys must be 1 to 255 characters and values at most 255")
				}
				m[k] = val
			}
			result = m
			return tx.Model(&store.Volume{}).Where("id = ?", v.ID).Updates(map[string]any{"metadata": encodeMap(m), "updated_at": time.Now().UTC()}).Error
		})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"metadata": result})
	}
}

func (s *Service) deleteVolumeMetadataKey(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "volume:delete_volume_metadata") {
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		v, err := s.loadVolume(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		m := jsonMap(v.Metadata)
		key := r.PathValue("key")
		if _, ok := m[key]; !ok {
			return errdefs.NotFoundf("Volume %s has no metadata with key %s.", v.ID, key)
		}
		delete(m, key)
		return tx.Model(&store.Volume{}).Where("id = ?", v.ID).Updates(map[string]any{"metadata": encodeMap(m), "updated_at": time.Now().UTC()}).Error
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
