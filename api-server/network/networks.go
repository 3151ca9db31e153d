package network

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// timeFormat is Neutron's created_at/updated_at form.
const timeFormat = "2006-01-02T15:04:05Z"

func ts(t time.Time) string { return t.UTC().Format(timeFormat) }

// networkView is §4.3's network object; provider attributes only for
// admins (Neutron's policy hides them from everyone else).
func networkView(n *store.Network, subnets []string, admin bool) view {
	if subnets == nil {
		subnets = []string{}
	}
	v := view{
		"id": n.ID, "name": n.Name, "project_id": n.ProjectID, "tenant_id": n.ProjectID,
		"status": n.Status, "admin_state_up": n.AdminStateUp, "shared": n.Shared, "router:external": false,
		"subnets": subnets, "mtu": n.MTU, "port_security_enabled": n.PortSecurityEnabled,
		"availability_zone_hints": []string{}, "availability_zones": []string{"nova"},
		"ipv4_address_scope": nil, "ipv6_address_scope": nil, "is_default": false,
		"description": n.Description, "tags": store.DecodeTags(n.Tags), "created_at": ts(n.CreatedAt), "updated_at": ts(n.UpdatedAt),
		"revision_number": n.RevisionNumber,
	}
	if admin {
		v["provider:network_type"] = n.NetworkType
		v["provider:physical_network"] = n.PhysicalNetwork
		if n.NetworkType == store.NetworkTypeVLAN {
			v["provider:segmentation_id"] = n.SegmentationID
		} else {
			v["provider:segmentation_id"] = nil
		}
	}
	return v
}

func canSeeNetwork(c *auth.Credentials, n *store.Network) bool {
	return c.IsAdmin() || n.ProjectID == c.ProjectID || n.Shared
}

// visibleNetwork loads a network the caller may see; false after
// answering 404.
func (s *Service) visibleNetwork(w http.ResponseWriter, r *http.Request, id string) (*store.Network, bool) {
	n, err := s.st.GetNetwork(r.Context(), id)
	if err == nil && !canSeeNetwork(creds(r), n) {
		err = store.ErrNetworkNotFound.New("Network " + id + " could not be found.")
	}
	if err != nil {
		s.storeError(w, r, err)
		return nil, false
	}
	return n, true
}

// subnetIDs maps network id to its subnets' ids.
func (s *Service) subnetIDs(ctx context.Context, networkID string) (map[string][]string, error) {
	subs, err := s.st.ListSubnets(ctx, networkID)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, sn := range subs {
		out[sn.NetworkID] = append(out[sn.NetworkID], sn.ID)
	}
	return out, nil
}

func (s *Service) listNetworks(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	nets, err := s.st.ListNetworks(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	subs, err := s.subnetIDs(r.Context(), "")
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var views []view
	for i := range nets {
		if canSeeNetwork(c, &nets[i]) {
			views = append(views, networkView(&nets[i], subs[nets[i].ID], c.IsAdmin()))
		}
	}
	listQuery(w, r, "networks", views, keysOf(networkView(&store.Network{}, nil, c.IsAdmin())), func(id string) {
		writeFault(w, errdefs.NotFound("Network "+id+" could not be found.").WithReason("NetworkNotFound"))
	})
}

func (s *Service) getNetwork(w http.ResponseWriter, r *http.Request) {
	n, ok := s.visibleNetwork(w, r, r.PathValue("id"))
	if !ok {
		return
	}
	subs, err := s.subnetIDs(r.Context(), n.ID)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	showOne(w, r, http.StatusOK, "network", networkView(n, subs[n.ID], creds(r).IsAdmin()))
}

var networkCreateAttrs = []string{"name", "description", "admin_state_up", "shared", "project_id", "tenant_id",
	"port_security_enabled", "mtu", "router:external", "provider:network_type", "provider:physical_network",
	"provider:segmentation_id", "availability_zone_hints", "is_default", "tags", "dns_domain", "qos_policy_id", "segments"}

// flattenSegments turns a single-entry "segments" list (the multi-provider
// form gophercloud and Terraform send) into the provider attributes. A
// network has one segment in Capsule, so more are refused.
func flattenSegments(a attrs) error {
	raw, ok := a["segments"]
	if !ok {
		return nil
	}
	delete(a, "segments")
	if isNull(raw) {
		return nil
	}
	var segs []attrs
	if err := json.Unmarshal(raw, &segs); err != nil || len(segs) != 1 || segs[0] == nil {
		return inputErr("exactly one segment is supported")
	}
	for k, v := range segs[0] {
		switch k {
		case "provider:network_type", "provider:physical_network", "provider:segmentation_id":
			if a.has(k) {
				return inputErr("segments and provider attributes are mutually exclusive")
			}
			a[k] = v
		default:
			return inputErr("Unrecognized segment attribute '%s'", k)
		}
	}
	// gophercloud sends segmentation_id 0 for flat segments.
	if bytes.Equal(bytes.TrimSpace(a["provider:segmentation_id"]), []byte("0")) {
		delete(a, "provider:segmentation_id")
	}
	return nil
}

func (s *Service) createNetworks(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "rule:create_network") {
		return
	}
	objs, bulk, err := readBody(r, "network", "networks")
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	var created []view
	for _, a := range objs {
		n, err := s.networkFromRequest(a, c)
		if err == nil {
			n.RevisionNumber = 1
			err = s.st.CreateNetwork(r.Context(), n, store.VLANRange{PhysicalNetwork: s.cfg.TenantPhysicalNetwork,
				Min: s.cfg.TenantVLANMin, Max: s.cfg.TenantVLANMax}, s.quotaGuard(n.ProjectID, "network"))
		}
		if err != nil {
			// Bulk creates are all or nothing.
			for _, v := range created {
				_ = s.st.DeleteNetwork(context.WithoutCancel(r.Context()), v["id"].(string))
			}
			s.storeError(w, r, err)
			return
		}
		created = append(created, networkView(n, nil, c.IsAdmin()))
	}
	if bulk {
		if created == nil {
			created = []view{}
		}
		httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"networks": created})
		return
	}
	showOne(w, r, http.StatusCreated, "network", created[0])
}

// networkFromRequest checks a create body; its errors carry their Neutron
// type as the reason (writeFault answers them).
func (s *Service) networkFromRequest(a attrs, c *auth.Credentials) (*store.Network, error) {
	bad := func(err error) (*store.Network, error) {
		return nil, store.ErrInvalidInput.New("Invalid input for operation: " + err.Error() + ".")
	}
	if err := a.unknown(networkCreateAttrs...); err != nil {
		return nil, errdefs.InvalidArgument(err.Error()).WithReason("HTTPBadRequest")
	}
	if err := flattenSegments(a); err != nil {
		return bad(err)
	}
	proj, ok, err := ownerProject(a, c.ProjectID, c.IsAdmin())
	if err != nil {
		return bad(err)
	}
	if !ok {
		return nil, policyRefused("rule:create_network")
	}
	n := &store.Network{ProjectID: proj, AdminStateUp: true, PortSecurityEnabled: true, MTU: s.cfg.MTU}
	for _, f := range []struct {
		key string
		dst *string
	}{{"name", &n.Name}, {"description", &n.Description}} {
		v, err := a.str(f.key)
		if err != nil {
			return bad(err)
		}
		if v != nil {
			*f.dst = *v
		}
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{{"admin_state_up", &n.AdminStateUp}, {"shared", &n.Shared}, {"port_security_enabled", &n.PortSecurityEnabled}} {
		v, err := a.boolean(f.key)
		if err != nil {
			return bad(err)
		}
		if v != nil {
			*f.dst = *v
		}
	}
	if n.Shared && !c.IsAdmin() {
		return nil, policyRefused("rule:create_network and rule:create_network:shared")
	}
	if err := s.checkMTU(a, n); err != nil {
		return bad(err)
	}
	if err := checkNotExternal(a); err != nil {
		return bad(err)
	}
	if err := a.emptyList("availability_zone_hints"); err != nil {
		return bad(err)
	}
	if def, err := a.boolean("is_default"); err != nil || (def != nil && *def) {
		return bad(inputErr("is_default is only supported on external networks"))
	}
	provider := a.has("provider:network_type") || a.has("provider:physical_network") || a.has("provider:segmentation_id")
	if !provider {
		// A tenant network: the next free VLAN of the tenant range.
		n.NetworkType = store.NetworkTypeVLAN
		if s.cfg.TenantPhysicalNetwork == "" || s.cfg.TenantVLANMin < 1 {
			return nil, store.ErrNoNetworkAvailable.New("Unable to create the network. No tenant network is available for allocation.")
		}
		return n, nil
	}
	if !c.IsAdmin() {
		return nil, policyRefused("rule:create_network and rule:create_network:provider:network_type")
	}
	typStr, err := a.str("provider:network_type")
	if err != nil {
		return bad(err)
	}
	_, physnet, err := a.nullableStr("provider:physical_network")
	if err != nil {
		return bad(err)
	}
	segID, err := a.integer("provider:segmentation_id")
	if err != nil {
		return bad(err)
	}
	if typStr == nil {
		return bad(inputErr("provider:network_type required"))
	}
	n.NetworkType = *typStr
	switch n.NetworkType {
	case store.NetworkTypeVLAN, store.NetworkTypeFlat:
	default:
		return bad(inputErr("network_type value '%s' not supported", *typStr))
	}
	if physnet == nil || *physnet == "" {
		// Neutron answers 400 here; with exactly one physical network
		// there is nothing to choose, so Capsule takes it.
		if len(s.cfg.PhysicalNetworks) != 1 {
			return bad(inputErr("physical_network required for %s provider network", n.NetworkType))
		}
		n.PhysicalNetwork = s.cfg.PhysicalNetworks[0]
	} else {
		if !slices.Contains(s.cfg.PhysicalNetworks, *physnet) {
			return bad(inputErr("physical_network '%s' unknown for %s provider network", *physnet, n.NetworkType))
		}
		n.PhysicalNetwork = *physnet
	}
	switch {
	case n.NetworkType == store.NetworkTypeFlat && segID != nil:
		return bad(inputErr("segmentation_id specified for flat provider network"))
	case n.NetworkType == store.NetworkTypeVLAN && segID != nil:
		if *segID < 1 || *segID > 4094 {
			return bad(inputErr("segmentation_id out of range (1 through 4094)"))
		}
		n.SegmentationID = *segID
	case n.NetworkType == store.NetworkTypeVLAN && n.PhysicalNetwork != s.cfg.TenantPhysicalNetwork:
		return bad(inputErr("segmentation_id required for VLAN provider network on %s", n.PhysicalNetwork))
	}
	return n, nil
}

// checkMTU applies a requested MTU, which may not exceed the physical
// network's.
func (s *Service) checkMTU(a attrs, n *store.Network) error {
	mtu, err := a.integer("mtu")
	if err != nil {
		return err
	}
	if mtu != nil {
		if *mtu < 68 || *mtu > s.cfg.MTU {
			return inputErr("Requested MTU %d is not between 68 and the maximum %d", *mtu, s.cfg.MTU)
		}
		n.MTU = *mtu
	}
	return nil
}

// checkNotExternal refuses router:external true: Capsule has no routers
// or floating IPs.
func checkNotExternal(a attrs) error {
	ext, err := a.boolean("router:external")
	if err != nil {
		return err
	}
	if ext != nil && *ext {
		return inputErr("external networks are not supported")
	}
	return nil
}

func (s *Service) updateNetwork(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	cur, ok := s.visibleNetwork(w, r, id)
	if !ok {
		return
	}
	if !owns(c, cur.ProjectID) {
		forbidden(w, "rule:update_network")
		return
	}
	if !canWrite(w, c, "rule:update_network") {
		return
	}
	rev, ok := ifMatch(w, r)
	if !ok {
		return
	}
	objs, bulk, err := readBody(r, "network", "")
	if err != nil || bulk {
		badRequest(w, errText(err, "Unable to find 'network' in request body"))
		return
	}
	a := objs[0]
	if err := a.unknown("name", "description", "admin_state_up", "shared", "port_security_enabled", "mtu",
		"router:external", "provider:network_type", "provider:physical_network", "provider:segmentation_id",
		"is_default", "dns_domain", "qos_policy_id"); err != nil {
		badRequest(w, err.Error())
		return
	}
	name, err1 := a.str("name")
	desc, err2 := a.str("description")
	up, err3 := a.boolean("admin_state_up")
	shared, err4 := a.boolean("shared")
	psec, err5 := a.boolean("port_security_enabled")
	for _, err := range []error{err1, err2, err3, err4, err5, checkNotExternal(a)} {
		if err != nil {
			invalidInput(w, err.Error())
			return
		}
	}
	if shared != nil && *shared != cur.Shared && !c.IsAdmin() {
		forbidden(w, "rule:update_network and rule:update_network:shared")
		return
	}
	// Provider attributes cannot change (the agents' plumbing depends on
	// them); repeating the current values is harmless.
	if err := sameProvider(a, cur); err != nil {
		invalidInput(w, err.Error())
		return
	}
	if !c.IsAdmin() && (a.has("provider:network_type") || a.has("provider:physical_network") || a.has("provider:segmentation_id")) {
		forbidden(w, "rule:update_network:provider:network_type")
		return
	}
	n, err := s.st.UpdateNetwork(r.Context(), id, func(n *store.Network) error {
		if err := store.CheckRevision(rev, n.RevisionNumber); err != nil {
			return err
		}
		if name != nil {
			n.Name = *name
		}
		if desc != nil {
			n.Description = *desc
		}
		if up != nil {
			n.AdminStateUp = *up
		}
		if shared != nil {
			n.Shared = *shared
		}
		if psec != nil {
			n.PortSecurityEnabled = *psec
		}
		if err := s.checkMTU(a, n); err != nil {
			return store.InvalidInput("%v", err)
		}
		return nil
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	subs, err := s.subnetIDs(r.Context(), n.ID)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	showOne(w, r, http.StatusOK, "network", networkView(n, subs[n.ID], c.IsAdmin()))
}

func sameProvider(a attrs, n *store.Network) error {
	if t, err := a.str("provider:network_type"); err != nil || (t != nil && *t != n.NetworkType) {
		return inputErr("plugin does not support updating provider attributes")
	}
	if _, p, err := a.nullableStr("provider:physical_network"); err != nil || (p != nil && *p != n.PhysicalNetwork) {
		return inputErr("plugin does not support updating provider attributes")
	}
	if id, err := a.integer("provider:segmentation_id"); err != nil || (id != nil && *id != n.SegmentationID) {
		return inputErr("plugin does not support updating provider attributes")
	}
	return nil
}

func (s *Service) deleteNetwork(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	cur, ok := s.visibleNetwork(w, r, id)
	if !ok {
		return
	}
	if !owns(c, cur.ProjectID) || !c.CanWrite() {
		forbidden(w, "rule:delete_network")
		return
	}
	if !revisionMatches(w, r, cur.RevisionNumber) {
		return
	}
	if err := s.st.DeleteNetwork(r.Context(), id); err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func errText(err error, def string) string {
	if err != nil {
		return err.Error()
	}
	return def
}
