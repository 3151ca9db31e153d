package portal

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Security groups: the project's groups and their rules (Neutron), a
// server's groups (Nova's os-security-groups, addSecurityGroup and
// removeSecurityGroup) and the launch form's choice. As everywhere, the
// user's token decides: another project's group is Neutron's 404, a
// reader's change its 403.

// SecurityGroup is a Neutron security group.
type SecurityGroup struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Rules       []SecurityRule `json:"security_group_rules"`
}

// SecurityRule is a Neutron security group rule.
type SecurityRule struct {
	ID             string  `json:"id"`
	Direction      string  `json:"direction"`
	EtherType      string  `json:"ethertype"`
	Protocol       *string `json:"protocol"`
	PortMin        *int    `json:"port_range_min"`
	PortMax        *int    `json:"port_range_max"`
	RemoteIPPrefix *string `json:"remote_ip_prefix"`
	RemoteGroupID  *string `json:"remote_group_id"`
	Description    string  `json:"description"`
}

// Proto is the rule's protocol, "any" for none.
func (r SecurityRule) Proto() string {
	if r.Protocol == nil || *r.Protocol == "" {
		return "any"
	}
	return *r.Protocol
}

// Ports says the rule's port range ("any", "22", "8000-8080").
func (r SecurityRule) Ports() string {
	switch {
	case r.PortMin == nil && r.PortMax == nil:
		return "any"
	case r.PortMin != nil && r.PortMax != nil && *r.PortMin == *r.PortMax:
		return strconv.Itoa(*r.PortMin)
	case r.PortMin != nil && r.PortMax != nil:
		return strconv.Itoa(*r.PortMin) + "-" + strconv.Itoa(*r.PortMax)
	case r.PortMin != nil:
		return strconv.Itoa(*r.PortMin) + "-"
	}
	return "-" + strconv.Itoa(*r.PortMax)
}

func (s *Server) securityGroups(ctx context.Context, sess *session) ([]SecurityGroup, error) {
	var body struct {
		Groups []SecurityGroup `json:"security_groups"`
	}
	// Neutron lists what the token may see; an admin's token sees every
	// project's, so the list asks for the session's project only.
	q := url.Values{"project_id": {sess.ProjectID}}
	if _, err := s.up.do(ctx, "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/security-groups?"+q.Encode(), nil, &body); err != nil {
		return nil, err
	}
	sort.Slice(body.Groups, func(i, j int) bool { return body.Groups[i].Name < body.Groups[j].Name })
	return body.Groups, nil
}

func (s *Server) securityGroup(ctx context.Context, sess *session, id string) (*SecurityGroup, error) {
	var body struct {
		Group SecurityGroup `json:"security_group"`
	}
	_, err := s.up.do(ctx, "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/security-groups/"+url.PathEscape(id), nil, &body)
	return &body.Group, err
}

// serverGroups lists a server's security groups (Nova's view: names).
func (s *Server) serverGroups(ctx context.Context, sess *session, id string) ([]SecurityGroup, error) {
	var body struct {
		Groups []SecurityGroup `json:"security_groups"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/"+url.PathEscape(id)+"/os-security-groups", nil, &body)
	sort.Slice(body.Groups, func(i, j int) bool { return body.Groups[i].Name < body.Groups[j].Name })
	return body.Groups, err
}

// groupView is the security groups page and a group's page.
type groupView struct {
	Groups []SecurityGroup
	Group  *SecurityGroup
	Names  map[string]string // group id -> name, for remote groups
	Form   ruleForm
	Name   string // the create form's values after a refusal
	Desc   string
}

// ruleForm is the add-rule form.
type ruleForm struct {
	Direction, EtherType, Protocol, PortMin, PortMax, Remote, RemoteGroup string
}

func (s *Server) groupsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.renderGroups(w, r, sess, http.StatusOK, groupView{}, "")
}

func (s *Server) renderGroups(w http.ResponseWriter, r *http.Request, sess *session, status int, d groupView, errMsg string) {
	groups, err := s.securityGroups(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Security groups", err)
		return
	}
	d.Groups = groups
	s.render(w, r, status, "secgroups", view{Title: "Security groups", Nav: "secgroups", Sess: sess, Data: d, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done"))})
}

func (s *Server) groupCreatePost(w http.ResponseWriter, r *http.Request, sess *session) {
	name, desc := strings.TrimSpace(r.PostFormValue("name")), strings.TrimSpace(r.PostFormValue("description"))
	if name == "" {
		s.renderGroups(w, r, sess, http.StatusBadRequest, groupView{Desc: desc}, "Give the group a name.")
		return
	}
	var out struct {
		Group SecurityGroup `json:"security_group"`
	}
	body := map[string]any{"security_group": map[string]string{"name": name, "description": desc}}
	if _, err := s.up.do(r.Context(), "network", sess.Token, http.MethodPost, s.ep.Network+"/v2.0/security-groups", body, &out); err != nil {
		if st := statusOf(err); st == http.StatusUnauthorized || st == 0 {
			s.fail(w, r, sess, "Security groups", err)
			return
		}
		s.renderGroups(w, r, sess, statusOr(err), groupView{Name: name, Desc: desc}, messageOf(err))
		return
	}
	s.log.Info("portal: security group created", "user", sess.User, "project", sess.Project, "group", out.Group.ID)
	http.Redirect(w, r, "/security-groups/"+url.PathEscape(out.Group.ID)+"?done=sg-created", http.StatusSeeOther)
}

// statusOr is err's API status, 502 when it has none.
func statusOr(err error) int {
	if st := statusOf(err); st >= 400 {
		return st
	}
	return http.StatusBadGateway
}

func (s *Server) groupPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.renderGroup(w, r, sess, r.PathValue("id"), http.StatusOK, ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp"}, "")
}

func (s *Server) renderGroup(w http.ResponseWriter, r *http.Request, sess *session, id string, status int, form ruleForm, errMsg string) {
	g, err := s.securityGroup(r.Context(), sess, id)
	if err != nil {
		s.fail(w, r, sess, "Security group", err)
		return
	}
	groups, _ := s.securityGroups(r.Context(), sess)
	names := map[string]string{}
	for _, o := range groups {
		names[o.ID] = o.Name
	}
	sort.SliceStable(g.Rules, func(i, j int) bool { return g.Rules[i].Direction > g.Rules[j].Direction })
	s.render(w, r, status, "secgroup", view{Title: "Security group " + g.Name, Nav: "secgroups", Sess: sess, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done")), Data: groupView{Group: g, Groups: groups, Names: names, Form: form}})
}

// ruleBody turns the add-rule form into a Neutron rule, or says what is
// wrong with it.
func ruleBody(groupID string, f ruleForm) (map[string]any, string) {
	rule := map[string]any{"security_group_id": groupID, "direction": f.Direction, "ethertype": f.EtherType}
	if f.Direction != "ingress" && f.Direction != "egress" {
		return nil, "Choose ingress or egress."
	}
	if f.EtherType != "IPv4" && f.EtherType != "IPv6" {
		return nil, "Choose IPv4 or IPv6."
	}
	if f.Protocol != "" && f.Protocol != "any" {
		rule["protocol"] = f.Protocol
	}
	port := func(v, what string) (int, string) {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 65535 {
			return 0, what + " must be a number from 0 to 65535 (or empty for every port)."
		}
		return n, ""
	}
	if strings.TrimSpace(f.PortMin) != "" || strings.TrimSpace(f.PortMax) != "" {
		if f.Protocol != "tcp" && f.Protocol != "udp" && f.Protocol != "icmp" {
			return nil, "Ports need a protocol: TCP, UDP (or ICMP type and code)."
		}
		lo, msg := port(f.PortMin, "The first port")
		if msg != "" {
			return nil, msg
		}
		hi := lo
		if strings.TrimSpace(f.PortMax) != "" {
			if hi, msg = port(f.PortMax, "The last port"); msg != "" {
				return nil, msg
			}
		}
		rule["port_range_min"], rule["port_range_max"] = lo, hi
	}
	switch {
	case f.RemoteGroup != "" && strings.TrimSpace(f.Remote) != "":
		return nil, "Allow either an address range or a group, not both."
	case f.RemoteGroup != "":
		rule["remote_group_id"] = f.RemoteGroup
	case strings.TrimSpace(f.Remote) != "":
		rule["remote_ip_prefix"] = strings.TrimSpace(f.Remote)
	}
	return rule, ""
}

func (s *Server) ruleCreatePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	f := ruleForm{Direction: r.PostFormValue("direction"), EtherType: r.PostFormValue("ethertype"), Protocol: r.PostFormValue("protocol"),
		PortMin: r.PostFormValue("port_min"), PortMax: r.PostFormValue("port_max"), Remote: r.PostFormValue("remote"),
		RemoteGroup: r.PostFormValue("remote_group")}
	rule, msg := ruleBody(id, f)
	if msg != "" {
		s.renderGroup(w, r, sess, id, http.StatusBadRequest, f, msg)
		return
	}
	if _, err := s.up.do(r.Context(), "network", sess.Token, http.MethodPost, s.ep.Network+"/v2.0/security-group-rules",
		map[string]any{"security_group_rule": rule}, nil); err != nil {
		if st := statusOf(err); st == http.StatusUnauthorized || st == http.StatusNotFound || st == 0 {
			s.fail(w, r, sess, "Security group", err)
			return
		}
		s.renderGroup(w, r, sess, id, statusOr(err), f, messageOf(err))
		return
	}
	s.log.Info("portal: security group rule added", "user", sess.User, "project", sess.Project, "group", id)
	http.Redirect(w, r, "/security-groups/"+url.PathEscape(id)+"?done=rule-added", http.StatusSeeOther)
}

func (s *Server) ruleDeletePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id, rid := r.PathValue("id"), r.PathValue("rule")
	// The rule must be the group's: a rule id of another group of the
	// project is not deleted through this group's page.
	g, err := s.securityGroup(r.Context(), sess, id)
	if err != nil {
		s.fail(w, r, sess, "Security group", err)
		return
	}
	found := false
	for _, ru := range g.Rules {
		found = found || ru.ID == rid
	}
	if !found {
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Sess: sess, Error: "The group has no rule " + strconv.Quote(rid) + "."})
		return
	}
	if _, err := s.up.do(r.Context(), "network", sess.Token, http.MethodDelete, s.ep.Network+"/v2.0/security-group-rules/"+url.PathEscape(rid), nil, nil); err != nil {
		if st := statusOf(err); st == http.StatusUnauthorized || st == 0 {
			s.fail(w, r, sess, "Security group", err)
			return
		}
		s.renderGroup(w, r, sess, id, statusOr(err), ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp"}, messageOf(err))
		return
	}
	s.log.Info("portal: security group rule deleted", "user", sess.User, "project", sess.Project, "group", id, "rule", rid)
	http.Redirect(w, r, "/security-groups/"+url.PathEscape(id)+"?done=rule-deleted", http.StatusSeeOther)
}

func (s *Server) groupDeletePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	if _, err := s.up.do(r.Context(), "network", sess.Token, http.MethodDelete, s.ep.Network+"/v2.0/security-groups/"+url.PathEscape(id), nil, nil); err != nil {
		if st := statusOf(err); st == http.StatusUnauthorized || st == http.StatusNotFound || st == 0 {
			s.fail(w, r, sess, "Security group", err)
			return
		}
		s.renderGroup(w, r, sess, id, statusOr(err), ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp"}, messageOf(err))
		return
	}
	s.log.Info("portal: security group deleted", "user", sess.User, "project", sess.Project, "group", id)
	http.Redirect(w, r, "/security-groups?done=sg-deleted", http.StatusSeeOther)
}
