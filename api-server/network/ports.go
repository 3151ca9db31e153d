package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// portView is §4.5's port object; binding:* attributes are admin-only as
// in Neutron's policy.
func portView(p *store.Port, admin bool) view {
	ips := make([]map[string]string, 0, len(p.FixedIPs))
	for _, a := range p.FixedIPs {
		ips = append(ips, map[string]string{"subnet_id": a.SubnetID, "ip_address": a.IPAddress})
	}
	v := view{
		"id": p.ID, "name": p.Name, "network_id": p.NetworkID, "project_id": p.ProjectID, "tenant_id": p.ProjectID,
		"mac_address": p.MACAddress, "fixed_ips": ips, "device_id": p.DeviceID, "device_owner": p.DeviceOwner,
		"status": p.Status, "admin_state_up": p.AdminStateUp, "security_groups": nonNilStrings(p.SecurityGroups),
		"port_security_enabled": p.PortSecurityEnabled, "allowed_address_pairs": p.AddressPairs(), "extra_dhcp_opts": []any{},
		"description": p.Description, "tags": store.DecodeTags(p.Tags), "created_at": ts(p.CreatedAt), "updated_at": ts(p.UpdatedAt),
		"revision_number": p.RevisionNumber,
	}
	if admin {
		vif := "unbound"
		details := map[string]any{}
		if p.BindingHostID != "" {
			vif = "ovs"
			details = map[string]any{"port_filter": p.PortSecurityEnabled, "ovs_hybrid_plug": false}
		}
		v["binding:host_id"] = p.BindingHostID
		v["binding:vif_type"] = vif
		v["binding:vnic_type"] = "normal"
		profile := map[string]any{}
		if p.BindingProfile != "" {
			_ = json.Unmarshal([]byte(p.BindingProfile), &profile)
		}
		v["binding:profile"] = profile
		v["binding:vif_details"] = details
	}
	return v
}

// canSeePort: own ports, and every port on a network the caller owns.
func canSeePort(c *auth.Credentials, p *store.Port, n *store.Network) bool {
	return c.IsAdmin() || p.ProjectID == c.ProjectID || (n != nil && n.ProjectID == c.ProjectID)
}

func (s *Service) visiblePort(w http.ResponseWriter, r *http.Request, id string) (*store.Port, *store.Network, bool) {
	p, err := s.st.GetPort(r.Context(), id)
	var n *store.Network
	if err == nil {
		n, err = s.st.GetNetwork(r.Context(), p.NetworkID)
	}
	if err == nil && !canSeePort(creds(r), p, n) {
		err = store.ErrPortNotFound.New("Port " + id + " could not be found.")
	}
	if err != nil {
		s.storeError(w, r, err)
		return nil, nil, false
	}
	return p, n, true
}

func (s *Service) listPorts(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if s.listPortsPaged(w, r) {
		return
	}
	nets, err := s.networksByID(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	// device_id and network_id narrow the query in the database: they are
	// what Nova-style lookups (port list --server) send.
	q := r.URL.Query()
	var f store.PortFilter
	if v := q["device_id"]; len(v) == 1 {
		f.DeviceID = v[0]
	}
	if v := q["network_id"]; len(v) == 1 {
		f.NetworkID = v[0]
	}
	ports, err := s.st.ListPorts(r.Context(), f)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var views []view
	for i := range ports {
		if canSeePort(c, &ports[i], nets[ports[i].NetworkID]) {
			views = append(views, portView(&ports[i], c.IsAdmin()))
		}
	}
	listQuery(w, r, "ports", views, keysOf(portView(&store.Port{}, c.IsAdmin())), func(id string) {
		writeFault(w, errdefs.NotFound("Port "+id+" could not be found.").WithReason("PortNotFound"))
	})
}

// listPortsPaged answers the ports list with a page read in the database
// (store.ListPortsPage) when every filter is a column and the list keeps
// its default order; it returns false, having written nothing, when the
// request needs listPorts' in-memory path: a sort_key, a fixed_ips, tags
// or boolean filter, an unknown attribute (its 400), or an invalid limit.
func (s *Service) listPortsPaged(w http.ResponseWriter, r *http.Request) bool {
	c := creds(r)
	q := r.URL.Query()
	known := keysOf(portView(&store.Port{}, c.IsAdmin()))
	pg := store.PortPage{Match: map[string][]string{}, Marker: q.Get("marker")}
	for k, vals := range q {
		switch {
		case k == "sort_key" || k == "limit" && !validLimit(vals):
			return false
		case reserved[k]:
		case known[k] && store.PortColumns[k] != "":
			pg.Match[k] = vals
		default:
			return false
		}
	}
	if !c.IsAdmin() {
		pg.VisibleTo = c.ProjectID
	}
	pg.Limit, _ = strconv.Atoi(q.Get("limit"))
	ports, more, found, err := s.st.ListPortsPage(r.Context(), pg)
	if err != nil {
		s.storeError(w, r, err)
		return true
	}
	if !found {
		writeFault(w, errdefs.NotFound("Port "+pg.Marker+" could not be found.").WithReason("PortNotFound"))
		return true
	}
	views := make([]view, 0, len(ports))
	for i := range ports {
		views = append(views, portView(&ports[i], c.IsAdmin()))
	}
	if more {
		// writePage links the next page when it gets more than limit views:
		// the row past the page is not read back, only signalled.
		views = append(views, nil)
	}
	writePage(w, r, "ports", views, pg.Limit)
	return true
}

// validLimit: one limit, a non-negative integer (listQuery answers others).
func validLimit(vals []string) bool {
	n, err := strconv.Atoi(vals[0])
	return len(vals) == 1 && err == nil && n >= 0
}

func (s *Service) getPort(w http.ResponseWriter, r *http.Request) {
	p, _, ok := s.visiblePort(w, r, r.PathValue("id"))
	if !ok {
		return
	}
	showOne(w, r, http.StatusOK, "port", portView(p, creds(r).IsAdmin()))
}

var portCreateAttrs = []string{"network_id", "name", "description", "admin_state_up", "mac_address", "fixed_ips",
	"device_id", "device_owner", "binding:host_id", "binding:vnic_type", "binding:profile", "port_security_enabled",
	"security_groups", "allowed_address_pairs", "extra_dhcp_opts", "project_id", "tenant_id", "qos_policy_id",
	"propagate_uplink_status", "dns_name", "tags"}

// fixedIPs decodes a fixed_ips attribute; nil when absent or null.
func fixedIPs(a attrs) (*[]store.FixedIPRequest, error) {
	var raw []struct {
		SubnetID  string `json:"subnet_id"`
		IPAddress string `json:"ip_address"`
	}
	ok, err := a.decode("fixed_ips", &raw)
	if err != nil || !ok {
		return nil, err
	}
	out := make([]store.FixedIPRequest, 0, len(raw))
	for _, f := range raw {
		out = append(out, store.FixedIPRequest{SubnetID: f.SubnetID, IP: f.IPAddress})
	}
	return &out, nil
}

// addressPairs decodes allowed_address_pairs; nil when absent, an empty
// list for null (Neutron clears them so).
func addressPairs(a attrs) (*[]store.AddressPair, error) {
	raw, ok := a["allowed_address_pairs"]
	if !ok {
		return nil, nil
	}
	out := []store.AddressPair{}
	if isNull(raw) {
		return &out, nil
	}
	var list []attrs
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, inputErr("allowed_address_pairs must be a list of objects")
	}
	for _, p := range list {
		if err := p.unknown("ip_address", "mac_address"); err != nil {
			return nil, err
		}
		ip, err := p.str("ip_address")
		if err != nil {
			return nil, err
		}
		if ip == nil {
			return nil, inputErr("Allowed address pair must contain ip_address")
		}
		mac, err := p.str("mac_address")
		if err != nil {
			return nil, err
		}
		ap := store.AddressPair{IPAddress: *ip}
		if mac != nil {
			ap.MACAddress = *mac
		}
		out = append(out, ap)
	}
	return &out, nil
}

// checkUnsupported refuses non-empty values of port features Capsule has
// not got.
func checkUnsupported(a attrs) error {
	if err := a.emptyList("extra_dhcp_opts"); err != nil {
		return err
	}
	if v, err := a.str("binding:vnic_type"); err != nil || (v != nil && *v != "normal") {
		return inputErr("binding:vnic_type must be normal")
	}
	return nil
}

func (s *Service) createPorts(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "rule:create_port") {
		return
	}
	objs, bulk, err := readBody(r, "port", "ports")
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	var created []view
	fail := func(answer func()) {
		for _, v := range created {
			_ = s.st.ReleasePort(context.WithoutCancel(r.Context()), v["id"].(string))
		}
		answer()
	}
	for _, a := range objs {
		req, answer := s.portFromRequest(w, r, a, c)
		if answer != nil {
			fail(answer)
			return
		}
		req.Quota = s.quotaGuard(req.ProjectID, "port")
		p, err := s.st.AllocatePort(r.Context(), req)
		if err != nil {
			fail(func() { s.storeError(w, r, err) })
			return
		}
		created = append(created, portView(p, c.IsAdmin()))
		s.membersChanged(r.Context(), p.ID, nil, p.SecurityGroups)
	}
	if bulk {
		httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"ports": created})
		return
	}
	showOne(w, r, http.StatusCreated, "port", created[0])
}

func (s *Service) portFromRequest(w http.ResponseWriter, r *http.Request, a attrs, c *auth.Credentials) (store.PortRequest, func()) {
	var req store.PortRequest
	bad := func(err error) (store.PortRequest, func()) { return req, func() { invalidInput(w, err.Error()) } }
	if err := a.unknown(portCreateAttrs...); err != nil {
		return req, func() { badRequest(w, err.Error()) }
	}
	proj, ok, err := ownerProject(a, c.ProjectID, c.IsAdmin())
	if err != nil {
		return bad(err)
	}
	if !ok {
		return req, func() { forbidden(w, "rule:create_port") }
	}
	if err := checkUnsupported(a); err != nil {
		return bad(err)
	}
	netID, err := a.str("network_id")
	if err != nil {
		return bad(err)
	}
	if netID == nil || *netID == "" {
		return req, func() { badRequest(w, "Failed to parse request. Required attribute 'network_id' not specified") }
	}
	req = store.PortRequest{NetworkID: *netID, ProjectID: proj, Admin: c.IsAdmin()}
	for _, f := range []struct {
		key string
		dst *string
	}{{"name", &req.Name}, {"description", &req.Description}, {"mac_address", &req.MAC},
		{"device_id", &req.DeviceID}, {"device_owner", &req.DeviceOwner}, {"binding:host_id", &req.HostID}} {
		v, err := a.str(f.key)
		if err != nil {
			return bad(err)
		}
		if v != nil {
			*f.dst = *v
		}
	}
	if req.AdminStateUp, err = a.boolean("admin_state_up"); err != nil {
		return bad(err)
	}
	if req.PortSecurity, err = a.boolean("port_security_enabled"); err != nil {
		return bad(err)
	}
	if req.SecurityGroups, err = portGroupsAttr(a); err != nil {
		return bad(err)
	}
	ips, err := fixedIPs(a)
	if err != nil {
		return bad(err)
	}
	if ips != nil {
		req.FixedIPs = *ips
	}
	pairs, err := addressPairs(a)
	if err != nil {
		return bad(err)
	}
	if pairs != nil {
		req.AllowedAddressPairs = *pairs
	}
	if req.HostID != "" && !c.IsAdmin() {
		return req, func() { forbidden(w, "rule:create_port and rule:create_port:binding:host_id") }
	}
	if prof, err := bindingProfile(a, c, "create_port"); err != nil {
		return req, func() { writeFault(w, err) }
	} else if prof != nil {
		req.BindingProfile = *prof
	}
	n, err := s.st.GetNetwork(r.Context(), req.NetworkID)
	if err == nil && !canSeeNetwork(c, n) {
		err = store.ErrNetworkNotFound.New("Network " + req.NetworkID + " could not be found.")
	}
	if err != nil {
		return req, func() { s.storeError(w, r, err) }
	}
	if err := s.checkDevice(r.Context(), c, n, "create_port", req.DeviceID, req.DeviceOwner); err != nil {
		return req, func() { s.storeError(w, r, err) }
	}
	// On a shared network only its owner (and admins) pick addresses and
	// MACs, or turn port security off (no anti-spoofing flows on the port,
	// so it could ARP-spoof the network's gateway), as in Neutron's policy.
	if !owns(c, n.ProjectID) {
		if req.PortSecurity != nil && !*req.PortSecurity {
			return req, func() { forbidden(w, "rule:create_port and rule:create_port:port_security_enabled") }
		}
		if req.MAC != "" {
			return req, func() { forbidden(w, "rule:create_port and rule:create_port:mac_address") }
		}
		if len(req.AllowedAddressPairs) > 0 {
			return req, func() { forbidden(w, "rule:create_port and rule:create_port:allowed_address_pairs") }
		}
		for _, f := range req.FixedIPs {
			if f.IP != "" {
				return req, func() { forbidden(w, "rule:create_port and rule:create_port:fixed_ips:ip_address") }
			}
		}
	}
	return req, nil
}

func (s *Service) updatePort(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	cur, n, ok := s.visiblePort(w, r, id)
	if !ok {
		return
	}
	if !owns(c, cur.ProjectID) && !owns(c, n.ProjectID) {
		forbidden(w, "rule:update_port")
		return
	}
	if !canWrite(w, c, "rule:update_port") {
		return
	}
	rev, ok := ifMatch(w, r)
	if !ok {
		return
	}
	a, ok := readUpdate(w, r, "port", []string{"network_id", "project_id", "tenant_id"}, portCreateAttrs)
	if !ok {
		return
	}
	if err := checkUnsupported(a); err != nil {
		invalidInput(w, err.Error())
		return
	}
	u := store.PortUpdate{Admin: c.IsAdmin(), IfRevision: rev}
	var err error
	for _, f := range []struct {
		key string
		dst **string
	}{{"name", &u.Name}, {"description", &u.Description}, {"device_id", &u.DeviceID},
		{"device_owner", &u.DeviceOwner}, {"binding:host_id", &u.HostID}, {"mac_address", &u.MAC}} {
		if *f.dst, err = a.str(f.key); err != nil {
			invalidInput(w, err.Error())
			return
		}
	}
	if u.AdminStateUp, err = a.boolean("admin_state_up"); err != nil {
		invalidInput(w, err.Error())
		return
	}
	if u.PortSecurity, err = a.boolean("port_security_enabled"); err != nil {
		invalidInput(w, err.Error())
		return
	}
	if u.FixedIPs, err = fixedIPs(a); err != nil {
		invalidInput(w, err.Error())
		return
	}
	if u.SecurityGroups, err = portGroupsAttr(a); err != nil {
		invalidInput(w, err.Error())
		return
	}
	if u.AllowedAddressPairs, err = addressPairs(a); err != nil {
		invalidInput(w, err.Error())
		return
	}
	if u.AllowedAddressPairs != nil && !owns(c, n.ProjectID) {
		// Pairs let a port send from other addresses: on a shared network
		// only its owner grants that, as Neutron's policy has it.
		forbidden(w, "rule:update_port and rule:update_port:allowed_address_pairs")
		return
	}
	prof, err := bindingProfile(a, c, "update_port")
	if err != nil {
		writeFault(w, err)
		return
	}
	u.BindingProfile = prof
	if changed(u.DeviceID, cur.DeviceID) || changed(u.DeviceOwner, cur.DeviceOwner) {
		if cur.ComputeBound {
			// Its server's NIC: only the Compute API (interface detach,
			// server delete) lets go of it, unplugging it first.
			writeFault(w, portInUse(cur))
			return
		}
		dev, owner := cur.DeviceID, cur.DeviceOwner
		if u.DeviceID != nil {
			dev = *u.DeviceID
		}
		if u.DeviceOwner != nil {
			owner = *u.DeviceOwner
		}
		if err := s.checkDevice(r.Context(), c, n, "update_port", dev, owner); err != nil {
			s.storeError(w, r, err)
			return
		}
	}
	if u.HostID != nil && *u.HostID != cur.BindingHostID && !c.IsAdmin() {
		forbidden(w, "rule:update_port and rule:update_port:binding:host_id")
		return
	}
	if u.MAC != nil && *u.MAC != cur.MACAddress && !c.IsAdmin() {
		forbidden(w, "rule:update_port and rule:update_port:mac_address")
		return
	}
	if u.PortSecurity != nil && !*u.PortSecurity && !owns(c, n.ProjectID) {
		forbidden(w, "rule:update_port and rule:update_port:port_security_enabled")
		return
	}
	if u.FixedIPs != nil && !owns(c, n.ProjectID) {
		for _, f := range *u.FixedIPs {
			if f.IP != "" {
				forbidden(w, "rule:update_port and rule:update_port:fixed_ips:ip_address")
				return
			}
		}
	}
	if cur.ComputeBound && s.updater != nil && plugChange(cur, u) {
		s.updatePluggedPort(w, r, cur, u)
		return
	}
	p, err := s.st.UpdatePort(r.Context(), id, u)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if u.SecurityGroups != nil || plugChange(cur, u) {
		s.membersChanged(r.Context(), p.ID, cur.SecurityGroups, p.SecurityGroups)
	}
	showOne(w, r, http.StatusOK, "port", portView(p, c.IsAdmin()))
}

// membersChanged tells the hosts about a port whose groups or addresses
// changed: the port itself, and every port whose rules name one of its
// old or new groups as remote group.
func (s *Service) membersChanged(ctx context.Context, port string, old, cur []string) {
	if s.sgNotifier == nil {
		return
	}
	groups := append(slices.Clone(old), cur...)
	watchers, err := s.st.SecurityGroupWatchers(ctx, groups)
	if err != nil {
		s.log.ErrorContext(ctx, "ports watching security groups", "port", port, "error", err)
	}
	s.sgChanged(ctx, append(watchers, port))
}

// plugChange: u changes what the host applies for the port (addresses,
// MAC, anti-spoofing flows and the address pairs they allow).
func plugChange(cur *store.Port, u store.PortUpdate) bool {
	return u.FixedIPs != nil || changed(u.MAC, cur.MACAddress) || u.AllowedAddressPairs != nil ||
		(u.PortSecurity != nil && *u.PortSecurity != cur.PortSecurityEnabled)
}

// updatePluggedPort updates a server's NIC so that no address is free
// while the host still answers for it: a busy server is a 409 and
// nothing changes; the port first gets its new addresses while keeping
// the ones it drops, the agent re-plugs the NIC with the new ones, and
// only then are the dropped ones released. A failed re-plug puts the
// port back as it was (and the host with it) and answers the error.
func (s *Service) updatePluggedPort(w http.ResponseWriter, r *http.Request, cur *store.Port, u store.PortUpdate) {
	ctx := r.Context()
	c := creds(r)
	if err := s.updater.PortPlugReady(ctx, cur); err != nil {
		s.detachFailed(w, r, err)
		return
	}
	var drop []string
	if u.FixedIPs != nil {
		held := slices.Clone(*u.FixedIPs)
		for _, a := range cur.FixedIPs {
			kept := slices.ContainsFunc(*u.FixedIPs, func(f store.FixedIPRequest) bool {
				return f.IP == a.IPAddress && (f.SubnetID == "" || f.SubnetID == a.SubnetID)
			})
			if !kept {
				drop = append(drop, a.IPAddress)
				held = append(held, store.FixedIPRequest{SubnetID: a.SubnetID, IP: a.IPAddress})
			}
		}
		u.FixedIPs = &held
	}
	p, err := s.st.UpdatePort(ctx, cur.ID, u)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	bg := context.WithoutCancel(ctx)
	if err := s.updater.ReplugPort(ctx, p, drop); err != nil {
		s.rollBackPort(bg, cur)
		s.detachFailed(w, r, err)
		return
	}
	if len(drop) > 0 {
		final := make([]store.FixedIPRequest, 0, len(p.FixedIPs))
		for _, a := range p.FixedIPs {
			if !slices.Contains(drop, a.IPAddress) {
				final = append(final, store.FixedIPRequest{SubnetID: a.SubnetID, IP: a.IPAddress})
			}
		}
		if p, err = s.st.UpdatePort(bg, cur.ID, store.PortUpdate{FixedIPs: &final, Admin: true}); err != nil {
			s.storeError(w, r, fmt.Errorf("release the old addresses of port %s: %w", cur.ID, err))
			return
		}
	}
	s.membersChanged(ctx, p.ID, cur.SecurityGroups, p.SecurityGroups)
	showOne(w, r, http.StatusOK, "port", portView(p, c.IsAdmin()))
}

// rollBackPort puts back what a failed update of a plugged port changed
// (its new addresses are released, the kept old ones stay) and re-plugs
// it so; when even that fails, drift repair plugs what the database says.
func (s *Service) rollBackPort(ctx context.Context, old *store.Port) {
	ips := make([]store.FixedIPRequest, 0, len(old.FixedIPs))
	for _, a := range old.FixedIPs {
		ips = append(ips, store.FixedIPRequest{SubnetID: a.SubnetID, IP: a.IPAddress})
	}
	pairs := old.AddressPairs()
	p, err := s.st.UpdatePort(ctx, old.ID, store.PortUpdate{Name: &old.Name, Description: &old.Description,
		AdminStateUp: &old.AdminStateUp, PortSecurity: &old.PortSecurityEnabled, MAC: &old.MACAddress,
		HostID: &old.BindingHostID, FixedIPs: &ips, AllowedAddressPairs: &pairs, Admin: true})
	if err != nil {
		s.log.Error("roll back port after a failed re-plug", "port", old.ID, "error", err)
		return
	}
	if err := s.updater.ReplugPort(ctx, p, nil); err != nil {
		s.log.Error("re-plug port after a rolled-back update", "port", old.ID, "error", err)
	}
}

func changed(v *string, cur string) bool { return v != nil && *v != cur }

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// portInUse is Neutron's PortInUse for a port its server holds.
func portInUse(p *store.Port) error {
	return errdefs.Conflictf("Unable to complete operation on port %s for network %s. Port already has an attached device %s.",
		p.ID, p.NetworkID, p.DeviceID).WithReason("PortInUse")
}

// bindingProfile reads binding:profile: nil when absent, its JSON
// encoding ("" for {} or null) otherwise. A non-empty one is admins'
// (Neutron's <op>:binding:profile is admin-only); Capsule's OVS binding
// reads nothing from it, it is kept and shown to admins as in Neutron.
func bindingProfile(a attrs, c *auth.Credentials, op string) (*string, error) {
	if raw, present := a["binding:profile"]; present && isNull(raw) {
		none := "" // null clears it, as {} does
		return &none, nil
	}
	var v map[string]any
	ok, err := a.decode("binding:profile", &v)
	if err != nil {
		return nil, store.ErrInvalidInput.New("Invalid input for operation: " + err.Error() + ".")
	}
	if !ok {
		return nil, nil
	}
	if len(v) > 0 && !c.IsAdmin() {
		return nil, policyRefused("rule:" + op + " and rule:" + op + ":binding:profile")
	}
	enc := ""
	if len(v) > 0 {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, store.ErrInvalidInput.New("Invalid input for operation: binding:profile must be a JSON object.")
		}
		if len(b) > 4096 {
			return nil, store.ErrInvalidInput.New("Invalid input for operation: binding:profile is longer than 4096 bytes.")
		}
		enc = string(b)
	}
	return &enc, nil
}

// checkDevice applies Neutron's rules to a device_id/device_owner a
// non-admin writes: a network:* owner only on a network the caller owns
// (<op>:device_owner, 403), and no device_id naming another project's
// server (DeviceIDNotOwnedByTenant, 409, as Neutron answers for another
// tenant's router). Either way the port stays a label: a server's NICs
// are only the ports the Compute API bound (store.ServerPorts).
func (s *Service) checkDevice(ctx context.Context, c *auth.Credentials, n *store.Network, op, deviceID, deviceOwner string) error {
	if c.IsAdmin() {
		return nil
	}
	if strings.HasPrefix(deviceOwner, "network:") && !owns(c, n.ProjectID) {
		return policyRefused("rule:" + op + " and rule:" + op + ":device_owner")
	}
	if deviceID == "" {
		return nil
	}
	project, ok, err := s.st.InstanceProject(ctx, deviceID)
	if err != nil {
		return err
	}
	if ok && project != c.ProjectID {
		return errdefs.Conflictf("The following device_id %s is not owned by your tenant or matches another tenants router.",
			deviceID).WithReason("DeviceIDNotOwnedByTenant")
	}
	return nil
}

// deletePort deletes a port the caller owns (or whose network it owns).
// A port the Compute API bound to a server is that server's NIC: a member
// gets 409 (detach it through the Compute API), as Neutron refuses to
// delete a port a service owns; an admin's delete unplugs it through the
// agent first (the interface detach), then frees its address.
func (s *Service) deletePort(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	cur, n, ok := s.visiblePort(w, r, id)
	if !ok {
		return
	}
	if (!owns(c, cur.ProjectID) && !owns(c, n.ProjectID)) || !c.CanWrite() {
		forbidden(w, "rule:delete_port")
		return
	}
	if !revisionMatches(w, r, cur.RevisionNumber) {
		return
	}
	if cur.ComputeBound {
		if !c.IsAdmin() || s.detacher == nil {
			writeFault(w, errdefs.Conflictf("Port %s cannot be deleted directly via the port API: it is a NIC of server %s; "+
				"detach it with the Compute API (DELETE /servers/%s/os-interface/%s).", cur.ID, cur.DeviceID, cur.DeviceID, cur.ID).
				WithReason("ServicePortInUse"))
			return
		}
		if err := s.detacher.DetachPort(r.Context(), cur); err != nil {
			s.detachFailed(w, r, err)
			return
		}
	}
	if err := s.st.ReleasePort(r.Context(), id); err != nil && !(cur.ComputeBound && errors.Is(err, store.ErrPortNotFound)) {
		s.storeError(w, r, err)
		return
	}
	s.membersChanged(r.Context(), id, cur.SecurityGroups, nil)
	w.WriteHeader(http.StatusNoContent)
}

// detachFailed answers a failed unplug in Neutron's format: the Compute
// API's classified errors keep their status and message.
func (s *Service) detachFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch k := errdefs.KindOf(err); {
	case errdefs.Reason(err) != "":
		writeFault(w, err)
	case k == errdefs.ErrConflict:
		writeError(w, statusOf(k), "PortInUse", errdefs.Message(err))
	case k == errdefs.ErrUnavailable:
		writeError(w, statusOf(k), "ServiceUnavailable", errdefs.Message(err))
	default:
		s.storeError(w, r, err)
	}
}
