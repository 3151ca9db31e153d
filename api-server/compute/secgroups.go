package compute

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// sgReplugConcurrency bounds how many NICs a security group change
// re-plugs at once.
const sgReplugConcurrency = 8

// SecurityGroupsChanged applies a security group change to the NICs it
// affects (the Networking API's SecurityGroupNotifier): every port that
// is a running or paused server's NIC gets its filter again from the
// database through its host's agent (the in-place re-plug of an
// interface attach, which replaces the port's flows atomically), before
// the change answers. A port whose server is busy with a task (a build
// among them) gets a flows-only refresh once the server is done, through
// the membership refresher (re-checked every window for up to
// fwBusyWait, on a timer: no goroutine outlives the request); a stopped
// server gets its filter at its next start, and a host that does not
// answer from the agent's drift repair.
func (s *Service) SecurityGroupsChanged(ctx context.Context, ports []string) {
	s.fw.mark(s.refilter(ctx, ports))
}

// refilter re-plugs ports (each once, up to sgReplugConcurrency at once)
// and returns those whose server was busy.
func (s *Service) refilter(ctx context.Context, ports []string) []string {
	seen := map[string]bool{}
	sem := make(chan struct{}, sgReplugConcurrency)
	var mu sync.Mutex
	var busy []string
	var wg sync.WaitGroup
	for _, id := range ports {
		if seen[id] {
			continue
		}
		seen[id] = true
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if s.refilterPort(ctx, id) {
				mu.Lock()
				busy = append(busy, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return busy
}

// membersChanged tells the hosts that ports joined or left groups (a
// server created, an interface attached or detached): every port whose
// rules name one of groups as remote group gets its filter refreshed
// (flows only), in the background and coalesced with the other changes
// of the same window (fwRefresher; the request does not wait for other
// servers' hosts). The ports of server skip are left out: its own plug
// (the build, the attach) is under way.
func (s *Service) membersChanged(ctx context.Context, groups []string, skip *store.Instance) {
	if len(groups) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	own, _ := s.st.ServerPorts(ctx, skip.ID, skip.ProjectID)
	go func() {
		watchers, err := s.st.SecurityGroupWatchers(ctx, groups)
		if err != nil {
			s.log.Warn("ports watching security groups", "groups", groups, "error", err)
			return
		}
		watchers = slices.DeleteFunc(watchers, func(id string) bool {
			return slices.ContainsFunc(own, func(p store.Port) bool { return p.ID == id })
		})
		s.fw.mark(watchers)
	}()
}

// groupsOfPorts is the union of the ports' groups.
func groupsOfPorts(ports []store.Port) []string {
	var out []string
	for _, p := range ports {
		for _, g := range p.SecurityGroups {
			if !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	return out
}

// refilterPort re-plugs one port; busy reports a server that had a task.
func (s *Service) refilterPort(ctx context.Context, portID string) (busy bool) {
	port, err := s.st.GetPort(ctx, portID)
	if err != nil {
		return false // deleted meanwhile: nothing plugged to filter
	}
	inst, err := s.pluggedServer(ctx, port)
	if errdefs.IsConflict(err) {
		return true
	}
	if err != nil || inst == nil {
		return false
	}
	if inst.VMState != lifecycle.Active && inst.VMState != lifecycle.Paused {
		return false
	}
	nic, err := s.nicOf(ctx, inst, port.ID)
	if err != nil {
		s.log.Warn("security group change: describe NIC", "instance", inst.ID, "port", port.ID, "error", err)
		return false
	}
	err = s.callInterface(ctx, inst, protocol.KindAttachInterface,
		protocol.AttachInterface{RequestID: httpapi.RequestID(ctx), InstanceID: inst.ID, NIC: nic})
	if err != nil {
		s.log.Warn("security group change: re-plug NIC (drift repair applies it later)", "instance", inst.ID,
			"port", port.ID, "host", inst.Host, "error", err)
	}
	return false
}

// resolveSecurityGroups finds each of refs (a name or an id) among the
// groups of project (its default group made on first use): an unknown one
// is Nova's 400, a name two groups share its 409 NoUniqueMatch.
func (s *Service) resolveSecurityGroups(ctx context.Context, project string, refs []string) ([]string, error) {
	if _, err := s.st.EnsureDefaultSecurityGroup(ctx, project); err != nil {
		return nil, err
	}
	groups, err := s.st.ListSecurityGroups(ctx, project)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ref := range refs {
		var match []string
		for _, g := range groups {
			if g.ID == ref {
				match = []string{g.ID}
				break
			}
			if g.Name == ref {
				match = append(match, g.ID)
			}
		}
		switch {
		case len(match) == 0:
			return nil, errdefs.InvalidArgumentf("Unable to find security_group with name or id '%s'", ref)
		case len(match) > 1:
			return nil, errdefs.Conflictf("Multiple security_group matches found for name '%s', use an ID to be more specific.", ref)
		}
		if !slices.Contains(ids, match[0]) {
			ids = append(ids, match[0])
		}
	}
	return ids, nil
}

// securityGroupNames are the names of the groups of a server's NICs, once
// each, in port order (the server view's security_groups).
func (s *Service) securityGroupNames(ctx context.Context, nics []serverNIC) []map[string]string {
	var ids []string
	for _, n := range nics {
		ids = append(ids, n.port.SecurityGroups...)
	}
	names, err := s.st.SecurityGroupNames(ctx, ids)
	if err != nil {
		s.log.Warn("security groups of server", "error", err)
		return []map[string]string{}
	}
	return groupNamesOf(nics, names)
}

// groupNamesOf is the servers' "security_groups" of nics: each group of
// theirs once, in the order the NICs list them, by name (names: by id).
func groupNamesOf(nics []serverNIC, names map[string]string) []map[string]string {
	out := []map[string]string{}
	seen := map[string]bool{}
	for _, n := range nics {
		for _, id := range n.port.SecurityGroups {
			name, ok := names[id]
			if seen[id] || !ok {
				continue
			}
			seen[id] = true
			out = append(out, map[string]string{"name": name})
		}
	}
	return out
}

// securityGroupAction serves addSecurityGroup and removeSecurityGroup:
// every NIC of the server joins (leaves) the group, as Nova does through
// Neutron, and the hosts apply the change before the answer (202).
func (s *Service) securityGroupAction(w http.ResponseWriter, r *http.Request, inst *store.Instance, arg json.RawMessage, add bool) {
	ctx := r.Context()
	action := "removeSecurityGroup"
	if add {
		action = "addSecurityGroup"
	}
	var body struct {
		Name *string `json:"name"`
	}
	if err := json.Unmarshal(arg, &body); err != nil || body.Name == nil || strings.TrimSpace(*body.Name) == "" {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %s. 'name' is a required property", action, string(arg)))
		return
	}
	ids, err := s.resolveSecurityGroups(ctx, inst.ProjectID, []string{*body.Name})
	if err != nil {
		if errdefs.KindOf(err) == errdefs.ErrInvalidArgument {
			err = errdefs.NotFoundf("Security group %s not found for project %s.", *body.Name, inst.ProjectID)
		}
		s.fail(w, r, err)
		return
	}
	group := ids[0]
	nics := s.serverNICs(ctx, inst)
	var changes []struct {
		port   string
		groups []string
	}
	associated := false
	for _, n := range nics {
		cur := n.port.SecurityGroups
		if slices.Contains(cur, group) {
			associated = true
		}
		switch {
		case add && !n.port.PortSecurityEnabled:
			writeFault(w, errdefs.InvalidArgument("Network requires port_security_enabled and subnet associated in order to apply security groups."))
			return
		case add && !slices.Contains(cur, group):
			changes = append(changes, struct {
				port   string
				groups []string
			}{n.port.ID, append(slices.Clone(cur), group)})
		case !add && slices.Contains(cur, group):
			changes = append(changes, struct {
				port   string
				groups []string
			}{n.port.ID, slices.DeleteFunc(slices.Clone(cur), func(g string) bool { return g == group })})
		}
	}
	if add && associated && len(changes) == 0 {
		writeFault(w, errdefs.InvalidArgumentf("Security group %s is already associated with the instance %s", *body.Name, inst.ID))
		return
	}
	if !add && !associated {
		writeFault(w, errdefs.InvalidArgumentf("Security group %s not associated with the instance %s", *body.Name, inst.ID))
		return
	}
	var ports []string
	for _, c := range changes {
		groups := c.groups
		if _, err := s.st.UpdatePort(ctx, c.port, store.PortUpdate{SecurityGroups: &groups, Admin: true}); err != nil {
			s.fail(w, r, err)
			return
		}
		ports = append(ports, c.port)
	}
	watchers, err := s.st.SecurityGroupWatchers(ctx, []string{group})
	if err != nil {
		s.log.Warn("ports watching a security group", "group", group, "error", err)
	}
	s.SecurityGroupsChanged(ctx, append(ports, watchers...))
	noContent(w, http.StatusAccepted)
}

// novaGroupView is a group as Nova's os-security-groups shows it: its
// ingress rules in Nova's terms.
func novaGroupView(g *store.SecurityGroup, names map[string]string) map[string]any {
	rules := []map[string]any{}
	for _, r := range g.Rules {
		if r.Direction != "ingress" {
			continue
		}
		rules = append(rules, novaRuleView(&r, g, names))
	}
	return map[string]any{"id": g.ID, "name": g.Name, "description": g.Description, "tenant_id": g.ProjectID, "rules": rules}
}

func novaRuleView(r *store.SecurityGroupRule, g *store.SecurityGroup, names map[string]string) map[string]any {
	v := map[string]any{"id": r.ID, "parent_group_id": g.ID, "ip_protocol": r.Protocol, "from_port": r.PortRangeMin,
		"to_port": r.PortRangeMax, "ip_range": map[string]any{}, "group": map[string]any{}}
	switch {
	case r.RemoteGroupID != nil:
		v["group"] = map[string]any{"name": names[*r.RemoteGroupID], "tenant_id": g.ProjectID}
	case r.RemoteIPPrefix != nil:
		v["ip_range"] = map[string]any{"cidr": *r.RemoteIPPrefix}
	default:
		cidr := "0.0.0.0/0"
		if r.EtherType == "IPv6" {
			cidr = "::/0"
		}
		v["ip_range"] = map[string]any{"cidr": cidr}
	}
	return v
}

// groupNames maps the project's group ids to names (remote groups).
func (s *Service) groupNames(ctx context.Context, project string) (map[string]string, []store.SecurityGroup, error) {
	if _, err := s.st.EnsureDefaultSecurityGroup(ctx, project); err != nil {
		return nil, nil, err
	}
	groups, err := s.st.ListSecurityGroups(ctx, project)
	if err != nil {
		return nil, nil, err
	}
	names := map[string]string{}
	for _, g := range groups {
		names[g.ID] = g.Name
	}
	return names, groups, nil
}

// serverSecurityGroups serves GET /servers/{id}/os-security-groups.
func (s *Service) serverSecurityGroups(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	names, groups, err := s.groupNames(r.Context(), inst.ProjectID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in := map[string]bool{}
	for _, n := range s.serverNICs(r.Context(), inst) {
		for _, id := range n.port.SecurityGroups {
			in[id] = true
		}
	}
	out := []map[string]any{}
	for i := range groups {
		if in[groups[i].ID] {
			out = append(out, novaGroupView(&groups[i], names))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"security_groups": out})
}

// refreshAfterDelete takes a deleted server's addresses out of the rules
// that name its groups: once the delete is done (the conductor releases
// its ports when the host reports it), the ports whose rules name those
// groups get their filters again. It polls the instance every second for
// up to two minutes in the background; the agents' reconcile is the
// backstop if this process goes first.
// groups are the server's groups, read before the delete began.
func (s *Service) refreshAfterDelete(ctx context.Context, inst *store.Instance, groups []string) {
	if len(groups) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		for range 120 {
			time.Sleep(time.Second)
			var live int64
			if err := s.st.WithContext(ctx).Model(&store.Instance{}).Where("id = ? AND deleted_at IS NULL", inst.ID).
				Count(&live).Error; err != nil {
				return
			}
			if live == 0 {
				watchers, err := s.st.SecurityGroupWatchers(ctx, groups)
				if err != nil {
					s.log.Warn("ports watching the groups of a deleted server", "instance", inst.ID, "error", err)
					return
				}
				s.fw.mark(watchers)
				return
			}
		}
	}()
}
