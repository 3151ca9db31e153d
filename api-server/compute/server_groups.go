package compute

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/api-server/auth"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/store"
)

// os-server-groups, as Nova: a group has one policy, given (and shown) as
// a one-element "policies" list up to 2.63 and as "policy" with "rules"
// from 2.64; the soft policies exist from 2.15, project_id and user_id
// are shown from 2.13. An anti-affinity group may have 2.64's rule
// max_server_per_host (how many members one host may hold, 1 by default),
// which the scheduler enforces; a group shows the rules it was given.
// Members join at server creation (os:scheduler_hints group) and leave
// when the server is deleted; the scheduler enforces the policy.

func (s *Service) serverGroupRoutes(mux *http.ServeMux, p string) {
	mux.HandleFunc("POST "+p+"/os-server-groups", s.writer(s.createServerGroup))
	mux.HandleFunc("GET "+p+"/os-server-groups", s.authed(s.listServerGroups))
	mux.HandleFunc("GET "+p+"/os-server-groups/{id}", s.authed(s.showServerGroup))
	mux.HandleFunc("DELETE "+p+"/os-server-groups/{id}", s.writer(s.deleteServerGroup))
}

const (
	msgGroupQuota       = "Quota exceeded, too many server groups."
	msgGroupMemberQuota = "Quota exceeded, too many servers in group"
)

func groupNotFound(id string) string { return fmt.Sprintf("Instance group %s could not be found.", id) }

// groupPolicies is the policies a group may be created with at v.
func groupPolicies(v apiVersion) []string {
	ps := []string{store.PolicyAntiAffinity, store.PolicyAffinity}
	if v.AtLeast(15) {
		ps = append(ps, store.PolicySoftAntiAffinity, store.PolicySoftAffinity)
	}
	return ps
}

// groupName checks a group name as Nova's parameter_types.name: a string
// of 1-255 printable characters without leading or trailing whitespace.
func groupName(raw any) (string, error) {
	name, ok := raw.(string)
	if !ok {
		return "", errdefs.InvalidArgument("Invalid input for field/attribute name. Value: name must be a string.")
	}
	if name == "" || utf8.RuneCountInString(name) > 255 || !utf8.ValidString(name) {
		return "", errdefs.InvalidArgumentf("Invalid input for field/attribute name. Value: %s. The name must be 1 to 255 characters long.", name)
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if unicode.IsSpace(first) || unicode.IsSpace(last) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", errdefs.InvalidArgumentf("Invalid input for field/attribute name. Value: %s. The name has leading or trailing whitespace or a control character.", name)
	}
	return name, nil
}

// groupPolicy checks "policies": a list of exactly one policy known at v.
func groupPolicy(raw any, v apiVersion) (string, error) {
	list, ok := raw.([]any)
	if !ok || len(list) != 1 {
		return "", errdefs.InvalidArgument("Invalid input for field/attribute policies. Value: policies must be a list of exactly one policy.")
	}
	p, ok := list[0].(string)
	allowed := groupPolicies(v)
	if !ok || !slices.Contains(allowed, p) {
		return "", errdefs.InvalidArgumentf("Invalid input for field/attribute policies. Value: %v. %v is not one of %q", list, list[0], allowed)
	}
	return p, nil
}

// parseServerGroup validates a create body: {"server_group": {"name",
// "policies"}} (2.64: "policy" and "rules") and nothing else; perHost is
// the max_server_per_host rule (0: none).
func parseServerGroup(body map[string]any, v apiVersion) (name, policy string, perHost int, err error) {
	sg, ok := body["server_group"].(map[string]any)
	if !ok || len(body) != 1 {
		return "", "", 0, errdefs.InvalidArgument("Invalid input for field/attribute server_group. Value: 'server_group' is a required property and the only one allowed.")
	}
	allowed := []string{"name", "policies"}
	policyKey := "policies"
	if v.AtLeast(64) {
		allowed, policyKey = []string{"name", "policy", "rules"}, "policy"
	}
	for _, k := range sortedBodyKeys(sg) {
		if !slices.Contains(allowed, k) {
			return "", "", 0, errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	if _, ok := sg["name"]; !ok {
		return "", "", 0, errdefs.InvalidArgument("Invalid input for field/attribute server_group. Value: 'name' is a required property")
	}
	if _, ok := sg[policyKey]; !ok {
		return "", "", 0, errdefs.InvalidArgumentf("Invalid input for field/attribute server_group. Value: '%s' is a required property", policyKey)
	}
	if name, err = groupName(sg["name"]); err != nil {
		return "", "", 0, err
	}
	if !v.AtLeast(64) {
		policy, err = groupPolicy(sg["policies"], v)
		return name, policy, 0, err
	}
	p, ok := sg["policy"].(string)
	if allowed := groupPolicies(v); !ok || !slices.Contains(allowed, p) {
		return "", "", 0, errdefs.InvalidArgumentf("Invalid input for field/attribute policy. Value: %v. It is not one of %q", sg["policy"], allowed)
	}
	if raw, ok := sg["rules"]; ok {
		if perHost, err = groupRules(raw, p); err != nil {
			return "", "", 0, err
		}
	}
	return name, p, perHost, nil
}

// groupRules checks 2.64's "rules": an object whose only key is
// max_server_per_host (a positive integer, or a string of digits), for
// anti-affinity only, and returns that number (0: no rule).
func groupRules(raw any, policy string) (int, error) {
	rules, ok := raw.(map[string]any)
	if !ok {
		return 0, errdefs.InvalidArgument("Invalid input for field/attribute rules. Value: rules must be an object.")
	}
	if len(rules) == 0 {
		return 0, nil
	}
	for _, k := range sortedBodyKeys(rules) {
		if k != "max_server_per_host" {
			return 0, errdefs.InvalidArgumentf("Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	if policy != store.PolicyAntiAffinity {
		return 0, errdefs.InvalidArgument("Only anti-affinity policy supports rules.")
	}
	var n int
	switch x := rules["max_server_per_host"].(type) {
	case float64:
		if x != float64(int(x)) {
			n = -1
		} else {
			n = int(x)
		}
	case string:
		var err error
		if n, err = strconv.Atoi(x); err != nil {
			n = -1
		}
	default:
		n = -1
	}
	if n < 1 {
		return 0, errdefs.InvalidArgumentf("Invalid input for field/attribute max_server_per_host. Value: %v. It must be a positive integer.", rules["max_server_per_host"])
	}
	return n, nil
}

// groupView is a group's body at v; members lists its servers' ids.
func groupView(g *store.ServerGroup, members []string, v apiVersion) map[string]any {
	if members == nil {
		members = []string{}
	}
	out := map[string]any{"id": g.ID, "name": g.Name, "members": members}
	if v.AtLeast(64) {
		rules := map[string]any{}
		if g.MaxServerPerHost > 0 {
			rules["max_server_per_host"] = g.MaxServerPerHost
		}
		out["policy"], out["rules"] = g.Policy, rules
	} else {
		out["policies"], out["metadata"] = []string{g.Policy}, map[string]any{}
	}
	if v.AtLeast(13) {
		out["project_id"], out["user_id"] = g.ProjectID, g.UserID
	}
	return out
}

func (s *Service) createServerGroup(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	var body map[string]any
	if !decodeBody(w, r, &body) {
		return
	}
	name, policy, perHost, err := parseServerGroup(body, versionOf(ctx))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limits, err := s.effectiveQuota(ctx, creds.ProjectID, creds.UserID)
	if err != nil {
		s.quotaFailed(w, creds.ProjectID, err)
		return
	}
	g := &store.ServerGroup{ID: newUUID(), Name: name, ProjectID: creds.ProjectID, UserID: creds.UserID,
		Policy: policy, MaxServerPerHost: perHost, CreatedAt: s.opts.Now()}
	err = s.st.CreateServerGroup(ctx, g, limits["server_groups"])
	if errors.Is(err, store.ErrServerGroupQuota) {
		writeFault(w, errdefs.QuotaExceeded(msgGroupQuota))
		return
	}
	if err != nil {
		s.log.Error("create server group", "project", creds.ProjectID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not record the server group.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"server_group": groupView(g, nil, versionOf(ctx))})
}

// visibleGroup returns group id if the caller may see it (its project's,
// or any for an admin); otherwise it writes the 404 (ok=false).
func (s *Service) visibleGroup(w http.ResponseWriter, r *http.Request, id string) (*store.ServerGroup, bool) {
	g, err := s.lookupGroup(r, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeFault(w, errdefs.NotFound(groupNotFound(id)))
		return nil, false
	case err != nil:
		s.log.Error("look up server group", "group", id, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not read the server group.")
		return nil, false
	}
	return g, true
}

// lookupGroup is group id as the caller may see it: ErrNotFound for
// another project's group unless the caller is an admin.
func (s *Service) lookupGroup(r *http.Request, id string) (*store.ServerGroup, error) {
	creds := auth.FromContext(r.Context())
	g, err := s.st.GetServerGroup(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if g.ProjectID != creds.ProjectID && !creds.IsAdmin() {
		return nil, fmt.Errorf("server group %s of another project: %w", id, store.ErrNotFound)
	}
	return g, nil
}

func (s *Service) showServerGroup(w http.ResponseWriter, r *http.Request) {
	g, ok := s.visibleGroup(w, r, r.PathValue("id"))
	if !ok {
		return
	}
	members, err := s.st.GroupMembers(r.Context(), []string{g.ID})
	if err != nil {
		s.log.Error("members of server group", "group", g.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not read the server group.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"server_group": groupView(g, members[g.ID], versionOf(r.Context()))})
}

// offsetParam reads a non-negative integer query parameter (def when
// absent).
func offsetParam(r *http.Request, key string, def int) (int, error) {
	raw, ok := r.URL.Query()[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(raw[len(raw)-1]))
	if err != nil || n < 0 {
		return 0, errdefs.InvalidArgumentf("Invalid input for query parameters %s. Value: %s. It must be an integer >= 0.", key, raw[len(raw)-1])
	}
	return n, nil
}

func (s *Service) listServerGroups(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	creds := auth.FromContext(ctx)
	project := creds.ProjectID
	if _, all := r.URL.Query()["all_projects"]; all {
		if !creds.IsAdmin() {
			writeFault(w, errdefs.Forbidden("Policy doesn't allow os_compute_api:os-server-groups:index:all_projects to be performed."))
			return
		}
		project = ""
	}
	limit, err := offsetParam(r, "limit", maxPageSize)
	if err == nil {
		limit = min(limit, maxPageSize)
	}
	offset, err2 := offsetParam(r, "offset", 0)
	if err = errors.Join(err, err2); err != nil {
		writeFault(w, errdefs.InvalidArgument(err.Error()))
		return
	}
	groups, err := s.st.ListServerGroups(ctx, project)
	if err != nil {
		s.log.Error("list server groups", "project", project, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not list server groups.")
		return
	}
	groups = groups[min(offset, len(groups)):]
	groups = groups[:min(limit, len(groups))]
	ids := make([]string, len(groups))
	for i := range groups {
		ids[i] = groups[i].ID
	}
	members, err := s.st.GroupMembers(ctx, ids)
	if err != nil {
		s.log.Error("members of server groups", "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not list server groups.")
		return
	}
	out := make([]map[string]any, 0, len(groups))
	for i := range groups {
		out = append(out, groupView(&groups[i], members[groups[i].ID], versionOf(ctx)))
	}
	writeJSON(w, http.StatusOK, map[string]any{"server_groups": out})
}

func (s *Service) deleteServerGroup(w http.ResponseWriter, r *http.Request) {
	g, ok := s.visibleGroup(w, r, r.PathValue("id"))
	if !ok {
		return
	}
	err := s.st.DeleteServerGroup(r.Context(), g.ID)
	if errors.Is(err, store.ErrNotFound) {
		writeFault(w, errdefs.NotFound(groupNotFound(g.ID)))
		return
	}
	if err != nil {
		s.log.Error("delete server group", "group", g.ID, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not delete the server group.")
		return
	}
	noContent(w, http.StatusNoContent)
}

// Scheduler hints on server create.

// serverPlacement is what a create's os:scheduler_hints asked for.
type serverPlacement struct {
	hints       store.SchedulerHints
	group       *store.ServerGroup
	memberLimit int
}

// hintsJSON is the hints as Instance.SchedulerHints stores them ("" for
// none).
func (p *serverPlacement) hintsJSON() string {
	if p.hints.Group == "" && len(p.hints.SameHost) == 0 && len(p.hints.DifferentHost) == 0 {
		return ""
	}
	b, _ := json.Marshal(p.hints)
	return string(b)
}

// canonicalUUID returns raw as a lower-case dashed uuid, the form ids are
// stored in, if it is a uuid in any of the forms Nova accepts.
func canonicalUUID(raw any) (string, bool) {
	str, ok := raw.(string)
	if !ok {
		return "", false
	}
	u, err := uuid.Parse(str)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// uuidList reads a same_host/different_host hint: one server uuid or a
// list of them.
func uuidList(key string, raw any) ([]string, error) {
	var items []any
	switch x := raw.(type) {
	case nil:
		return nil, nil
	case string:
		items = []any{x}
	case []any:
		items = x
	default:
		return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %v. It must be a server uuid or a list of them.", key, raw)
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		id, ok := canonicalUUID(it)
		if !ok {
			return nil, errdefs.InvalidArgumentf("Invalid input for field/attribute %s. Value: %v. '%v' is not a 'uuid'", key, raw, it)
		}
		out = append(out, id)
	}
	return out, nil
}

// schedulerHints parses a create's os:scheduler_hints (raw: the JSON, nil
// when absent) and resolves its group. A bad hint or a group the caller
// cannot see is a 400, written here (ok=false). Hints Capsule does not act
// on are accepted and ignored, as Nova's schema allows them.
func (s *Service) schedulerHints(w http.ResponseWriter, r *http.Request, raw json.RawMessage) (*serverPlacement, bool) {
	p := &serverPlacement{}
	if len(raw) == 0 || string(raw) == "null" {
		return p, true
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		writeFault(w, errdefs.InvalidArgument("Invalid input for field/attribute os:scheduler_hints. Value must be an object."))
		return nil, false
	}
	var err error
	if p.hints.SameHost, err = uuidList("same_host", m["same_host"]); err == nil {
		p.hints.DifferentHost, err = uuidList("different_host", m["different_host"])
	}
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	p.hints.AnyProject = (len(p.hints.SameHost) > 0 || len(p.hints.DifferentHost) > 0) && auth.FromContext(r.Context()).IsAdmin()
	if raw, ok := m["group"]; ok {
		if !s.resolveHintGroup(w, r, p, raw) {
			return nil, false
		}
	}
	return p, true
}

// resolveHintGroup sets p's group from the "group" hint and reads the
// member quota.
func (s *Service) resolveHintGroup(w http.ResponseWriter, r *http.Request, p *serverPlacement, raw any) bool {
	id, ok := canonicalUUID(raw)
	if !ok {
		writeFault(w, errdefs.InvalidArgumentf("Invalid input for field/attribute group. Value: %v. '%v' is not a 'uuid'", raw, raw))
		return false
	}
	g, err := s.lookupGroup(r, id)
	if errors.Is(err, store.ErrNotFound) {
		writeFault(w, errdefs.InvalidArgument(groupNotFound(id)))
		return false
	}
	if err != nil {
		s.log.Error("look up scheduler hint group", "group", id, "error", err)
		writeError(w, http.StatusInternalServerError, "Unexpected API Error: could not read the server group.")
		return false
	}
	creds := auth.FromContext(r.Context())
	limits, err := s.effectiveQuota(r.Context(), g.ProjectID, creds.UserID)
	if err != nil {
		s.quotaFailed(w, g.ProjectID, err)
		return false
	}
	p.group, p.memberLimit, p.hints.Group = g, limits["server_group_members"], g.ID
	return true
}

// join puts a server being created in its group, in tx (the transaction
// recording the servers of the request, so a refused join records none).
func (p *serverPlacement) join(tx *gorm.DB, instanceID string) error {
	if p.group == nil {
		return nil
	}
	return store.AddGroupMember(tx, p.group.ID, instanceID, p.memberLimit)
}

// writeJoinError answers a failed join with Nova's error and reports
// whether err was one.
func writeJoinError(w http.ResponseWriter, p *serverPlacement, err error) bool {
	switch {
	case errors.Is(err, store.ErrGroupMemberQuota):
		writeFault(w, errdefs.QuotaExceeded(msgGroupMemberQuota))
	case errors.Is(err, store.ErrNotFound) && p.group != nil:
		writeFault(w, errdefs.InvalidArgument(groupNotFound(p.group.ID)))
	default:
		return false
	}
	return true
}
