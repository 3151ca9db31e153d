package network

import (
	"context"
	"net/http"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// subnetView is §4.4's subnet object.
func subnetView(sn *store.Subnet) view {
	var gw any
	if sn.GatewayIP != nil {
		gw = *sn.GatewayIP
	}
	return view{
		"id": sn.ID, "name": sn.Name, "network_id": sn.NetworkID, "project_id": sn.ProjectID, "tenant_id": sn.ProjectID,
		"ip_version": sn.IPVersion, "cidr": sn.CIDR, "gateway_ip": gw, "allocation_pools": sn.Pools(),
		"enable_dhcp": sn.EnableDHCP, "dns_nameservers": sn.DNS(), "host_routes": sn.Routes(),
		"ipv6_ra_mode": nil, "ipv6_address_mode": nil, "subnetpool_id": nil, "segment_id": nil,
		"service_types": []string{}, "description": sn.Description, "tags": store.DecodeTags(sn.Tags),
		"created_at": ts(sn.CreatedAt), "updated_at": ts(sn.UpdatedAt), "revision_number": sn.RevisionNumber,
	}
}

// canSeeSubnet: own subnets, and every subnet of a network the caller
// owns or that is shared.
func canSeeSubnet(c *auth.Credentials, sn *store.Subnet, n *store.Network) bool {
	return c.IsAdmin() || sn.ProjectID == c.ProjectID || (n != nil && (n.Shared || n.ProjectID == c.ProjectID))
}

// visibleSubnet loads a subnet and its network; false after answering.
func (s *Service) visibleSubnet(w http.ResponseWriter, r *http.Request, id string) (*store.Subnet, *store.Network, bool) {
	sn, err := s.st.GetSubnet(r.Context(), id)
	var n *store.Network
	if err == nil {
		n, err = s.st.GetNetwork(r.Context(), sn.NetworkID)
	}
	if err == nil && !canSeeSubnet(creds(r), sn, n) {
		err = store.ErrSubnetNotFound.New("Subnet " + id + " could not be found.")
	}
	if err != nil {
		s.storeError(w, r, err)
		return nil, nil, false
	}
	return sn, n, true
}

func (s *Service) networksByID(ctx context.Context) (map[string]*store.Network, error) {
	nets, err := s.st.ListNetworks(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*store.Network, len(nets))
	for i := range nets {
		out[nets[i].ID] = &nets[i]
	}
	return out, nil
}

func (s *Service) listSubnets(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	nets, err := s.networksByID(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	subs, err := s.st.ListSubnets(r.Context(), "")
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var views []view
	for i := range subs {
		if canSeeSubnet(c, &subs[i], nets[subs[i].NetworkID]) {
			views = append(views, subnetView(&subs[i]))
		}
	}
	listQuery(w, r, "subnets", views, keysOf(subnetView(&store.Subnet{})), func(id string) {
		writeFault(w, errdefs.NotFound("Subnet "+id+" could not be found.").WithReason("SubnetNotFound"))
	})
}

func (s *Service) getSubnet(w http.ResponseWriter, r *http.Request) {
	sn, _, ok := s.visibleSubnet(w, r, r.PathValue("id"))
	if !ok {
		return
	}
	showOne(w, r, http.StatusOK, "subnet", subnetView(sn))
}

var subnetCreateAttrs = []string{"network_id", "cidr", "name", "description", "ip_version", "gateway_ip",
	"allocation_pools", "dns_nameservers", "host_routes", "enable_dhcp", "project_id", "tenant_id",
	"subnetpool_id", "ipv6_ra_mode", "ipv6_address_mode", "service_types", "segment_id", "use_default_subnetpool",
	"dns_publish_fixed_ip", "tags"}

func (s *Service) createSubnets(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "rule:create_subnet") {
		return
	}
	objs, bulk, err := readBody(r, "subnet", "subnets")
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	var created []view
	fail := func(answer func()) {
		for _, v := range created {
			_ = s.st.DeleteSubnet(context.WithoutCancel(r.Context()), v["id"].(string))
		}
		answer()
	}
	for _, a := range objs {
		sn, answer := s.subnetFromRequest(w, r, a, c)
		if answer != nil {
			fail(answer)
			return
		}
		if err := s.st.CreateSubnet(r.Context(), sn, s.quotaGuard(sn.ProjectID, "subnet")); err != nil {
			fail(func() { s.storeError(w, r, err) })
			return
		}
		created = append(created, subnetView(sn))
	}
	if bulk {
		httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"subnets": created})
		return
	}
	showOne(w, r, http.StatusCreated, "subnet", created[0])
}

// subnetFromRequest checks a create body; a non-nil answer writes the
// error response.
func (s *Service) subnetFromRequest(w http.ResponseWriter, r *http.Request, a attrs, c *auth.Credentials) (*store.Subnet, func()) {
	bad := func(err error) (*store.Subnet, func()) { return nil, func() { invalidInput(w, err.Error()) } }
	if err := a.unknown(subnetCreateAttrs...); err != nil {
		return nil, func() { badRequest(w, err.Error()) }
	}
	proj, ok, err := ownerProject(a, c.ProjectID, c.IsAdmin())
	if err != nil {
		return bad(err)
	}
	if !ok {
		return nil, func() { forbidden(w, "rule:create_subnet") }
	}
	netID, err := a.str("network_id")
	if err != nil {
		return bad(err)
	}
	if netID == nil || *netID == "" {
		return nil, func() { badRequest(w, "Failed to parse request. Required attribute 'network_id' not specified") }
	}
	cidr, err := a.str("cidr")
	if err != nil {
		return bad(err)
	}
	if cidr == nil {
		return nil, func() { badRequest(w, "Failed to parse request. Required attribute 'cidr' not specified") }
	}
	for _, k := range []string{"subnetpool_id", "ipv6_ra_mode", "ipv6_address_mode", "segment_id"} {
		if _, v, err := a.nullableStr(k); err != nil || v != nil {
			return bad(inputErr("%s is not supported", k))
		}
	}
	if err := a.emptyList("service_types"); err != nil {
		return bad(err)
	}
	sn := &store.Subnet{NetworkID: *netID, ProjectID: proj, CIDR: *cidr, IPVersion: 4, EnableDHCP: true, RevisionNumber: 0}
	for _, f := range []struct {
		key string
		dst *string
	}{{"name", &sn.Name}, {"description", &sn.Description}} {
		v, err := a.str(f.key)
		if err != nil {
			return bad(err)
		}
		if v != nil {
			*f.dst = *v
		}
	}
	if v, err := a.integer("ip_version"); err != nil {
		return bad(err)
	} else if v != nil {
		sn.IPVersion = *v
	}
	if v, err := a.boolean("enable_dhcp"); err != nil {
		return bad(err)
	} else if v != nil {
		sn.EnableDHCP = *v
	}
	gwPresent, gw, err := a.nullableStr("gateway_ip")
	if err != nil {
		return bad(err)
	}
	sn.GatewayIP = gw
	var pools []store.AllocationPool
	var dns []string
	var routes []store.HostRoute
	if _, err := a.decode("allocation_pools", &pools); err != nil {
		return bad(err)
	}
	if _, err := a.decode("dns_nameservers", &dns); err != nil {
		return bad(err)
	}
	if _, err := a.decode("host_routes", &routes); err != nil {
		return bad(err)
	}
	n, err := s.st.GetNetwork(r.Context(), *netID)
	if err == nil && !canSeeNetwork(c, n) {
		err = store.ErrNetworkNotFound.New("Network " + *netID + " could not be found.")
	}
	if err != nil {
		return nil, func() { s.storeError(w, r, err) }
	}
	if !owns(c, n.ProjectID) {
		return nil, func() { forbidden(w, "rule:create_subnet and rule:create_subnet:network_id") }
	}
	if err := store.ValidateSubnet(sn, !gwPresent, pools, dns, routes); err != nil {
		return nil, func() { s.storeError(w, r, err) }
	}
	return sn, nil
}

func (s *Service) updateSubnet(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	cur, n, ok := s.visibleSubnet(w, r, id)
	if !ok {
		return
	}
	if !owns(c, cur.ProjectID) && !owns(c, n.ProjectID) {
		forbidden(w, "rule:update_subnet")
		return
	}
	if !canWrite(w, c, "rule:update_subnet") {
		return
	}
	rev, ok := ifMatch(w, r)
	if !ok {
		return
	}
	a, ok := readUpdate(w, r, "subnet", []string{"cidr", "network_id", "ip_version", "project_id", "tenant_id", "subnetpool_id"},
		[]string{"name", "description", "gateway_ip", "allocation_pools", "dns_nameservers", "host_routes",
			"enable_dhcp", "service_types", "segment_id", "dns_publish_fixed_ip"})
	if !ok {
		return
	}
	name, err1 := a.str("name")
	desc, err2 := a.str("description")
	dhcp, err3 := a.boolean("enable_dhcp")
	gwPresent, gw, err4 := a.nullableStr("gateway_ip")
	var pools []store.AllocationPool
	var dns []string
	var routes []store.HostRoute
	hasPools, err5 := a.decode("allocation_pools", &pools)
	hasDNS, err6 := a.decode("dns_nameservers", &dns)
	hasRoutes, err7 := a.decode("host_routes", &routes)
	for _, err := range []error{err1, err2, err3, err4, err5, err6, err7} {
		if err != nil {
			invalidInput(w, err.Error())
			return
		}
	}
	sn, err := s.st.UpdateSubnet(r.Context(), id, func(sn *store.Subnet) error {
		if err := store.CheckRevision(rev, sn.RevisionNumber); err != nil {
			return err
		}
		if name != nil {
			sn.Name = *name
		}
		if desc != nil {
			sn.Description = *desc
		}
		if dhcp != nil {
			sn.EnableDHCP = *dhcp
		}
		if gwPresent {
			sn.GatewayIP = gw
		}
		if !hasPools {
			pools = sn.Pools()
		}
		if !hasDNS {
			dns = sn.DNS()
		}
		if !hasRoutes {
			routes = sn.Routes()
		}
		if hasDNS && dns == nil {
			dns = []string{}
		}
		return store.ValidateSubnet(sn, false, nonNilPools(pools), dns, routes)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	showOne(w, r, http.StatusOK, "subnet", subnetView(sn))
}

func nonNilPools(p []store.AllocationPool) []store.AllocationPool {
	if p == nil {
		return []store.AllocationPool{}
	}
	return p
}

func (s *Service) deleteSubnet(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	cur, n, ok := s.visibleSubnet(w, r, id)
	if !ok {
		return
	}
	if (!owns(c, cur.ProjectID) && !owns(c, n.ProjectID)) || !c.CanWrite() {
		forbidden(w, "rule:delete_subnet")
		return
	}
	if !revisionMatches(w, r, cur.RevisionNumber) {
		return
	}
	if err := s.st.DeleteSubnet(r.Context(), id); err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
