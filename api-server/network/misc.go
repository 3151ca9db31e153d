package network

import (
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/errdefs"
)

// extension is a Neutron API extension Capsule implements.
type extension struct {
	Alias, Name, Description, Updated string
}

// extensions declares exactly what this API implements: Tempest and OSC
// decide what to test or send from this list.
var extensions = []extension{
	{"provider", "Provider Network", "Expose mapping of virtual networks to physical networks", "2012-09-07T10:00:00-00:00"},
	{"binding", "Port Binding", "Expose port bindings of a virtual port to external application", "2014-02-03T10:00:00-00:00"},
	{"port-security", "Port Security", "Provides port security", "2012-07-23T10:00:00-00:00"},
	{"standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes", "2016-02-10T10:00:00-00:00"},
	{"external-net", "Neutron external network", "Adds external network attribute to network resource.", "2013-01-14T10:00:00-00:00"},
	{"net-mtu", "Network MTU", "Provides MTU attribute for a network resource.", "2015-03-25T10:00:00-00:00"},
	{"standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.", "2016-09-12T10:00:00-00:00"},
	{"standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources.", "2016-04-11T10:00:00-00:00"},
	{"project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled.", "2016-09-09T09:09:09-09:09"},
	{"filter-validation", "Filter parameters validation", "Provides validation on filter parameters.", "2018-03-21T10:00:00-00:00"},
	{"pagination", "Pagination support", "Extension that indicates that pagination is enabled.", "2016-06-12T00:00:00-00:00"},
	{"sorting", "Sorting support", "Extension that indicates that sorting is enabled.", "2016-06-12T00:00:00-00:00"},
	{"quotas", "Quota management support", "Expose functions for quotas management per tenant", "2012-07-29T10:00:00-00:00"},
	{"quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project", "2017-02-10T10:00:00-00:00"},
}

func (e extension) view() map[string]any {
	return map[string]any{"alias": e.Alias, "name": e.Name, "description": e.Description, "updated": e.Updated, "links": []any{}}
}

func (s *Service) listExtensions(w http.ResponseWriter, r *http.Request) {
	out := make([]map[string]any, 0, len(extensions))
	for _, e := range extensions {
		out = append(out, e.view())
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"extensions": out})
}

func (s *Service) getExtension(w http.ResponseWriter, r *http.Request) {
	alias := r.PathValue("alias")
	for _, e := range extensions {
		if e.Alias == alias {
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{"extension": e.view()})
			return
		}
	}
	writeFault(w, errdefs.NotFound("Extension with alias "+alias+" does not exist").WithReason("HTTPNotFound"))
}

// sgNamespace derives the stable ids of each project's default security
// group and its rules, so they need no table.
var sgNamespace = uuid.MustParse("5b0c7d0e-3f4e-4c55-9d39-6f3b7c1ea1d0")

// epoch is the creation time the synthesized default groups report.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// defaultSecurityGroup is Neutron's per-project "default" group (allow
// all egress, ingress from the group). Capsule enforces no group rules;
// the group exists because clients (OSC server create) resolve it by name.
func defaultSecurityGroup(project string) map[string]any {
	id := uuid.NewSHA1(sgNamespace, []byte("sg:"+project)).String()
	return map[string]any{
		"id": id, "name": "default", "description": "Default security group", "project_id": project,
		"tenant_id": project, "stateful": true, "security_group_rules": defaultRules(project, id), "tags": []string{},
		"created_at": ts(epoch), "updated_at": ts(epoch), "revision_number": 1, "shared": false,
	}
}

func defaultRules(project, sg string) []map[string]any {
	var out []map[string]any
	for _, r := range []struct{ dir, eth string }{{"egress", "IPv4"}, {"egress", "IPv6"}, {"ingress", "IPv4"}, {"ingress", "IPv6"}} {
		var remote any
		if r.dir == "ingress" {
			remote = sg
		}
		out = append(out, map[string]any{
			"id": uuid.NewSHA1(sgNamespace, []byte("rule:"+project+":"+r.dir+":"+r.eth)).String(), "security_group_id": sg,
			"direction": r.dir, "ethertype": r.eth, "protocol": nil, "port_range_min": nil, "port_range_max": nil,
			"remote_ip_prefix": nil, "remote_group_id": remote, "remote_address_group_id": nil, "normalized_cidr": nil,
			"project_id": project, "tenant_id": project, "description": "", "tags": []string{},
			"created_at": ts(epoch), "updated_at": ts(epoch), "revision_number": 0,
		})
	}
	return out
}

func (s *Service) listSecurityGroups(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	var views []view
	if c.ProjectID != "" {
		views = append(views, defaultSecurityGroup(c.ProjectID))
	}
	listQuery(w, r, "security_groups", views, keysOf(defaultSecurityGroup("")), func(id string) {
		writeFault(w, errdefs.NotFound("Security group "+id+" does not exist").WithReason("SecurityGroupNotFound"))
	})
}

func (s *Service) getSecurityGroup(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	if sg := defaultSecurityGroup(c.ProjectID); c.ProjectID != "" && sg["id"] == r.PathValue("id") {
		showOne(w, r, http.StatusOK, "security_group", sg)
		return
	}
	writeFault(w, errdefs.NotFound("Security group "+r.PathValue("id")+" does not exist").WithReason("SecurityGroupNotFound"))
}

func (s *Service) listSecurityGroupRules(w http.ResponseWriter, r *http.Request) {
	c := creds(r)
	var views []view
	if c.ProjectID != "" {
		sg := defaultSecurityGroup(c.ProjectID)
		views = append(views, sg["security_group_rules"].([]map[string]any)...)
	}
	listQuery(w, r, "security_group_rules", views, keysOf(defaultRules("", "")[0]), func(id string) {
		writeFault(w, errdefs.NotFound("Security group rule "+id+" does not exist").WithReason("SecurityGroupRuleNotFound"))
	})
}
