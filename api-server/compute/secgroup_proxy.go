package compute

import (
	"encoding/json"
	"github.com/google/uuid"
	"net/http"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// Nova's os-security-groups and os-security-group-rules proxies (below
// 2.36, 404 from it on, as the image proxy): the project's groups and
// their ingress rules in Nova's terms, over the same store as the
// Networking API, with the same checks, quotas and host updates.

// Neutron's default limits, which the proxy's creates count against when
// the project has none set (the Networking API's defaults).
const (
	proxyGroupQuota = 10
	proxyRuleQuota  = 100
)

func (s *Service) securityGroupRoutes(mux *http.ServeMux, p string) {
	mux.HandleFunc("GET "+p+"/servers/{id}/os-security-groups", s.authed(s.serverSecurityGroups))
	mux.HandleFunc("GET "+p+"/os-security-groups", s.imageProxy(s.authed(s.listProxyGroups)))
	mux.HandleFunc("POST "+p+"/os-security-groups", s.imageProxy(s.writer(s.createProxyGroup)))
	mux.HandleFunc("GET "+p+"/os-security-groups/{sg}", s.imageProxy(s.authed(s.showProxyGroup)))
	mux.HandleFunc("PUT "+p+"/os-security-groups/{sg}", s.imageProxy(s.writer(s.updateProxyGroup)))
	mux.HandleFunc("DELETE "+p+"/os-security-groups/{sg}", s.imageProxy(s.writer(s.deleteProxyGroup)))
	mux.HandleFunc("POST "+p+"/os-security-group-rules", s.imageProxy(s.writer(s.createProxyRule)))
	mux.HandleFunc("DELETE "+p+"/os-security-group-rules/{rule}", s.imageProxy(s.writer(s.deleteProxyRule)))
}

// proxyGroup is group id of the caller's project (admins: any), else
// Nova's 404.
func (s *Service) proxyGroup(r *http.Request, id string) (*store.SecurityGroup, error) {
	c := auth.FromContext(r.Context())
	if _, err := uuid.Parse(id); err != nil {
		// Nova's answer for a Neutron group id that cannot be one
		// (Tempest: test_create_security_group_rule_with_invalid_id).
		return nil, errdefs.InvalidArgument("Security group id should be uuid")
	}
	if id == store.DefaultSecurityGroupID(c.ProjectID) {
		if _, err := s.st.EnsureDefaultSecurityGroup(r.Context(), c.ProjectID); err != nil {
			return nil, err
		}
	}
	g, err := s.st.GetSecurityGroup(r.Context(), id)
	if err != nil || (g.ProjectID != c.ProjectID && !c.IsAdmin()) {
		if err == nil || errdefs.IsNotFound(err) {
			return nil, errdefs.NotFoundf("Security group %s not found.", id)
		}
		return nil, err
	}
	return g, nil
}

func (s *Service) listProxyGroups(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	names, groups, err := s.groupNames(r.Context(), c.ProjectID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := []map[string]any{}
	for i := range groups {
		out = append(out, novaGroupView(&groups[i], names))
	}
	writeJSON(w, http.StatusOK, map[string]any{"security_groups": out})
}

func (s *Service) showProxyGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.proxyGroup(r, r.PathValue("sg"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	names, _, err := s.groupNames(r.Context(), g.ProjectID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"security_group": novaGroupView(g, names)})
}

type proxyGroupBody struct {
	Group *struct {
		Name        *string `json:"name"`
		Description *string `json:"description"`
	} `json:"security_group"`
}

func (b proxyGroupBody) check() (name, desc string, err error) {
	if b.Group == nil || b.Group.Name == nil || b.Group.Description == nil {
		return "", "", errdefs.InvalidArgument("Invalid input for field/attribute security_group: name and description are required.")
	}
	// The name is kept as given, spaces around it too (Nova does so, and
	// Tempest's test_security_group_create_get_delete checks it); only a
	// blank one is refused.
	name, desc = *b.Group.Name, *b.Group.Description
	if strings.TrimSpace(name) == "" || len(name) > 255 || len(desc) > 255 {
		return "", "", errdefs.InvalidArgument("Security group name and description must be 1 to 255 characters.")
	}
	return name, desc, nil
}

func (s *Service) createProxyGroup(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	var body proxyGroupBody
	if !decodeBody(w, r, &body) {
		return
	}
	name, desc, err := body.check()
	if err != nil {
		writeFault(w, err)
		return
	}
	if name == "default" {
		writeFault(w, errdefs.InvalidArgument("Security group default already exists."))
		return
	}
	if _, err := s.st.EnsureDefaultSecurityGroup(r.Context(), c.ProjectID); err != nil {
		s.fail(w, r, err)
		return
	}
	g := &store.SecurityGroup{ProjectID: c.ProjectID, Name: name, Description: desc, Stateful: true}
	if err := s.st.CreateSecurityGroup(r.Context(), g, store.NetworkQuotaGuard(c.ProjectID, "security_group", proxyGroupQuota)); err != nil {
		if errdefs.KindOf(err) == errdefs.ErrQuotaExceeded {
			err = errdefs.QuotaExceeded("Quota exceeded, too many security groups.")
		}
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"security_group": novaGroupView(g, map[string]string{})})
}

func (s *Service) updateProxyGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.proxyGroup(r, r.PathValue("sg"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var body proxyGroupBody
	if !decodeBody(w, r, &body) {
		return
	}
	name, desc, err := body.check()
	if err != nil {
		writeFault(w, err)
		return
	}
	g, err = s.st.UpdateSecurityGroup(r.Context(), g.ID, store.SecurityGroupUpdate{Name: &name, Description: &desc})
	if err != nil {
		if errdefs.KindOf(err) == errdefs.ErrConflict {
			err = errdefs.InvalidArgument(errdefs.Message(err))
		}
		s.fail(w, r, err)
		return
	}
	names, _, _ := s.groupNames(r.Context(), g.ProjectID)
	writeJSON(w, http.StatusOK, map[string]any{"security_group": novaGroupView(g, names)})
}

func (s *Service) deleteProxyGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.proxyGroup(r, r.PathValue("sg"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	affected, err := s.st.DeleteSecurityGroup(r.Context(), g.ID, false)
	if err != nil {
		if errdefs.KindOf(err) == errdefs.ErrConflict {
			err = errdefs.InvalidArgument(errdefs.Message(err)) // Nova's 400 for an in-use or default group
		}
		s.fail(w, r, err)
		return
	}
	s.SecurityGroupsChanged(r.Context(), affected)
	noContent(w, http.StatusAccepted)
}

func (s *Service) createProxyRule(w http.ResponseWriter, r *http.Request) {
	c := auth.FromContext(r.Context())
	var body struct {
		Rule *struct {
			ParentGroupID string          `json:"parent_group_id"`
			IPProtocol    *string         `json:"ip_protocol"`
			FromPort      json.RawMessage `json:"from_port"`
			ToPort        json.RawMessage `json:"to_port"`
			CIDR          *string         `json:"cidr"`
			GroupID       *string         `json:"group_id"`
		} `json:"security_group_rule"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.Rule == nil || body.Rule.ParentGroupID == "" {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute security_group_rule: parent_group_id is required."))
		return
	}
	g, err := s.proxyGroup(r, body.Rule.ParentGroupID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	port := func(raw json.RawMessage) (*int, error) {
		v := strings.Trim(strings.TrimSpace(string(raw)), `"`)
		if v == "" || v == "null" {
			return nil, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, errdefs.InvalidArgumentf("Invalid port range %s.", v)
		}
		return &n, nil
	}
	rule := &store.SecurityGroupRule{SecurityGroupID: g.ID, ProjectID: g.ProjectID, Direction: "ingress", EtherType: "IPv4",
		Protocol: body.Rule.IPProtocol}
	if rule.PortRangeMin, err = port(body.Rule.FromPort); err == nil {
		rule.PortRangeMax, err = port(body.Rule.ToPort)
	}
	if err != nil {
		writeFault(w, err)
		return
	}
	// Nova's ICMP "any type/code" is -1.
	if rule.PortRangeMin != nil && *rule.PortRangeMin == -1 {
		rule.PortRangeMin = nil
	}
	if rule.PortRangeMax != nil && *rule.PortRangeMax == -1 {
		rule.PortRangeMax = nil
	}
	switch {
	case body.Rule.GroupID != nil && *body.Rule.GroupID != "":
		remote, err := s.proxyGroup(r, *body.Rule.GroupID)
		if err == nil && remote.ProjectID != g.ProjectID {
			err = errdefs.NotFoundf("Security group %s not found.", *body.Rule.GroupID)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		rule.RemoteGroupID = &remote.ID
	case body.Rule.CIDR != nil && *body.Rule.CIDR != "":
		rule.RemoteIPPrefix = body.Rule.CIDR
		if strings.Contains(*body.Rule.CIDR, ":") {
			rule.EtherType = "IPv6"
		}
	}
	if err := store.NormalizeRule(rule); err != nil {
		writeFault(w, errdefs.InvalidArgument(errdefs.Message(err)))
		return
	}
	affected, err := s.st.CreateSecurityGroupRule(r.Context(), rule, store.NetworkQuotaGuard(g.ProjectID, "security_group_rule", proxyRuleQuota))
	if err != nil {
		switch errdefs.KindOf(err) {
		case errdefs.ErrConflict:
			err = errdefs.InvalidArgument("This rule already exists in group " + g.ID)
		case errdefs.ErrQuotaExceeded:
			err = errdefs.QuotaExceeded("Quota exceeded, too many security group rules.")
		}
		s.fail(w, r, err)
		return
	}
	s.SecurityGroupsChanged(r.Context(), affected)
	names, _, _ := s.groupNames(r.Context(), c.ProjectID)
	writeJSON(w, http.StatusOK, map[string]any{"security_group_rule": novaRuleView(rule, g, names)})
}

func (s *Service) deleteProxyRule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("rule")
	rule, err := s.st.GetSecurityGroupRule(r.Context(), id)
	if err == nil {
		_, err = s.proxyGroup(r, rule.SecurityGroupID)
	}
	if err != nil {
		if errdefs.IsNotFound(err) {
			err = errdefs.NotFoundf("Security group rule %s not found.", id)
		}
		s.fail(w, r, err)
		return
	}
	affected, err := s.st.DeleteSecurityGroupRule(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.SecurityGroupsChanged(r.Context(), affected)
	noContent(w, http.StatusAccepted)
}
