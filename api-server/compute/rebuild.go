package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// rebuildRequest is the rebuild action's body. Fields that may be sent as
// null to clear a value (key_name, user_data, description) are raw so
// "absent" and "null" stay apart.
type rebuildRequest struct {
	ImageRef    *string
	Name        *string
	AdminPass   *string
	Metadata    map[string]any
	AccessIPv4  *string
	AccessIPv6  *string
	Description json.RawMessage
	KeyName     json.RawMessage
	UserData    json.RawMessage
	Hostname    *string
}

// parseRebuild decodes the rebuild body as Nova's schema for microversion
// v does: unknown keys (or keys of a later microversion) are refused.
func parseRebuild(arg json.RawMessage, v apiVersion) (rebuildRequest, error) {
	var in rebuildRequest
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(arg, &raw); err != nil || raw == nil {
		return in, errdefs.InvalidArgument("Invalid input for field/attribute rebuild. Value must be an object with imageRef.")
	}
	into := func(key string, dst any) error {
		if err := json.Unmarshal(raw[key], dst); err != nil {
			return errdefs.InvalidArgumentf("Invalid input for field/attribute %s.", key)
		}
		return nil
	}
	for key := range raw {
		var err error
		switch key {
		case "imageRef":
			err = into(key, &in.ImageRef)
		case "name":
			err = into(key, &in.Name)
		case "adminPass":
			err = into(key, &in.AdminPass)
		case "metadata":
			err = into(key, &in.Metadata)
		case "accessIPv4":
			err = into(key, &in.AccessIPv4)
		case "accessIPv6":
			err = into(key, &in.AccessIPv6)
		case "OS-DCF:diskConfig", "preserve_ephemeral":
			// Capsule servers have one disk, rebuilt whole.
		case "personality":
			if v.AtLeast(57) {
				err = unexpectedKey(key)
			}
		case "description":
			if !v.AtLeast(19) {
				err = unexpectedKey(key)
			}
			in.Description = raw[key]
		case "key_name":
			if !v.AtLeast(54) {
				err = unexpectedKey(key)
			}
			in.KeyName = raw[key]
		case "user_data":
			if !v.AtLeast(57) {
				err = unexpectedKey(key)
			}
			in.UserData = raw[key]
		case "trusted_image_certificates":
			err = refuseTrustedCerts(v, raw[key])
		case "hostname":
			if !v.AtLeast(90) {
				err = unexpectedKey(key)
				break
			}
			var h string
			if err = into(key, &h); err == nil {
				err = validHostname(h, v)
				in.Hostname = &h
			}
		default:
			err = unexpectedKey(key)
		}
		if err != nil {
			return in, err
		}
	}
	if in.ImageRef == nil || *in.ImageRef == "" {
		return in, errdefs.InvalidArgument("Invalid input for field/attribute rebuild. Value: 'imageRef' is a required property")
	}
	return in, nil
}

// refuseTrustedCerts answers trusted_image_certificates (2.63): null is
// the default, anything else asks for image signature verification,
// which Capsule does not do (a 400 rather than a server that boots
// unverified); below 2.63 the key is unknown.
func refuseTrustedCerts(v apiVersion, raw json.RawMessage) error {
	if !v.AtLeast(63) {
		return unexpectedKey("trusted_image_certificates")
	}
	if string(raw) == "null" {
		return nil
	}
	return errdefs.InvalidArgument("Image signature certificate validation is not supported: Capsule does not verify image signatures, " +
		"so trusted_image_certificates must be null or left out.")
}

func unexpectedKey(key string) error {
	return errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", key)
}

// nullableString decodes a field that may be null (nil result) or a string.
func nullableString(field string, raw json.RawMessage) (*string, error) {
	var s *string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute %s.", field)
	}
	return s, nil
}

// rebuildServer serves the rebuild action: the server's disk is replaced
// by a new image (its writable layer is wiped), keeping its id, flavor,
// ports and addresses; name, metadata, access IPs, description, key and
// user data may change with it. The response is Nova's: 202, the basic
// server view (status REBUILD) with adminPass, and a Location.
func (s *Service) rebuildServer(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	ctx := r.Context()
	v := versionOf(ctx)
	in, err := parseRebuild(arg, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	updated, fields, ok := s.rebuildFields(w, r, inst, in)
	if !ok {
		return
	}
	// The new disk gets the new password (or none, when disabled).
	adminPass, passHash, err := s.instancePassword(in.AdminPass)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	updated.AdminPassHash, fields["admin_pass_hash"] = passHash, passHash
	vm, task := inst.VMState, inst.TaskState
	newTask, err := lifecycle.Begin(lifecycle.ActRebuild, vm, task)
	if err != nil {
		stateConflict(w, inst, "rebuild")
		return
	}
	if inst.Host == "" {
		writeFault(w, errdefs.Conflictf("Cannot 'rebuild' instance %s: it is not placed on any host", inst.ID))
		return
	}
	// The spec is made before anything is written, so a server whose NICs
	// or image cannot be read is refused untouched.
	spec, err := instance.SpecFor(ctx, s.st, updated)
	if err != nil || spec.ImageRef == "" {
		s.log.Error("rebuild spec", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not prepare the rebuild.")
		return
	}
	reqID := requestID(w)
	msg, err := bus.NewMessage(protocol.KindRebuildInstance,
		protocol.RebuildInstance{RequestID: reqID, Spec: spec, Start: vm != lifecycle.Stopped})
	if err != nil {
		s.log.Error("rebuild message", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not prepare the rebuild.")
		return
	}
	var cast outbox.Batch
	if err := s.beginRebuild(ctx, inst, fields, reqID, func(tx *gorm.DB) error {
		return cast.Enqueue(tx, bus.ComputeQueue(inst.Host), inst.ID, msg)
	}); err != nil {
		if errors.Is(err, errStateChanged) {
			writeFault(w, errdefs.Conflictf("Cannot 'rebuild' instance %s: its state changed meanwhile", inst.ID))
			return
		}
		s.log.Error("begin rebuild", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	s.deliver(ctx, &cast)
	out := s.serverView(r, instance.Begun(updated, newTask), updateView(v))
	s.addServerGroups(r, updated, out)
	if v.AtLeast(54) {
		out["key_name"] = updated.KeyName
	}
	if v.AtLeast(57) {
		if updated.UserData == "" {
			out["user_data"] = nil
		} else {
			out["user_data"] = updated.UserData
		}
	}
	if !s.opts.NoInstancePassword {
		out["adminPass"] = adminPass
	}
	w.Header().Set("Location", s.links(r, "servers", inst.ID)[0]["href"])
	writeJSON(w, http.StatusAccepted, map[string]any{"server": out})
}

// rebuildFields validates what the rebuild changes and returns the
// instance as it will be and the columns to write; on a bad input it
// writes the 400 itself (ok=false).
func (s *Service) rebuildFields(w http.ResponseWriter, r *http.Request, inst *store.Instance, in rebuildRequest) (*store.Instance, map[string]any, bool) {
	ctx := r.Context()
	bad := func(msg string) (*store.Instance, map[string]any, bool) {
		s.fail(w, r, errdefs.InvalidArgument(msg))
		return nil, nil, false
	}
	u := *inst
	fields := map[string]any{}
	imageID := lastSegment(*in.ImageRef)
	img, err := s.findImage(ctx, imageID)
	if err != nil {
		return bad(fmt.Sprintf("Image %s could not be found.", imageID))
	}
	if img.Status != "active" {
		return bad(fmt.Sprintf("Image %s is not active.", imageID))
	}
	if err := image.Bootable(img); err != nil {
		return bad(errdefs.Message(err))
	}
	if img.MinRAM > inst.MemoryMB {
		return bad("Flavor's memory is too small for requested image.")
	}
	if img.MinDisk > inst.RootGB && inst.RootGB > 0 {
		return bad("Flavor's disk is too small for requested image.")
	}
	u.ImageID, fields["image_id"] = img.ID, img.ID
	if in.Hostname != nil {
		u.Hostname, fields["hostname"] = *in.Hostname, *in.Hostname
	}
	if in.Name != nil {
		if err := validName(*in.Name); err != nil {
			return bad(err.Error())
		}
		u.Name, fields["name"] = *in.Name, *in.Name
	}
	if in.Metadata != nil {
		meta, err := serverMetadata(in.Metadata)
		if err != nil {
			return bad(err.Error())
		}
		if !s.metadataFits(w, r, len(meta)) {
			return nil, nil, false
		}
		b, _ := json.Marshal(meta)
		u.Metadata, fields["metadata"] = string(b), string(b)
	}
	if in.AccessIPv4 != nil {
		ip, err := accessIP("accessIPv4", *in.AccessIPv4, false)
		if err != nil {
			return bad(err.Error())
		}
		u.AccessIPv4, fields["access_ipv4"] = ip, ip
	}
	if in.AccessIPv6 != nil {
		ip, err := accessIP("accessIPv6", *in.AccessIPv6, true)
		if err != nil {
			return bad(err.Error())
		}
		u.AccessIPv6, fields["access_ipv6"] = ip, ip
	}
	if in.Description != nil {
		d, err := nullableString("description", in.Description)
		if err != nil || (d != nil && len(*d) > 255) {
			return bad("Invalid input for field/attribute description.")
		}
		u.Description, fields["description"] = d, d
	}
	if in.KeyName != nil {
		name, err := nullableString("key_name", in.KeyName)
		if err != nil {
			return bad(err.Error())
		}
		if name == nil {
			u.KeyName, u.KeyData = nil, ""
		} else {
			kp, ok := s.serverKeypair(w, r, name)
			if !ok {
				return nil, nil, false
			}
			u.KeyName, u.KeyData = &kp.Name, kp.PublicKey
		}
		fields["key_name"], fields["key_data"] = u.KeyName, u.KeyData
	}
	if in.UserData != nil {
		ud, err := nullableString("user_data", in.UserData)
		if err != nil {
			return bad(err.Error())
		}
		u.UserData = ""
		if ud != nil {
			if err := checkUserData(*ud); err != nil {
				return bad(err.Error())
			}
			u.UserData = *ud
		}
		fields["user_data"] = u.UserData
	}
	return &u, fields, true
}

// beginRebuild writes the rebuild's changes, its task, its action record
// and (cast) the host's message in one transaction, guarded on the state
// the request was checked against.
func (s *Service) beginRebuild(ctx context.Context, inst *store.Instance, fields map[string]any, reqID string, cast func(tx *gorm.DB) error) error {
	creds := auth.FromContext(ctx)
	now := s.opts.Now()
	return s.st.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := instance.Begin(tx, inst, lifecycle.ActRebuild, now, fields); err != nil {
			return err
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "rebuild", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return err
		}
		return cast(tx)
	})
}
