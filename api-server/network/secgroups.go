package network

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// Security groups (Neutron's security-group extension). A project sees
// and changes its own groups (admins every project's); another project's
// group is not found, whether read, named as a rule's remote group or
// attached to a port. The project's "default" group is made on first
// use: listing or reading groups or rules, creating a group, or a port
// that names no group.

// SecurityGroupNotifier learns which ports' filters a change affects
// (rules added or deleted, memberships changed), so the hosts apply it.
type SecurityGroupNotifier interface {
	SecurityGroupsChanged(ctx context.Context, ports []string)
}

// WithSecurityGroupNotifier makes security group changes reach the hosts
// of the affected ports before the change answers.
func WithSecurityGroupNotifier(n SecurityGroupNotifier) Option {
	return func(s *Service) { s.sgNotifier = n }
}

func (s *Service) sgChanged(ctx context.Context, ports []string) {
	if s.sgNotifier != nil && len(ports) > 0 {
		s.sgNotifier.SecurityGroupsChanged(ctx, ports)
	}
}

func ruleView(r *store.SecurityGroupRule, defaultGroup bool) view {
	var cidr any
	if c := r.NormalizedCIDR(); c != nil {
		cidr = *c
	}
	return view{
		"id": r.ID, "security_group_id": r.SecurityGroupID, "direction": r.Direction, "ethertype": r.EtherType,
		"protocol": r.Protocol, "port_range_min": r.PortRangeMin, "port_range_max": r.PortRangeMax,
		"remote_ip_prefix": r.RemoteIPPrefix, "remote_group_id": r.RemoteGroupID, "remote_address_group_id": nil,
		"normalized_cidr": cidr, "project_id": r.ProjectID, "tenant_id": r.ProjectID, "description": r.Description,
		"tags": []string{}, "created_at": ts(r.CreatedAt), "updated_at": ts(r.UpdatedAt),
		"revision_number": r.RevisionNumber, "belongs_to_default_sg": defaultGroup,
	}
}

func groupView(g *store.SecurityGroup) view {
	rules := make([]view, 0, len(g.Rules))
	for i := range g.Rules {
		rules = append(rules, ruleView(&g.Rules[i], g.DefaultFor != nil))
	}
	return view{
		"id": g.ID, "name": g.Name, "description": g.Description, "project_id": g.ProjectID, "tenant_id": g.ProjectID,
		"stateful": g.Stateful, "security_group_rules": rules, "tags": store.DecodeTags(g.Tags), "shared": false,
		"created_at": ts(g.CreatedAt), "updated_at": ts(g.UpdatedAt), "revision_number": g.RevisionNumber,
	}
}

func sgNotFound(id string) error {
	return store.ErrSecurityGroupNotFound.Newf("Security group %s does not exist", id)
}

// ensureDefault makes the caller's project's default group exist.
func (s *Service) ensureDefault(ctx context.Context, c *auth.Credentials) error {
	if c.ProjectID == "" {
		return nil
	}
	_, err := s.st.EnsureDefaultSecurityGroup(ctx, c.ProjectID)
	return err
}

// visibleGroup returns group id when the caller may see it (its project's
// or an admin), else SecurityGroupNotFound.
func (s *Service) visibleGroup(ctx context.Context, c *auth.Credentials, id string) (*store.SecurityGroup, error) {
	if c.ProjectID != "" && id == store.DefaultSecurityGroupID(c.ProjectID) {
		if err := s.ensureDefault(ctx, c); err != nil {
			return nil, err
		}
	}
	g, err := s.st.GetSecurityGroup(ctx, id)
	if err != nil {
		return nil, err
	}
	if !owns(c, g.ProjectID) {
		return nil, sgNotFound(id)
	}
	return g, nil
}

// listedGroups are the groups a list shows the caller (its project's,
// with its default group made on first use; every project's for an
// admin). On an error it answers and returns false.
func (s *Service) listedGroups(w http.ResponseWriter, r *http.Request) ([]store.SecurityGroup, bool) {
	c := creds(r)
	if err := s.ensureDefault(r.Context(), c); err != nil {
		s.storeError(w, r, err)
		return nil, false
	}
	project := c.ProjectID
	if c.IsAdmin() {
		project = ""
	}
	groups, err := s.st.ListSecurityGroups(r.Context(), project)
	if err != nil {
		s.storeError(w, r, err)
		return nil, false
	}
	return groups, true
}

func (s *Service) listSecurityGroups(w http.ResponseWriter, r *http.Request) {
	groups, ok := s.listedGroups(w, r)
	if !ok {
		return
	}
	views := make([]view, 0, len(groups))
	for i := range groups {
		views = append(views, groupView(&groups[i]))
	}
	listQuery(w, r, "security_groups", views, keysOf(groupView(&store.SecurityGroup{})), func(id string) {
		writeFault(w, sgNotFound(id))
	})
}

func (s *Service) getSecurityGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.visibleGroup(r.Context(), creds(r), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	showOne(w, r, http.StatusOK, "security_group", groupView(g))
}

var groupAttrs = []string{"name", "description", "stateful", "project_id", "tenant_id", "tags"}

func (s *Service) createSecurityGroups(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "rule:create_security_group") {
		return
	}
	objs, bulk, err := readBody(r, "security_group", "security_groups")
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	var created []view
	fail := func(answer func()) {
		for _, v := range created {
			_, _ = s.st.DeleteSecurityGroup(context.WithoutCancel(r.Context()), v["id"].(string), true)
		}
		answer()
	}
	for _, a := range objs {
		if err := a.unknown(groupAttrs...); err != nil {
			fail(func() { badRequest(w, err.Error()) })
			return
		}
		if err := a.emptyList("tags"); err != nil {
			fail(func() { invalidInput(w, err.Error()) })
			return
		}
		proj, ok, err := ownerProject(a, c.ProjectID, c.IsAdmin())
		if err != nil || !ok {
			fail(func() {
				if err != nil {
					invalidInput(w, err.Error())
				} else {
					forbidden(w, "rule:create_security_group")
				}
			})
			return
		}
		g := &store.SecurityGroup{ProjectID: proj, Stateful: true}
		for _, f := range []struct {
			key string
			dst *string
		}{{"name", &g.Name}, {"description", &g.Description}} {
			v, err := a.str(f.key)
			if err != nil {
				fail(func() { invalidInput(w, err.Error()) })
				return
			}
			if v != nil {
				*f.dst = *v
			}
		}
		if len(g.Name) > 255 || len(g.Description) > 255 {
			fail(func() { invalidInput(w, "name and description are at most 255 characters") })
			return
		}
		st, err := a.boolean("stateful")
		if err != nil {
			fail(func() { invalidInput(w, err.Error()) })
			return
		}
		if st != nil {
			g.Stateful = *st
		}
		if g.Name == "default" {
			fail(func() {
				writeFault(w, store.ErrSecurityGroupDefaultExists.New("Default security group already exists."))
			})
			return
		}
		// The project's default group first, so that it counts against
		// the quota as Neutron's does.
		if _, err := s.st.EnsureDefaultSecurityGroup(r.Context(), proj); err != nil {
			fail(func() { s.storeError(w, r, err) })
			return
		}
		if err := s.st.CreateSecurityGroup(r.Context(), g, s.quotaGuard(proj, "security_group")); err != nil {
			fail(func() { s.storeError(w, r, err) })
			return
		}
		created = append(created, groupView(g))
	}
	if bulk {
		httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"security_groups": created})
		return
	}
	showOne(w, r, http.StatusCreated, "security_group", created[0])
}

func (s *Service) updateSecurityGroup(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	if _, err := s.visibleGroup(r.Context(), c, id); err != nil {
		s.storeError(w, r, err)
		return
	}
	if !canWrite(w, c, "rule:update_security_group") {
		return
	}
	rev, ok := ifMatch(w, r)
	if !ok {
		return
	}
	a, ok := readUpdate(w, r, "security_group", []string{"project_id", "tenant_id", "id"}, groupAttrs)
	if !ok {
		return
	}
	u := store.SecurityGroupUpdate{IfRevision: rev}
	var err error
	if u.Name, err = a.str("name"); err == nil {
		if u.Description, err = a.str("description"); err == nil {
			u.Stateful, err = a.boolean("stateful")
		}
	}
	if err != nil {
		invalidInput(w, err.Error())
		return
	}
	g, err := s.st.UpdateSecurityGroup(r.Context(), id, u)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	showOne(w, r, http.StatusOK, "security_group", groupView(g))
}

func (s *Service) deleteSecurityGroup(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	g, err := s.visibleGroup(r.Context(), c, id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !canWrite(w, c, "rule:delete_security_group") {
		return
	}
	if !revisionMatches(w, r, g.RevisionNumber) {
		return
	}
	affected, err := s.st.DeleteSecurityGroup(r.Context(), id, c.IsAdmin())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.sgChanged(r.Context(), affected)
	w.WriteHeader(http.StatusNoContent)
}

// ---- rules -----------------------------------------------------------------

func (s *Service) listSecurityGroupRules(w http.ResponseWriter, r *http.Request) {
	groups, ok := s.listedGroups(w, r)
	if !ok {
		return
	}
	var views []view
	for _, g := range groups {
		for i := range g.Rules {
			views = append(views, ruleView(&g.Rules[i], g.DefaultFor != nil))
		}
	}
	listQuery(w, r, "security_group_rules", views, keysOf(ruleView(&store.SecurityGroupRule{}, false)), func(id string) {
		writeFault(w, store.ErrSecurityGroupRuleNotFound.Newf("Security group rule %s does not exist", id))
	})
}

// visibleRule returns rule id and its group when the caller may see them.
func (s *Service) visibleRule(ctx context.Context, c *auth.Credentials, id string) (*store.SecurityGroupRule, *store.SecurityGroup, error) {
	rule, err := s.st.GetSecurityGroupRule(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	g, err := s.st.GetSecurityGroup(ctx, rule.SecurityGroupID)
	if err == nil && !owns(c, g.ProjectID) {
		err = sgNotFound(g.ID)
	}
	if err != nil {
		return nil, nil, store.ErrSecurityGroupRuleNotFound.Newf("Security group rule %s does not exist", id)
	}
	return rule, g, nil
}

func (s *Service) getSecurityGroupRule(w http.ResponseWriter, r *http.Request) {
	rule, g, err := s.visibleRule(r.Context(), creds(r), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	showOne(w, r, http.StatusOK, "security_group_rule", ruleView(rule, g.DefaultFor != nil))
}

func (s *Service) deleteSecurityGroupRule(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	id := r.PathValue("id")
	if _, _, err := s.visibleRule(r.Context(), c, id); err != nil {
		s.storeError(w, r, err)
		return
	}
	if !canWrite(w, c, "rule:delete_security_group_rule") {
		return
	}
	affected, err := s.st.DeleteSecurityGroupRule(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.sgChanged(r.Context(), affected)
	w.WriteHeader(http.StatusNoContent)
}

var ruleAttrs = []string{"security_group_id", "direction", "ethertype", "protocol", "port_range_min", "port_range_max",
	"remote_ip_prefix", "remote_group_id", "remote_address_group_id", "description", "project_id", "tenant_id"}

// protocolAttr reads protocol as a name or a number (JSON string or
// integer); nil when absent or null.
func protocolAttr(a attrs) (*string, error) {
	raw, ok := a["protocol"]
	if !ok || isNull(raw) {
		return nil, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		v := strconv.Itoa(n)
		return &v, nil
	}
	return a.str("protocol")
}

func (s *Service) createSecurityGroupRules(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if !canWrite(w, c, "rule:create_security_group_rule") {
		return
	}
	objs, bulk, err := readBody(r, "security_group_rule", "security_group_rules")
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	var created []view
	var affected []string
	fail := func(err error) {
		for _, v := range created {
			if ports, derr := s.st.DeleteSecurityGroupRule(context.WithoutCancel(r.Context()), v["id"].(string)); derr == nil {
				affected = append(affected, ports...)
			}
		}
		s.sgChanged(context.WithoutCancel(r.Context()), affected)
		s.storeError(w, r, err)
	}
	for _, a := range objs {
		rule, g, err := s.ruleFromRequest(r.Context(), c, a)
		if err != nil {
			fail(err)
			return
		}
		ports, err := s.st.CreateSecurityGroupRule(r.Context(), rule, s.quotaGuard(g.ProjectID, "security_group_rule"))
		if err != nil {
			fail(err)
			return
		}
		affected = append(affected, ports...)
		created = append(created, ruleView(rule, g.DefaultFor != nil))
	}
	s.sgChanged(r.Context(), affected)
	if bulk {
		httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"security_group_rules": created})
		return
	}
	showOne(w, r, http.StatusCreated, "security_group_rule", created[0])
}

// ruleFromRequest checks a rule create's attributes; errors are
// classified with Neutron's types.
func (s *Service) ruleFromRequest(ctx context.Context, c *auth.Credentials, a attrs) (*store.SecurityGroupRule, *store.SecurityGroup, error) {
	bad := func(err error) error {
		return store.ErrInvalidInput.New("Invalid input for operation: " + err.Error() + ".")
	}
	if err := a.unknown(ruleAttrs...); err != nil {
		return nil, nil, errdefs.InvalidArgument(err.Error()).WithReason("HTTPBadRequest")
	}
	if _, ok, err := ownerProject(a, c.ProjectID, c.IsAdmin()); err != nil {
		return nil, nil, bad(err)
	} else if !ok {
		return nil, nil, policyRefused("rule:create_security_group_rule")
	}
	if _, v, err := a.nullableStr("remote_address_group_id"); err != nil || v != nil {
		return nil, nil, bad(inputErr("remote_address_group_id is not supported"))
	}
	rule := &store.SecurityGroupRule{}
	sg, err := a.str("security_group_id")
	if err != nil {
		return nil, nil, bad(err)
	}
	if sg == nil || *sg == "" {
		return nil, nil, errdefs.InvalidArgument("Failed to parse request. Required attribute 'security_group_id' not specified").WithReason("HTTPBadRequest")
	}
	dir, err := a.str("direction")
	if err != nil {
		return nil, nil, bad(err)
	}
	if dir == nil {
		return nil, nil, errdefs.InvalidArgument("Failed to parse request. Required attribute 'direction' not specified").WithReason("HTTPBadRequest")
	}
	rule.SecurityGroupID, rule.Direction = *sg, *dir
	if _, v, err := a.nullableStr("ethertype"); err != nil {
		return nil, nil, bad(err)
	} else if v != nil {
		rule.EtherType = *v
	}
	if rule.Protocol, err = protocolAttr(a); err != nil {
		return nil, nil, bad(err)
	}
	if rule.PortRangeMin, err = a.integer("port_range_min"); err != nil {
		return nil, nil, bad(err)
	}
	if rule.PortRangeMax, err = a.integer("port_range_max"); err != nil {
		return nil, nil, bad(err)
	}
	if _, rule.RemoteIPPrefix, err = a.nullableStr("remote_ip_prefix"); err != nil {
		return nil, nil, bad(err)
	}
	if _, rule.RemoteGroupID, err = a.nullableStr("remote_group_id"); err != nil {
		return nil, nil, bad(err)
	}
	if d, err := a.str("description"); err != nil {
		return nil, nil, bad(err)
	} else if d != nil {
		if len(*d) > 255 {
			return nil, nil, bad(inputErr("description is at most 255 characters"))
		}
		rule.Description = *d
	}
	if err := store.NormalizeRule(rule); err != nil {
		return nil, nil, err
	}
	g, err := s.visibleGroup(ctx, c, rule.SecurityGroupID)
	if err != nil {
		return nil, nil, err
	}
	rule.ProjectID = g.ProjectID
	if rule.RemoteGroupID != nil && *rule.RemoteGroupID != g.ID {
		// Another project's group is not found, admins included: a rule
		// may only name groups of its own group's project.
		remote, err := s.visibleGroup(ctx, c, *rule.RemoteGroupID)
		if err == nil && remote.ProjectID != g.ProjectID {
			err = sgNotFound(remote.ID)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return rule, g, nil
}

// portGroupsAttr reads a port's security_groups: nil when absent or
// null, else the list of group ids.
func portGroupsAttr(a attrs) (*[]string, error) {
	var ids []string
	ok, err := a.decode("security_groups", &ids)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	for _, id := range ids {
		if strings.TrimSpace(id) == "" {
			return nil, inputErr("'' is not a valid security group id")
		}
	}
	if ids == nil {
		ids = []string{}
	}
	return &ids, nil
}
