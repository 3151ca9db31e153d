package volume

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// The volume actions that only change the volume's record: os-reserve /
// os-unreserve (a client holds an available volume for an attach it is
// about to make), os-set_bootable and the image metadata ones.

// reserve is os-reserve: available -> attaching with no attachment (the
// conductor's sweep leaves such a volume alone: only os-unreserve or an
// admin's os-reset_status gives it back).
func (s *Service) reserve(w http.ResponseWriter, r *http.Request, c *auth.Credentials) {
	if !canWrite(w, c, "volume_extension:volume_actions:reserve") {
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		v, err := s.loadVolume(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		ok, err := store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAvailable}, store.VolumeAttaching, nil)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrVolumeStatus.Newf("Invalid volume: Volume %s status must be available to reserve, but the current status is: %s.", v.ID, v.Status)
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// unreserve is os-unreserve: a reserved volume (attaching, no attachment)
// goes back to available; any other volume is left as it is (Cinder does
// nothing then either), so an attach under way is never undone by it.
func (s *Service) unreserve(w http.ResponseWriter, r *http.Request, c *auth.Credentials) {
	if !canWrite(w, c, "volume_extension:volume_actions:unreserve") {
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		v, err := s.loadVolume(tx, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		if v.Status != store.VolumeAttaching {
			return nil
		}
		att, err := s.attachmentOf(tx, v.ID)
		if err != nil || att != nil {
			return err
		}
		_, err = store.ChangeVolumeStatus(tx, v.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeAvailable, nil)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// parseBool reads a JSON boolean or Cinder's accepted strings.
func parseBool(raw json.RawMessage) (bool, bool) {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b, true
	}
	var str string
	if json.Unmarshal(raw, &str) != nil {
		return false, false
	}
	switch strings.ToLower(str) {
	case "1", "t", "true", "on", "y", "yes":
		return true, true
	case "0", "f", "false", "off", "n", "no":
		return false, true
	}
	return false, false
}

// updateRecord writes set on volume id's row unless the volume is in
// maintenance (its data moving between hosts) or being deleted.
func (s *Service) updateRecord(tx *gorm.DB, c *auth.Credentials, id string, set func(v *store.Volume) (map[string]any, error)) error {
	v, err := s.loadVolume(tx, c, id)
	if err != nil {
		return err
	}
	if v.Status == store.VolumeMaintenance || v.Status == store.VolumeDeleting {
		return store.ErrVolumeStatus.Newf("Invalid volume: Volume %s status must not be %s to update it.", v.ID, v.Status)
	}
	fields, err := set(v)
	if err != nil {
		return err
	}
	fields["updated_at"] = time.Now().UTC()
	if err := tx.Model(&store.Volume{}).Where("id = ?", v.ID).Updates(fields).Error; err != nil {
		return fmt.Errorf("update volume %s: %w", v.ID, err)
	}
	return nil
}

// setBootable is os-set_bootable: the volume's bootable flag (shown, and
// a list filter; Capsule boots from a volume whatever it says, as Nova
// does).
func (s *Service) setBootable(w http.ResponseWriter, r *http.Request, c *auth.Credentials, raw json.RawMessage) {
	if !canWrite(w, c, "volume_extension:volume_actions:set_bootable") {
		return
	}
	var b struct {
		Bootable json.RawMessage `json:"bootable"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Bootable == nil {
		badRequest(w, "Invalid input for field/attribute os-set_bootable: 'bootable' is a required property")
		return
	}
	boot, ok := parseBool(b.Bootable)
	if !ok {
		badRequest(w, "Invalid input for field/attribute bootable. Value: "+string(b.Bootable)+". is not a boolean")
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		return s.updateRecord(tx, c, r.PathValue("id"), func(*store.Volume) (map[string]any, error) {
			return map[string]any{"bootable": boot}, nil
		})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// imageMetadata is v's volume_image_metadata: what was set, and the image
// it was pre-filled from.
func imageMetadata(v *store.Volume) map[string]string {
	m := jsonMap(v.ImageMetadata)
	if v.ImageID != "" {
		m["image_id"] = v.ImageID
	}
	return m
}

// setImageMetadata is os-set_image_metadata: merges keys into the
// volume's image metadata and answers all of it.
func (s *Service) setImageMetadata(w http.ResponseWriter, r *http.Request, c *auth.Credentials, raw json.RawMessage) {
	if !canWrite(w, c, "volume_extension:volume_image_metadata:set") {
		return
	}
	var b struct {
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Metadata == nil {
		badRequest(w, "Invalid input for field/attribute os-set_image_metadata: 'metadata' must be an object of strings")
		return
	}
	var result map[string]string
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		return s.updateRecord(tx, c, r.PathValue("id"), func(v *store.Volume) (map[string]any, error) {
			m := jsonMap(v.ImageMetadata)
			for k, val := range b.Metadata {
				if k == "" || len(k) > 255 || len(val) > 255 {
					return nil, errdefs.InvalidArgument("Invalid input received: metadata keys must be 1 to 255 characters and values at most 255")
				}
				if k == "image_id" && v.ImageID != "" && val != v.ImageID {
					return nil, errdefs.InvalidArgumentf("Invalid input received: the volume was made from image %s; its image_id cannot be changed.", v.ImageID)
				}
				m[k] = val
			}
			v.ImageMetadata = encodeMap(m)
			result = imageMetadata(v)
			return map[string]any{"image_metadata": v.ImageMetadata}, nil
		})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"metadata": result})
}

// unsetImageMetadata is os-unset_image_metadata: removes one key (404
// when the volume has no such key).
func (s *Service) unsetImageMetadata(w http.ResponseWriter, r *http.Request, c *auth.Credentials, raw json.RawMessage) {
	if !canWrite(w, c, "volume_extension:volume_image_metadata:remove") {
		return
	}
	var b struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Key == "" {
		badRequest(w, "Invalid input for field/attribute os-unset_image_metadata: 'key' is a required property")
		return
	}
	err := s.st.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		return s.updateRecord(tx, c, r.PathValue("id"), func(v *store.Volume) (map[string]any, error) {
			m := jsonMap(v.ImageMetadata)
			if _, ok := m[b.Key]; !ok {
				if b.Key == "image_id" && v.ImageID != "" {
					return nil, errdefs.InvalidArgumentf("Invalid input received: the volume was made from image %s; its image_id cannot be removed.", v.ImageID)
				}
				return nil, errdefs.NotFoundf("Glance metadata for volume %s with key %s could not be found.", v.ID, b.Key)
			}
			delete(m, b.Key)
			return map[string]any{"image_metadata": encodeMap(m)}, nil
		})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// showImageMetadata is os-show_image_metadata (a read).
func (s *Service) showImageMetadata(w http.ResponseWriter, r *http.Request, c *auth.Credentials) {
	v, err := s.loadVolume(s.st.WithContext(r.Context()), c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"metadata": imageMetadata(v)})
}
