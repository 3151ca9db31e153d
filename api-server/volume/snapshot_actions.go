package volume

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/store"
)

// snapshotAction serves POST /snapshots/{id}/action: the admins' repairs
// os-reset_status, os-force_delete and os-update_snapshot_status.
// Capsule's agents make every snapshot and report it themselves, so the
// status update Cinder lets a volume driver's helper (Nova) send is an
// admin's repair here, like os-reset_status.
func (s *Service) snapshotAction(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	name, raw, ok := readAction(w, r)
	if !ok {
		return
	}
	switch name {
	case "os-reset_status":
		s.resetSnapshotStatus(w, r, c, raw)
	case "os-force_delete":
		s.forceDeleteSnapshot(w, r, c)
	case "os-update_snapshot_status":
		s.updateSnapshotStatus(w, r, c, raw)
	default:
		badRequest(w, "There is no such action: "+name)
	}
}

func adminOnly(w http.ResponseWriter, c *auth.Credentials, rule string) bool {
	if !c.IsAdmin() {
		writeError(w, http.StatusForbidden, fmt.Sprintf("Policy doesn't allow %s to be performed.", rule))
		return false
	}
	return true
}

// snapshotStatusBody reads {"status": ...} as a known snapshot status.
func snapshotStatusBody(w http.ResponseWriter, action string, raw json.RawMessage) (store.SnapshotStatus, bool) {
	var b struct {
		Status   string `json:"status"`
		Progress any    `json:"progress"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		badRequest(w, "Invalid input for field/attribute "+action+": "+err.Error())
		return "", false
	}
	to := store.SnapshotStatus(strings.ToLower(b.Status))
	if !to.Valid() {
		badRequest(w, "Must specify a valid status")
		return "", false
	}
	return to, true
}

func (s *Service) resetSnapshotStatus(w http.ResponseWriter, r *http.Request, c *auth.Credentials, raw json.RawMessage) {
	if !adminOnly(w, c, "volume_extension:snapshot_admin_actions:reset_status") {
		return
	}
	to, ok := snapshotStatusBody(w, "os-reset_status", raw)
	if !ok {
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		sn, err := s.loadSnapshot(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		_, err = store.ForceSnapshotStatus(tx, sn.ID, []store.SnapshotStatus{sn.Status}, to, nil)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// forceDeleteSnapshot deletes a snapshot whatever its status (but one
// already being deleted): its host deletes it as for a delete.
func (s *Service) forceDeleteSnapshot(w http.ResponseWriter, r *http.Request, c *auth.Credentials) {
	if !adminOnly(w, c, "volume_extension:snapshot_admin_actions:force_delete") {
		return
	}
	ctx := r.Context()
	var out outbox.Batch
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		sn, err := s.loadSnapshot(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		if sn.Status == store.SnapshotDeleting {
			return errdefs.InvalidArgumentf("Invalid snapshot: Snapshot %s is already being deleted.", sn.ID)
		}
		if !sn.Status.CanBecome(store.SnapshotDeleting) {
			ok, err := store.ForceSnapshotStatus(tx, sn.ID, []store.SnapshotStatus{sn.Status}, store.SnapshotError, nil)
			if err != nil {
				return err
			}
			if !ok {
				return errdefs.Conflictf("Snapshot %s changed meanwhile; try again.", sn.ID)
			}
			sn.Status = store.SnapshotError
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

// updateSnapshotStatus is Cinder's os-update_snapshot_status: creating ->
// available or error, deleting -> error_deleting (400 otherwise).
func (s *Service) updateSnapshotStatus(w http.ResponseWriter, r *http.Request, c *auth.Credentials, raw json.RawMessage) {
	if !adminOnly(w, c, "snapshot_extension:snapshot_actions:update_snapshot_status") {
		return
	}
	to, ok := snapshotStatusBody(w, "os-update_snapshot_status", raw)
	if !ok {
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		sn, err := s.loadSnapshot(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		if sn.Status == to {
			return nil
		}
		if (sn.Status != store.SnapshotCreating && sn.Status != store.SnapshotDeleting) || !sn.Status.CanBecome(to) {
			return errdefs.InvalidArgumentf("Provided snapshot status %s not allowed for snapshot with status %s.", to, sn.Status)
		}
		ok, err := store.ChangeSnapshotStatus(tx, sn.ID, []store.SnapshotStatus{sn.Status}, to, nil)
		if err != nil {
			return err
		}
		if !ok {
			return errdefs.Conflictf("Snapshot %s changed meanwhile; try again.", sn.ID)
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
