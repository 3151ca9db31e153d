package compute

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// The snapshot (createImage) of a volume-backed server, as Nova's
// snapshot_volume_backed makes it: no commit of the container (its root
// is the boot volume's), but a volume snapshot of each volume attached
// to the server (the boot volume and the data volumes, crash-consistent
// as a forced Cinder snapshot of an in-use volume is) and an image with
// no data (size 0, active at once) whose properties map them:
// block_device_mapping (a JSON list of bdm v2 dicts, source_type
// snapshot with the snapshot_id, volume_size, boot_index 0 for the boot
// volume), bdm_v2 True and root_device_name. Booting that image makes
// new volumes from the snapshots and boots from the first (imageBDMs).
// The server changes no state; the snapshots go on in the background
// (a boot from the image before they are available is a 400, as a
// mapping of a snapshot still creating is). Deleting the image leaves
// the snapshots, as in Nova.

// imageBDM is one mapping of a volume-backed snapshot image (Nova's
// block_device_mapping property's items).
type imageBDM struct {
	SourceType          string  `json:"source_type"`
	DestinationType     string  `json:"destination_type"`
	SnapshotID          string  `json:"snapshot_id"`
	VolumeID            *string `json:"volume_id"`
	ImageID             *string `json:"image_id"`
	VolumeSize          int     `json:"volume_size"`
	BootIndex           *int    `json:"boot_index"`
	DeviceName          string  `json:"device_name"`
	DeleteOnTermination bool    `json:"delete_on_termination"`
	DeviceType          string  `json:"device_type"`
	DiskBus             *string `json:"disk_bus"`
	GuestFormat         *string `json:"guest_format"`
	NoDevice            *bool   `json:"no_device"`
	Tag                 *string `json:"tag"`
	VolumeType          *string `json:"volume_type"`
}

// snapshotVolumeBacked is createImage of volume-backed server inst.
func (s *Service) snapshotVolumeBacked(w http.ResponseWriter, r *http.Request, inst *store.Instance, name string, meta map[string]string) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	if _, err := lifecycle.Begin(lifecycle.ActSnapshot, inst.VMState, inst.TaskState); err != nil {
		stateConflict(w, inst, "createImage")
		return
	}
	imageID := newUUID()
	reqID := requestID(w)
	now := s.opts.Now()
	var out outbox.Batch
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		atts, err := store.InstanceVolumeAttachments(tx, inst.ID)
		if err != nil {
			return err
		}
		var bdms []imageBDM
		gb, baseImage := 0, ""
		for _, a := range atts {
			if a.Status != store.AttachmentAttached {
				return errdefs.Conflictf("Cannot 'createImage' instance %s: volume %s is being attached or detached; try again when it is done.", inst.ID, a.VolumeID)
			}
			v, err := store.GetVolume(tx, a.VolumeID)
			if err != nil {
				return fmt.Errorf("volume %s of server %s: %w", a.VolumeID, inst.ID, err)
			}
			if v.Status != store.VolumeInUse {
				return errdefs.Conflictf("Cannot 'createImage' instance %s: volume %s is %s.", inst.ID, v.ID, v.Status)
			}
			sn := store.VolumeSnapshot{ID: newUUID(), ProjectID: v.ProjectID, UserID: creds.UserID, VolumeID: v.ID,
				Name: "snapshot for " + name, SizeGB: v.SizeGB, Status: store.SnapshotCreating, Backend: v.Backend, Host: v.Host,
				Metadata: "{}", CreatedAt: now, UpdatedAt: now}
			if err := tx.Create(&sn).Error; err != nil {
				return fmt.Errorf("record snapshot of volume %s: %w", v.ID, err)
			}
			if err := s.cast(tx, &out, v.Host, "", protocol.KindSnapshotCreate, protocol.SnapshotCreate{RequestID: reqID, SnapshotID: sn.ID,
				Volume: protocol.VolumeSpec{ID: v.ID, ProjectID: v.ProjectID, SizeGB: v.SizeGB, Backend: v.Backend, Host: v.Host}}); err != nil {
				return err
			}
			b := imageBDM{SourceType: "snapshot", DestinationType: "volume", SnapshotID: sn.ID, VolumeSize: v.SizeGB,
				DeviceName: a.Device, DeleteOnTermination: a.DeleteOnTermination, DeviceType: "disk"}
			if a.Tag != "" {
				b.Tag = &a.Tag
			}
			if a.MountPath == protocol.RootMountPath {
				zero := 0
				b.BootIndex = &zero
				baseImage = v.ImageID
				bdms = append([]imageBDM{b}, bdms...)
			} else {
				bdms = append(bdms, b)
			}
			gb += v.SizeGB
		}
		guard := store.VolumeQuotaGuard(inst.ProjectID, map[string]int{store.QuotaSnapshots: len(bdms), store.QuotaGigabytes: gb}, s.opts.VolumeQuota)
		if err := guard(tx); err != nil {
			return err
		}
		props := snapshotProps(snapshotRequest{props: meta}, inst, creds.UserID)
		bj, _ := json.Marshal(bdms)
		props["block_device_mapping"] = string(bj)
		props["bdm_v2"] = "True"
		props["root_device_name"] = "/dev/vda"
		// The image the boot volume was filled from: its config runs
		// the servers booted from the snapshot image (the source volume
		// may be gone by then).
		props["base_image_ref"] = baseImage
		pb, _ := json.Marshal(props)
		size := int64(0)
		img := store.Image{ID: imageID, Name: name, Owner: creds.ProjectID, Visibility: "private", Status: "active",
			ContainerFormat: "bare", DiskFormat: "qcow2", Size: &size, MinRAM: inst.MemoryMB, Properties: string(pb),
			CreatedAt: now, UpdatedAt: now}
		if err := tx.Create(&img).Error; err != nil {
			return fmt.Errorf("record the snapshot image of %s: %w", inst.ID, err)
		}
		return tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "createImage", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	s.log.Info("volume-backed snapshot requested", "instance", inst.ID, "image", imageID)
	w.Header().Set("Location", httpapi.HostURL(httpapi.Scheme(r), s.opts.PublicHost, s.opts.ImagePort)+"/v2/images/"+imageID)
	if versionOf(ctx).AtLeast(45) {
		writeJSON(w, http.StatusAccepted, map[string]string{"image_id": imageID})
		return
	}
	noContent(w, http.StatusAccepted)
}

// imageBDMs are the mappings of a volume-backed snapshot image (its
// block_device_mapping property, bdm v2) as create's block_device_mapping_v2
// items, and the image its boot volume's workload runs (base_image_ref);
// none for any other image.
func imageBDMs(img *store.Image) ([]json.RawMessage, string, error) {
	var props map[string]string
	if img.Properties == "" || json.Unmarshal([]byte(img.Properties), &props) != nil {
		return nil, "", nil
	}
	raw, ok := props["block_device_mapping"]
	if !ok || raw == "" {
		return nil, "", nil
	}
	if v, _ := strconv.ParseBool(props["bdm_v2"]); !v {
		return nil, "", errdefs.InvalidArgumentf("Image %s has a block_device_mapping that is not bdm v2 (bdm_v2 is not True); it cannot boot a server here.", img.ID)
	}
	var items []map[string]any
	if err := json.Unmarshal([]byte(raw), &items); err != nil {
		return nil, "", errdefs.InvalidArgumentf("Image %s has an invalid block_device_mapping property: %v", img.ID, err)
	}
	var out []json.RawMessage
	for _, it := range items {
		m := map[string]any{}
		for k, v := range it {
			if v != nil {
				m[k] = v
			}
		}
		if _, ok := m["uuid"]; !ok {
			for _, k := range []string{"snapshot_id", "volume_id", "image_id"} {
				if id, ok := m[k].(string); ok && id != "" {
					m["uuid"] = id
					break
				}
			}
		}
		b, _ := json.Marshal(m)
		out = append(out, b)
	}
	return out, props["base_image_ref"], nil
}
