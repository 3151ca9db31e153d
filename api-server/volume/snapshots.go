package volume

import (
	"fmt"
	"net/http"
	"slices"
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

func (s *Service) snapshotView(r *http.Request, c *auth.Credentials, sn *store.VolumeSnapshot) map[string]any {
	progress := "0%"
	if sn.Status == store.SnapshotAvailable {
		progress = "100%"
	}
	out := map[string]any{
		"id": sn.ID, "name": sn.Name, "description": sn.Description, "volume_id": sn.VolumeID, "status": string(sn.Status),
		"size": sn.SizeGB, "metadata": jsonMap(sn.Metadata), "created_at": cinderTime(sn.CreatedAt),
		"updated_at": cinderTime(sn.UpdatedAt), "user_id": sn.UserID, "group_snapshot_id": nil, "consumes_quota": true,
		"os-extended-snapshot-attributes:project_id": sn.ProjectID,
		"os-extended-snapshot-attributes:progress":   progress,
		"links": s.links(r, "snapshots", sn.ID),
	}
	return out
}

func (s *Service) loadSnapshot(tx *gorm.DB, c *auth.Credentials, id string) (*store.VolumeSnapshot, error) {
	sn, err := store.GetVolumeSnapshot(tx, id)
	if err != nil {
		return nil, err
	}
	if !c.IsAdmin() && sn.ProjectID != c.ProjectID {
		return nil, store.ErrSnapshotNotFound.Newf("Snapshot %s could not be found.", id)
	}
	return sn, nil
}

var snapshotSortKeys = map[string]string{"created_at": "created_at", "updated_at": "updated_at", "id": "id",
	"name": "name", "size": "size_gb", "status": "status"}

func compareSnapshots(a, b store.VolumeSnapshot, col string) int {
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

func (s *Service) listSnapshots(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := creds(r)
		q := r.URL.Query()
		lq, err := parseList(q, snapshotSortKeys)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		tx := s.st.WithContext(r.Context()).Model(&store.VolumeSnapshot{})
		if c.IsAdmin() && isTrue(q.Get("all_tenants")) {
			if p := q.Get("project_id"); p != "" {
				tx = tx.Where("project_id = ?", p)
			}
		} else {
			tx = tx.Where("project_id = ?", c.ProjectID)
		}
		for _, f := range []string{"name", "status", "volume_id"} {
			if v := q.Get(f); v != "" {
				tx = tx.Where(f+" = ?", v)
			}
		}
		var rows []store.VolumeSnapshot
		if err := tx.Find(&rows).Error; err != nil {
			s.fail(w, r, fmt.Errorf("list snapshots: %w", err))
			return
		}
		if v := q.Get("metadata"); v != "" {
			meta, err := metadataFilter(v)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			rows = slices.DeleteFunc(rows, func(sn store.VolumeSnapshot) bool {
				m := jsonMap(sn.Metadata)
				for k, want := range meta {
					if m[k] != want {
						return true
					}
				}
				return false
			})
		}
		total := len(rows)
		rows, more, err := page(rows, lq, func(sn store.VolumeSnapshot) string { return sn.ID }, compareSnapshots)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out := make([]any, 0, len(rows))
		for i := range rows {
			v := s.snapshotView(r, c, &rows[i])
			if !detail {
				// Cinder's summary view is the detail less the extended
				// attributes.
				delete(v, "os-extended-snapshot-attributes:project_id")
				delete(v, "os-extended-snapshot-attributes:progress")
			}
			out = append(out, v)
		}
		body := map[string]any{"snapshots": out}
		if more && len(rows) > 0 {
			body["snapshots_links"] = []map[string]string{{"rel": "next", "href": nextLink(r, rows[len(rows)-1].ID)}}
		}
		if atLeast(r, 45) && isTrue(q.Get("with_count")) {
			body["count"] = total
		}
		httpapi.WriteJSON(w, http.StatusOK, body)
	}
}

func (s *Service) getSnapshot(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	sn, err := s.loadSnapshot(s.st.WithContext(r.Context()), c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"snapshot": s.snapshotView(r, c, sn)})
}

type snapshotBody struct {
	Snapshot *struct {
		VolumeID           string            `json:"volume_id"`
		Name               *string           `json:"name"`
		DisplayName        *string           `json:"display_name"`
		Description        *string           `json:"description"`
		DisplayDescription *string           `json:"display_description"`
		Force              any               `json:"force"`
		Metadata           map[string]string `json:"metadata"`
	} `json:"snapshot"`
}

func (s *Service) createSnapshot(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "volume:create_snapshot") {
		return
	}
	var body snapshotBody
	if !readBody(w, r, &body) {
		return
	}
	if body.Snapshot == nil {
		badRequest(w, "Missing required element 'snapshot' in request body.")
		return
	}
	b := body.Snapshot
	if b.VolumeID == "" {
		badRequest(w, "Invalid input for field/attribute volume_id. 'volume_id' is a required property")
		return
	}
	force := false
	switch f := b.Force.(type) {
	case nil:
	case bool:
		force = f
	case string:
		force = isTrue(f)
	default:
		badRequest(w, "Invalid input for field/attribute force. Value must be a boolean.")
		return
	}
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
	ctx := r.Context()
	now := time.Now().UTC()
	var sn *store.VolumeSnapshot
	var out outbox.Batch
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		v, err := s.loadVolume(tx, c, b.VolumeID)
		if err != nil {
			return err
		}
		ok := v.Status == store.VolumeAvailable || v.Status == store.VolumeInUse && (force || atLeast(r, 66))
		if !ok {
			return store.ErrVolumeStatus.Newf("Invalid volume: Volume %s status must be available, but current status is: %s.", v.ID, v.Status)
		}
		if err := s.refuseWhileMoving(tx, v, "snapshot"); err != nil {
			return err
		}
		guard := store.VolumeQuotaGuard(v.ProjectID, map[string]int{store.QuotaSnapshots: 1, store.QuotaGigabytes: v.SizeGB}, s.quotaDefaults())
		if err := guard(tx); err != nil {
			return err
		}
		sn = &store.VolumeSnapshot{ID: uuid.NewString(), ProjectID: v.ProjectID, UserID: c.UserID, VolumeID: v.ID, Name: name,
			Description: desc, SizeGB: v.SizeGB, Status: store.SnapshotCreating, Backend: v.Backend, Host: v.Host,
			Metadata: encodeMap(b.Metadata), CreatedAt: now, UpdatedAt: now}
		if err := tx.Create(sn).Error; err != nil {
			return fmt.Errorf("create snapshot: %w", err)
		}
		return cast(tx, &out, v.Host, protocol.KindSnapshotCreate,
			protocol.SnapshotCreate{RequestID: httpapi.RequestID(ctx), SnapshotID: sn.ID, Volume: volumeSpec(v)})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"snapshot": s.snapshotView(r, c, sn)})
}

func (s *Service) updateSnapshot(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "volume:update_snapshot") {
		return
	}
	var body snapshotBody
	if !readBody(w, r, &body) {
		return
	}
	if body.Snapshot == nil {
		badRequest(w, "Missing required element 'snapshot' in request body.")
		return
	}
	db := s.st.WithContext(r.Context())
	sn, err := s.loadSnapshot(db, c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	set := map[string]any{"updated_at": time.Now().UTC()}
	b := body.Snapshot
	for _, p := range []*string{b.DisplayName, b.Name} {
		if p != nil {
			set["name"] = *p
		}
	}
	for _, p := range []*string{b.DisplayDescription, b.Description} {
		if p != nil {
			set["description"] = *p
		}
	}
	if b.Metadata != nil {
		set["metadata"] = encodeMap(b.Metadata)
	}
	if err := db.Model(&store.VolumeSnapshot{}).Where("id = ?", sn.ID).Updates(set).Error; err != nil {
		s.fail(w, r, fmt.Errorf("update snapshot %s: %w", sn.ID, err))
		return
	}
	s.getSnapshot(w, r)
}

// beginSnapshotDelete moves sn to deleting and casts its delete in tx.
func (s *Service) beginSnapshotDelete(tx *gorm.DB, out *outbox.Batch, sn *store.VolumeSnapshot) error {
	ok, err := store.ChangeSnapshotStatus(tx, sn.ID, []store.SnapshotStatus{sn.Status}, store.SnapshotDeleting, nil)
	if err != nil {
		return err
	}
	if !ok {
		return errdefs.Conflictf("Snapshot %s changed meanwhile; try again.", sn.ID)
	}
	v := protocol.VolumeSpec{ID: sn.VolumeID, ProjectID: sn.ProjectID, SizeGB: sn.SizeGB, Backend: sn.Backend, Host: sn.Host}
	return cast(tx, out, sn.Host, protocol.KindSnapshotDelete,
		protocol.SnapshotDelete{RequestID: httpapi.RequestID(tx.Statement.Context), SnapshotID: sn.ID, Volume: v})
}

func (s *Service) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "volume:delete_snapshot") {
		return
	}
	ctx := r.Context()
	var out outbox.Batch
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		sn, err := s.loadSnapshot(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		if !sn.Status.CanBecome(store.SnapshotDeleting) {
			return errdefs.InvalidArgumentf("Invalid snapshot: Snapshot status must be available or error and must not be part of a group, but is %s.", sn.Status)
		}
		return s.beginSnapshotDelete(tx, &out, sn)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	w.WriteHeader(http.StatusAccepted)
}
