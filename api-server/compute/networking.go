package compute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// nicRequest is one entry of a create request's "networks": a network
// (optionally with a fixed IP) or an existing port.
type nicRequest struct {
	NetworkID string
	FixedIP   string
	PortID    string
	// SecurityGroups of a new port (nil: the project's default group).
	SecurityGroups *[]string
}

// fixedIPInUse is the reason of a requested fixed IP that another port
// holds (Nova's FixedIpAlreadyInUse): a 400 on create, a 409 on attach.
const fixedIPInUse = "FixedIpAlreadyInUse"

// resolveNICs turns the "networks" field of a create request into NIC
// requests, with Nova's rules: absent or [] below 2.37 (and "auto" from
// 2.37) mean "the one network the project can use" (none: no NIC, several:
// 409); "none" means no NIC; a list names networks or ports.
func (s *Service) resolveNICs(ctx context.Context, raw json.RawMessage, v apiVersion, maxCount int) ([]nicRequest, error) {
	if len(raw) == 0 || string(raw) == "null" {
		if v.AtLeast(37) {
			return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute server. Value: 'networks' is a required property")
		}
		return s.onlyNetwork(ctx)
	}
	var word string
	if json.Unmarshal(raw, &word) == nil {
		switch {
		case v.AtLeast(37) && word == "none":
			return nil, nil
		case v.AtLeast(37) && word == "auto":
			// Get-me-a-network: Capsule has nothing to allocate, so "auto"
			// is "the project's one network", or no NIC in a cloud without
			// networks (clients send "auto" by default from 2.37).
			return s.onlyNetwork(ctx)
		}
		return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute networks. Value: %s is not valid.", word)
	}
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errdefs.InvalidArgumentf("Bad networks format")
	}
	if len(items) == 0 {
		if v.AtLeast(37) {
			return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute networks. Value: [] is too short")
		}
		return s.onlyNetwork(ctx)
	}
	creds := auth.FromContext(ctx)
	var out []nicRequest
	for _, it := range items {
		netID, _ := it["uuid"].(string)
		portID, _ := it["port"].(string)
		fixed, _ := it["fixed_ip"].(string)
		switch {
		case portID != "":
			if maxCount > 1 {
				return nil, errdefs.InvalidArgumentf("Unable to launch multiple instances with a single configured port ID. Please launch your instance one by one with different ports.")
			}
			p, err := s.st.GetPort(ctx, portID)
			if err != nil || (p.ProjectID != creds.ProjectID && !creds.IsAdmin()) {
				return nil, errdefs.InvalidArgumentf("Port id %s could not be found.", portID)
			}
			if p.ProjectID != creds.ProjectID {
				// A server's NICs are ports of its own project (Nova's
				// PortNotUsable): an admin cannot hand one tenant's port
				// to another tenant's server.
				return nil, portNotUsable(portID)
			}
			if p.DeviceID != "" {
				return nil, errdefs.Conflictf("Port %s is still in use.", portID)
			}
			out = append(out, nicRequest{PortID: portID, NetworkID: p.NetworkID})
		case netID != "":
			if _, err := uuid.Parse(netID); err != nil {
				return nil, errdefs.InvalidArgumentf("Bad networks format: network uuid is not in proper format (%s)", netID)
			}
			n, err := s.st.GetNetwork(ctx, netID)
			if err != nil || !networkVisible(creds, n) {
				return nil, errdefs.InvalidArgumentf("Network %s could not be found.", netID)
			}
			if fixed != "" {
				if _, err := netip.ParseAddr(fixed); err != nil {
					return nil, errdefs.InvalidArgumentf("Invalid fixed IP address (%s)", fixed)
				}
				if maxCount > 1 {
					return nil, errdefs.InvalidArgumentf("max_count cannot be greater than 1 if an fixed_ip is specified.")
				}
			}
			out = append(out, nicRequest{NetworkID: netID, FixedIP: fixed})
		default:
			return nil, errdefs.InvalidArgumentf("Bad networks format: each network needs a uuid or a port")
		}
	}
	return out, nil
}

// portNotUsable is Nova's PortNotUsable for a port of another project
// than the server's.
func portNotUsable(portID string) error {
	return errdefs.InvalidArgumentf("Port %s not usable for the instance: it belongs to another project.", portID)
}

func networkVisible(c *auth.Credentials, n *store.Network) bool {
	return n.Shared || n.ProjectID == c.ProjectID || c.IsAdmin()
}

// onlyNetwork picks the single network the project can use (its own and
// shared ones), as Nova does when no network is named.
func (s *Service) onlyNetwork(ctx context.Context) ([]nicRequest, error) {
	creds := auth.FromContext(ctx)
	nets, err := s.st.ListNetworks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var usable []store.Network
	for _, n := range nets {
		if n.Shared || n.ProjectID == creds.ProjectID {
			usable = append(usable, n)
		}
	}
	switch {
	case len(usable) == 1:
		return []nicRequest{{NetworkID: usable[0].ID}}, nil
	case len(usable) > 1:
		return nil, errdefs.Conflict("Multiple possible networks found, use a Network ID to be more specific.")
	}
	return nil, nil
}

// allocateNICs gives the instance its ports: new ones on the requested
// networks (with the requested address) and the existing ones it was
// given. On failure everything done here is undone.
func (s *Service) allocateNICs(ctx context.Context, inst *store.Instance, reqs []nicRequest) ([]string, error) {
	creds := auth.FromContext(ctx)
	var owned, bound []string
	undo := func() {
		ctx := context.WithoutCancel(ctx)
		for _, id := range owned {
			_ = s.st.ReleasePort(ctx, id)
		}
		for _, id := range bound {
			_, _ = s.st.BindPort(ctx, id, "", "", "")
		}
	}
	for _, rq := range reqs {
		if rq.PortID != "" {
			if _, err := s.st.BindPort(ctx, rq.PortID, inst.ID, "compute:nova", ""); err != nil {
				undo()
				return nil, nicFault(err)
			}
			bound = append(bound, rq.PortID)
			continue
		}
		pr := store.PortRequest{NetworkID: rq.NetworkID, ProjectID: inst.ProjectID, DeviceID: inst.ID,
			DeviceOwner: "compute:nova", ComputeBound: true, Admin: creds.IsAdmin(),
			Quota: store.NetworkQuotaGuard(inst.ProjectID, "port", s.opts.DefaultPortQuota), SecurityGroups: rq.SecurityGroups}
		if rq.FixedIP != "" {
			pr.FixedIPs = []store.FixedIPRequest{{IP: rq.FixedIP}}
		}
		p, err := s.st.AllocatePort(ctx, pr)
		if err != nil {
			undo()
			if errors.Is(err, store.ErrIPAddressInUse) && rq.FixedIP != "" {
				return nil, s.fixedIPTaken(ctx, rq.NetworkID, rq.FixedIP)
			}
			return nil, nicFault(err)
		}
		owned = append(owned, p.ID)
	}
	return owned, nil
}

// fixedIPTaken is Nova's FixedIpAlreadyInUse for addr on a network. Nova
// names the instance holding it; Capsule does so only for an admin or
// when the holder is of the caller's own project, so a tenant cannot
// learn another tenant's server (or port) ids by probing addresses.
func (s *Service) fixedIPTaken(ctx context.Context, networkID, addr string) error {
	msg := fmt.Sprintf("Fixed IP address %s is already in use.", addr)
	if holder, project := s.holderOf(ctx, networkID, addr); holder != "" {
		if c := auth.FromContext(ctx); c.IsAdmin() || project == c.ProjectID {
			msg = fmt.Sprintf("Fixed IP address %s is already in use on instance %s.", addr, holder)
		}
	}
	return errdefs.InvalidArgument(msg).WithReason(fixedIPInUse)
}

// holderOf names the device holding addr on a network (Nova's message
// names the instance), or the port when it belongs to no server, with
// the project of that port; "" when it cannot tell.
func (s *Service) holderOf(ctx context.Context, networkID, addr string) (holder, project string) {
	var a store.IPAllocation
	if err := s.st.WithContext(ctx).Where("network_id = ? AND ip_address = ?", networkID, addr).First(&a).Error; err != nil {
		return "", ""
	}
	p, err := s.st.GetPort(ctx, a.PortID)
	if err != nil {
		return "", ""
	}
	if p.DeviceID == "" {
		return "port " + a.PortID, p.ProjectID
	}
	return p.DeviceID, p.ProjectID
}

// nicFault maps an IPAM error to Nova's answer: bad or taken addresses are
// the caller's mistake (400, as Nova's FixedIpAlreadyInUse), an exhausted
// pool or a MAC clash a conflict.
func nicFault(err error) error {
	if errdefs.Reason(err) == "" { // not one of the store's network errors
		return err
	}
	switch {
	case errors.Is(err, store.ErrOverQuota):
		// Nova's PortLimitExceeded (403).
		return errdefs.QuotaExceeded("Maximum number of ports exceeded")
	case errors.Is(err, store.ErrIPGenerationFailure), errors.Is(err, store.ErrMACAddressInUse):
		return errdefs.Conflict(errdefs.Message(err))
	}
	return errdefs.InvalidArgument(errdefs.Message(err))
}

// serverNICs is what views need of an instance's ports.
type serverNIC struct {
	port    store.Port
	netName string
}

func (s *Service) serverNICs(ctx context.Context, inst *store.Instance) []serverNIC {
	ports, err := s.st.ServerPorts(ctx, inst.ID, inst.ProjectID)
	if err != nil {
		s.log.Warn("ports of server", "instance", inst.ID, "error", err)
		return nil
	}
	names := map[string]string{}
	var out []serverNIC
	for _, p := range ports {
		name, ok := names[p.NetworkID]
		if !ok {
			if n, err := s.st.GetNetwork(ctx, p.NetworkID); err == nil {
				name = n.Name
			}
			if name == "" {
				name = p.NetworkID
			}
			names[p.NetworkID] = name
		}
		out = append(out, serverNIC{port: p, netName: name})
	}
	return out
}

// addressesOf is the server's "addresses": per network name, each fixed
// IP; the full view adds the OS-EXT-IPS type and MAC.
func (s *Service) addressesOf(ctx context.Context, inst *store.Instance, full bool) map[string][]map[string]any {
	return addressesFrom(s.serverNICs(ctx, inst), full)
}

// addressesFrom is addressesOf of a server whose NICs are nics.
func addressesFrom(nics []serverNIC, full bool) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, nic := range nics {
		for _, a := range nic.port.FixedIPs {
			ver := 4
			if ip, err := netip.ParseAddr(a.IPAddress); err == nil && ip.Is6() {
				ver = 6
			}
			e := map[string]any{"version": ver, "addr": a.IPAddress}
			if full {
				e["OS-EXT-IPS:type"] = "fixed"
				e["OS-EXT-IPS-MAC:mac_addr"] = nic.port.MACAddress
			}
			out[nic.netName] = append(out[nic.netName], e)
		}
	}
	return out
}

func (s *Service) serverIPs(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"addresses": s.addressesOf(r.Context(), inst, false)})
}

func (s *Service) serverIPsByNetwork(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	addrs, found := s.addressesOf(r.Context(), inst, false)[r.PathValue("net")]
	if !found {
		writeFault(w, errdefs.NotFound("Networks with that label could not be found."))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{r.PathValue("net"): addrs})
}

func (s *Service) listInterfaces(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	items := []map[string]any{}
	for _, nic := range s.serverNICs(r.Context(), inst) {
		ips := []map[string]string{}
		for _, a := range nic.port.FixedIPs {
			ips = append(ips, map[string]string{"subnet_id": a.SubnetID, "ip_address": a.IPAddress})
		}
		item := map[string]any{"port_state": nic.port.Status, "fixed_ips": ips,
			"port_id": nic.port.ID, "net_id": nic.port.NetworkID, "mac_addr": nic.port.MACAddress}
		if versionOf(r.Context()).AtLeast(70) {
			item["tag"] = nil // see attachmentView
		}
		items = append(items, item)
	}
	writeJSON(w, http.StatusOK, map[string]any{"interfaceAttachments": items})
}
