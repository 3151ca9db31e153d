package compute

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Instance actions and events of interface hot-plug (Nova's names).
const (
	actAttachInterface   = "attach_interface"
	actDetachInterface   = "detach_interface"
	eventAttachInterface = "compute_attach_interface"
	eventDetachInterface = "compute_detach_interface"
)

// attachBody is POST /servers/{id}/os-interface. Every field is optional:
// an empty attachment asks for a port on the project's network.
type attachBody struct {
	InterfaceAttachment *struct {
		PortID   string `json:"port_id"`
		NetID    string `json:"net_id"`
		FixedIPs []struct {
			IPAddress string `json:"ip_address"`
		} `json:"fixed_ips"`
		Tag *string `json:"tag"`
	} `json:"interfaceAttachment"`
}

// attachmentView is one interfaceAttachment as Nova renders it at v: from
// 2.70 with its device tag, always null (Capsule keeps no device tags: a
// tagged attach is refused).
func attachmentView(p *store.Port, v apiVersion) map[string]any {
	ips := []map[string]string{}
	for _, a := range p.FixedIPs {
		ips = append(ips, map[string]string{"subnet_id": a.SubnetID, "ip_address": a.IPAddress})
	}
	out := map[string]any{"port_state": p.Status, "fixed_ips": ips, "port_id": p.ID, "net_id": p.NetworkID, "mac_addr": p.MACAddress}
	if v.AtLeast(70) {
		out["tag"] = nil
	}
	return out
}

// interfaceState checks what Nova's check_instance_state allows for
// attach and detach: active, paused or stopped, no task, placed on a host,
// unlocked (admins excepted). It answers the error itself.
func (s *Service) interfaceState(w http.ResponseWriter, r *http.Request, inst *store.Instance, apiName string) bool {
	creds := auth.FromContext(r.Context())
	if inst.Locked && !creds.IsAdmin() {
		writeFault(w, errdefs.Conflictf("Instance %s is locked", inst.ID))
		return false
	}
	switch inst.VMState {
	case lifecycle.Active, lifecycle.Paused, lifecycle.Stopped:
	default:
		stateConflict(w, inst, apiName)
		return false
	}
	if inst.TaskState != "" {
		stateConflict(w, inst, apiName)
		return false
	}
	if inst.Host == "" {
		writeFault(w, errdefs.Conflictf("Cannot '%s' instance %s: it is not placed on any host", apiName, inst.ID))
		return false
	}
	return true
}

// showInterface is GET /servers/{id}/os-interface/{port_id}.
func (s *Service) showInterface(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	p, ok := s.serverPort(w, r, inst)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"interfaceAttachment": attachmentView(p, versionOf(r.Context()))})
}

// serverPort loads the path's port, answering 404 unless it is one of
// inst's NICs (store.ServerPorts).
func (s *Service) serverPort(w http.ResponseWriter, r *http.Request, inst *store.Instance) (*store.Port, bool) {
	portID := r.PathValue("port")
	p, err := s.st.GetPort(r.Context(), portID)
	if err != nil && !errors.Is(err, store.ErrPortNotFound) {
		s.log.Error("load port", "port", portID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
		return nil, false
	}
	if err != nil || !p.ComputeBound || p.DeviceID != inst.ID || p.ProjectID != inst.ProjectID {
		writeFault(w, errdefs.NotFoundf("Instance %s does not have a port with id %s", inst.ID, portID))
		return nil, false
	}
	return p, true
}

// parseAttach validates the body into one NIC request, with Nova's
// messages. A port must exist, be visible and free; a network must be
// visible; neither picks the project's network (firstNetwork).
func (s *Service) parseAttach(ctx context.Context, inst *store.Instance, body attachBody) (nicRequest, error) {
	if body.InterfaceAttachment == nil {
		return s.firstNetwork(ctx)
	}
	a := body.InterfaceAttachment
	if a.Tag != nil {
		// A device tag (2.49) is for the guest to find the device in
		// its metadata; Capsule serves no device metadata, so a tag
		// would be silently lost.
		return nicRequest{}, errdefs.InvalidArgument("Device tags are not supported: Capsule serves no device metadata to tag an interface in.")
	}
	if a.PortID != "" && a.NetID != "" {
		return nicRequest{}, errdefs.InvalidArgumentf("Must not input both network_id and port_id")
	}
	if len(a.FixedIPs) > 1 {
		return nicRequest{}, errdefs.InvalidArgumentf("Invalid input for field/attribute fixed_ips. Value: %d items. List is too long", len(a.FixedIPs))
	}
	if len(a.FixedIPs) == 1 && a.NetID == "" {
		return nicRequest{}, errdefs.InvalidArgumentf("Must input network_id when request IP address")
	}
	for _, id := range []struct{ field, v string }{{"port_id", a.PortID}, {"net_id", a.NetID}} {
		if _, err := uuid.Parse(id.v); id.v != "" && err != nil {
			return nicRequest{}, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. '%s' is not a 'uuid'", id.field, id.v, id.v)
		}
	}
	creds := auth.FromContext(ctx)
	switch {
	case a.PortID != "":
		p, err := s.st.GetPort(ctx, a.PortID)
		if err != nil || (p.ProjectID != creds.ProjectID && !creds.IsAdmin()) {
			return nicRequest{}, errdefs.NotFoundf("Port %s could not be found.", a.PortID)
		}
		if p.ProjectID != inst.ProjectID {
			return nicRequest{}, portNotUsable(a.PortID)
		}
		if p.DeviceID != "" {
			return nicRequest{}, errdefs.Conflictf("Port %s is still in use.", a.PortID)
		}
		return nicRequest{PortID: p.ID, NetworkID: p.NetworkID}, nil
	case a.NetID != "":
		n, err := s.st.GetNetwork(ctx, a.NetID)
		if err != nil || !networkVisible(creds, n) {
			return nicRequest{}, errdefs.NotFoundf("Network %s could not be found.", a.NetID)
		}
		rq := nicRequest{NetworkID: n.ID}
		if len(a.FixedIPs) == 1 {
			ip := a.FixedIPs[0].IPAddress
			if _, err := netip.ParseAddr(ip); err != nil {
				return nicRequest{}, errdefs.InvalidArgumentf("Invalid input for field/attribute ip_address. Value: %s. '%s' is not a 'ip-address'", ip, ip)
			}
			rq.FixedIP = ip
		}
		return rq, nil
	}
	return s.firstNetwork(ctx)
}

// firstNetwork is the network an attach without port or network uses: the
// project's own first, then shared ones, oldest first (Nova lets Neutron
// pick among the project's networks). None is Nova's 400.
func (s *Service) firstNetwork(ctx context.Context) (nicRequest, error) {
	creds := auth.FromContext(ctx)
	nets, err := s.st.ListNetworks(ctx)
	if err != nil {
		return nicRequest{}, fmt.Errorf("list networks: %w", err)
	}
	var shared *store.Network
	for i, n := range nets {
		if n.ProjectID == creds.ProjectID {
			return nicRequest{NetworkID: n.ID}, nil
		}
		if n.Shared && shared == nil {
			shared = &nets[i]
		}
	}
	if shared != nil {
		return nicRequest{NetworkID: shared.ID}, nil
	}
	return nicRequest{}, errdefs.InvalidArgumentf("No specific network was requested and none are available for project '%s'.", creds.ProjectID)
}

// attachInterface is POST /servers/{id}/os-interface: the port is
// allocated (or bound) and bound to the server's host, the agent plugs it
// into the running server (a stopped one gets it at its next start), and
// only then does the call answer; when the agent fails the port is rolled
// back. A server booted without a network has no network sandbox to plug
// into: 409.
func (s *Service) attachInterface(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	inst, ok := s.loadServer(w, r)
	if !ok || !s.interfaceState(w, r, inst, actAttachInterface) {
		return
	}
	var body attachBody
	if !decodeBody(w, r, &body) {
		return
	}
	rq, err := s.parseAttach(ctx, inst, body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	existing, err := s.st.ServerPorts(ctx, inst.ID, inst.ProjectID)
	if err != nil {
		s.internalError(w, "ports of server", inst.ID, err)
		return
	}
	if len(existing) == 0 {
		writeFault(w, errdefs.FailedPreconditionf("Cannot 'attach_interface' instance %s: it was booted without a network, "+
			"so it has no network sandbox to plug an interface into; boot it with a network", inst.ID))
		return
	}
	creds := auth.FromContext(ctx)
	reqID := requestID(w)
	if err := s.st.StartAction(ctx, inst.ID, actAttachInterface, reqID, creds.UserID, creds.ProjectID); err != nil {
		s.internalError(w, "record action", inst.ID, err)
		return
	}
	started := s.opts.Now()
	port, err := s.reserveInterface(ctx, inst, rq)
	if err != nil {
		s.interfaceEvent(ctx, inst, reqID, eventAttachInterface, started, errors.New(clientMessage(err)))
		s.fail(w, r, err)
		return
	}
	nic, err := s.nicOf(ctx, inst, port.ID)
	if err == nil {
		err = s.callInterface(ctx, inst, protocol.KindAttachInterface,
			protocol.AttachInterface{RequestID: reqID, InstanceID: inst.ID, NIC: nic})
	}
	if err != nil {
		s.releaseInterface(context.WithoutCancel(ctx), inst, port.ID, rq.PortID == "")
		s.interfaceEvent(ctx, inst, reqID, eventAttachInterface, started, err)
		s.fail(w, r, agentFault(inst, "attach network adapter device to", err))
		return
	}
	s.interfaceEvent(ctx, inst, reqID, eventAttachInterface, started, nil)
	writeJSON(w, http.StatusOK, map[string]any{"interfaceAttachment": attachmentView(port, versionOf(r.Context()))})
}

// reserveInterface gives the server the requested port with the code a
// create uses (allocateNICs), binds it to the server's host as the
// scheduler does at placement, and records a port it created as owned.
// A taken fixed IP is Nova's FixedIpAlreadyInUse, a 409 on attach.
func (s *Service) reserveInterface(ctx context.Context, inst *store.Instance, rq nicRequest) (*store.Port, error) {
	owned, err := s.allocateNICs(ctx, inst, []nicRequest{rq})
	if err != nil {
		if errdefs.Reason(err) == fixedIPInUse {
			return nil, errdefs.Conflict(errdefs.Message(err)).WithReason(fixedIPInUse)
		}
		return nil, err
	}
	portID := rq.PortID
	if portID == "" && len(owned) == 1 {
		portID = owned[0]
	}
	fail := func(what string, err error) (*store.Port, error) {
		s.releaseInterface(context.WithoutCancel(ctx), inst, portID, len(owned) > 0)
		return nil, fmt.Errorf("attach interface to %s: %s of port %s: %w", inst.ID, what, portID, err)
	}
	// Bound to the host, the port is ACTIVE (store.portStatus).
	if _, err := s.st.BindPort(ctx, portID, inst.ID, "compute:nova", inst.Host); err != nil {
		return fail("bind port to host", err)
	}
	if len(owned) > 0 {
		if err := s.updateOwnedPorts(ctx, inst.ID, func(ids []string) []string { return append(ids, portID) }); err != nil {
			return fail("record owned port", err)
		}
	}
	p, err := s.st.GetPort(ctx, portID)
	if err != nil {
		return fail("reload port", err)
	}
	s.membersChanged(ctx, p.SecurityGroups, inst)
	return p, nil
}

// releaseInterface lets go of a port of inst as a server delete does: a
// port the compute API created is deleted (its addresses freed) and
// dropped from the owned list, a user's port is unbound.
func (s *Service) releaseInterface(ctx context.Context, inst *store.Instance, portID string, owned bool) {
	if owned {
		if err := s.updateOwnedPorts(ctx, inst.ID, func(ids []string) []string {
			return slices.DeleteFunc(ids, func(id string) bool { return id == portID })
		}); err != nil {
			s.log.Error("forget owned port", "instance", inst.ID, "port", portID, "error", err)
		}
		var groups []string
		if p, err := s.st.GetPort(ctx, portID); err == nil {
			groups = p.SecurityGroups
		}
		if err := s.st.ReleasePort(ctx, portID); err != nil && !errors.Is(err, store.ErrPortNotFound) {
			s.log.Error("release port", "instance", inst.ID, "port", portID, "error", err)
		}
		s.membersChanged(ctx, groups, inst)
		return
	}
	if _, err := s.st.BindPort(ctx, portID, "", "", ""); err != nil && !errors.Is(err, store.ErrPortNotFound) {
		s.log.Error("unbind port", "instance", inst.ID, "port", portID, "error", err)
	}
}

// updateOwnedPorts rewrites the instance's owned-port list with change,
// compare-and-swap on the old value, so two concurrent attaches or
// detaches of one server cannot lose each other's port (on any database,
// without row locks).
func (s *Service) updateOwnedPorts(ctx context.Context, instanceID string, change func([]string) []string) error {
	for range 10 {
		var inst store.Instance
		if err := s.st.WithContext(ctx).Select("id", "owned_ports").Where("id = ?", instanceID).First(&inst).Error; err != nil {
			return fmt.Errorf("load owned ports of %s: %w", instanceID, err)
		}
		old := inst.OwnedPorts
		inst.SetOwnedPorts(change(inst.OwnedPortList()))
		res := s.st.WithContext(ctx).Model(&store.Instance{}).Where("id = ? AND owned_ports = ?", instanceID, old).
			Update("owned_ports", inst.OwnedPorts)
		if res.Error != nil {
			return fmt.Errorf("update owned ports of %s: %w", instanceID, res.Error)
		}
		if res.RowsAffected == 1 {
			return nil
		}
	}
	return fmt.Errorf("update owned ports of %s: too much contention", instanceID)
}

// nicOf describes port portID of inst as the agent plumbs it: the spec the
// scheduler builds at boot (nicsFor, with the flavor's shaping).
func (s *Service) nicOf(ctx context.Context, inst *store.Instance, portID string) (protocol.NIC, error) {
	spec, err := instance.SpecFor(ctx, s.st, inst)
	if err != nil {
		return protocol.NIC{}, fmt.Errorf("spec of %s: %w", inst.ID, err)
	}
	for _, n := range spec.NICs {
		if n.PortID == portID {
			return n, nil
		}
	}
	return protocol.NIC{}, fmt.Errorf("port %s is not among the NICs of %s", portID, inst.ID)
}

// callInterface asks the agent of inst's host to plug or unplug a NIC and
// waits for it. The request's deadline is a little shorter than the
// API's, so an agent that cannot finish in time gives up (and undoes)
// before the API rolls the port back.
func (s *Service) callInterface(ctx context.Context, inst *store.Instance, kind string, body any) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	switch b := body.(type) {
	case protocol.AttachInterface:
		b.Deadline = deadline.Add(-s.opts.CallTimeout / 5)
		body = b
	case protocol.DetachInterface:
		b.Deadline = deadline.Add(-s.opts.CallTimeout / 5)
		body = b
	}
	msg, err := bus.NewMessage(kind, body)
	if err != nil {
		return fmt.Errorf("%s message: %w", kind, err)
	}
	var rep protocol.InterfaceReply
	if err := s.bus.Call(ctx, bus.ComputeQueue(inst.Host), msg, &rep); err != nil {
		return fmt.Errorf("%s on host %s: %w", kind, inst.Host, err)
	}
	return nil
}

// agentFault classifies a failed plug or unplug as Nova answers it: a
// server the agent finds without a network sandbox (a FailedPrecondition)
// is a conflict, a host that did not answer unavailable, anything else
// Nova's InterfaceAttachFailed (500, with what failed).
func agentFault(inst *store.Instance, what string, err error) error {
	var remote *bus.RemoteError
	switch {
	case errors.As(err, &remote) && errdefs.IsFailedPrecondition(remote):
		return errdefs.Conflictf("Failed to %s %s: %s", what, inst.ID, remote.Message).WithCause(err)
	case errors.As(err, &remote):
		return errdefs.Internalf("Failed to %s %s: %s", what, inst.ID, remote.Message).WithCause(err)
	case errors.Is(err, context.DeadlineExceeded):
		return errdefs.Unavailablef("The compute host %s did not answer in time.", inst.Host).WithCause(err)
	}
	return errdefs.Internalf("Failed to %s %s.", what, inst.ID).WithCause(err)
}

// interfaceEvent records the outcome of an attach or detach as the
// action's event (err nil: success).
func (s *Service) interfaceEvent(ctx context.Context, inst *store.Instance, reqID, name string, started time.Time, err error) {
	ev := store.Event{InstanceID: inst.ID, RequestID: reqID, Name: name, Host: inst.Host, Start: started,
		Finish: s.opts.Now(), OK: err == nil}
	if err != nil {
		ev.Detail, ev.Message = err.Error(), errdefs.Message(err)
	}
	if rerr := s.st.RecordEvent(context.WithoutCancel(ctx), ev); rerr != nil {
		s.log.Error("record event", "instance", inst.ID, "event", name, "error", rerr)
	}
}

// detachInterface is DELETE /servers/{id}/os-interface/{port_id}: the
// port is unbound from the server first (so the conductor no longer hands
// it to the agent's drift repair), the agent unplugs it (veth, OVS port,
// flows), then a port the compute API created is deleted and a user's
// port stays, unbound, as at server delete. A failed unplug binds the
// port back.
func (s *Service) detachInterface(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	inst, ok := s.loadServer(w, r)
	if !ok || !s.interfaceState(w, r, inst, actDetachInterface) {
		return
	}
	port, ok := s.serverPort(w, r, inst)
	if !ok {
		return
	}
	if err := s.unplugPort(ctx, inst, port, requestID(w)); err != nil {
		s.fail(w, r, err)
		return
	}
	noContent(w, http.StatusAccepted)
}

// unplugPort is a detach of port from inst, recorded as its instance
// action reqID by the caller's credentials.
func (s *Service) unplugPort(ctx context.Context, inst *store.Instance, port *store.Port, reqID string) error {
	creds := auth.FromContext(ctx)
	if err := s.st.StartAction(ctx, inst.ID, actDetachInterface, reqID, creds.UserID, creds.ProjectID); err != nil {
		return fmt.Errorf("record action on %s: %w", inst.ID, err)
	}
	started := s.opts.Now()
	nic, err := s.nicOf(ctx, inst, port.ID)
	if err != nil {
		s.interfaceEvent(ctx, inst, reqID, eventDetachInterface, started, err)
		return fmt.Errorf("describe NIC of %s: %w", inst.ID, err)
	}
	if _, err := s.st.BindPort(ctx, port.ID, "", "", ""); err != nil {
		s.interfaceEvent(ctx, inst, reqID, eventDetachInterface, started, err)
		return fmt.Errorf("unbind port of %s: %w", inst.ID, err)
	}
	err = s.callInterface(ctx, inst, protocol.KindDetachInterface,
		protocol.DetachInterface{RequestID: reqID, InstanceID: inst.ID, PortID: port.ID, NIC: nic})
	if err != nil {
		s.rebindInterface(context.WithoutCancel(ctx), inst, port)
		s.interfaceEvent(ctx, inst, reqID, eventDetachInterface, started, err)
		return agentFault(inst, "detach network adapter device from", err)
	}
	s.releaseInterface(context.WithoutCancel(ctx), inst, port.ID, slices.Contains(inst.OwnedPortList(), port.ID))
	s.interfaceEvent(ctx, inst, reqID, eventDetachInterface, started, nil)
	return nil
}

// DetachPort unplugs port from the server the Compute API bound it to,
// exactly as an interface detach does (the agent removes eth<i>, the veth,
// the OVS port and its flows; a port the Compute API created is then
// deleted, a user's port unbound): the Networking API calls it before an
// admin deletes a server's port, so an address is never freed while a NIC
// still holds it. A server being deleted, or not placed on a host, has
// nothing plugged for the port (its agent removes or never plugs it);
// one in another operation, or in a state a detach refuses, is a
// Conflict: the port stays.
func (s *Service) DetachPort(ctx context.Context, port *store.Port) error {
	inst, err := s.pluggedServer(ctx, port)
	if err != nil || inst == nil {
		return err
	}
	return s.unplugPort(ctx, inst, port, httpapi.RequestID(ctx))
}

// pluggedServer is the server whose NIC port is, when the Compute API
// bound it to one that has it plugged (or may plug it): nil when nothing
// is plugged for it (not compute-bound, server gone or being deleted,
// never placed); a Conflict when the server is in a state or operation
// that a change of its NICs must not race with.
func (s *Service) pluggedServer(ctx context.Context, port *store.Port) (*store.Instance, error) {
	if !port.ComputeBound {
		return nil, nil
	}
	var inst store.Instance
	err := s.st.WithContext(ctx).Where("id = ? AND project_id = ? AND deleted_at IS NULL", port.DeviceID, port.ProjectID).First(&inst).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("server of port %s: %w", port.ID, err)
	}
	if inst.Host == "" && inst.TaskState == "" {
		return nil, nil
	}
	switch inst.VMState {
	case lifecycle.Active, lifecycle.Paused, lifecycle.Stopped:
	default:
		return nil, errdefs.Conflictf("Port %s is plugged into server %s, which is %s: it cannot be changed now.",
			port.ID, inst.ID, inst.VMState)
	}
	if inst.TaskState != "" || inst.Host == "" {
		return nil, errdefs.Conflictf("Port %s is plugged into server %s, which is busy (%s): try again when it is done.",
			port.ID, inst.ID, inst.TaskState)
	}
	return &inst, nil
}

// PortPlugReady tells the Networking API whether a change of port's
// addresses, MAC or port security can be applied on its server's host
// now: nil when it can (or nothing is plugged for the port), a Conflict
// when the server is busy, so the update changes nothing.
func (s *Service) PortPlugReady(ctx context.Context, port *store.Port) error {
	_, err := s.pluggedServer(ctx, port)
	return err
}

// ReplugPort applies port as the database now has it, less the
// addresses in drop, to its server's NIC through the agent (the
// interface attach of a NIC the server has replaces it in place: its
// addresses, MAC and anti-spoofing flows; a stopped server gets it at its
// next start) and returns once the agent has. The Networking API keeps
// the dropped addresses allocated until then, so an address is never
// free while a NIC still answers for it.
func (s *Service) ReplugPort(ctx context.Context, port *store.Port, drop []string) error {
	inst, err := s.pluggedServer(ctx, port)
	if err != nil || inst == nil {
		return err
	}
	nic, err := s.nicOf(ctx, inst, port.ID)
	if err != nil {
		return fmt.Errorf("describe NIC of %s: %w", inst.ID, err)
	}
	nic.IPs = slices.DeleteFunc(nic.IPs, func(ip protocol.IP) bool { return slices.Contains(drop, ip.Address) })
	err = s.callInterface(ctx, inst, protocol.KindAttachInterface,
		protocol.AttachInterface{RequestID: httpapi.RequestID(ctx), InstanceID: inst.ID, NIC: nic})
	if err != nil {
		return agentFault(inst, "re-plug network adapter device of", err)
	}
	return nil
}

// rebindInterface puts back the binding a failed detach removed.
func (s *Service) rebindInterface(ctx context.Context, inst *store.Instance, port *store.Port) {
	if _, err := s.st.BindPort(ctx, port.ID, inst.ID, port.DeviceOwner, inst.Host); err != nil {
		s.log.Error("rebind port after a failed detach", "instance", inst.ID, "port", port.ID, "error", err)
	}
}

func (s *Service) internalError(w http.ResponseWriter, what, instanceID string, err error) {
	s.log.Error(what, "instance", instanceID, "error", err)
	writeError(w, http.StatusInternalServerError, "Unexpected API Error.")
}
