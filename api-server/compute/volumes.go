package compute

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Nova's os-volume_attachments on Capsule's volumes (api-server/volume,
// protocol/volumes.go): an attach records the attachment (attaching) and
// casts the mount to the server's host, first moving a local volume's
// data there when it lives on another host; the conductor records the
// host's answer (in-use, or available again with the reason).

// volumeStates are the vm_states a volume may be attached to or detached
// from (Nova's: a running, stopped or paused server with no task).
var volumeStates = []lifecycle.VMState{lifecycle.Active, lifecycle.Stopped, lifecycle.Paused}

func (s *Service) attachmentView(ctx context.Context, inst *store.Instance, a *store.VolumeAttachment) map[string]any {
	v := versionOf(ctx)
	out := map[string]any{"device": a.Device, "serverId": inst.ID, "volumeId": a.VolumeID}
	if !v.AtLeast(89) {
		out["id"] = a.VolumeID
	}
	if v.AtLeast(70) {
		var tag any
		if a.Tag != "" {
			tag = a.Tag
		}
		out["tag"] = tag
	}
	if v.AtLeast(79) {
		out["delete_on_termination"] = a.DeleteOnTermination
	}
	if v.AtLeast(89) {
		out["attachment_id"] = a.ID
		out["bdm_uuid"] = a.ID
	}
	return out
}

func (s *Service) listVolumeAttachments(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	atts, err := store.InstanceVolumeAttachments(s.st.WithContext(r.Context()), inst.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := []any{}
	for i := range atts {
		out = append(out, s.attachmentView(r.Context(), inst, &atts[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"volumeAttachments": out})
}

// serverAttachment is the attachment of volume volumeID to inst (Nova's
// 404 when there is none).
func serverAttachment(tx *gorm.DB, inst *store.Instance, volumeID string) (*store.VolumeAttachment, error) {
	var a store.VolumeAttachment
	err := tx.Where("instance_id = ? AND volume_id = ?", inst.ID, volumeID).Take(&a).Error
	if err == gorm.ErrRecordNotFound {
		return nil, errdefs.NotFoundf("Instance %s is not attached.", volumeID)
	}
	if err != nil {
		return nil, fmt.Errorf("attachment of volume %s: %w", volumeID, err)
	}
	return &a, nil
}

func (s *Service) showVolumeAttachment(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	a, err := serverAttachment(s.st.WithContext(r.Context()), inst, r.PathValue("volume"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"volumeAttachment": s.attachmentView(r.Context(), inst, a)})
}

type volumeAttachmentBody struct {
	VolumeAttachment *struct {
		VolumeID            string  `json:"volumeId"`
		Device              *string `json:"device"`
		Tag                 *string `json:"tag"`
		DeleteOnTermination *bool   `json:"delete_on_termination"`
	} `json:"volumeAttachment"`
}

// checkVolumeServer refuses a volume change of a locked or busy server.
// From 2.20 a shelved or shelved-offloaded server takes one too (Nova's
// rule: 409 below). A shelved one is still on its host (its stopped
// container there): the change goes to that host as for a stopped
// server, and its unshelve there mounts the volume, or its offload takes
// it along. An offloaded one runs nowhere, so the attachment is only
// recorded and its unshelve mounts the volume wherever it goes
// (offloaded).
func checkVolumeServer(ctx context.Context, inst *store.Instance, op string) error {
	if inst.Locked && !auth.FromContext(ctx).IsAdmin() {
		return errdefs.Conflictf("Instance %s is locked", inst.ID)
	}
	if offloaded(ctx, inst) || shelvedOnHost(ctx, inst) {
		return nil
	}
	if !slices.Contains(volumeStates, inst.VMState) || inst.TaskState != lifecycle.NoTask || inst.Host == "" {
		return errdefs.Conflictf("Cannot '%s' instance %s while it is in vm_state %s", op, inst.ID, inst.VMState)
	}
	return nil
}

// offloaded reports whether a volume change of inst is one of a
// shelved-offloaded server with no task, from 2.20.
func offloaded(ctx context.Context, inst *store.Instance) bool {
	return inst.VMState == lifecycle.ShelvedOffloaded && inst.TaskState == lifecycle.NoTask && versionOf(ctx).AtLeast(20)
}

// shelvedOnHost reports whether a volume change of inst is one of a
// shelved (not yet offloaded) server with no task on its host, from
// 2.20.
func shelvedOnHost(ctx context.Context, inst *store.Instance) bool {
	return inst.VMState == lifecycle.Shelved && inst.TaskState == lifecycle.NoTask && inst.Host != "" && versionOf(ctx).AtLeast(20)
}

// lockShelved holds a shelved or offloaded server's row for a volume
// change in tx (instance.LockShelved: its offload or unshelve cannot
// start meanwhile, and sees the change once it does); any other
// server's state is checked by checkVolumeServer alone, as before.
func lockShelved(ctx context.Context, tx *gorm.DB, inst *store.Instance, op string) error {
	switch {
	case offloaded(ctx, inst):
		return instance.LockShelved(tx, inst.ID, lifecycle.ShelvedOffloaded, op)
	case shelvedOnHost(ctx, inst):
		return instance.LockShelved(tx, inst.ID, lifecycle.Shelved, op)
	}
	return nil
}

// nextDevice is the first /dev/vdX (from vdb; vda is the root disk) no
// attachment of the server uses.
func nextDevice(atts []store.VolumeAttachment) string {
	used := map[string]bool{}
	for _, a := range atts {
		used[a.Device] = true
	}
	for c := 'b'; c <= 'z'; c++ {
		if d := "/dev/vd" + string(c); !used[d] {
			return d
		}
	}
	return ""
}

// mountPathOf is where an attachment is mounted inside the server: its
// device when that is a path outside /dev, else /mnt/<volume id>.
func mountPathOf(device, volumeID string) string {
	if strings.HasPrefix(device, "/") && !strings.HasPrefix(device, "/dev/") && !strings.Contains(device, "..") {
		return device
	}
	return "/mnt/" + volumeID
}

func (s *Service) attachVolume(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	var body volumeAttachmentBody
	if !decodeBody(w, r, &body) {
		return
	}
	b := body.VolumeAttachment
	if b == nil || b.VolumeID == "" {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute volumeAttachment. Value: 'volumeId' is a required property"))
		return
	}
	if _, err := uuid.Parse(b.VolumeID); err != nil {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute volumeId. Value: %s. '%s' is not a 'uuid'", b.VolumeID, b.VolumeID))
		return
	}
	v := versionOf(ctx)
	if b.Tag != nil && !v.AtLeast(49) || b.DeleteOnTermination != nil && !v.AtLeast(79) {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute volumeAttachment. Additional properties are not allowed"))
		return
	}
	if b.Tag != nil && (len(*b.Tag) > 60 || strings.ContainsAny(*b.Tag, "/,")) {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute tag. Value: %s.", *b.Tag))
		return
	}
	if err := checkVolumeServer(ctx, inst, "attach_volume"); err != nil {
		s.fail(w, r, err)
		return
	}
	var att *store.VolumeAttachment
	var out outbox.Batch
	parked := offloaded(ctx, inst)
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockShelved(ctx, tx, inst, "attach_volume"); err != nil {
			return err
		}
		vol, err := store.GetVolume(tx, b.VolumeID)
		if err != nil || vol.ProjectID != inst.ProjectID {
			return errdefs.NotFoundf("Volume %s could not be found.", b.VolumeID)
		}
		if vol.Status != store.VolumeAvailable {
			return errdefs.InvalidArgumentf("Invalid volume: volume %s status must be 'available'. Currently in '%s'", vol.ID, vol.Status)
		}
		if parked && vol.Backend == protocol.BackendLocal && vol.Host == "" {
			return errdefs.InvalidArgumentf("Invalid volume: volume %s has no host holding its data.", vol.ID)
		}
		atts, err := store.InstanceVolumeAttachments(tx, inst.ID)
		if err != nil {
			return err
		}
		device := nextDevice(atts)
		if b.Device != nil && *b.Device != "" {
			device = *b.Device
			for _, a := range atts {
				if a.Device == device {
					return errdefs.InvalidArgumentf("The supplied device path (%s) is in use.", device)
				}
			}
		}
		if device == "" {
			return errdefs.InvalidArgument("No free device name is left for this server.")
		}
		att = &store.VolumeAttachment{ID: uuid.NewString(), VolumeID: vol.ID, InstanceID: inst.ID, Host: inst.Host,
			Device: device, MountPath: mountPathOf(device, vol.ID), Status: store.AttachmentAttaching}
		if b.Tag != nil {
			att.Tag = *b.Tag
		}
		if b.DeleteOnTermination != nil {
			att.DeleteOnTermination = *b.DeleteOnTermination
		}
		ok, err := store.ChangeVolumeStatus(tx, vol.ID, []store.VolumeStatus{store.VolumeAvailable}, store.VolumeAttaching, map[string]any{"error_message": ""})
		if err != nil {
			return err
		}
		if !ok {
			return errdefs.InvalidArgumentf("Invalid volume: volume %s status must be 'available'.", vol.ID)
		}
		if parked && vol.Backend != protocol.BackendLocal {
			// Nothing to move: the unshelve's host mounts it.
			att.Status = store.AttachmentAttached
			if _, err := store.ChangeVolumeStatus(tx, vol.ID, []store.VolumeStatus{store.VolumeAttaching}, store.VolumeInUse, nil); err != nil {
				return err
			}
		}
		if err := tx.Create(att).Error; err != nil {
			return fmt.Errorf("record attachment: %w", err)
		}
		reqID := httpapi.RequestID(ctx)
		if parked {
			if vol.Backend != protocol.BackendLocal {
				return nil
			}
			// A local volume's data joins the server's other local
			// volumes in the registry (the conductor records it on no
			// host once pushed), so any host can unshelve it.
			ref, err := instance.ParkedVolumeRef(tx, inst, vol.ID)
			if err != nil {
				return err
			}
			return s.cast(tx, &out, vol.Host, "", protocol.KindVolumeExport,
				protocol.VolumeTransfer{RequestID: reqID, Ref: ref, Volume: instance.VolumeMount(vol, att).Volume,
					Deadline: s.opts.VolumeTimeouts.Deadline(s.opts.Now(), true)})
		}
		if vol.Backend == protocol.BackendLocal && vol.Host != inst.Host {
			// The data moves to the server's host first (the conductor
			// goes on from the export's report).
			ref := fmt.Sprintf("%s/capsule/volumes/%s:%s", s.opts.RegistryAddress, vol.ID, tagOf(reqID))
			return s.cast(tx, &out, vol.Host, "", protocol.KindVolumeExport,
				protocol.VolumeTransfer{RequestID: reqID, Ref: ref, Volume: instance.VolumeMount(vol, att).Volume,
					Deadline: s.opts.VolumeTimeouts.Deadline(s.opts.Now(), true)})
		}
		return s.cast(tx, &out, inst.Host, "", protocol.KindVolumeAttach,
			protocol.VolumeAttach{RequestID: reqID, InstanceID: inst.ID, Mount: instance.VolumeMount(vol, att),
				Deadline: s.opts.VolumeTimeouts.Deadline(s.opts.Now(), false)})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"volumeAttachment": s.attachmentView(ctx, inst, att)})
}

// tagOf makes a request id a registry tag ([A-Za-z0-9_.-], at most 128).
func tagOf(id string) string {
	t := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, id)
	if t == "" || t[0] == '-' || t[0] == '.' {
		t = "r" + t
	}
	return t[:min(len(t), 128)]
}

// updateVolumeAttachment is PUT os-volume_attachments/{volume}: a swap to
// another volume is refused (Capsule cannot swap a mounted filesystem);
// from 2.85 the same volume's delete_on_termination may be changed.
func (s *Service) updateVolumeAttachment(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	var body volumeAttachmentBody
	if !decodeBody(w, r, &body) {
		return
	}
	b := body.VolumeAttachment
	if b == nil || b.VolumeID == "" {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute volumeAttachment. Value: 'volumeId' is a required property"))
		return
	}
	db := s.st.WithContext(ctx)
	a, err := serverAttachment(db, inst, r.PathValue("volume"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if b.VolumeID != a.VolumeID {
		if !auth.FromContext(ctx).IsAdmin() {
			writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-volumes-attachments:swap to be performed."))
			return
		}
		writeFault(w, errdefs.InvalidArgument("Swapping the volume of an attachment is not supported: Capsule cannot swap a mounted filesystem; detach the volume and attach the other."))
		return
	}
	if !versionOf(ctx).AtLeast(85) {
		writeFault(w, errdefs.InvalidArgument("The volume is already attached to this server; changing an attachment needs microversion 2.85."))
		return
	}
	if b.DeleteOnTermination != nil {
		if err := db.Model(&store.VolumeAttachment{}).Where("id = ?", a.ID).Update("delete_on_termination", *b.DeleteOnTermination).Error; err != nil {
			s.fail(w, r, err)
			return
		}
	}
	noContent(w, http.StatusAccepted)
}

func (s *Service) detachVolume(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	if err := checkVolumeServer(ctx, inst, "detach_volume"); err != nil {
		s.fail(w, r, err)
		return
	}
	var out outbox.Batch
	parked := offloaded(ctx, inst)
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockShelved(ctx, tx, inst, "detach_volume"); err != nil {
			return err
		}
		a, err := serverAttachment(tx, inst, r.PathValue("volume"))
		if err != nil {
			return err
		}
		if a.MountPath == protocol.RootMountPath {
			return errdefs.InvalidArgument("Invalid volume: Can't detach root device volume")
		}
		vol, err := store.GetVolume(tx, a.VolumeID)
		if err != nil {
			return err
		}
		if a.Status != store.AttachmentAttached || vol.Status != store.VolumeInUse {
			return errdefs.InvalidArgumentf("Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach (volume %s is %s).", vol.ID, vol.Status)
		}
		if parked {
			return detachParked(tx, &out, inst, vol, a)
		}
		if err := tx.Model(&store.VolumeAttachment{}).Where("id = ?", a.ID).Update("status", store.AttachmentDetaching).Error; err != nil {
			return fmt.Errorf("attachment %s detaching: %w", a.ID, err)
		}
		ok, err := store.ChangeVolumeStatus(tx, vol.ID, []store.VolumeStatus{store.VolumeInUse}, store.VolumeDetaching, map[string]any{"error_message": ""})
		if err != nil {
			return err
		}
		if !ok {
			return errdefs.Conflictf("Volume %s changed meanwhile; try again.", vol.ID)
		}
		host := a.Host
		if host == "" {
			host = inst.Host
		}
		return s.cast(tx, &out, host, "", protocol.KindVolumeDetach,
			protocol.VolumeDetach{RequestID: httpapi.RequestID(ctx), InstanceID: inst.ID, Mount: instance.VolumeMount(vol, a),
				Deadline: s.opts.VolumeTimeouts.Deadline(s.opts.Now(), false)})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.deliver(ctx, &out)
	noContent(w, http.StatusAccepted)
}

// detachParked detaches volume vol (attachment a) from offloaded server
// inst, which runs nowhere: the record goes, and a local volume whose
// data waits in the registry is pulled back onto the host the server was
// shelved on (instance.DetachShelvedVolume: maintenance until then); any
// other volume is available at once.
func detachParked(tx *gorm.DB, out *outbox.Batch, inst *store.Instance, vol *store.Volume, a *store.VolumeAttachment) error {
	if vol.Backend == protocol.BackendLocal && vol.Host == "" {
		return instance.DetachShelvedVolume(tx, out, inst, vol, a)
	}
	if err := tx.Where("id = ?", a.ID).Delete(&store.VolumeAttachment{}).Error; err != nil {
		return fmt.Errorf("drop attachment %s: %w", a.ID, err)
	}
	ok, err := store.ChangeVolumeStatus(tx, vol.ID, []store.VolumeStatus{store.VolumeInUse}, store.VolumeDetaching, map[string]any{"error_message": ""})
	if err != nil {
		return err
	}
	if !ok {
		return errdefs.Conflictf("Volume %s changed meanwhile; try again.", vol.ID)
	}
	_, err = store.ChangeVolumeStatus(tx, vol.ID, []store.VolumeStatus{store.VolumeDetaching}, store.VolumeAvailable, nil)
	return err
}

// volumesAttached is a server view's os-extended-volumes:volumes_attached.
// A page of servers takes them from its batch (b; nil: one query).
func (s *Service) volumesAttached(ctx context.Context, inst *store.Instance, b *viewBatch) []any {
	out := []any{}
	var atts []store.VolumeAttachment
	if b != nil && b.volumes != nil {
		atts = b.volumes[inst.ID]
	} else {
		var err error
		if atts, err = store.InstanceVolumeAttachments(s.st.WithContext(ctx), inst.ID); err != nil {
			s.log.Warn("volumes of server view", "instance", inst.ID, "error", err)
			return out
		}
	}
	v := versionOf(ctx)
	for _, a := range atts {
		e := map[string]any{"id": a.VolumeID}
		if v.AtLeast(3) {
			e["delete_on_termination"] = a.DeleteOnTermination
		}
		out = append(out, e)
	}
	return out
}

// volumeBacked reports whether inst boots from a volume (its root
// filesystem is the volume's; its image is "").
func (s *Service) volumeBacked(ctx context.Context, inst *store.Instance) (bool, error) {
	if inst.ImageID != "" {
		return false, nil
	}
	var n int64
	err := s.st.WithContext(ctx).Model(&store.VolumeAttachment{}).
		Where("instance_id = ? AND mount_path = ?", inst.ID, protocol.RootMountPath).Count(&n).Error
	if err != nil {
		return false, fmt.Errorf("boot volume of server %s: %w", inst.ID, err)
	}
	return n > 0, nil
}

// refuseVolumeBacked is a 409 for action on a server that boots from a
// volume: its root filesystem is the volume's, which a backup (a
// container commit) or a rebuild from an image would not see. A resize
// or cold migration moves the boot volume as any local volume
// (migrate/volumes.go), and so does a shelve (its commit is the
// workload's config and layer, the boot volume stays attached and its
// offload takes it to the registry when it is local); a snapshot
// snapshots it (snapshot.go).
func (s *Service) refuseVolumeBacked(ctx context.Context, inst *store.Instance, action string) error {
	vb, err := s.volumeBacked(ctx, inst)
	if err != nil {
		return err
	}
	if vb {
		return errdefs.Conflictf("Cannot '%s' instance %s: it boots from a volume (its root filesystem is the volume's); this is not supported for volume-backed servers in Capsule. Snapshot the volume instead.", action, inst.ID)
	}
	return nil
}
