package portal

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// Networks: the project creates and deletes its own networks and
// subnets (the cloud picks the VLAN), and sees a network's ports with
// the server holding each address. Shared networks are shown, not
// changed. Neutron decides as everywhere: another project's network is
// its 404, a reader's change its 403.

// Subnet is a Neutron subnet.
type Subnet struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CIDR      string `json:"cidr"`
	Gateway   string `json:"gateway_ip"`
	IPVersion int    `json:"ip_version"`
	DHCP      bool   `json:"enable_dhcp"`
	Pools     []struct {
		Start string `json:"start"`
		End   string `json:"end"`
	} `json:"allocation_pools"`
}

// PoolList says the subnet's allocation pools ("a - b, c - d").
func (sn Subnet) PoolList() string {
	parts := make([]string, 0, len(sn.Pools))
	for _, p := range sn.Pools {
		parts = append(parts, p.Start+" – "+p.End)
	}
	return joinOr(parts, "-")
}

// Port is a Neutron port.
type Port struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	MAC      string `json:"mac_address"`
	DeviceID string `json:"device_id"`
	Owner    string `json:"device_owner"`
	FixedIPs []struct {
		IP string `json:"ip_address"`
	} `json:"fixed_ips"`
	// Server is the name of the server holding the port ("" for none
	// or one this project cannot see).
	Server string `json:"-"`
}

// IPs lists the port's addresses.
func (p Port) IPs() string {
	ips := make([]string, 0, len(p.FixedIPs))
	for _, f := range p.FixedIPs {
		ips = append(ips, f.IP)
	}
	return joinOr(ips, "-")
}

// OnServer says a server holds the port (Nova's device owners).
func (p Port) OnServer() bool { return strings.HasPrefix(p.Owner, "compute:") && p.DeviceID != "" }

// networkData is a network's page.
type networkData struct {
	Net     Network
	Mine    bool
	Subnets []Subnet
	Ports   []Port
	Segment *int // the VLAN, where the token may see it (admins)
	Form    map[string]string
}

func (s *Server) network(ctx context.Context, sess *session, id string) (*Network, *int, error) {
	var body struct {
		Network struct {
			Network
			Segment *int `json:"provider:segmentation_id"`
		} `json:"network"`
	}
	_, err := s.up.do(ctx, "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/networks/"+url.PathEscape(id), nil, &body)
	return &body.Network.Network, body.Network.Segment, err
}

func (s *Server) networkPage(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	ctx := r.Context()
	n, seg, err := s.network(ctx, sess, id)
	if err != nil {
		s.fail(w, r, sess, "Network", err)
		return
	}
	d := networkData{Net: *n, Mine: n.Project == sess.ProjectID, Segment: seg}
	var sb struct {
		Subnets []Subnet `json:"subnets"`
	}
	if _, err := s.up.do(ctx, "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/subnets?network_id="+url.QueryEscape(id), nil, &sb); err != nil {
		s.fail(w, r, sess, "Network", err)
		return
	}
	d.Subnets = sb.Subnets
	var pb struct {
		Ports []Port `json:"ports"`
	}
	if _, err := s.up.do(ctx, "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/ports?network_id="+url.QueryEscape(id), nil, &pb); err != nil {
		s.fail(w, r, sess, "Network", err)
		return
	}
	// One list of the project's servers names every port's server.
	var srv struct {
		Servers []struct{ ID, Name string } `json:"servers"`
	}
	if _, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers?limit=1000", nil, &srv); err == nil {
		byID := map[string]string{}
		for _, sv := range srv.Servers {
			byID[sv.ID] = sv.Name
		}
		for i := range pb.Ports {
			pb.Ports[i].Server = byID[pb.Ports[i].DeviceID]
		}
	}
	sort.Slice(pb.Ports, func(i, j int) bool { return pb.Ports[i].IPs() < pb.Ports[j].IPs() })
	d.Ports = pb.Ports
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "network "+id); ok {
		status, errMsg, d.Form = f.Status, f.Error, f.Form
	}
	s.render(w, r, status, "network", view{Title: "Network " + n.Name, Nav: "networks", Sess: sess, Data: d, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done"))})
}

// networksData is the Networks page.
type networksData struct {
	Networks []Network
	Project  string
	Name     string
}

func (s *Server) networksPage(w http.ResponseWriter, r *http.Request, sess *session) {
	nets, err := s.networks(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Networks", err)
		return
	}
	d := networksData{Networks: nets, Project: sess.ProjectID}
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "networks"); ok {
		status, errMsg, d.Name = f.Status, f.Error, f.Form["name"]
	}
	s.render(w, r, status, "networks", view{Title: "Networks", Nav: "networks", Sess: sess, Data: d, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done"))})
}

// networkRefused sends a refused form back to page (POST-redirect-GET);
// a missing network is a page of its own.
func (s *Server) networkRefused(w http.ResponseWriter, r *http.Request, sess *session, page, to string, err error, form map[string]string) {
	st := statusOf(err)
	if st == http.StatusUnauthorized || st == http.StatusNotFound || st == 0 {
		s.fail(w, r, sess, "Network", err)
		return
	}
	s.sess.setFlash(sess, page, flash{Status: st, Error: messageOf(err), Form: form})
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func (s *Server) networkCreatePost(w http.ResponseWriter, r *http.Request, sess *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	form := map[string]string{"name": name}
	if name == "" {
		s.networkRefused(w, r, sess, "networks", "/networks", badForm("Give the network a name."), form)
		return
	}
	var body struct {
		Network struct {
			ID string `json:"id"`
		} `json:"network"`
	}
	// No provider attributes: the cloud picks the segment (a VLAN).
	_, err := s.up.do(r.Context(), "network", sess.Token, http.MethodPost, s.ep.Network+"/v2.0/networks",
		map[string]any{"network": map[string]any{"name": name, "admin_state_up": true}}, &body)
	if err != nil {
		s.networkRefused(w, r, sess, "networks", "/networks", err, form)
		return
	}
	s.log.Info("portal: network created", "user", sess.User, "project", sess.Project, "network", body.Network.ID)
	http.Redirect(w, r, "/networks/"+url.PathEscape(body.Network.ID)+"?done=net-created", http.StatusSeeOther)
}

func (s *Server) networkDeletePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	_, err := s.up.do(r.Context(), "network", sess.Token, http.MethodDelete, s.ep.Network+"/v2.0/networks/"+url.PathEscape(id), nil, nil)
	if err != nil {
		s.networkRefused(w, r, sess, "network "+id, "/networks/"+url.PathEscape(id), err, nil)
		return
	}
	http.Redirect(w, r, "/networks?done=net-deleted", http.StatusSeeOther)
}

func badForm(msg string) error {
	return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: msg}
}

// subnetCreatePost adds a subnet: a CIDR, optionally a gateway and one
// allocation pool (Neutron's defaults otherwise: the first address is
// the gateway, the rest the pool).
func (s *Server) subnetCreatePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	f := map[string]string{}
	for _, k := range []string{"name", "cidr", "gateway", "pool_start", "pool_end", "no_gateway"} {
		f[k] = strings.TrimSpace(r.PostFormValue(k))
	}
	to := "/networks/" + url.PathEscape(id)
	_, ipnet, err := net.ParseCIDR(f["cidr"])
	if err != nil {
		s.networkRefused(w, r, sess, "network "+id, to, badForm("The CIDR "+quoteOr(f["cidr"])+" is not a network such as 10.20.0.0/24."), f)
		return
	}
	sn := map[string]any{"network_id": id, "cidr": f["cidr"], "ip_version": 4, "enable_dhcp": true}
	if ipnet.IP.To4() == nil {
		sn["ip_version"] = 6
	}
	if f["name"] != "" {
		sn["name"] = f["name"]
	}
	switch {
	case f["no_gateway"] != "":
		sn["gateway_ip"] = nil
	case f["gateway"] != "":
		sn["gateway_ip"] = f["gateway"]
	}
	if (f["pool_start"] == "") != (f["pool_end"] == "") {
		s.networkRefused(w, r, sess, "network "+id, to, badForm("An allocation pool needs its first and its last address."), f)
		return
	}
	if f["pool_start"] != "" {
		sn["allocation_pools"] = []map[string]string{{"start": f["pool_start"], "end": f["pool_end"]}}
	}
	if _, err := s.up.do(r.Context(), "network", sess.Token, http.MethodPost, s.ep.Network+"/v2.0/subnets", map[string]any{"subnet": sn}, nil); err != nil {
		s.networkRefused(w, r, sess, "network "+id, to, err, f)
		return
	}
	http.Redirect(w, r, to+"?done=subnet-created", http.StatusSeeOther)
}

func quoteOr(s string) string {
	if s == "" {
		return "(empty)"
	}
	return "\"" + s + "\""
}

func (s *Server) subnetDeletePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id, sid := r.PathValue("id"), r.PathValue("subnet")
	to := "/networks/" + url.PathEscape(id)
	// The subnet must be the network's: a form naming another network's
	// subnet is refused rather than deleting it from this page.
	var raw struct {
		Subnet struct {
			NetworkID string `json:"network_id"`
		} `json:"subnet"`
	}
	if _, err := s.up.do(r.Context(), "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/subnets/"+url.PathEscape(sid), nil, &raw); err != nil {
		s.networkRefused(w, r, sess, "network "+id, to, err, nil)
		return
	}
	if raw.Subnet.NetworkID != id {
		s.fail(w, r, sess, "Network", &APIError{Status: http.StatusNotFound, Service: "network", Message: "Subnet " + sid + " could not be found on this network."})
		return
	}
	if _, err := s.up.do(r.Context(), "network", sess.Token, http.MethodDelete, s.ep.Network+"/v2.0/subnets/"+url.PathEscape(sid), nil, nil); err != nil {
		s.networkRefused(w, r, sess, "network "+id, to, err, nil)
		return
	}
	http.Redirect(w, r, to+"?done=subnet-deleted", http.StatusSeeOther)
}
