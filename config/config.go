// Package config loads capsuled's YAML configuration
// (/etc/capsule/capsule.yaml by default). Every field has a default that
// suits the all-in-one, so an empty file is a valid config.
package config

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/capsule-cloud/capsule/limits"
)

// Config is the whole of capsuled's configuration; each role reads its
// own section.
type Config struct {
	Region    string    `yaml:"region"`
	Database  Database  `yaml:"database"`
	Bus       Bus       `yaml:"bus"`
	API       API       `yaml:"api"`
	Scheduler Scheduler `yaml:"scheduler"`
	Conductor Conductor `yaml:"conductor"`
	Agent     Agent     `yaml:"agent"`
	Registry  Registry  `yaml:"registry"`
	Quota     Quota     `yaml:"quota"`
	Network   Network   `yaml:"network"`
	Volume    Volume    `yaml:"volume"`
	HTTP      HTTP      `yaml:"http"`
}

// Volume is the control plane's side of persistent volumes (the Block
// Storage API; the hosts' side is in Agent).
type Volume struct {
	// Backend of new volumes: "local" (an image file on one compute host;
	// its data is copied when its server moves) or "shared" (on the shared
	// export every host mounts).
	Backend string `yaml:"backend"`
	// AvailabilityZone is the zone volumes are in (Cinder's
	// storage_availability_zone).
	AvailabilityZone string      `yaml:"availability_zone"`
	Quota            VolumeQuota `yaml:"quota"`
	// AttachTimeout and MoveTimeout are how long a volume attach or
	// detach may go without progress (MoveTimeout while a local volume's
	// data moves between hosts) before the conductor gives the volume
	// back; its hosts refuse that work once past them.
	AttachTimeout time.Duration `yaml:"attach_timeout"`
	MoveTimeout   time.Duration `yaml:"move_timeout"`
}

// VolumeQuota is the default Block Storage quota of a project (-1:
// unlimited).
type VolumeQuota struct {
	Volumes   int `yaml:"volumes"`
	Gigabytes int `yaml:"gigabytes"`
	Snapshots int `yaml:"snapshots"`
}

// HTTP bounds every HTTP listener capsuled serves (the four APIs, the
// portal, the agent's metrics): a client slower or larger than this is cut
// off. Image data (Glance's /v2/images/{id}/file) is exempt from the body
// limit and the read and write timeouts; its upload bounds itself.
type HTTP struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout covers the headers and the body.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout runs from the end of the request headers to the end of
	// the response: keep it above api.call_timeout.
	WriteTimeout   time.Duration `yaml:"write_timeout"`
	IdleTimeout    time.Duration `yaml:"idle_timeout"`
	MaxHeaderBytes int           `yaml:"max_header_bytes"`
	// MaxBodyBytes is the largest request body; a larger one gets a 413
	// in the API's own error format.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// TLSCertFile and TLSKeyFile (PEM; the certificate file may hold the
	// chain) make every listener serve TLS only, and the service catalog
	// advertise https. Both or neither.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// TLSCAFile is the CA (PEM) Capsule's own clients of these listeners
	// (the portal calling the APIs) trust besides the system's roots:
	// the all-in-one's local CA.
	TLSCAFile string `yaml:"tls_ca_file"`
}

// TLS says whether the listeners serve TLS.
func (h HTTP) TLS() bool { return h.TLSCertFile != "" }

// Network is the control plane's view of the data-centre network.
type Network struct {
	// TenantPhysicalNetwork and the VLAN range are where a network a
	// tenant creates (without provider attributes) gets its VLAN.
	TenantPhysicalNetwork string `yaml:"tenant_physical_network"`
	TenantVLANMin         int    `yaml:"tenant_vlan_min"`
	TenantVLANMax         int    `yaml:"tenant_vlan_max"`
	// PhysicalNetworks lists the physical networks that exist (agents map
	// each to an OVS bridge with bridge_mappings).
	PhysicalNetworks []string `yaml:"physical_networks"`
	MTU              int      `yaml:"mtu"`
	// Quota is every project's default network quota (Neutron's
	// defaults); an admin changes one project's with PUT /v2.0/quotas.
	Quota NetworkQuota `yaml:"quota"`
}

// NetworkQuota is a project's default limit on networks (each a tenant
// VLAN when the project makes it without provider attributes), subnets and
// ports; -1 is unlimited.
type NetworkQuota struct {
	Networks int `yaml:"networks"`
	Subnets  int `yaml:"subnets"`
	Ports    int `yaml:"ports"`
}

// Quota is the default compute quota of every project (Nova's defaults).
type Quota struct {
	Instances int `yaml:"instances"`
	Cores     int `yaml:"cores"`
	RAMMB     int `yaml:"ram_mb"`
}

// Database is read by the control-plane roles only.
type Database struct {
	Driver string `yaml:"driver"` // sqlite | postgres
	DSN    string `yaml:"dsn"`
}

// Bus is the RabbitMQ connection.
type Bus struct {
	URL      string `yaml:"url"`
	Prefetch int    `yaml:"prefetch"`
	// QueueType is the type of the work queues: "classic" (default, a
	// single RabbitMQ node) or "quorum" (replicated across a RabbitMQ
	// cluster: a node may be lost). Every role of a cloud must agree.
	QueueType string `yaml:"queue_type"`
}

// API is the OpenStack-compatible API server.
type API struct {
	// PublicHost is the host name or IP clients reach the API on; it is
	// what the service catalog and version documents advertise.
	PublicHost   string        `yaml:"public_host"`
	Listen       string        `yaml:"listen"` // bind address, e.g. 0.0.0.0
	IdentityPort int           `yaml:"identity_port"`
	ComputePort  int           `yaml:"compute_port"`
	ImagePort    int           `yaml:"image_port"`
	NetworkPort  int           `yaml:"network_port"`
	VolumePort   int           `yaml:"volume_port"` // Block Storage v3; 0: not served
	PortalPort   int           `yaml:"portal_port"`
	TokenTTL     time.Duration `yaml:"token_ttl"`
	// CallTimeout bounds request/reply calls to agents (console output).
	CallTimeout time.Duration `yaml:"call_timeout"`
	// ForceConfigDrive is Nova's force_config_drive: every new server gets
	// a config drive (its metadata tree written into it before its first
	// boot), as if created with config_drive=true.
	ForceConfigDrive bool `yaml:"force_config_drive"`
	// EnableInstancePassword is Nova's enable_instance_password (nil:
	// true): create, rebuild and rescue return the server's adminPass
	// (the caller's or a generated one) and root's password is set to it
	// where the image has an /etc/shadow. false: no adminPass is returned
	// nor set.
	EnableInstancePassword *bool `yaml:"enable_instance_password"`
	// AdminProject names the admin project (Keystone's admin_project_name):
	// the admin role is cloud-wide only in a token scoped to it. "*" makes
	// every project the admin project (not recommended).
	AdminProject string `yaml:"admin_project"`
	// Password logins are refused for LockoutDuration after
	// LockoutFailureAttempts failures of one user (Keystone's
	// lockout_failure_attempts) or LockoutSourceFailureAttempts failures
	// from one address; -1 disables either.
	LockoutFailureAttempts       int           `yaml:"lockout_failure_attempts"`
	LockoutSourceFailureAttempts int           `yaml:"lockout_source_failure_attempts"`
	LockoutDuration              time.Duration `yaml:"lockout_duration"`
	// PasswordHashRounds is the bcrypt cost of the password hashes made
	// from now on (Keystone's [identity] password_hash_rounds), 4 to 31;
	// each step doubles the work of every login. Hashes made at another
	// cost keep verifying.
	PasswordHashRounds int `yaml:"password_hash_rounds"`
	// CredentialKeyFile holds the key that encrypts Keystone credential
	// blobs (/v3/credentials, OS-EC2 secrets) at rest: the base64 of 32
	// random bytes. Empty: blobs are stored unencrypted (a warning at
	// start), as Keystone does without credential keys.
	CredentialKeyFile string `yaml:"credential_key_file"`
	// TokenPurgeInterval is how often expired tokens are deleted.
	TokenPurgeInterval time.Duration `yaml:"token_purge_interval"`
	// The serial console proxy (nova-serialproxy's role) and its browser
	// console page (the novnc URLs) are served on the compute port under
	// /console. SerialConsoleDisabled turns both off (remote consoles
	// then answer "Unavailable console type serial.").
	// ConsoleTokenTTL is how long a console URL waits for its one use.
	// ConsolePublicURL is the base of the URLs users get (default
	// ws[s]://public_host:compute_port/console); ConsoleInternalURL the
	// base compute agents dial back to with the console's stream
	// (default http[s]://public_host:compute_port/console).
	SerialConsoleDisabled bool          `yaml:"serial_console_disabled"`
	ConsoleTokenTTL       time.Duration `yaml:"console_token_ttl"`
	ConsolePublicURL      string        `yaml:"console_public_url"`
	ConsoleInternalURL    string        `yaml:"console_internal_url"`
	// ImageSizeCap caps one image upload's data in bytes (Glance's
	// image_size_cap; 413 beyond it) and ImageUploadTimeout its duration
	// (408). 0: the image API's defaults, 10 GiB and 1 h.
	ImageSizeCap       int64         `yaml:"image_size_cap"`
	ImageUploadTimeout time.Duration `yaml:"image_upload_timeout"`
}

// Scheduler places instances on hosts.
type Scheduler struct {
	Weigher         string        `yaml:"weigher"` // spread | pack
	MaxAttempts     int           `yaml:"max_attempts"`
	ServiceDownTime time.Duration `yaml:"service_down_time"`
	// HostStateMaxAge is how old the scheduler's cached view of the hosts
	// may get before a placement reloads it (claims re-check each host
	// under its lock, so the age only affects which host is tried first).
	HostStateMaxAge time.Duration `yaml:"host_state_max_age"`
}

// Conductor owns the database on behalf of agents.
type Conductor struct {
	// BuildTimeout puts an instance stuck in BUILD into ERROR.
	BuildTimeout time.Duration `yaml:"build_timeout"`
	// MigrationStepTimeout is how long a cold migration waits for one
	// step's agent (export, import, cleanup, restore) before it rolls
	// back; a push or pull of a large server must fit in it.
	MigrationStepTimeout time.Duration `yaml:"migration_step_timeout"`
	// MigrationPrecopy makes a cold migration copy the server while it
	// still runs (steps precopy, prepull) so that, once it is stopped,
	// only what changed since moves: the downtime is the final pass's.
	MigrationPrecopy bool `yaml:"migration_precopy"`
	// PeriodicInterval is how often the conductor looks for stuck builds,
	// migrations and tasks (the sweeper's period).
	PeriodicInterval time.Duration `yaml:"periodic_interval"`
	// TaskTimeout is how long a task an agent carries out (stop, start,
	// reboot, pause, suspend and their reverses, delete, a live resize
	// or its revert) may go without progress before the sweeper ends it
	// as failed: its worker died or its host is gone.
	TaskTimeout time.Duration `yaml:"task_timeout"`
	// ImageTaskTimeout is the same for the tasks that push or pull an
	// image (snapshot, backup, rebuild, shelve, and a shelve offload,
	// which pushes local volumes): a large server's must fit.
	ImageTaskTimeout time.Duration `yaml:"image_task_timeout"`
	// OutboxInterval is how often the conductor relays the bus messages
	// left in the outbox (by a role that died before publishing them, or
	// while the broker was unreachable).
	OutboxInterval time.Duration `yaml:"outbox_interval"`
	// AgentUserPrefix marks the broker users of compute hosts: user
	// <prefix><host> may only report about host and the servers it owns
	// (the broker checks the user_id every Capsule publisher sets). Other
	// users are control-plane roles, trusted with every host. "" trusts
	// every user (one shared broker user).
	AgentUserPrefix string `yaml:"agent_user_prefix"`
	// ShelvedOffloadTime is how long a shelved server keeps its host's
	// room, container and sandbox before the conductor offloads it
	// (Nova's shelved_offload_time): 0 offloads at once (Nova's
	// default), a negative value never (only shelveOffload does).
	ShelvedOffloadTime time.Duration `yaml:"shelved_offload_time"`
}

// Agent is the per-host compute agent.
type Agent struct {
	Host                string        `yaml:"host"`
	Zone                string        `yaml:"zone"`
	HostIP              string        `yaml:"host_ip"`
	DockerHost          string        `yaml:"docker_host"`
	Driver              string        `yaml:"driver"` // docker | fake
	PidsLimit           int64         `yaml:"pids_limit"`
	CPUAllocationRatio  float64       `yaml:"cpu_allocation_ratio"`
	RAMAllocationRatio  float64       `yaml:"ram_allocation_ratio"`
	DiskAllocationRatio float64       `yaml:"disk_allocation_ratio"`
	ReservedMemoryMB    int           `yaml:"reserved_memory_mb"`
	HeartbeatInterval   time.Duration `yaml:"heartbeat_interval"`
	StopTimeout         time.Duration `yaml:"stop_timeout"`
	// BridgeMappings maps physical network names to this host's OVS
	// bridges (Neutron's bridge_mappings), e.g. physnet1: br-physnet1.
	BridgeMappings map[string]string `yaml:"bridge_mappings"`
	// SandboxImage is the infra image of the container holding each
	// server's network namespace (docker driver); empty means the base
	// image in the registry, <registry.address>/capsule/busybox:latest.
	SandboxImage string `yaml:"sandbox_image"`
	// NetworkMode is how the docker driver holds a networked server's
	// network namespace: "netns" (default) one container per server, joined by
	// Capsule's OCI runtime wrapper (capsule-runc, registered with this
	// host's dockerd as OCIRuntime) to a namespace the agent keeps as a
	// file under NetnsDir; "sandbox" a sandbox container beside the
	// server's container (for a dockerd without that runtime). Existing
	// servers keep the mode they were created in. See
	// docs/architecture.md.
	NetworkMode string `yaml:"network_mode"`
	// NetnsDir is where mode netns keeps the namespaces (default
	// /run/capsule/netns/<host>: a tmpfs, so a host reboot empties it).
	NetnsDir string `yaml:"netns_dir"`
	// OCIRuntime is the name capsule-runc is registered under with dockerd
	// (default "capsule": dockerd --add-runtime capsule=/usr/local/bin/capsule-runc).
	OCIRuntime string `yaml:"oci_runtime"`
	// MetadataDisabled turns the metadata service (http://169.254.169.254/
	// from every server on its VLAN, see docs/architecture.md) off on this
	// host; it is on by default on hosts that plumb with Open vSwitch.
	MetadataDisabled bool `yaml:"metadata_disabled"`
	// MetadataCacheTTL is how long the metadata service keeps a server's
	// tree before asking the control plane again (default 5s).
	MetadataCacheTTL time.Duration `yaml:"metadata_cache_ttl"`
	// MetricsListen is the address of the agent's Prometheus /metrics
	// endpoint; "" disables it. Loopback by default: the figures name
	// tenants' servers and projects.
	MetricsListen string `yaml:"metrics_listen"`
	// LXCFS is the mount point of the host's LXCFS (Debian's lxcfs,
	// started with --enable-loadavg --enable-cfs): its proc files are
	// bind-mounted over each server's /proc, so free, top, uptime and
	// nproc show the server's own limits and load. "" disables it.
	LXCFS string `yaml:"lxcfs"`
	// Alarms are the thresholds the agent checks every AlarmInterval.
	Alarms Alarms `yaml:"alarms"`
	// UsageInterval is how often the agent sends each running server's
	// usage (CPU, memory, disk IO, network) to the conductor for the
	// servers' usage history (default 1m: its finest resolution); 0 turns
	// it off.
	UsageInterval time.Duration `yaml:"usage_interval"`
	// CPUDedicatedSet is Nova's [compute] cpu_dedicated_set, a CPU list
	// ("1", "2-3,6"): the host CPUs reserved for hw:cpu_policy=dedicated
	// servers, one server per CPU; shared servers are pinned within the
	// other CPUs. "" (default) reserves none, and then no dedicated server
	// can land on this host. The agent reports its size as the host's
	// PCPUs and the other CPUs as its VCPUs.
	CPUDedicatedSet string `yaml:"cpu_dedicated_set"`
	// ResumeGuestsStateOnHostBoot is Nova's option of the same name: when
	// the agent starts (a host boot) it starts again every server the
	// cloud records as ACTIVE, PAUSED or SUSPENDED whose container is
	// stopped, and puts one it cannot start in ERROR; unset means true.
	// With false such servers become SHUTOFF, as their containers are.
	ResumeGuestsStateOnHostBoot *bool `yaml:"resume_guests_state_on_host_boot"`
	// VolumeDir holds the images of this host's local volumes ("" =
	// /var/lib/capsule/volumes); simulated hosts on one machine need one
	// each. SharedVolumeDir is the shared volume backend, a directory
	// every host mounts at the same path (an NFS export); "" = none.
	// VolumeMountDir holds the host mount point of each volume in use
	// ("" = /run/capsule/volumes/<host>). See docs/operations.md
	// "Volumes".
	VolumeDir       string `yaml:"volume_dir"`
	SharedVolumeDir string `yaml:"shared_volume_dir"`
	VolumeMountDir  string `yaml:"volume_mount_dir"`
}

// ResumeOnHostBoot is ResumeGuestsStateOnHostBoot with its default (true).
func (a Agent) ResumeOnHostBoot() bool {
	return a.ResumeGuestsStateOnHostBoot == nil || *a.ResumeGuestsStateOnHostBoot
}

// Alarms are the agent's alarm thresholds: a figure crossing one raises a
// host event (and, for a server, an instance action) once, and again only
// after it fell back below. Fractions are of the limit (0.9 = 90 %); 0
// disables that alarm. OOM kills are always events.
type Alarms struct {
	Interval        time.Duration `yaml:"interval"`
	ServerPids      float64       `yaml:"server_pids"`      // pids.current / pids.max
	ServerMemory    float64       `yaml:"server_memory"`    // non-reclaimable memory / limit
	ServerThrottled float64       `yaml:"server_throttled"` // throttled periods / periods over the interval
	HostPids        float64       `yaml:"host_pids"`        // tasks / kernel.pid_max
	HostConntrack   float64       `yaml:"host_conntrack"`   // nf_conntrack_count / max
}

// Registry is the private image registry.
type Registry struct {
	Address  string `yaml:"address"` // host:port
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Default returns the all-in-one defaults.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		Region:   "RegionOne",
		Database: Database{Driver: "sqlite", DSN: "/var/lib/capsule/capsule.db"},
		Bus:      Bus{URL: "amqp://guest:guest@127.0.0.1:5672/", Prefetch: 32, QueueType: "classic"},
		API: API{PublicHost: "127.0.0.1", Listen: "0.0.0.0", IdentityPort: 5000, ComputePort: 8774,
			ImagePort: 9292, NetworkPort: 9696, VolumePort: 8776, PortalPort: 8080, TokenTTL: 12 * time.Hour, CallTimeout: 30 * time.Second,
			AdminProject: "admin", LockoutFailureAttempts: 10, LockoutSourceFailureAttempts: 50, LockoutDuration: 5 * time.Minute,
			PasswordHashRounds: bcrypt.DefaultCost,
			TokenPurgeInterval: time.Hour, ConsoleTokenTTL: 10 * time.Minute},
		Scheduler: Scheduler{Weigher: "spread", MaxAttempts: 3, ServiceDownTime: 60 * time.Second, HostStateMaxAge: time.Second},
		Conductor: Conductor{BuildTimeout: 10 * time.Minute, MigrationStepTimeout: 15 * time.Minute, MigrationPrecopy: true, PeriodicInterval: 30 * time.Second,
			TaskTimeout: 10 * time.Minute, ImageTaskTimeout: time.Hour, OutboxInterval: time.Second,
			AgentUserPrefix: "capsule-agent-"},
		Agent: Agent{Host: host, Zone: "nova", HostIP: "127.0.0.1", DockerHost: "unix:///run/capsule/docker.sock",
			Driver: "docker", PidsLimit: 1024, CPUAllocationRatio: 16, RAMAllocationRatio: 1, DiskAllocationRatio: 1,
			ReservedMemoryMB: 512, HeartbeatInterval: 10 * time.Second, StopTimeout: 10 * time.Second,
			MetricsListen: "127.0.0.1:9180", LXCFS: "/var/lib/lxcfs",
			UsageInterval: time.Minute,
			Alarms: Alarms{Interval: 5 * time.Second, ServerPids: 0.9, ServerMemory: 0.9, ServerThrottled: 0.9,
				HostPids: 0.8, HostConntrack: 0.8}},
		Registry: Registry{Address: "127.0.0.1:5050"},
		Quota:    Quota{Instances: 10, Cores: 20, RAMMB: 51200},
		Volume: Volume{Backend: "local", AvailabilityZone: "nova", Quota: VolumeQuota{Volumes: 10, Gigabytes: 1000, Snapshots: 10},
			AttachTimeout: 10 * time.Minute, MoveTimeout: time.Hour},
		Network: Network{TenantPhysicalNetwork: "physnet1", TenantVLANMin: 100, TenantVLANMax: 199,
			PhysicalNetworks: []string{"physnet1"}, MTU: 1500,
			Quota: NetworkQuota{Networks: 100, Subnets: 100, Ports: 500}},
		HTTP: HTTP{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second, WriteTimeout: 120 * time.Second,
			IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10, MaxBodyBytes: 1 << 20},
	}
}

// Load reads path over the defaults; a missing file means all defaults.
func Load(path string) (Config, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		c.applyLateDefaults()
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config: read %s: %w", path, err)
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config: parse %s: %w", path, err)
	}
	// The CPUs themselves are checked against the host by the agent's
	// driver at start; a malformed list fails every role here.
	if _, err := limits.ParseCPUList(c.Agent.CPUDedicatedSet); err != nil {
		return c, fmt.Errorf("config: %s: agent.cpu_dedicated_set: %w", path, err)
	}
	if r := c.API.PasswordHashRounds; r < bcrypt.MinCost || r > bcrypt.MaxCost {
		return c, fmt.Errorf("config: %s: api.password_hash_rounds %d: a bcrypt cost is %d to %d", path, r,
			bcrypt.MinCost, bcrypt.MaxCost)
	}
	if c.Volume.AttachTimeout <= 0 || c.Volume.MoveTimeout <= 0 {
		return c, fmt.Errorf("config: %s: volume.attach_timeout and volume.move_timeout must be positive", path)
	}
	if (c.HTTP.TLSCertFile == "") != (c.HTTP.TLSKeyFile == "") {
		return c, fmt.Errorf("config: %s: http.tls_cert_file and http.tls_key_file go together", path)
	}
	c.applyLateDefaults()
	return c, nil
}

// applyLateDefaults fills defaults that must not be merged with what the
// file says: a map in the defaults would be merged key by key by the YAML
// decoder, so a host mapping only physnet2 would still get physnet1.
func (c *Config) applyLateDefaults() {
	if c.Agent.BridgeMappings == nil {
		c.Agent.BridgeMappings = map[string]string{"physnet1": "br-physnet1"}
	}
}
