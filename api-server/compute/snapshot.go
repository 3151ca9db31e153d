package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// SnapshotRepo is the registry repository snapshots are pushed to, one
// tag per image id; image delete removes the tag.
const SnapshotRepo = "capsule/snapshots"

// createImage (Nova's createImage) records a queued, private image owned
// by the caller's project, puts the server in task image_snapshot and asks
// its host to commit and push it; the conductor activates the image when
// the push is done. 202 with the Location header (all versions) and, from
// 2.45, {"image_id"}.
func (s *Service) createImage(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	var in struct {
		Name     *string           `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(arg, &in); err != nil || in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > 255 {
		writeError(w, http.StatusBadRequest, "Invalid input for field/attribute createImage. Value: 'name' is a required property")
		return
	}
	vm, task := lifecycle.VMState(inst.VMState), lifecycle.TaskState(inst.TaskState)
	newTask, ok := beginOnHost(w, inst, lifecycle.ActSnapshot, "createImage")
	if !ok {
		return
	}
	imageID := newUUID()
	ref := s.snapshotRegistry(ctx, inst) + "/" + SnapshotRepo + ":" + imageID
	props := map[string]string{}
	for k, v := range in.Metadata {
		props[k] = v
	}
	props["image_type"] = "snapshot"
	props["instance_uuid"] = inst.ID
	props["base_image_ref"] = inst.ImageID
	props["user_id"] = creds.UserID
	pb, _ := json.Marshal(props)
	now := s.opts.Now()
	img := store.Image{ID: imageID, Name: strings.TrimSpace(*in.Name), Owner: creds.ProjectID, Visibility: "private",
		Status: "queued", ContainerFormat: "docker", DiskFormat: "raw", MinRAM: inst.MemoryMB, MinDisk: inst.RootGB,
		Properties: string(pb), CreatedAt: now, UpdatedAt: now}
	reqID := requestID(w)
	// Image row, task and action commit together, so a refused
	// transition leaves no queued image behind.
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&store.Instance{}).
			Where("id = ? AND vm_state = ? AND task_state = ? AND deleted_at IS NULL", inst.ID, string(vm), string(task)).
			Updates(map[string]any{"task_state": string(newTask), "updated_at": now})
		if res.Error != nil {
			return fmt.Errorf("start snapshot of %s: %w", inst.ID, res.Error)
		}
		if res.RowsAffected == 0 {
			return errStateChanged
		}
		if err := tx.Create(&img).Error; err != nil {
			return fmt.Errorf("record snapshot image of %s: %w", inst.ID, err)
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "createImage", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return fmt.Errorf("record createImage action of %s: %w", inst.ID, err)
		}
		return nil
	})
	switch {
	case errors.Is(err, errStateChanged):
		writeError(w, http.StatusConflict, fmt.Sprintf("Cannot 'createImage' instance %s: its state changed meanwhile", inst.ID))
		return
	case err != nil:
		s.log.Error("start snapshot", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	body := protocol.SnapshotInstance{RequestID: reqID, InstanceID: inst.ID, ImageID: imageID, Ref: ref}
	if err := s.cast(ctx, inst.Host, protocol.KindSnapshotInstance, body); err != nil {
		s.log.Error("cast snapshot", "instance", inst.ID, "host", inst.Host, "error", err)
		s.undoSnapshot(context.WithoutCancel(ctx), inst, imageID, reqID)
		writeError(w, http.StatusServiceUnavailable, "The compute host is unreachable; try again later.")
		return
	}
	s.log.Info("snapshot requested", "instance", inst.ID, "image", imageID, "ref", ref, "host", inst.Host)
	w.Header().Set("Location", "http://"+s.opts.PublicHost+":"+strconv.Itoa(s.opts.ImagePort)+"/v2/images/"+imageID)
	if versionOf(ctx).AtLeast(45) {
		writeJSON(w, http.StatusAccepted, map[string]string{"image_id": imageID})
		return
	}
	noContent(w, http.StatusAccepted)
}

// snapshotRegistry is the registry (host:port) a snapshot goes to: the
// one the server's own image came from, which its host can already pull
// from (and push to, with the same login), else the configured default.
func (s *Service) snapshotRegistry(ctx context.Context, inst *store.Instance) string {
	var base store.Image
	if err := s.st.WithContext(ctx).Where("id = ?", inst.ImageID).Limit(1).Find(&base).Error; err == nil {
		if host, _, ok := strings.Cut(base.RegistryRef, "/"); ok && strings.ContainsAny(host, ".:") {
			return host
		}
	}
	if s.opts.RegistryAddress != "" {
		return s.opts.RegistryAddress
	}
	return config.Default().Registry.Address
}

// undoSnapshot removes what createImage recorded when the request could
// not reach the host.
func (s *Service) undoSnapshot(ctx context.Context, inst *store.Instance, imageID, reqID string) {
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&store.Instance{}).Where("id = ? AND task_state = ?", inst.ID, string(lifecycle.ImageSnapshot)).
			Update("task_state", inst.TaskState).Error; err != nil {
			return err
		}
		if err := tx.Where("id = ?", imageID).Delete(&store.Image{}).Error; err != nil {
			return err
		}
		return tx.Where("instance_id = ? AND request_id = ?", inst.ID, reqID).Delete(&store.InstanceAction{}).Error
	})
	if err != nil {
		s.log.Error("undo snapshot", "instance", inst.ID, "image", imageID, "error", err)
	}
}
