package compute

import (
	"net/http"

	"github.com/capsule-cloud/capsule/errdefs"
)

// extension is one entry of GET /extensions, in Nova's v2.1 format (Nova
// keeps the list for old clients: every entry has the same fake namespace
// and date, as Nova answers).
type extension struct{ alias, name, description string }

// extensions is what Capsule's Compute API implements, by Nova's v2
// extension alias. Only what answers as Nova does is listed: a client that
// probes the list (Tempest's api_extensions, novaclient's discovery) must
// not find one whose calls 404 or are refused.
var extensions = []extension{
	{"OS-DCF", "DiskConfig", "Disk Management Extension."},
	{"OS-EXT-AZ", "ExtendedAvailabilityZone", "Extended Availability Zone support."},
	{"OS-EXT-IMG-SIZE", "ImageSize", "Adds image size to image listings."},
	{"OS-EXT-IPS", "ExtendedIps", "Adds type parameter to the ip list."},
	{"OS-EXT-IPS-MAC", "ExtendedIpsMac", "Adds mac address parameter to the ip list."},
	{"OS-EXT-SRV-ATTR", "ExtendedServerAttributes", "Extended Server Attributes support."},
	{"OS-EXT-STS", "ExtendedStatus", "Extended Status support."},
	{"OS-FLV-DISABLED", "FlavorDisabled", "Support to show the disabled status of a flavor."},
	{"OS-FLV-EXT-DATA", "FlavorExtraData", "Provide additional data for flavors."},
	{"OS-SCH-HNT", "SchedulerHints", "Pass arbitrary key/value pairs to the scheduler."},
	{"OS-SRV-USG", "ServerUsage", "Adds launched_at and terminated_at on Servers."},
	{"os-access-ips", "AccessIPs", "Access IPs support."},
	{"os-admin-password", "AdminPassword", "Admin password management support."},
	{"os-admin-actions", "AdminActions", "Enable admin-only server actions\n\n    Actions include: resetNetwork, injectNetworkInfo, os-resetState\n    "},
	{"os-aggregates", "Aggregates", "Admin-only aggregate administration."},
	{"os-attach-interfaces", "AttachInterfaces", "Attach interface support."},
	{"os-availability-zone", "AvailabilityZone", "1. Add availability_zone to the Create Server API.\n       2. Add availability zones describing.\n    "},
	{"os-console-output", "ConsoleOutput", "Console log output support, with tailing ability."},
	{"os-config-drive", "ConfigDrive", "Config Drive Extension."},
	{"os-create-backup", "CreateBackup", "Create a backup of a server."},
	{"os-evacuate", "Evacuate", "Enables server evacuation."},
	{"os-flavor-access", "FlavorAccess", "Flavor access support."},
	{"os-flavor-extra-specs", "FlavorExtraSpecs", "Flavors extra specs support."},
	{"os-flavor-manage", "FlavorManage", "Flavor create/delete API support."},
	{"os-flavor-rxtx", "FlavorRxtx", "Support to show the rxtx status of a flavor."},
	{"os-hypervisors", "Hypervisors", "Admin-only hypervisor administration."},
	{"os-instance-actions", "InstanceActions", "View a log of actions and events taken on an instance."},
	{"os-keypairs", "Keypairs", "Keypair Support."},
	{"os-lock-server", "LockServer", "Enable lock/unlock server actions."},
	{"os-migrate-server", "MigrateServer", "Enable migrate and live-migrate server actions."},
	{"os-migrations", "Migrations", "Provide data on migrations."},
	{"os-multiple-create", "MultipleCreate", "Allow multiple create in the Create Server v2.1 API."},
	{"os-pause-server", "PauseServer", "Enable pause/unpause server actions."},
	{"os-quota-sets", "Quotas", "Quotas management support."},
	{"os-server-diagnostics", "ServerDiagnostics", "Allow Admins to view server diagnostics through server id."},
	{"os-server-groups", "ServerGroups", "Server group support."},
	{"os-server-start-stop", "ServerStartStop", "Start/Stop instance compute API support."},
	{"os-shelve", "Shelve", "Instance shelve mode."},
	{"os-services", "Services", "Services support."},
	{"os-simple-tenant-usage", "SimpleTenantUsage", "Simple tenant usage extension."},
	{"os-suspend-server", "SuspendServer", "Enable suspend/resume server actions."},
	{"os-user-data", "UserData", "Add user_data to the Create Server API."},
}

func (e extension) view() map[string]any {
	return map[string]any{"alias": e.alias, "name": e.name, "description": e.description, "links": []any{},
		"namespace": "http://docs.openstack.org/compute/ext/fake_xml", "updated": "2014-12-03T00:00:00Z"}
}

func (s *Service) listExtensions(w http.ResponseWriter, r *http.Request) {
	out := make([]any, 0, len(extensions))
	for _, e := range extensions {
		out = append(out, e.view())
	}
	writeJSON(w, http.StatusOK, map[string]any{"extensions": out})
}

func (s *Service) showExtension(w http.ResponseWriter, r *http.Request) {
	alias := r.PathValue("alias")
	for _, e := range extensions {
		if e.alias == alias {
			writeJSON(w, http.StatusOK, map[string]any{"extension": e.view()})
			return
		}
	}
	writeFault(w, errdefs.NotFoundf("Extension %s could not be found.", alias))
}
