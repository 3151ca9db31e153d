package apifuzz

import (
	"fmt"
)

// route is one API operation the fuzzer calls: a valid request of it
// (path, query keys, body) that the mutator then spoils.
type route struct {
	service string // identity, compute, image, network: the catalog entry
	method  string
	// path is relative to the service's endpoint; {kind} placeholders are
	// filled with an id of that kind (a live one, or a hostile string).
	path string
	// body returns a valid body; nil means the request has none.
	body        func(e *env) any
	rawBody     bool     // the body is bytes (image upload), not JSON
	contentType string   // "" = application/json when there is a body
	query       []string // query parameters the route reads
	// creates names the pool a 2xx answer's id goes to (then deleted by
	// the janitor, which calls the route deletes with that id).
	creates string
	// destructive routes (deletes, updates of identity records, image
	// state changes) get ids only from what the fuzzer created, so it
	// never deletes its own users, projects or the base image.
	destructive bool
	// asAdmin: the route is an admin's (a member gets a 403 at once).
	asAdmin bool
	// notImplemented: 501 is this route's documented answer.
	notImplemented bool
}

// deleteRoutes is how the janitor deletes a created resource of a pool.
var deleteRoutes = map[string]route{
	"server":     {service: "compute", method: "DELETE", path: "/servers/%s"},
	"flavor":     {service: "compute", method: "DELETE", path: "/flavors/%s"},
	"keypair":    {service: "compute", method: "DELETE", path: "/os-keypairs/%s"},
	"group":      {service: "compute", method: "DELETE", path: "/os-server-groups/%s"},
	"image":      {service: "image", method: "DELETE", path: "/v2/images/%s"},
	"network":    {service: "network", method: "DELETE", path: "/v2.0/networks/%s"},
	"subnet":     {service: "network", method: "DELETE", path: "/v2.0/subnets/%s"},
	"port":       {service: "network", method: "DELETE", path: "/v2.0/ports/%s"},
	"secgroup":   {service: "network", method: "DELETE", path: "/v2.0/security-groups/%s"},
	"sgrule":     {service: "network", method: "DELETE", path: "/v2.0/security-group-rules/%s"},
	"volume":     {service: "volumev3", method: "DELETE", path: "/volumes/%s"},
	"vsnap":      {service: "volumev3", method: "DELETE", path: "/snapshots/%s"},
	"project":    {service: "identity", method: "DELETE", path: "/projects/%s"},
	"user":       {service: "identity", method: "DELETE", path: "/users/%s"},
	"role":       {service: "identity", method: "DELETE", path: "/roles/%s"},
	"domain":     {service: "identity", method: "DELETE", path: "/domains/%s"},
	"credential": {service: "identity", method: "DELETE", path: "/credentials/%s"},
}

func obj(k string, v any) map[string]any { return map[string]any{k: v} }

const sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl fuzz@capsule"

// routes is every operation of the four APIs.
func routes() []route {
	var rs []route
	c := func(r route) { r.service = "compute"; rs = append(rs, r) }
	// Compute: servers.
	c(route{method: "POST", path: "/servers", creates: "server", body: func(e *env) any {
		s := map[string]any{"name": e.name("vm"), "imageRef": e.id("image"), "flavorRef": e.pickOf("1", "2"),
			"metadata": map[string]any{"k": "v"}}
		switch e.rng.IntN(4) {
		case 0:
			s["networks"] = "none"
		case 1:
			s["networks"] = []any{map[string]any{"uuid": e.id("network")}}
		case 2:
			s["networks"] = []any{map[string]any{"port": e.id("port")}}
		default:
			s["networks"] = []any{map[string]any{"uuid": e.id("network"), "fixed_ip": "10.77.0." + fmt.Sprint(2+e.rng.IntN(200))}}
		}
		if e.rng.IntN(3) == 0 {
			s["key_name"] = e.id("keypair")
		}
		if e.rng.IntN(4) == 0 {
			s["block_device_mapping_v2"] = []any{map[string]any{"boot_index": 0, "uuid": e.id("image"),
				"source_type": "image", "destination_type": "local", "delete_on_termination": true}}
		}
		if e.rng.IntN(4) == 0 {
			s["tags"] = []any{"a", "b"}
			s["user_data"] = "IyEvYmluL3NoCmVjaG8gaGkK"
			s["availability_zone"] = "nova"
			s["security_groups"] = []any{map[string]any{"name": "default"}}
			s["min_count"], s["max_count"] = 1, 1
			s["description"] = "d"
		}
		b := obj("server", s)
		if e.rng.IntN(3) == 0 {
			b["os:scheduler_hints"] = map[string]any{"group": e.id("group"), "same_host": []any{e.id("server")},
				"different_host": e.id("server")}
		}
		return b
	}})
	serverQuery := []string{"name", "status", "limit", "marker", "all_tenants", "project_id", "tenant_id", "tags", "tags-any",
		"not-tags", "not-tags-any", "changes-since", "changes-before", "sort_key", "sort_dir", "flavor", "image", "host",
		"ip", "ip6", "deleted", "locked", "user_id", "availability_zone", "reservation_id", "fields"}
	c(route{method: "GET", path: "/servers", query: serverQuery})
	c(route{method: "GET", path: "/servers/detail", query: serverQuery})
	c(route{method: "GET", path: "/servers/{server}"})
	c(route{method: "PUT", path: "/servers/{server}", body: func(e *env) any {
		return obj("server", map[string]any{"name": e.name("vm"), "description": "d", "accessIPv4": "10.0.0.1"})
	}})
	c(route{method: "DELETE", path: "/servers/{server}", destructive: true})
	for _, a := range actionBodies {
		c(route{method: "POST", path: "/servers/{server}/action", body: a, asAdmin: false})
	}
	c(route{method: "GET", path: "/servers/{server}/ips"})
	c(route{method: "GET", path: "/servers/{server}/ips/{netname}"})
	c(route{method: "GET", path: "/servers/{server}/tags"})
	c(route{method: "PUT", path: "/servers/{server}/tags", body: func(e *env) any { return obj("tags", []any{"t1", e.name("t")}) }})
	c(route{method: "DELETE", path: "/servers/{server}/tags"})
	c(route{method: "GET", path: "/servers/{server}/tags/{tag}"})
	c(route{method: "PUT", path: "/servers/{server}/tags/{tag}"})
	c(route{method: "DELETE", path: "/servers/{server}/tags/{tag}"})
	c(route{method: "GET", path: "/servers/{server}/metadata"})
	metadata := func(e *env) any { return obj("metadata", map[string]any{"k": "v", e.name("m"): "w"}) }
	c(route{method: "POST", path: "/servers/{server}/metadata", body: metadata})
	c(route{method: "PUT", path: "/servers/{server}/metadata", body: metadata})
	c(route{method: "GET", path: "/servers/{server}/metadata/{metakey}"})
	c(route{method: "PUT", path: "/servers/{server}/metadata/{metakey}", body: func(e *env) any {
		return obj("meta", map[string]any{e.lastPath("metakey"): "v"})
	}})
	c(route{method: "DELETE", path: "/servers/{server}/metadata/{metakey}"})
	c(route{method: "GET", path: "/servers/{server}/os-instance-actions", query: []string{"limit", "marker", "changes-since", "changes-before"}})
	c(route{method: "GET", path: "/servers/{server}/os-instance-actions/{request}"})
	c(route{method: "GET", path: "/servers/{server}/capsule-usage", query: []string{"period"}})
	c(route{method: "GET", path: "/servers/{server}/os-volume_attachments"})
	c(route{method: "POST", path: "/servers/{server}/os-volume_attachments", body: func(e *env) any {
		return obj("volumeAttachment", map[string]any{"volumeId": e.id("volume"), "device": e.pickOf(nil, "/dev/vdc", "/data", "../x"),
			"delete_on_termination": e.pickOf(true, false), "tag": e.pickOf("t", nil)})
	}})
	c(route{method: "GET", path: "/servers/{server}/os-volume_attachments/{volume}"})
	c(route{method: "PUT", path: "/servers/{server}/os-volume_attachments/{volume}", body: func(e *env) any {
		return obj("volumeAttachment", map[string]any{"volumeId": e.id("volume"), "delete_on_termination": true})
	}})
	c(route{method: "DELETE", path: "/servers/{server}/os-volume_attachments/{volume}"})
	c(route{method: "GET", path: "/servers/{server}/os-interface"})
	c(route{method: "POST", path: "/servers/{server}/os-interface", body: func(e *env) any {
		if e.rng.IntN(2) == 0 {
			return obj("interfaceAttachment", map[string]any{"port_id": e.id("port")})
		}
		return obj("interfaceAttachment", map[string]any{"net_id": e.id("network"),
			"fixed_ips": []any{map[string]any{"ip_address": "10.77.0." + fmt.Sprint(2+e.rng.IntN(200))}}})
	}})
	c(route{method: "GET", path: "/servers/{server}/os-interface/{port}"})
	c(route{method: "DELETE", path: "/servers/{server}/os-interface/{port}"})
	c(route{method: "POST", path: "/servers/{server}/remote-consoles", body: func(e *env) any {
		p := e.pickOf("serial", "vnc", "spice", "rdp", "mks")
		t := map[any]string{"serial": "serial", "vnc": "novnc", "spice": "spice-html5", "rdp": "rdp-html5", "mks": "webmks"}[p]
		return obj("remote_console", map[string]any{"protocol": p, "type": t})
	}})
	c(route{method: "GET", path: "/servers/{server}/diagnostics", asAdmin: true})
	c(route{method: "GET", path: "/servers/{server}/os-volume_attachments"})
	c(route{method: "GET", path: "/servers/{server}/migrations", asAdmin: true})
	c(route{method: "GET", path: "/servers/{server}/migrations/{migration}", asAdmin: true})
	// Compute: flavors.
	flavorQuery := []string{"is_public", "minRam", "minDisk", "limit", "marker", "sort_key", "sort_dir"}
	c(route{method: "GET", path: "/flavors", query: flavorQuery})
	c(route{method: "GET", path: "/flavors/detail", query: flavorQuery})
	c(route{method: "GET", path: "/flavors/{flavor}"})
	c(route{method: "POST", path: "/flavors", asAdmin: true, creates: "flavor", body: func(e *env) any {
		return obj("flavor", map[string]any{"name": e.name("f"), "ram": 128, "vcpus": 1, "disk": 1, "id": e.pickOf(nil, "auto", e.name("fid")),
			"swap": 0, "rxtx_factor": 1.0, "os-flavor-access:is_public": e.rng.IntN(2) == 0, "OS-FLV-EXT-DATA:ephemeral": 0,
			"description": "d"})
	}})
	c(route{method: "PUT", path: "/flavors/{flavor}", asAdmin: true, body: func(e *env) any { return obj("flavor", map[string]any{"description": "x"}) }})
	c(route{method: "DELETE", path: "/flavors/{flavor}", asAdmin: true, destructive: true})
	c(route{method: "GET", path: "/flavors/{flavor}/os-extra_specs"})
	c(route{method: "POST", path: "/flavors/{flavor}/os-extra_specs", asAdmin: true, destructive: true, body: func(e *env) any {
		specs := map[string]any{}
		for range 1 + e.rng.IntN(3) {
			k := extraSpecKeys[e.rng.IntN(len(extraSpecKeys))]
			specs[k] = extraSpecValues[e.rng.IntN(len(extraSpecValues))]
		}
		return obj("extra_specs", specs)
	}})
	c(route{method: "GET", path: "/flavors/{flavor}/os-extra_specs/{speckey}"})
	c(route{method: "PUT", path: "/flavors/{flavor}/os-extra_specs/{speckey}", asAdmin: true, destructive: true, body: func(e *env) any {
		return map[string]any{e.lastPath("speckey"): extraSpecValues[e.rng.IntN(len(extraSpecValues))]}
	}})
	c(route{method: "DELETE", path: "/flavors/{flavor}/os-extra_specs/{speckey}", asAdmin: true, destructive: true})
	c(route{method: "GET", path: "/flavors/{flavor}/os-flavor-access", asAdmin: true})
	c(route{method: "POST", path: "/flavors/{flavor}/action", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj(e.pickOf("addTenantAccess", "removeTenantAccess").(string), map[string]any{"tenant": e.id("project")})
	}})
	// Compute: keypairs, server groups.
	c(route{method: "POST", path: "/os-keypairs", creates: "keypair", body: func(e *env) any {
		k := map[string]any{"name": e.name("kp"), "type": e.pickOf("ssh", "x509")}
		if e.rng.IntN(8) != 0 { // generating a key costs CPU: most imports
			k["public_key"] = sshKey
		}
		return obj("keypair", k)
	}})
	c(route{method: "GET", path: "/os-keypairs", query: []string{"user_id", "limit", "marker"}})
	c(route{method: "GET", path: "/os-keypairs/{keypair}", query: []string{"user_id"}})
	c(route{method: "DELETE", path: "/os-keypairs/{keypair}", destructive: true, query: []string{"user_id"}})
	c(route{method: "POST", path: "/os-server-groups", creates: "group", body: func(e *env) any {
		g := map[string]any{"name": e.name("g")}
		if e.rng.IntN(2) == 0 {
			g["policies"] = []any{e.pickOf("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")}
		} else {
			g["policy"] = e.pickOf("affinity", "anti-affinity")
			g["rules"] = map[string]any{"max_server_per_host": 1}
		}
		return obj("server_group", g)
	}})
	c(route{method: "GET", path: "/os-server-groups", query: []string{"all_projects", "limit", "offset"}})
	c(route{method: "GET", path: "/os-server-groups/{group}"})
	c(route{method: "DELETE", path: "/os-server-groups/{group}", destructive: true})
	// Compute: admin and informational.
	c(route{method: "GET", path: "/os-services", asAdmin: true, query: []string{"host", "binary"}})
	c(route{method: "PUT", path: "/os-services/{serviceaction}", asAdmin: true, body: func(e *env) any {
		return map[string]any{"host": "fuzz-host", "binary": "nova-compute", "disabled_reason": "fuzz"}
	}})
	c(route{method: "GET", path: "/os-hypervisors", asAdmin: true, query: []string{"hypervisor_hostname_pattern", "with_servers", "limit", "marker"}})
	c(route{method: "GET", path: "/os-hypervisors/detail", asAdmin: true})
	c(route{method: "GET", path: "/os-hypervisors/statistics", asAdmin: true})
	c(route{method: "GET", path: "/os-hypervisors/{hypervisor}", asAdmin: true, query: []string{"with_servers"}})
	c(route{method: "GET", path: "/os-hypervisors/{hypervisor}/uptime", asAdmin: true})
	c(route{method: "GET", path: "/os-hypervisors/{hypervisor}/search", asAdmin: true})
	c(route{method: "GET", path: "/os-hypervisors/{hypervisor}/servers", asAdmin: true})
	c(route{method: "GET", path: "/limits", query: []string{"tenant_id", "reserved"}})
	c(route{method: "GET", path: "/os-availability-zone"})
	c(route{method: "GET", path: "/os-availability-zone/detail", asAdmin: true})
	c(route{method: "GET", path: "/os-quota-sets/{project}", query: []string{"user_id"}})
	c(route{method: "PUT", path: "/os-quota-sets/{project}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("quota_set", map[string]any{"instances": 10, "cores": 20, "ram": 51200, "metadata_items": 128,
			"key_pairs": 100, "server_groups": 10, "server_group_members": 10, "force": e.rng.IntN(2) == 0})
	}})
	c(route{method: "DELETE", path: "/os-quota-sets/{project}", asAdmin: true, destructive: true})
	c(route{method: "GET", path: "/os-quota-sets/{project}/defaults"})
	c(route{method: "GET", path: "/os-quota-sets/{project}/detail"})
	usageQuery := []string{"start", "end", "detailed", "limit", "marker"}
	c(route{method: "GET", path: "/os-simple-tenant-usage", asAdmin: true, query: usageQuery})
	c(route{method: "GET", path: "/os-simple-tenant-usage/{project}", query: usageQuery})
	c(route{method: "GET", path: "/os-migrations", asAdmin: true, query: []string{"host", "status", "migration_type", "instance_uuid",
		"limit", "marker", "changes-since", "changes-before", "user_id", "project_id"}})
	c(route{method: "GET", path: "/os-host-events", asAdmin: true, query: []string{"host", "since", "limit", "type"}})
	c(route{method: "GET", path: "/os-aggregates", asAdmin: true})
	c(route{method: "GET", path: "/os-aggregates/{aggregate}", asAdmin: true})
	c(route{method: "POST", path: "/os-aggregates/{aggregate}/action", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("set_metadata", obj("metadata", map[string]any{"k": e.name("v"), "availability_zone": nil}))
	}})
	c(route{method: "GET", path: "/extensions"})
	c(route{method: "GET", path: "/servers/{server}/topology"})
	c(route{method: "GET", path: "/servers/{server}/os-server-password"})
	c(route{method: "DELETE", path: "/servers/{server}/os-server-password", destructive: true})
	// Security groups: a server's, and Nova's proxy (below 2.36).
	c(route{method: "GET", path: "/servers/{server}/os-security-groups"})
	c(route{method: "GET", path: "/os-security-groups"})
	c(route{method: "POST", path: "/os-security-groups", creates: "secgroup", body: func(e *env) any {
		return obj("security_group", map[string]any{"name": e.name("sg"), "description": "d"})
	}})
	c(route{method: "GET", path: "/os-security-groups/{secgroup}"})
	c(route{method: "PUT", path: "/os-security-groups/{secgroup}", destructive: true, body: func(e *env) any {
		return obj("security_group", map[string]any{"name": e.name("sg"), "description": "x"})
	}})
	c(route{method: "DELETE", path: "/os-security-groups/{secgroup}", destructive: true})
	c(route{method: "POST", path: "/os-security-group-rules", creates: "sgrule", body: func(e *env) any {
		return obj("security_group_rule", map[string]any{"parent_group_id": e.id("secgroup"), "ip_protocol": e.pickOf("tcp", "udp", "icmp", nil),
			"from_port": e.pickOf(-1, 22, 1000), "to_port": e.pickOf(-1, 22, 2000), "cidr": e.pickOf("0.0.0.0/0", "10.0.0.0/8", nil),
			"group_id": e.pickOf(nil, e.id("secgroup"))})
	}})
	c(route{method: "DELETE", path: "/os-security-group-rules/{sgrule}", destructive: true})
	// The image proxy (below 2.36).
	imgQuery := []string{"name", "status", "server", "type", "minRam", "minDisk", "changes-since", "limit", "marker"}
	c(route{method: "GET", path: "/images", query: imgQuery})
	c(route{method: "GET", path: "/images/detail", query: imgQuery})
	c(route{method: "GET", path: "/images/{image}"})
	c(route{method: "DELETE", path: "/images/{image}", destructive: true})
	c(route{method: "GET", path: "/images/{image}/metadata"})
	c(route{method: "POST", path: "/images/{image}/metadata", destructive: true, body: func(e *env) any {
		return obj("metadata", map[string]any{"k": "v"})
	}})
	c(route{method: "PUT", path: "/images/{image}/metadata", destructive: true, body: func(e *env) any {
		return obj("metadata", map[string]any{"k": "v"})
	}})
	c(route{method: "GET", path: "/images/{image}/metadata/{metakey}"})
	c(route{method: "PUT", path: "/images/{image}/metadata/{metakey}", destructive: true, body: func(e *env) any {
		return obj("meta", map[string]any{"k": "v"})
	}})
	c(route{method: "DELETE", path: "/images/{image}/metadata/{metakey}", destructive: true})
	c(route{method: "GET", path: "/extensions/{alias}"})
	c(route{method: "GET", path: ""})
	c(route{method: "GET", path: "/../"})

	// Identity.
	id := func(r route) { r.service = "identity"; rs = append(rs, r) }
	id(route{method: "POST", path: "/auth/tokens", query: []string{"nocatalog"}, body: authBody})
	id(route{method: "GET", path: "/auth/tokens", query: []string{"nocatalog", "allow_expired"}})
	id(route{method: "HEAD", path: "/auth/tokens"})
	id(route{method: "DELETE", path: "/auth/tokens"})
	id(route{method: "GET", path: "/auth/projects"})
	id(route{method: "GET", path: "/auth/domains"})
	id(route{method: "GET", path: "/auth/catalog"})
	id(route{method: "GET", path: "/domains", query: []string{"name", "enabled", "name__contains", "tags"}})
	id(route{method: "GET", path: "/domains/{domain}"})
	id(route{method: "POST", path: "/domains", asAdmin: true, creates: "domain", body: func(e *env) any {
		return obj("domain", map[string]any{"name": e.name("d"), "description": "d", "enabled": e.rng.IntN(2) == 0, "tags": []any{"t"}})
	}})
	id(route{method: "PATCH", path: "/domains/{domain}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("domain", map[string]any{"enabled": false, "description": "e"})
	}})
	id(route{method: "DELETE", path: "/domains/{domain}", asAdmin: true, destructive: true})
	id(route{method: "GET", path: "/domains/{domain}/users/{user}/roles"})
	id(route{method: "GET", path: "/domains/{domain}/users/{user}/roles/{role}"})
	id(route{method: "HEAD", path: "/domains/{domain}/users/{user}/roles/{role}"})
	id(route{method: "PUT", path: "/domains/{domain}/users/{user}/roles/{role}", asAdmin: true, destructive: true})
	id(route{method: "DELETE", path: "/domains/{domain}/users/{user}/roles/{role}", asAdmin: true, destructive: true})
	id(route{method: "GET", path: "/projects", query: []string{"name", "domain_id", "enabled", "is_domain", "parent_id", "tags",
		"tags-any", "not-tags", "not-tags-any", "name__contains", "name__istartswith"}})
	id(route{method: "POST", path: "/projects", asAdmin: true, creates: "project", body: func(e *env) any {
		return obj("project", map[string]any{"name": e.name("p"), "description": "d", "enabled": true, "domain_id": "default",
			"is_domain": false, "tags": []any{"x"}})
	}})
	id(route{method: "GET", path: "/projects/{project}", query: []string{"subtree_as_list", "parents_as_list", "subtree_as_ids", "parents_as_ids"}})
	id(route{method: "PATCH", path: "/projects/{project}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("project", map[string]any{"name": e.name("p"), "description": "e", "enabled": e.rng.IntN(2) == 0, "tags": []any{"a", "b"}})
	}})
	id(route{method: "GET", path: "/projects/{project}/tags"})
	id(route{method: "PUT", path: "/projects/{project}/tags", asAdmin: true, destructive: true, body: func(e *env) any {
		return map[string]any{"tags": []any{"x", "y"}}
	}})
	id(route{method: "DELETE", path: "/projects/{project}/tags", asAdmin: true, destructive: true})
	id(route{method: "GET", path: "/projects/{project}/tags/{tag}"})
	id(route{method: "PUT", path: "/projects/{project}/tags/{tag}", asAdmin: true, destructive: true})
	id(route{method: "DELETE", path: "/projects/{project}/tags/{tag}", asAdmin: true, destructive: true})
	id(route{method: "DELETE", path: "/projects/{project}", asAdmin: true, destructive: true})
	id(route{method: "GET", path: "/projects/{project}/users/{user}/roles"})
	id(route{method: "GET", path: "/projects/{project}/users/{user}/roles/{role}"})
	id(route{method: "HEAD", path: "/projects/{project}/users/{user}/roles/{role}"})
	id(route{method: "PUT", path: "/projects/{project}/users/{user}/roles/{role}", asAdmin: true, destructive: true})
	id(route{method: "DELETE", path: "/projects/{project}/users/{user}/roles/{role}", asAdmin: true, destructive: true})
	id(route{method: "GET", path: "/users", query: []string{"name", "domain_id", "enabled", "password_expires_at", "name__contains", "name__endswith"}})
	id(route{method: "POST", path: "/users", asAdmin: true, creates: "user", body: func(e *env) any {
		return obj("user", map[string]any{"name": e.name("u"), "password": e.pickOf("pw-123456", "", "p\x00w",
			"a-password-that-is-longer-than-seventy-two-bytes-which-is-what-bcrypt-can-take-at-most-x"),
			"default_project_id": e.id("project"), "enabled": true, "domain_id": "default", "email": "u@example.org",
			"description": "d", "options": map[string]any{"ignore_password_expiry": true}, "extra_attr": "x"})
	}})
	id(route{method: "GET", path: "/users/{user}"})
	id(route{method: "PATCH", path: "/users/{user}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("user", map[string]any{"name": e.name("u"), "enabled": e.rng.IntN(2) == 0, "password": "pw-654321"})
	}})
	id(route{method: "DELETE", path: "/users/{user}", asAdmin: true, destructive: true})
	id(route{method: "POST", path: "/users/{user}/password", destructive: true, body: func(e *env) any {
		return obj("user", map[string]any{"password": "pw-new-1", "original_password": "pw-123456"})
	}})
	id(route{method: "GET", path: "/users/{user}/projects"})
	id(route{method: "GET", path: "/users/{user}/groups"})
	id(route{method: "GET", path: "/users/{user}/application_credentials", query: []string{"name"}})
	id(route{method: "POST", path: "/users/{user}/application_credentials", body: func(e *env) any {
		return obj("application_credential", map[string]any{"name": e.name("ac"), "description": "d",
			"roles": []any{map[string]any{"name": "member"}}, "unrestricted": false, "expires_at": "2999-01-01T00:00:00"})
	}})
	id(route{method: "GET", path: "/users/{user}/application_credentials/{appcred}"})
	id(route{method: "DELETE", path: "/users/{user}/application_credentials/{appcred}", destructive: true})
	id(route{method: "GET", path: "/credentials", query: []string{"user_id", "type"}})
	id(route{method: "POST", path: "/credentials", creates: "credential", body: func(e *env) any {
		if e.rng.IntN(2) == 0 {
			return obj("credential", map[string]any{"user_id": e.f.demo.userID, "type": "cert", "blob": "b"})
		}
		return obj("credential", map[string]any{"user_id": e.f.demo.userID, "project_id": e.f.demo.projectID, "type": "ec2",
			"blob": `{"access":"` + e.name("a") + `","secret":"s"}`})
	}})
	id(route{method: "GET", path: "/credentials/{credential}"})
	id(route{method: "PATCH", path: "/credentials/{credential}", destructive: true, body: func(e *env) any {
		return obj("credential", map[string]any{"blob": "new", "type": "cert"})
	}})
	id(route{method: "DELETE", path: "/credentials/{credential}", destructive: true})
	id(route{method: "GET", path: "/users/{user}/credentials/OS-EC2"})
	id(route{method: "POST", path: "/users/{user}/credentials/OS-EC2", body: func(e *env) any {
		return map[string]any{"tenant_id": e.f.demo.projectID}
	}})
	id(route{method: "GET", path: "/users/{user}/credentials/OS-EC2/{ec2access}"})
	id(route{method: "DELETE", path: "/users/{user}/credentials/OS-EC2/{ec2access}", destructive: true})
	id(route{method: "POST", path: "/s3tokens", body: func(e *env) any {
		return obj("credentials", map[string]any{"access": e.name("a"), "signature": "x", "token": "R0VUCg=="})
	}})
	id(route{method: "GET", path: "/groups", query: []string{"name", "domain_id", "name__contains"}})
	id(route{method: "POST", path: "/groups", asAdmin: true, creates: "group", body: func(e *env) any {
		return obj("group", map[string]any{"name": e.name("g"), "description": "d", "domain_id": e.pickOf("", "default"), "email": "x"})
	}})
	id(route{method: "GET", path: "/groups/{group}"})
	id(route{method: "PATCH", path: "/groups/{group}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("group", map[string]any{"name": e.name("g"), "description": "e"})
	}})
	id(route{method: "DELETE", path: "/groups/{group}", asAdmin: true, destructive: true})
	id(route{method: "GET", path: "/groups/{group}/users"})
	id(route{method: "GET", path: "/groups/{group}/users/{user}"})
	id(route{method: "HEAD", path: "/groups/{group}/users/{user}"})
	id(route{method: "PUT", path: "/groups/{group}/users/{user}", asAdmin: true, destructive: true})
	id(route{method: "DELETE", path: "/groups/{group}/users/{user}", asAdmin: true, destructive: true})
	for _, scope := range []string{"/projects/{project}", "/domains/{domain}"} {
		id(route{method: "GET", path: scope + "/groups/{group}/roles"})
		id(route{method: "GET", path: scope + "/groups/{group}/roles/{role}"})
		id(route{method: "HEAD", path: scope + "/groups/{group}/roles/{role}"})
		id(route{method: "PUT", path: scope + "/groups/{group}/roles/{role}", asAdmin: true, destructive: true})
		id(route{method: "DELETE", path: scope + "/groups/{group}/roles/{role}", asAdmin: true, destructive: true})
	}
	id(route{method: "GET", path: "/roles", query: []string{"name", "domain_id", "name__contains"}})
	id(route{method: "POST", path: "/roles", asAdmin: true, creates: "role", body: func(e *env) any {
		return obj("role", map[string]any{"name": e.name("r"), "description": "d", "domain_id": e.pickOf("", "default"),
			"options": map[string]any{"immutable": false}, "extra_attr": "x"})
	}})
	id(route{method: "GET", path: "/roles/{role}"})
	id(route{method: "PATCH", path: "/roles/{role}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("role", map[string]any{"name": e.name("r")})
	}})
	id(route{method: "DELETE", path: "/roles/{role}", asAdmin: true, destructive: true})
	id(route{method: "GET", path: "/role_assignments", query: []string{"user.id", "scope.project.id", "role.id", "include_names",
		"effective", "include_subtree", "group.id", "scope.domain.id"}})
	id(route{method: "GET", path: "/services"})
	id(route{method: "GET", path: "/services/{service}"})
	id(route{method: "GET", path: "/endpoints", query: []string{"interface", "service_id", "region_id"}})
	id(route{method: "GET", path: "/endpoints/{endpoint}"})
	id(route{method: "GET", path: "/regions", query: []string{"parent_region_id"}})
	id(route{method: "GET", path: "/regions/{region}"})
	id(route{method: "GET", path: ""})
	id(route{method: "GET", path: "/../"})

	// Image.
	im := func(r route) { r.service = "image"; rs = append(rs, r) }
	im(route{method: "POST", path: "/v2/images", creates: "image", body: func(e *env) any {
		b := map[string]any{"name": e.name("img"), "container_format": e.pickOf("docker", "bare", "ovf"),
			"disk_format": e.pickOf("raw", "qcow2", "iso"), "visibility": e.pickOf("private", "shared", "community", "public"),
			"tags": []any{"a"}, "min_disk": 0, "min_ram": 0, "protected": false, "custom_prop": "v"}
		if e.rng.IntN(4) == 0 {
			b["id"] = e.uuid()
		}
		return b
	}})
	im(route{method: "GET", path: "/v2/images", query: []string{"limit", "marker", "sort", "sort_key", "sort_dir", "name", "status",
		"visibility", "tag", "member_status", "owner", "os_hidden", "created_at", "updated_at", "size_min", "size_max",
		"container_format", "disk_format", "protected", "id"}})
	im(route{method: "GET", path: "/v2/images/{image}"})
	im(route{method: "PATCH", path: "/v2/images/{image}", destructive: true, contentType: "application/openstack-images-v2.1-json-patch",
		body: func(e *env) any {
			ops := []any{}
			for range 1 + e.rng.IntN(3) {
				op := map[string]any{"op": e.pickOf("add", "replace", "remove", "test", "move", "copy"),
					"path": e.pickOf("/name", "/tags", "/tags/0", "/tags/-", "/visibility", "/min_ram", "/protected",
						"/custom_prop", "/os_hidden", "/id", "/status", "/container_format", "/x~1y", "/a/b/c", "/", "")}
				if op["op"] != "remove" {
					op["value"] = e.pickOf("v", 1, true, []any{"t"}, nil, "private")
				}
				ops = append(ops, op)
			}
			return ops
		}})
	im(route{method: "DELETE", path: "/v2/images/{image}", destructive: true})
	im(route{method: "PUT", path: "/v2/images/{image}/file", destructive: true, rawBody: true, contentType: "application/octet-stream"})
	im(route{method: "GET", path: "/v2/images/{image}/file"})
	im(route{method: "POST", path: "/v2/images/{image}/actions/deactivate", destructive: true, asAdmin: true})
	im(route{method: "POST", path: "/v2/images/{image}/actions/reactivate", destructive: true, asAdmin: true})
	im(route{method: "PUT", path: "/v2/images/{image}/tags/{tag}", destructive: true})
	im(route{method: "DELETE", path: "/v2/images/{image}/tags/{tag}", destructive: true})
	im(route{method: "GET", path: "/v2/images/{image}/members"})
	im(route{method: "POST", path: "/v2/images/{image}/members", destructive: true, body: func(e *env) any {
		return map[string]any{"member": e.pickOf(e.f.pools.any("project", e.rng), e.uuid(), "", 7)}
	}})
	im(route{method: "GET", path: "/v2/images/{image}/members/{project}"})
	im(route{method: "PUT", path: "/v2/images/{image}/members/{project}", destructive: true, body: func(e *env) any {
		return map[string]any{"status": e.pickOf("accepted", "rejected", "pending", "bogus", nil)}
	}})
	im(route{method: "DELETE", path: "/v2/images/{image}/members/{project}", destructive: true})
	im(route{method: "PUT", path: "/v2/images/{image}/stage", destructive: true, rawBody: true, contentType: "application/octet-stream"})
	im(route{method: "POST", path: "/v2/images/{image}/import", destructive: true, body: func(e *env) any {
		return map[string]any{"method": map[string]any{"name": e.pickOf("glance-direct", "web-download", "copy-image", "")}}
	}})
	im(route{method: "GET", path: "/v2/info/import"})
	im(route{method: "GET", path: "/v2/schemas/image"})
	im(route{method: "GET", path: "/v2/schemas/images"})
	im(route{method: "GET", path: "/versions"})
	im(route{method: "GET", path: "/v2"})
	im(route{method: "GET", path: "/"})

	// Block Storage (the endpoint is the member's /v3/{project_id}).
	vo := func(r route) { r.service = "volumev3"; rs = append(rs, r) }
	volQuery := []string{"limit", "marker", "sort", "sort_key", "sort_dir", "offset", "name", "status", "metadata",
		"bootable", "availability_zone", "all_tenants", "project_id", "with_count", "volume_id"}
	vo(route{method: "POST", path: "/volumes", creates: "volume", body: func(e *env) any {
		v := map[string]any{"size": e.pickOf(1, 2, 0, -1, "1", 1000000), "name": e.name("vol")}
		switch e.rng.IntN(5) {
		case 0:
			v["snapshot_id"] = e.id("vsnap")
		case 1:
			v["imageRef"] = e.id("image")
		case 2:
			v["metadata"] = map[string]any{"k": "v"}
			v["volume_type"] = e.pickOf("__DEFAULT__", "ssd")
		}
		return obj("volume", v)
	}})
	vo(route{method: "GET", path: "/volumes", query: volQuery})
	vo(route{method: "GET", path: "/volumes/detail", query: volQuery})
	vo(route{method: "GET", path: "/volumes/{volume}"})
	vo(route{method: "PUT", path: "/volumes/{volume}", body: func(e *env) any {
		return obj("volume", map[string]any{"name": e.name("vol"), "description": "d", "metadata": map[string]any{"a": "b"}})
	}})
	vo(route{method: "DELETE", path: "/volumes/{volume}", destructive: true, query: []string{"cascade"}})
	vo(route{method: "POST", path: "/volumes/{volume}/action", body: func(e *env) any {
		switch e.rng.IntN(8) {
		case 0:
			return obj("os-reset_status", map[string]any{"status": e.pickOf("available", "error", "in-use", "bogus")})
		case 1:
			return obj(e.pickOf("os-reserve", "os-unreserve").(string), map[string]any{})
		case 2:
			return obj("os-set_bootable", map[string]any{"bootable": e.pickOf(true, false, "yes", "maybe", nil)})
		case 3:
			return obj("os-set_image_metadata", map[string]any{"metadata": e.pickOf(map[string]any{"image_name": "x"}, "x", nil)})
		case 4:
			return obj("os-unset_image_metadata", map[string]any{"key": e.pickOf("image_name", "", 3)})
		case 5:
			return obj("os-show_image_metadata", map[string]any{})
		}
		return obj("os-extend", map[string]any{"new_size": e.pickOf(2, 3, 0, "4", 1000000)})
	}})
	vo(route{method: "GET", path: "/volumes/{volume}/metadata"})
	vo(route{method: "POST", path: "/volumes/{volume}/metadata", body: func(e *env) any { return obj("metadata", map[string]any{"k": "v"}) }})
	vo(route{method: "PUT", path: "/volumes/{volume}/metadata", body: func(e *env) any { return obj("metadata", map[string]any{"k": "w"}) }})
	vo(route{method: "DELETE", path: "/volumes/{volume}/metadata/{metakey}"})
	vo(route{method: "POST", path: "/snapshots", creates: "vsnap", body: func(e *env) any {
		return obj("snapshot", map[string]any{"volume_id": e.id("volume"), "name": e.name("snap"), "force": e.pickOf(true, false, "yes")})
	}})
	vo(route{method: "GET", path: "/snapshots", query: volQuery})
	vo(route{method: "GET", path: "/snapshots/detail", query: volQuery})
	vo(route{method: "GET", path: "/snapshots/{vsnap}"})
	vo(route{method: "PUT", path: "/snapshots/{vsnap}", body: func(e *env) any { return obj("snapshot", map[string]any{"name": e.name("snap")}) }})
	vo(route{method: "DELETE", path: "/snapshots/{vsnap}", destructive: true})
	vo(route{method: "POST", path: "/snapshots/{vsnap}/action", asAdmin: true, destructive: true, body: func(e *env) any {
		switch e.rng.IntN(3) {
		case 0:
			return obj("os-reset_status", map[string]any{"status": e.pickOf("available", "error", "creating", "bogus")})
		case 1:
			return obj("os-update_snapshot_status", map[string]any{"status": e.pickOf("available", "error", "error_deleting", 3)})
		}
		return obj("os-force_delete", map[string]any{})
	}})
	vo(route{method: "GET", path: "/types"})
	vo(route{method: "GET", path: "/types/default"})
	vo(route{method: "GET", path: "/types/{vtype}"})
	vo(route{method: "GET", path: "/limits"})
	vo(route{method: "GET", path: "/os-availability-zone"})
	vo(route{method: "GET", path: "/os-quota-sets/{project}", query: []string{"usage"}})
	vo(route{method: "GET", path: "/os-quota-sets/{project}/defaults"})
	vo(route{method: "PUT", path: "/os-quota-sets/{project}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("quota_set", map[string]any{"volumes": e.pickOf(10, -1, -2, "5"), "gigabytes": 1000})
	}})
	vo(route{method: "DELETE", path: "/os-quota-sets/{project}", asAdmin: true, destructive: true})
	vo(route{method: "GET", path: "/os-services", asAdmin: true, query: []string{"host", "binary"}})
	vo(route{method: "GET", path: "/scheduler-stats/get_pools", asAdmin: true, query: []string{"detail", "name"}})

	// Network.
	nw := func(r route) { r.service = "network"; rs = append(rs, r) }
	listQuery := []string{"id", "name", "fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse", "tenant_id", "project_id",
		"shared", "admin_state_up", "status", "network_id", "device_id", "device_owner", "fixed_ips", "mac_address", "cidr",
		"ip_version", "router:external", "provider:network_type", "provider:segmentation_id"}
	network := func(e *env) map[string]any {
		n := map[string]any{"name": e.name("net"), "admin_state_up": true, "port_security_enabled": true, "description": "d"}
		if e.rng.IntN(2) == 0 {
			n["shared"] = e.rng.IntN(2) == 0
			n["mtu"] = 1500
			n["provider:network_type"] = e.pickOf("vlan", "flat", "vxlan", "local")
			n["provider:physical_network"] = e.pickOf("physnet1", "physnet2")
			n["provider:segmentation_id"] = 100 + e.rng.IntN(4000)
			n["router:external"] = false
		}
		return n
	}
	nw(route{method: "POST", path: "/v2.0/networks", creates: "network", body: func(e *env) any {
		if e.rng.IntN(5) == 0 {
			return obj("networks", []any{network(e), network(e)})
		}
		return obj("network", network(e))
	}})
	nw(route{method: "GET", path: "/v2.0/networks", query: listQuery})
	nw(route{method: "GET", path: "/v2.0/networks/{network}", query: []string{"fields"}})
	nw(route{method: "PUT", path: "/v2.0/networks/{network}", destructive: true, body: func(e *env) any {
		return obj("network", map[string]any{"name": e.name("net"), "admin_state_up": false, "shared": e.rng.IntN(2) == 0,
			"port_security_enabled": e.rng.IntN(2) == 0, "mtu": 1400})
	}})
	nw(route{method: "DELETE", path: "/v2.0/networks/{network}", destructive: true})
	nw(route{method: "GET", path: "/v2.0/networks/{network}/tags"})
	nw(route{method: "PUT", path: "/v2.0/networks/{network}/tags", destructive: true, body: func(e *env) any {
		return obj("tags", []any{e.name("t"), "blue"})
	}})
	nw(route{method: "PUT", path: "/v2.0/ports/{port}/tags/blue", destructive: true})
	nw(route{method: "GET", path: "/v2.0/subnets/{subnet}/tags/blue"})
	nw(route{method: "DELETE", path: "/v2.0/security-groups/{secgroup}/tags/blue", destructive: true})
	nw(route{method: "DELETE", path: "/v2.0/networks/{network}/tags", destructive: true})
	subnet := func(e *env) map[string]any {
		x := e.rng.IntN(250)
		s := map[string]any{"network_id": e.id("network"), "cidr": fmt.Sprintf("10.%d.%d.0/24", 100+x%100, x), "ip_version": 4,
			"name": e.name("sub")}
		if e.rng.IntN(2) == 0 {
			s["gateway_ip"] = fmt.Sprintf("10.%d.%d.1", 100+x%100, x)
			s["allocation_pools"] = []any{map[string]any{"start": fmt.Sprintf("10.%d.%d.10", 100+x%100, x), "end": fmt.Sprintf("10.%d.%d.20", 100+x%100, x)}}
			s["dns_nameservers"] = []any{"8.8.8.8"}
			s["host_routes"] = []any{map[string]any{"destination": "192.168.0.0/16", "nexthop": fmt.Sprintf("10.%d.%d.2", 100+x%100, x)}}
			s["enable_dhcp"] = false
		}
		if e.rng.IntN(6) == 0 {
			s["cidr"], s["ip_version"] = "fd00:"+fmt.Sprint(x)+"::/64", 6
			delete(s, "gateway_ip")
			delete(s, "allocation_pools")
			delete(s, "host_routes")
		}
		return s
	}
	nw(route{method: "POST", path: "/v2.0/subnets", creates: "subnet", body: func(e *env) any {
		if e.rng.IntN(5) == 0 {
			return obj("subnets", []any{subnet(e)})
		}
		return obj("subnet", subnet(e))
	}})
	nw(route{method: "GET", path: "/v2.0/subnets", query: listQuery})
	nw(route{method: "GET", path: "/v2.0/subnets/{subnet}", query: []string{"fields"}})
	nw(route{method: "PUT", path: "/v2.0/subnets/{subnet}", destructive: true, body: func(e *env) any {
		return obj("subnet", map[string]any{"name": e.name("sub"), "dns_nameservers": []any{"1.1.1.1"}, "gateway_ip": nil,
			"allocation_pools": []any{map[string]any{"start": "10.77.0.100", "end": "10.77.0.150"}}})
	}})
	nw(route{method: "DELETE", path: "/v2.0/subnets/{subnet}", destructive: true})
	port := func(e *env) map[string]any {
		p := map[string]any{"network_id": e.id("network"), "name": e.name("port"), "admin_state_up": true}
		if e.rng.IntN(2) == 0 {
			p["fixed_ips"] = []any{map[string]any{"subnet_id": e.id("subnet"), "ip_address": "10.77.0." + fmt.Sprint(2+e.rng.IntN(200))}}
			p["mac_address"] = fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", e.rng.IntN(256), e.rng.IntN(256), e.rng.IntN(256))
			p["port_security_enabled"] = e.rng.IntN(2) == 0
			p["allowed_address_pairs"] = []any{map[string]any{"ip_address": "10.77.0.250", "mac_address": "fa:16:3e:00:00:01"}}
			p["device_id"] = e.pickOf("", e.id("server"))
			p["device_owner"] = e.pickOf("", "compute:nova", "network:dhcp")
			p["binding:host_id"] = "fuzz-host"
		}
		return p
	}
	nw(route{method: "POST", path: "/v2.0/ports", creates: "port", body: func(e *env) any {
		if e.rng.IntN(5) == 0 {
			return obj("ports", []any{port(e)})
		}
		return obj("port", port(e))
	}})
	nw(route{method: "GET", path: "/v2.0/ports", query: listQuery})
	nw(route{method: "GET", path: "/v2.0/ports/{port}", query: []string{"fields"}})
	nw(route{method: "PUT", path: "/v2.0/ports/{port}", destructive: true, body: func(e *env) any {
		p := port(e)
		delete(p, "network_id")
		return obj("port", p)
	}})
	// A server's own port changed in place: the Networking API has the
	// server's host re-plug the NIC before it answers (PortUpdater). The
	// port is the seeded re-plug server's (the pool "serverport"), so
	// these writes only touch what the fuzzer made.
	nw(route{method: "PUT", path: "/v2.0/ports/{serverport}", body: func(e *env) any {
		p := map[string]any{}
		switch e.rng.IntN(4) {
		case 0:
			p["fixed_ips"] = []any{map[string]any{"subnet_id": e.id("subnet"), "ip_address": "10.77.0." + fmt.Sprint(2+e.rng.IntN(200))}}
		case 1:
			p["fixed_ips"] = []any{map[string]any{"subnet_id": e.id("subnet")}}
		case 2:
			p["mac_address"] = fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", e.rng.IntN(256), e.rng.IntN(256), e.rng.IntN(256))
		default:
			on := e.rng.IntN(2) == 0
			p["port_security_enabled"] = on
			if !on {
				p["security_groups"] = []any{} // as Neutron, a port leaves its groups to drop port security
			}
		}
		return obj("port", p)
	}})
	nw(route{method: "DELETE", path: "/v2.0/ports/{port}", destructive: true})
	sgQuery := []string{"id", "name", "fields", "limit", "marker", "sort_key", "sort_dir", "project_id", "tenant_id",
		"security_group_id", "direction", "ethertype", "protocol", "remote_group_id", "stateful"}
	nw(route{method: "GET", path: "/v2.0/security-groups", query: sgQuery})
	nw(route{method: "POST", path: "/v2.0/security-groups", creates: "secgroup", body: func(e *env) any {
		g := map[string]any{"name": e.name("sg"), "description": "d", "stateful": e.rng.IntN(4) != 0}
		if e.rng.IntN(5) == 0 {
			return obj("security_groups", []any{g})
		}
		return obj("security_group", g)
	}})
	nw(route{method: "GET", path: "/v2.0/security-groups/{secgroup}", query: []string{"fields"}})
	nw(route{method: "PUT", path: "/v2.0/security-groups/{secgroup}", destructive: true, body: func(e *env) any {
		return obj("security_group", map[string]any{"name": e.name("sg"), "description": "x"})
	}})
	nw(route{method: "DELETE", path: "/v2.0/security-groups/{secgroup}", destructive: true})
	nw(route{method: "GET", path: "/v2.0/security-group-rules", query: sgQuery})
	nw(route{method: "POST", path: "/v2.0/security-group-rules", creates: "sgrule", body: func(e *env) any {
		r := map[string]any{"security_group_id": e.id("secgroup"), "direction": e.pickOf("ingress", "egress"),
			"ethertype": e.pickOf("IPv4", "IPv6"), "description": "d"}
		switch e.rng.IntN(4) {
		case 0:
			lo := 1 + e.rng.IntN(65000)
			r["protocol"], r["port_range_min"], r["port_range_max"] = e.pickOf("tcp", "udp", "6", 132), lo, lo+e.rng.IntN(100)
		case 1:
			r["protocol"], r["ethertype"], r["port_range_min"], r["port_range_max"] = "icmp", "IPv4", e.rng.IntN(256), e.rng.IntN(256)
		case 2:
			r["remote_group_id"] = e.id("secgroup")
		default:
			r["protocol"], r["remote_ip_prefix"] = e.pickOf(nil, "any", "gre", 47), e.pickOf("10.0.0.0/8", "0.0.0.0/0", "::/0")
		}
		return obj("security_group_rule", r)
	}})
	nw(route{method: "GET", path: "/v2.0/security-group-rules/{sgrule}", query: []string{"fields"}})
	nw(route{method: "DELETE", path: "/v2.0/security-group-rules/{sgrule}", destructive: true})
	nw(route{method: "GET", path: "/v2.0/floatingips"})
	nw(route{method: "GET", path: "/v2.0/routers"})
	nw(route{method: "GET", path: "/v2.0/extensions"})
	nw(route{method: "GET", path: "/v2.0/extensions/{alias}"})
	nw(route{method: "GET", path: "/v2.0"})
	nw(route{method: "GET", path: "/"})
	nw(route{method: "GET", path: "/v2.0/quotas", asAdmin: true})
	nw(route{method: "GET", path: "/v2.0/quotas/{project}"})
	nw(route{method: "GET", path: "/v2.0/quotas/{project}/default"})
	nw(route{method: "GET", path: "/v2.0/quotas/{project}/details"})
	nw(route{method: "GET", path: "/v2.0/quotas/{project}/details.json"})
	nw(route{method: "PUT", path: "/v2.0/quotas/{project}", asAdmin: true, destructive: true, body: func(e *env) any {
		return obj("quota", map[string]any{"network": 100, "subnet": 100, "port": 500})
	}})
	nw(route{method: "DELETE", path: "/v2.0/quotas/{project}", asAdmin: true, destructive: true})
	return rs
}

// actionBodies are the server actions, one valid body each.
var actionBodies = []func(e *env) any{
	func(e *env) any { return obj("os-start", nil) },
	func(e *env) any { return obj("os-stop", nil) },
	func(e *env) any { return obj("pause", nil) },
	func(e *env) any { return obj("unpause", nil) },
	func(e *env) any { return obj("suspend", nil) },
	func(e *env) any { return obj("resume", nil) },
	func(e *env) any { return obj("reboot", map[string]any{"type": e.pickOf("SOFT", "HARD")}) },
	func(e *env) any { return obj("lock", e.pickOf(nil, map[string]any{"locked_reason": "fuzz"})) },
	func(e *env) any { return obj("unlock", nil) },
	func(e *env) any {
		return obj("addSecurityGroup", map[string]any{"name": e.pickOf("default", "fuzz-sg", e.id("secgroup"))})
	},
	func(e *env) any {
		return obj("removeSecurityGroup", map[string]any{"name": e.pickOf("default", "fuzz-sg")})
	},
	func(e *env) any { return obj("os-resetState", map[string]any{"state": e.pickOf("active", "error")}) },
	func(e *env) any {
		return obj(e.pickOf("os-getSerialConsole", "os-getVNCConsole").(string), map[string]any{"type": e.pickOf("serial", "novnc")})
	},
	func(e *env) any {
		return obj("os-getConsoleOutput", map[string]any{"length": e.pickOf(10, -1, nil, "5")})
	},
	func(e *env) any {
		return obj("resize", map[string]any{"flavorRef": e.pickOf("1", "2", e.id("flavor"))})
	},
	func(e *env) any { return obj("confirmResize", nil) },
	func(e *env) any { return obj("revertResize", nil) },
	func(e *env) any {
		return obj("createImage", map[string]any{"name": e.name("snap"), "metadata": map[string]any{"k": "v"}})
	},
	func(e *env) any {
		return obj("createBackup", map[string]any{"name": e.name("bk"), "backup_type": "daily", "rotation": e.rng.IntN(3)})
	},
	func(e *env) any { return obj("migrate", e.pickOf(nil, map[string]any{"host": "fuzz-host"})) },
	func(e *env) any {
		return obj("os-migrateLive", map[string]any{"host": nil, "block_migration": "auto"})
	},
	func(e *env) any { return obj("evacuate", map[string]any{}) },
	func(e *env) any {
		return obj("rebuild", map[string]any{"imageRef": e.id("image"), "name": e.name("vm"), "metadata": map[string]any{"k": "v"},
			"preserve_ephemeral": false, "key_name": e.id("keypair")})
	},
	func(e *env) any { return obj("shelve", nil) },
	func(e *env) any { return obj("unshelve", e.pickOf(nil, map[string]any{"availability_zone": "nova"})) },
	func(e *env) any { return obj("shelveOffload", nil) },
	func(e *env) any {
		return obj("rescue", e.pickOf(nil, map[string]any{"adminPass": "pw", "rescue_image_ref": e.id("image")}))
	},
	func(e *env) any { return obj("unrescue", nil) },
	func(e *env) any { return obj("addFixedIp", map[string]any{"networkId": e.id("network")}) },
}

// authBody is a Keystone v3 authentication request in one of its forms.
func authBody(e *env) any {
	user := map[string]any{"name": "demo", "domain": map[string]any{"id": "default"}, "password": e.pickOf(e.demoPass, "wrong")}
	if e.rng.IntN(3) == 0 {
		user = map[string]any{"id": e.id("user"), "password": "pw-123456"}
	}
	ident := map[string]any{"methods": []any{"password"}, "password": map[string]any{"user": user}}
	if e.rng.IntN(4) == 0 {
		ident = map[string]any{"methods": []any{"token"}, "token": map[string]any{"id": e.token()}}
	}
	auth := map[string]any{"identity": ident}
	switch e.rng.IntN(5) {
	case 0:
		auth["scope"] = map[string]any{"project": map[string]any{"name": "demo", "domain": map[string]any{"name": "Default"}}}
	case 1:
		auth["scope"] = map[string]any{"project": map[string]any{"id": e.id("project")}}
	case 2:
		auth["scope"] = map[string]any{"domain": map[string]any{"id": "default"}}
	case 3:
		auth["scope"] = map[string]any{"system": map[string]any{"all": true}}
	}
	return obj("auth", auth)
}

// extraSpecKeys and extraSpecValues are Nova extra specs Capsule reads,
// and values of the kinds they take.
var extraSpecKeys = []string{"quota:cpu_quota", "quota:cpu_period", "quota:cpu_shares", "quota:disk_read_bytes_sec",
	"quota:disk_write_bytes_sec", "quota:disk_read_iops_sec", "quota:disk_write_iops_sec", "quota:vif_inbound_average",
	"quota:vif_outbound_average", "quota:vif_inbound_peak", "quota:vif_inbound_burst", "quota:vif_outbound_peak",
	"quota:vif_outbound_burst", "hw:cpu_policy", "hw:mem_page_size", "capsule:pids_limit", "hw:cpu_thread_policy",
	"trait:CUSTOM_X", "resources:VCPU", "aggregate_instance_extra_specs:x", "unknown:key", "quota:memory_limit"}
var extraSpecValues = []string{"0", "1", "-1", "50000", "100000", "1000000000000000000000", "1.5", "dedicated", "shared",
	"required", "yes", "", "abc", "9223372036854775807", " 7 ", "1e3"}
