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
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// snapshotRequest is what createImage and createBackup have in common: an
// image of the server, recorded queued and pushed by its host.
type snapshotRequest struct {
	act     lifecycle.Action // ActSnapshot or ActBackup
	apiName string           // the action's name in errors and os-instance-actions
	name    string
	props   map[string]string // the request's metadata, as image properties
	backup  *protocol.BackupRotation
	shelve  bool // a shelve: the host stops the server first; 202 without a body
}

// createImage (Nova's createImage) records a queued, private image owned
// by the caller's project, puts the server in task image_snapshot and asks
// its host to commit and push it; the conductor activates the image when
// the push is done. 202 with the Location header (all versions) and, from
// 2.45, {"image_id"}.
func (s *Service) createImage(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	var in struct {
		Name     *string           `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(arg, &in); err != nil || in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > 255 {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute createImage. Value: 'name' is a required property"))
		return
	}
	vb, err := s.volumeBacked(r.Context(), inst)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if vb {
		s.snapshotVolumeBacked(w, r, inst, strings.TrimSpace(*in.Name), in.Metadata)
		return
	}
	s.startSnapshot(w, r, inst, snapshotRequest{act: lifecycle.ActSnapshot, apiName: "createImage",
		name: strings.TrimSpace(*in.Name), props: in.Metadata})
}

// createBackup (Nova's createBackup) is a createImage whose image is a
// backup (image_type=backup, backup_type): once it is active the
// conductor deletes the server's backups of that type beyond rotation.
// The server runs task image_backup meanwhile.
func (s *Service) createBackup(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	req, err := parseBackup(arg)
	if err != nil {
		s.fail(w, r, errdefs.InvalidArgument("Invalid input for field/attribute createBackup. "+errdefs.Message(err)))
		return
	}
	s.startSnapshot(w, r, inst, req)
}

// parseBackup validates a createBackup body as Nova's schema does: name,
// backup_type and rotation required, rotation a non-negative integer (a
// string of digits too), optional string metadata, nothing else.
func parseBackup(arg json.RawMessage) (snapshotRequest, error) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(arg, &in); err != nil || in == nil {
		return snapshotRequest{}, errdefs.InvalidArgument("Value: the action's body must be an object")
	}
	for k := range in {
		if k != "name" && k != "backup_type" && k != "rotation" && k != "metadata" {
			return snapshotRequest{}, errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	req := snapshotRequest{act: lifecycle.ActBackup, apiName: "createBackup"}
	var err error
	if req.name, err = backupName(in["name"]); err != nil {
		return req, err
	}
	var typ *string
	if raw, ok := in["backup_type"]; !ok || json.Unmarshal(raw, &typ) != nil || typ == nil {
		return req, errdefs.InvalidArgument("Value: 'backup_type' is a required property and must be a string")
	}
	rotation, err := backupRotation(in["rotation"])
	if err != nil {
		return req, err
	}
	req.backup = &protocol.BackupRotation{Type: *typ, Rotation: rotation}
	if raw, ok := in["metadata"]; ok {
		if json.Unmarshal(raw, &req.props) != nil {
			return req, errdefs.InvalidArgument("Value: 'metadata' must be an object of strings")
		}
		for k, v := range req.props {
			if k == "" || len(k) > 255 || len(v) > 255 {
				return req, errdefs.InvalidArgument("Value: metadata keys must have 1-255 characters and values at most 255")
			}
		}
	}
	return req, nil
}

// backupName checks Nova's "name" type: a string of 1-255 characters
// without leading or trailing blanks.
func backupName(raw json.RawMessage) (string, error) {
	var name *string
	if raw == nil || json.Unmarshal(raw, &name) != nil || name == nil {
		return "", errdefs.InvalidArgument("Value: 'name' is a required property and must be a string")
	}
	if *name == "" || len(*name) > 255 || strings.TrimSpace(*name) != *name {
		return "", errdefs.InvalidArgumentf("Value: %q: 'name' must have 1-255 characters, without leading or trailing blanks", *name)
	}
	return *name, nil
}

// backupRotation reads Nova's non_negative_integer: a JSON integer or a
// string of digits, >= 0.
func backupRotation(raw json.RawMessage) (int, error) {
	if raw == nil {
		return 0, errdefs.InvalidArgument("Value: 'rotation' is a required property")
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, errdefs.InvalidArgument("Value: 'rotation' must be a non-negative integer")
	}
	var digits string
	switch x := v.(type) {
	case float64:
		digits = string(raw)
	case string:
		digits = x
	}
	n, err := strconv.Atoi(strings.TrimSpace(digits))
	if err != nil || n < 0 || digits == "" || strings.ContainsAny(digits, "+-. eE") {
		return 0, errdefs.InvalidArgumentf("Value: %s: 'rotation' must be a non-negative integer", raw)
	}
	return n, nil
}

// startSnapshot records the queued image (private, owned by the caller's
// project, with Nova's snapshot properties), moves the server into the
// action's task and asks its host to commit and push it; the conductor
// activates the image when the push is done. 202 with the Location header
// (all versions) and, from 2.45, {"image_id"}.
func (s *Service) startSnapshot(w http.ResponseWriter, r *http.Request, inst *store.Instance, in snapshotRequest) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	_, ok := beginOnHost(w, inst, in.act, in.apiName)
	if !ok {
		return
	}
	imageID := newUUID()
	// Each image its own repository (registry.PerImageRepo), tagged with
	// its id; image delete removes the tag.
	ref := registry.Ref{Host: s.snapshotRegistry(ctx, inst), Repo: registry.PerImageRepo(registry.SnapshotRepo, imageID), Tag: imageID}.String()
	pb, _ := json.Marshal(snapshotProps(in, inst, creds.UserID))
	now := s.opts.Now()
	img := store.Image{ID: imageID, Name: in.name, Owner: creds.ProjectID, Visibility: "private",
		Status: "queued", ContainerFormat: "docker", DiskFormat: "raw", MinRAM: inst.MemoryMB, MinDisk: inst.RootGB,
		Properties: string(pb), CreatedAt: now, UpdatedAt: now}
	reqID := requestID(w)
	var out outbox.Batch
	// Image row, task, action and the host's message commit together, so
	// a refused transition leaves no queued image behind and a committed
	// one reaches the host (the outbox).
	err := s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := instance.Begin(tx, inst, in.act, now, nil); err != nil {
			return err
		}
		if err := tx.Create(&img).Error; err != nil {
			return fmt.Errorf("record %s image of %s: %w", in.apiName, inst.ID, err)
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: in.apiName, RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return fmt.Errorf("record %s action of %s: %w", in.apiName, inst.ID, err)
		}
		body := protocol.SnapshotInstance{RequestID: reqID, InstanceID: inst.ID, ImageID: imageID, Ref: ref, Backup: in.backup,
			Shelve: in.shelve}
		return s.cast(tx, &out, inst.Host, inst.ID, protocol.KindSnapshotInstance, body)
	})
	switch {
	case errors.Is(err, errStateChanged):
		writeFault(w, errdefs.Conflictf("Cannot '%s' instance %s: its state changed meanwhile", in.apiName, inst.ID))
		return
	case err != nil:
		s.log.Error("start snapshot", "instance", inst.ID, "action", in.apiName, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	s.deliver(ctx, &out)
	s.log.Info("snapshot requested", "instance", inst.ID, "action", in.apiName, "image", imageID, "ref", ref, "host", inst.Host)
	if in.shelve {
		noContent(w, http.StatusAccepted)
		return
	}
	w.Header().Set("Location", httpapi.HostURL(httpapi.Scheme(r), s.opts.PublicHost, s.opts.ImagePort)+"/v2/images/"+imageID)
	if versionOf(ctx).AtLeast(45) {
		writeJSON(w, http.StatusAccepted, map[string]string{"image_id": imageID})
		return
	}
	noContent(w, http.StatusAccepted)
}

// snapshotProps are the new image's additional properties: the request's
// metadata, then Nova's own (which win): image_type snapshot or backup,
// backup_type for a backup, the server and its base image.
func snapshotProps(in snapshotRequest, inst *store.Instance, userID string) map[string]string {
	props := map[string]string{}
	for k, v := range in.props {
		props[k] = v
	}
	props["image_type"] = "snapshot"
	if in.backup != nil {
		props["image_type"] = "backup"
		props["backup_type"] = in.backup.Type
	}
	props["instance_uuid"] = inst.ID
	props["base_image_ref"] = inst.ImageID
	props["user_id"] = userID
	return props
}

// snapshotRegistry is the registry (host:port) a snapshot goes to: the
// one the server's own image came from, which its host can already pull
// from (and push to, with the same login), else the configured default.
func (s *Service) snapshotRegistry(ctx context.Context, inst *store.Instance) string {
	var base store.Image
	if err := s.st.WithContext(ctx).Where("id = ?", inst.ImageID).Limit(1).Find(&base).Error; err == nil {
		if ref, err := registry.ParseRef(base.RegistryRef); err == nil {
			return ref.Host
		}
	}
	if s.opts.RegistryAddress != "" {
		return s.opts.RegistryAddress
	}
	return config.Default().Registry.Address
}
