package compute

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/shadowpw"
	"github.com/capsule-cloud/capsule/store"
)

// changePassword is Nova's changePassword action: root's password of an
// ACTIVE server is set in its /etc/shadow by its host (only the SHA-512
// crypt hash leaves the API), 202 with no body. A server whose image has
// no /etc/shadow (Capsule's busybox) cannot: 501 with Nova's "Unable to
// set password on instance" and the reason.
func (s *Service) changePassword(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage) {
	var in struct {
		AdminPass *string `json:"adminPass"`
	}
	if err := json.Unmarshal(arg, &in); err != nil || in.AdminPass == nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute changePassword. 'adminPass' is a required property"))
		return
	}
	if inst.VMState != lifecycle.Active || inst.TaskState != lifecycle.NoTask || inst.Host == "" {
		writeFault(w, errdefs.Conflictf("Cannot 'changePassword' instance %s while it is in vm_state %s", inst.ID, inst.VMState))
		return
	}
	hash, err := shadowpw.Hash(*in.AdminPass)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	msg, err := bus.NewMessage(protocol.KindSetAdminPassword, protocol.SetAdminPassword{InstanceID: inst.ID, Hash: hash})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.CallTimeout)
	defer cancel()
	var reply struct{}
	if err := s.bus.Call(ctx, bus.ComputeQueue(inst.Host), msg, &reply); err != nil {
		var remote *bus.RemoteError
		switch {
		case errdefs.KindOf(err) == errdefs.ErrNotSupported:
			s.fail(w, r, errdefs.NotSupportedf("Unable to set password on instance: %s", errdefs.Message(err)))
		case errors.As(err, &remote):
			s.fail(w, r, errdefs.Conflictf("Unable to set password on instance: %s", errdefs.Message(err)))
		default:
			s.log.Warn("set admin password call", "instance", inst.ID, "host", inst.Host, "error", err)
			s.fail(w, r, errdefs.Unavailablef("The compute host %s did not answer in time.", inst.Host))
		}
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
