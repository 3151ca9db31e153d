package compute

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/outbox"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Evacuate (Nova's os-evacuate, admin): a server whose host is down is
// rebuilt on another host from its image with its ports, MACs, fixed
// addresses, flavor, key, user data, metadata and shared volumes
// (instance/evacuate.go). The body is Nova's schema per microversion:
// host (optional), adminPass (optional), onSharedStorage (required before
// 2.14, gone from 2.14), force (2.29 to 2.67). 200: before 2.14
// {"adminPass": ...}, from 2.14 no body. From 2.95 the server ends
// SHUTOFF on its new host; before, as it was (an ACTIVE or ERROR one
// ACTIVE, a SHUTOFF one SHUTOFF).

// evacuateRequest is a parsed evacuate body.
type evacuateRequest struct {
	host      string
	adminPass *string
	shared    bool // onSharedStorage (before 2.14)
}

// parseEvacuate reads the evacuate body as Nova's schema for v does.
func parseEvacuate(arg json.RawMessage, v apiVersion) (evacuateRequest, error) {
	var in evacuateRequest
	var body map[string]json.RawMessage
	if err := json.Unmarshal(arg, &body); err != nil || body == nil {
		return in, errdefs.InvalidArgumentf("Invalid input for field/attribute evacuate. Value: %s. %s is not of type 'object'", arg, arg)
	}
	allowed := map[string]bool{"host": true, "adminPass": true, "onSharedStorage": !v.AtLeast(14),
		"force": v.AtLeast(29) && !v.AtLeast(68)}
	for k := range body {
		if !allowed[k] {
			return in, errdefs.InvalidArgumentf("Invalid input for field/attribute evacuate. Value: %s. Additional properties are not allowed ('%s' was unexpected)", arg, k)
		}
	}
	if raw, ok := body["host"]; ok {
		if err := json.Unmarshal(raw, &in.host); err != nil || !evacHostname(in.host) {
			return in, errdefs.InvalidArgumentf("Invalid input for field/attribute host. Value: %s. It must be a host name of 1 to 255 letters, digits, '-', '.' or '_'", raw)
		}
	}
	if raw, ok := body["adminPass"]; ok {
		var p string
		if err := json.Unmarshal(raw, &p); err != nil {
			return in, errdefs.InvalidArgumentf("Invalid input for field/attribute adminPass. Value: %s. %s is not of type 'string'", raw, raw)
		}
		in.adminPass = &p
	}
	if raw, ok := body["force"]; ok {
		if _, err := rawBool(raw); err != nil {
			return in, errdefs.InvalidArgumentf("Invalid input for field/attribute force. Value: %s. %s is not a boolean", raw, raw)
		}
	}
	if !v.AtLeast(14) {
		raw, ok := body["onSharedStorage"]
		if !ok {
			return in, errdefs.InvalidArgumentf("Invalid input for field/attribute evacuate. Value: %s. 'onSharedStorage' is a required property", arg)
		}
		b, err := rawBool(raw)
		if err != nil {
			return in, errdefs.InvalidArgumentf("Invalid input for field/attribute onSharedStorage. Value: %s. %s is not a boolean", raw, raw)
		}
		in.shared = b
		if b && in.adminPass != nil {
			return in, errdefs.InvalidArgument("admin password can't be changed on existing disk")
		}
	}
	return in, nil
}

// evacHostname is Nova's parameter_types.hostname.
func evacHostname(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// rawBool decodes a boolean of Nova's parameter_types.boolean (novaBool).
func rawBool(raw json.RawMessage) (bool, error) {
	var v any
	if json.Unmarshal(raw, &v) == nil {
		if b, ok := novaBool(v); ok {
			return b, nil
		}
	}
	return false, errors.New("not a boolean")
}

// evacuateServer is the evacuate action.
func (s *Service) evacuateServer(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	if !creds.IsAdmin() {
		writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-evacuate to be performed."))
		return
	}
	v := versionOf(ctx)
	in, err := parseEvacuate(arg, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	db := s.st.WithContext(ctx)
	if in.host != "" {
		var target store.Service
		err := db.Where("host = ? AND binary_name = ?", in.host, store.ComputeBinary).Limit(1).Find(&target).Error
		switch {
		case err != nil:
			s.fail(w, r, fmt.Errorf("look up evacuation target %s: %w", in.host, err))
			return
		case target.ID == 0:
			writeFault(w, errdefs.NotFoundf("Compute host %s not found.", in.host))
			return
		case in.host == inst.Host:
			writeFault(w, errdefs.InvalidArgument("The target host can't be the same one."))
			return
		case !s.serviceUp(&target):
			writeFault(w, errdefs.InvalidArgumentf("Compute host %s is down: choose another host.", in.host))
			return
		}
	}
	if _, ok := beginOnHost(w, inst, lifecycle.ActEvacuate, "evacuate"); !ok {
		return
	}
	var source store.Service
	if err := db.Where("host = ? AND binary_name = ?", inst.Host, store.ComputeBinary).Limit(1).Find(&source).Error; err != nil {
		s.fail(w, r, fmt.Errorf("look up the host of %s: %w", inst.ID, err))
		return
	}
	if source.ID != 0 && s.serviceUp(&source) {
		writeFault(w, errdefs.InvalidArgumentf("Compute service of %s is still in use.", inst.Host))
		return
	}
	if err := instance.EvacuateBlockers(db, inst.ID, inst.Host); err != nil {
		s.fail(w, r, err)
		return
	}
	// The rebuilt disk gets the new password: the one asked for, or
	// before 2.14 off shared storage a generated one (returned, Nova's);
	// otherwise it keeps the server's own.
	var pass *string
	set := map[string]any{}
	if in.adminPass != nil || (!v.AtLeast(14) && !in.shared) {
		p, hash, err := s.instancePassword(in.adminPass)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		pass, set["admin_pass_hash"] = &p, hash
	}
	reqID := requestID(w)
	m := store.Migration{RequestID: reqID, UserID: creds.UserID, ProjectID: creds.ProjectID, RequestedHost: in.host}
	var out outbox.Batch
	err = db.Transaction(func(tx *gorm.DB) error {
		now := s.opts.Now()
		if err := instance.BeginEvacuate(tx, inst, &m, v.AtLeast(95), now, set); err != nil {
			return err
		}
		if err := tx.Create(&store.InstanceAction{InstanceID: inst.ID, Action: "evacuate", RequestID: reqID,
			UserID: creds.UserID, ProjectID: creds.ProjectID, StartTime: now, UpdatedAt: now}).Error; err != nil {
			return err
		}
		msg, err := bus.NewMessage(protocol.KindScheduleInstance, protocol.ScheduleInstance{InstanceID: inst.ID,
			RequestID: reqID, Attempt: 1, Host: in.host, Evacuate: true})
		if err != nil {
			return err
		}
		return out.Enqueue(tx, bus.SchedulerQueue, inst.ID, msg)
	})
	switch {
	case errors.Is(err, errStateChanged):
		writeFault(w, errdefs.Conflictf("Cannot 'evacuate' instance %s: its state changed meanwhile", inst.ID))
		return
	case err != nil:
		var conflict *lifecycle.ConflictError
		if errors.As(err, &conflict) {
			stateConflict(w, inst, "evacuate")
			return
		}
		s.log.Error("start evacuation", "instance", inst.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return
	}
	s.deliver(ctx, &out)
	s.log.Info("evacuation requested", "instance", inst.ID, "source", inst.Host, "host", in.host, "migration", m.ID)
	if v.AtLeast(14) {
		noContent(w, http.StatusOK)
		return
	}
	if s.opts.NoInstancePassword {
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"adminPass": pass})
}
