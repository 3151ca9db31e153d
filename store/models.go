package store

import (
	"encoding/json"
	"time"

	"github.com/capsule-cloud/capsule/lifecycle"
)

// The models below are the database schema. API views live in
// api-server/, never here: a column rename must not change an API field.

// Project is a Keystone project (tenant).
type Project struct {
	ID          string `gorm:"primaryKey;size:64"`
	Name        string `gorm:"size:255;uniqueIndex:ux_project_name"`
	DomainID    string `gorm:"size:64;uniqueIndex:ux_project_name"`
	Description string
	Enabled     bool
	CreatedAt   time.Time
	// ParentID is the parent project; "" means the domain is the parent.
	ParentID string `gorm:"size:64;index"`
	// Tags is the project's tags as a JSON array of strings.
	Tags string
}

// Domain is a Keystone domain: a namespace of projects and users. The
// "default" domain always exists.
type Domain struct {
	ID          string `gorm:"primaryKey;size:64"`
	Name        string `gorm:"size:255;uniqueIndex"`
	Description string
	Enabled     bool
	Tags        string // JSON array of strings
	CreatedAt   time.Time
}

// DomainRoleAssignment grants a role to a user on a domain (a
// domain-scoped token carries these roles).
type DomainRoleAssignment struct {
	UserID   string `gorm:"primaryKey;size:64"`
	DomainID string `gorm:"primaryKey;size:64"`
	RoleID   string `gorm:"primaryKey;size:64"`
}

// Group is a Keystone group: users in a domain that role grants can name
// together. Names are unique per domain.
type Group struct {
	ID          string `gorm:"primaryKey;size:64"`
	DomainID    string `gorm:"size:64;uniqueIndex:ux_group_name"`
	Name        string `gorm:"size:255;uniqueIndex:ux_group_name"`
	Description string
	Extra       string // JSON object of the attributes Keystone keeps as extras
	CreatedAt   time.Time
}

// GroupMember puts a user in a group.
type GroupMember struct {
	GroupID string `gorm:"primaryKey;size:64"`
	UserID  string `gorm:"primaryKey;size:64;index"`
}

// GroupRoleAssignment grants a role to every member of a group on a
// project (OnDomain false) or a domain (OnDomain true); TargetID is that
// project's or domain's id.
type GroupRoleAssignment struct {
	GroupID  string `gorm:"primaryKey;size:64"`
	TargetID string `gorm:"primaryKey;size:64"`
	OnDomain bool   `gorm:"primaryKey"`
	RoleID   string `gorm:"primaryKey;size:64"`
}

// InheritedRoleAssignment is an OS-INHERIT grant: a role a user (IsGroup
// false) or a group's members hold on every project below a domain
// (OnDomain true) or below a project (not on the project itself).
type InheritedRoleAssignment struct {
	ActorID  string `gorm:"primaryKey;size:64"`
	IsGroup  bool   `gorm:"primaryKey"`
	TargetID string `gorm:"primaryKey;size:64"`
	OnDomain bool   `gorm:"primaryKey"`
	RoleID   string `gorm:"primaryKey;size:64"`
}

// SystemRoleAssignment grants a role on the system (Keystone's system
// scope "all") to a user or (IsGroup) a group's members.
type SystemRoleAssignment struct {
	ActorID string `gorm:"primaryKey;size:64"`
	IsGroup bool   `gorm:"primaryKey"`
	RoleID  string `gorm:"primaryKey;size:64"`
}

// ImpliedRole is a role inference rule: whoever holds the prior role on
// a target holds the implied one there too.
type ImpliedRole struct {
	PriorRoleID   string `gorm:"primaryKey;size:64"`
	ImpliedRoleID string `gorm:"primaryKey;size:64;index"`
}

// ApplicationCredential lets software log in as its user, limited to one
// project and a subset of the user's roles there. Only a bcrypt hash of
// the secret is stored.
type ApplicationCredential struct {
	ID           string `gorm:"primaryKey;size:64"`
	Name         string `gorm:"size:255;uniqueIndex:ux_appcred_name"`
	UserID       string `gorm:"size:64;uniqueIndex:ux_appcred_name"`
	ProjectID    string `gorm:"size:64"`
	Description  string
	SecretHash   string
	Roles        string // JSON array of role ids
	ExpiresAt    *time.Time
	Unrestricted bool
	CreatedAt    time.Time
}

// Credential is a Keystone credential (/v3/credentials): a blob of its
// user's, of a type (ec2, totp, cert, ...), for one project or none. An
// ec2 credential's id is the SHA-256 of its access key. The blob is kept
// AES-256-GCM encrypted under the configured credential key (KeyHash
// names it); with no key configured it is kept as given (KeyHash "") and
// the API server warns at start, as Keystone does with its null key.
type Credential struct {
	ID        string `gorm:"primaryKey;size:64"`
	UserID    string `gorm:"size:64;index"`
	ProjectID string `gorm:"size:64;index"`
	Type      string `gorm:"size:255"`
	Blob      []byte // sealed blob (nonce || ciphertext), or the blob itself when KeyHash is ""
	KeyHash   string `gorm:"size:64"`
	CreatedAt time.Time
}

// User is a Keystone user; the password is stored only as a bcrypt hash.
type User struct {
	ID               string `gorm:"primaryKey;size:64"`
	Name             string `gorm:"size:255;uniqueIndex:ux_user_name"`
	DomainID         string `gorm:"size:64;uniqueIndex:ux_user_name"`
	PasswordHash     string
	DefaultProjectID string `gorm:"size:64"`
	Email            string
	Enabled          bool
	CreatedAt        time.Time
	Description      string
	// Options and Extra are JSON objects: Keystone's user options and
	// the arbitrary attributes a client stored.
	Options string
	Extra   string
}

// Role is a Keystone role (admin, member, reader).
type Role struct {
	ID          string `gorm:"primaryKey;size:64"`
	Name        string `gorm:"size:255;uniqueIndex:ux_role_name"`
	Description string
	// DomainID is the domain of a domain-specific role ("" for a global
	// role). Domain-specific roles never appear in tokens (as Keystone):
	// they grant nothing by themselves.
	DomainID string `gorm:"size:64;uniqueIndex:ux_role_name"`
	// Options and Extra are JSON objects: Keystone's role options and the
	// arbitrary attributes a client stored.
	Options string
	Extra   string
}

// RoleAssignment grants a role to a user on a project.
type RoleAssignment struct {
	UserID    string `gorm:"primaryKey;size:64"`
	ProjectID string `gorm:"primaryKey;size:64"`
	RoleID    string `gorm:"primaryKey;size:64"`
}

// Token is an issued Keystone token. Only the SHA-256 of the token string
// is stored, so a database dump does not leak live credentials.
type Token struct {
	Hash      string `gorm:"primaryKey;size:64"`
	UserID    string `gorm:"size:64;index"`
	ProjectID string `gorm:"size:64"` // "" for an unscoped token
	Methods   string // comma separated
	AuditID   string
	IssuedAt  time.Time
	ExpiresAt time.Time `gorm:"index"`
	Revoked   bool
	// DomainID is the domain of a domain-scoped token ("" otherwise).
	DomainID string `gorm:"size:64"`
	// AppCredID is the application credential the token was issued for
	// ("" otherwise): its roles limit the token's, its deletion revokes it.
	AppCredID string `gorm:"size:64;index"`
	// System says the token is system-scoped (scope {"system":{"all":true}}).
	System bool
}

// Flavor is a Nova flavor. ID is the internal integer id (Nova reports it
// in migrations as old/new_instance_type_id); FlavorID is the API id.
type Flavor struct {
	ID          uint   `gorm:"primaryKey"`
	FlavorID    string `gorm:"size:255;index"`
	Name        string `gorm:"size:255;index"`
	VCPUs       int    `gorm:"column:vcpus"`
	MemoryMB    int
	RootGB      int
	EphemeralGB int
	SwapMB      int
	RxtxFactor  float64
	IsPublic    bool
	Disabled    bool
	Description *string
	Deleted     bool `gorm:"index"`
	CreatedAt   time.Time
	ExtraSpecs  []FlavorExtraSpec `gorm:"foreignKey:FlavorID;constraint:OnDelete:CASCADE"`
}

// FlavorExtraSpec is one key=value of a flavor's extra specs.
type FlavorExtraSpec struct {
	FlavorID uint   `gorm:"primaryKey"`
	Key      string `gorm:"primaryKey;size:255"`
	Value    string
}

// FlavorAccess lets a project use a private flavor.
type FlavorAccess struct {
	FlavorID  uint   `gorm:"primaryKey"`
	ProjectID string `gorm:"primaryKey;size:64"`
}

// Image is a Glance image backed by a reference in the private registry.
type Image struct {
	ID              string `gorm:"primaryKey;size:64"`
	Name            string `gorm:"size:255;index"`
	Owner           string `gorm:"size:64;index"`
	Visibility      string `gorm:"size:16"`
	Status          string `gorm:"size:16"`
	ContainerFormat string `gorm:"size:16"`
	DiskFormat      string `gorm:"size:16"`
	Size            *int64
	Checksum        string
	RegistryRef     string // e.g. 127.0.0.1:5050/capsule/busybox:latest
	MinDisk         int
	MinRAM          int
	Protected       bool
	Hidden          bool
	Properties      string // JSON object of additional string properties
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Instance is a server. The flavor is copied in (as Nova's
// instance.flavor) so deleting a flavor never breaks a server.
type Instance struct {
	ID               string `gorm:"primaryKey;size:64"`
	Name             string `gorm:"size:255"`
	ProjectID        string `gorm:"size:64;index"`
	UserID           string `gorm:"size:64"`
	ImageID          string `gorm:"size:64"`
	FlavorRowID      uint
	FlavorID         string
	FlavorName       string
	VCPUs            int `gorm:"column:vcpus"`
	MemoryMB         int
	RootGB           int
	ExtraSpecs       string // JSON object
	EphemeralDisks   string // JSON list of EphemeralDisk: its ephemeral disks, which live and die with it
	Host             string `gorm:"size:255;index"`
	AvailabilityZone string // the zone of the host it runs on (or last ran on)
	// RequestedZone is the zone the server is pinned to: asked for at
	// create, or at an unshelve from 2.77 ("" = any zone; Nova's request
	// spec availability_zone, shown as pinned_availability_zone at 2.96).
	// Every placement (build retry, migration, unshelve) stays in it.
	RequestedZone string              `gorm:"size:255"`
	VMState       lifecycle.VMState   `gorm:"size:32;index"`
	TaskState     lifecycle.TaskState `gorm:"size:32"`
	PowerState    int
	Metadata      string // JSON object
	AccessIPv4    string
	AccessIPv6    string
	Description   *string
	KeyName       *string
	KeyData       string // the keypair's public key copied at boot (Nova's key_data): deleting the keypair changes nothing
	UserData      string
	// ConfigDrive: the server's metadata tree is written into it before
	// its first boot (Nova's config_drive).
	ConfigDrive   bool
	Tags          string // the server's tags (Nova 2.26): a sorted JSON list of distinct strings, see store/tags.go
	Locked        bool
	ReservationID string
	LaunchIndex   int
	Hostname      string
	FaultCode     int
	FaultMessage  string
	FaultDetails  string
	FaultAt       *time.Time
	BuildAttempts int
	TriedHosts    string // comma separated hosts a build failed on
	// OwnedPorts lists (JSON) the ports the Compute API created for the
	// server: deleted with it. Ports the user passed in are only unbound.
	OwnedPorts string
	// RequestedHost is the host an admin asked for ("zone:host" on
	// create); the scheduler then considers that host only.
	RequestedHost string
	// SchedulerHints is the create request's os:scheduler_hints (JSON
	// object: group, same_host, different_host), kept so a reschedule or a
	// cold migration places the server under the same constraints.
	SchedulerHints string
	// LockedBy is who locked the server (Nova's locked_by): "owner" (a
	// user of its project) or "admin" (an admin of another project); only
	// an admin may lift an admin's lock. "" (a lock older than the column)
	// may be lifted by either, as Nova treats a lock without locked_by.
	LockedBy string `gorm:"size:8"`
	// LockedReason is the reason the lock was given with (Nova's
	// locked_reason, 2.73); empty when none or unlocked.
	LockedReason string `gorm:"size:255"`
	// The flavor before a resize, kept while the instance waits in
	// VERIFY_RESIZE so a revert can put it back (Nova's
	// instance.old_flavor), with the vm_state to return to; OldFlavorID
	// "" means no resize is pending.
	OldFlavorRowID  uint
	OldFlavorID     string
	OldFlavorName   string
	OldVCPUs        int `gorm:"column:old_vcpus"`
	OldMemoryMB     int
	OldRootGB       int
	OldExtraSpecs   string            // JSON object
	ResizeFromState lifecycle.VMState `gorm:"size:32"`
	// A shelved server's shelve image and when and where it was shelved
	// (Nova's system_metadata shelved_image_id, shelved_at, shelved_host):
	// the image an unshelve boots and then deletes, the age an offload
	// waits for. Cleared by the unshelve.
	ShelvedImageID string `gorm:"size:64"`
	ShelvedAt      *time.Time
	ShelvedHost    string `gorm:"size:255"`
	LaunchedAt     *time.Time
	TerminatedAt   *time.Time
	CreatedAt      time.Time `gorm:"index"`
	UpdatedAt      time.Time
	DeletedAt      *time.Time `gorm:"index"` // soft delete: actions stay listable (2.21)

	// AdminPassHash is the crypt(3) SHA-512 hash of the adminPass of the
	// server's last create or rebuild (never the password): its host puts
	// it in root's /etc/shadow line of the new disk before first boot.
	AdminPassHash string `gorm:"size:255"`
	// MetadataPassword is what the server posted to the metadata
	// service's password endpoint (Nova's encrypted password, at most 256
	// bytes): set once, read back by the server and by its owner
	// (os-server-password), cleared by the owner.
	MetadataPassword string `gorm:"size:256"`
	// RowVersion is the database's count of the row's updates: a trigger
	// (migration 42) raises it at every UPDATE of the row, whoever runs it
	// (any API process, the conductor, raw SQL). Read-only for gorm, so a
	// Save of a stale struct never writes an old version back. The
	// compute API's show keeps rows it served by it (see
	// api-server/compute/rowcache.go).
	RowVersion int64 `gorm:"->;not null;default:0"`
}

// InstanceAction is one API-level operation on an instance
// (os-instance-actions), keyed by the request id of the API call.
type InstanceAction struct {
	ID         uint   `gorm:"primaryKey"`
	InstanceID string `gorm:"size:64;index"`
	Action     string
	RequestID  string `gorm:"size:64;index"`
	UserID     string
	ProjectID  string
	StartTime  time.Time
	UpdatedAt  time.Time
	Message    *string
	Events     []InstanceActionEvent `gorm:"foreignKey:ActionID;constraint:OnDelete:CASCADE"`
}

// InstanceActionEvent is a step of an action done by a component.
type InstanceActionEvent struct {
	ID         uint `gorm:"primaryKey"`
	ActionID   uint `gorm:"index"`
	Event      string
	Host       string
	StartTime  time.Time
	FinishTime *time.Time
	Result     string // "", Success, Error
	Traceback  string
	// Details is why a failed event failed in words its user may read
	// (the error's safe message): Nova's event details (2.84), shown to
	// members too, where Traceback is for admins only.
	Details string
}

// Service is a registered Capsule service (nova-compute, nova-scheduler,
// nova-conductor). Compute services carry the host's capacity, reported
// by its agent's heartbeats.
type Service struct {
	ID     uint   `gorm:"primaryKey"`
	UUID   string `gorm:"size:64;uniqueIndex"`
	Host   string `gorm:"size:255;uniqueIndex:ux_service_host_binary"`
	Binary string `gorm:"column:binary_name;size:64;uniqueIndex:ux_service_host_binary"`
	// Zone is the host's availability zone: that of the zoned aggregate
	// holding it (store/aggregates.go), else AgentZone.
	Zone string
	// AgentZone is the zone the host's agent registered with (its
	// configuration's zone; "" = nova).
	AgentZone           string
	Disabled            bool
	DisabledReason      *string
	ForcedDown          bool
	LastHeartbeat       *time.Time
	HostIP              string
	HypervisorType      string
	HypervisorVersion   int
	VCPUs               int `gorm:"column:vcpus"`
	MemoryMB            int
	DiskGB              int
	RunningVMs          int
	CPUInfo             string  // JSON
	CPUAllocationRatio  float64 // from the agent config, as Nova compute-node ratios
	RAMAllocationRatio  float64
	DiskAllocationRatio float64
	ReservedMemoryMB    int
	// PCPUs is the size of the host's cpu_dedicated_set: CPUs handed out
	// whole to hw:cpu_policy=dedicated servers, never overcommitted. VCPUs
	// counts only the other (shared) CPUs.
	PCPUs int `gorm:"column:pcpus;not null;default:0"`
	// ClaimGeneration is bumped by every claim on this host; the bump is
	// the row lock that serialises concurrent claims (see claims.go).
	ClaimGeneration int64
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Claim reserves a host's resources for an instance. An instance has one
// claim, or two while a migration or resize holds the target too.
type Claim struct {
	ID          uint   `gorm:"primaryKey"`
	InstanceID  string `gorm:"size:64;uniqueIndex:ux_claim_instance_host"`
	Host        string `gorm:"size:255;uniqueIndex:ux_claim_instance_host;index"`
	VCPUs       int    `gorm:"column:vcpus"`
	MemoryMB    int
	DiskGB      int
	Dedicated   bool `gorm:"not null;default:false"` // VCPUs are host PCPUs (hw:cpu_policy=dedicated), see ClaimOnHost
	MigrationID *uint
	CreatedAt   time.Time
}

// Migration records a cold migration or resize (os-migrations). A live
// resize (same host) only uses Status; a cold migration or a resize onto
// another host is driven by package migrate through Step, which is
// persisted before each step's work is sent, so a restarted conductor
// resumes (or rolls back) from the row alone.
type Migration struct {
	ID            uint                      `gorm:"primaryKey"`
	UUID          string                    `gorm:"size:64;uniqueIndex"`
	InstanceID    string                    `gorm:"size:64;index"`
	MigrationType string                    // migration | resize
	Status        lifecycle.MigrationStatus // Nova's: pre-migrating, migrating, post-migrating, finished, confirming, confirmed, reverting, reverted, error
	SourceCompute string
	SourceNode    string
	DestCompute   string
	DestNode      string
	DestHost      string
	OldFlavorID   uint
	NewFlavorID   uint
	Step          string `gorm:"size:32;index"` // migrate.Step; "" for a live resize
	// Cold-migration bookkeeping (package migrate).
	RequestedHost  string            // the host an admin asked for ("" = the scheduler's choice)
	RequestID      string            `gorm:"size:64"` // request id of the action the current steps belong to
	UserID         string            `gorm:"size:64"`
	ProjectID      string            `gorm:"size:64"`
	SourceVMState  lifecycle.VMState `gorm:"size:32"` // active | stopped: what the instance returns to
	SnapshotRef    string            // registry reference of the migration's commit
	SnapshotDigest string            // manifest digest pushed (deleting the tag needs it)
	ImageBytes     int64             // compressed bytes of the layers the export pushed
	PushedBytes    int64             // progress of the push
	PulledBytes    int64             // progress of the pull
	Rollback       bool              // the steps after a failure: ends in error, not reverted
	ErrorMessage   string            // why it failed (also the instance's fault)
	StepStartedAt  *time.Time        // deadline base of the current step
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// VolumeIDs are the local volumes the migration copies to its target
	// (space-separated ids, fixed when the target is chosen): their
	// registry tags and the copy on the host that ends without the server
	// are the migration's to remove.
	VolumeIDs string
}

// HostEvent is something an agent saw that an operator should know: an
// alarm threshold crossed, an OOM kill, a daemon down. Server-level
// events also appear as instance actions of the server (os-instance-actions).
type HostEvent struct {
	ID         uint      `gorm:"primaryKey"`
	UUID       string    `gorm:"size:64;uniqueIndex"` // the agent's id of the event: a redelivery inserts nothing
	Host       string    `gorm:"size:255;index"`
	InstanceID string    `gorm:"size:64;index"` // "" for a host-level event
	ProjectID  string    `gorm:"size:64"`
	Kind       string    `gorm:"size:64;index"` // protocol.EventKind
	Severity   string    `gorm:"size:16"`       // info | warning | critical
	Message    string    // one line for humans
	Value      float64   // the figure that crossed the threshold
	Threshold  float64   // the threshold it crossed
	At         time.Time `gorm:"index"`
	CreatedAt  time.Time
}

// Keypair is a Nova keypair. Keypairs belong to a user, not a project: the
// same user sees them from every project. ID is shown by the API (Nova's
// integer id).
type Keypair struct {
	ID          uint   `gorm:"primaryKey"`
	UserID      string `gorm:"size:64;uniqueIndex:ux_keypair_user_name"`
	Name        string `gorm:"size:255;uniqueIndex:ux_keypair_user_name"`
	Type        string `gorm:"size:8"` // ssh | x509
	PublicKey   string // an OpenSSH public key line, or a PEM certificate (x509)
	Fingerprint string
	CreatedAt   time.Time
	// UpdatedAt stays null: a keypair is never changed (Nova shows null).
	UpdatedAt *time.Time `gorm:"autoUpdateTime:false"`
}

// QuotaLimit is an operator-set quota (Nova's quotas table): a project's
// limit on one resource (UserID "") or one user's within the project.
// Without a row the default applies; -1 means unlimited.
type QuotaLimit struct {
	ID        uint   `gorm:"primaryKey"`
	ProjectID string `gorm:"size:64;uniqueIndex:ux_quota_limit"`
	UserID    string `gorm:"size:64;uniqueIndex:ux_quota_limit"` // "" for the project level
	Resource  string `gorm:"size:64;uniqueIndex:ux_quota_limit"` // a Nova quota key: instances, cores, ram, ...
	HardLimit int
	CreatedAt time.Time
	UpdatedAt time.Time
}

// QuotaLock is the row a quota-checked create locks before it counts
// what its project holds: one per project and quota scope (Scope
// "compute:<project>" or "network:<project>"), so concurrent creates of
// one project, in any API process, count and insert one after another
// (see LockQuota).
type QuotaLock struct {
	Scope      string `gorm:"primaryKey;size:100"`
	Generation int64
}

// NetworkQuotaLimit is an operator-set Neutron quota: a project's limit on
// one network resource (Neutron's names: network, subnet, port, ...).
// Without a row the configured default applies; -1 means unlimited.
type NetworkQuotaLimit struct {
	ProjectID string `gorm:"primaryKey;size:64"`
	Resource  string `gorm:"primaryKey;size:64"`
	HardLimit int
	UpdatedAt time.Time
}

// ServerGroup is a Nova server group (os-server-groups): servers placed
// together (affinity) or apart (anti-affinity), strictly or, for the
// soft-* policies, as a preference only.
type ServerGroup struct {
	ID        string `gorm:"primaryKey;size:64"`
	Name      string `gorm:"size:255"`
	ProjectID string `gorm:"size:64;index"`
	UserID    string `gorm:"size:64"`
	Policy    string `gorm:"size:32"` // affinity | anti-affinity | soft-affinity | soft-anti-affinity
	// MaxServerPerHost is an anti-affinity group's max_server_per_host
	// rule (2.64): how many members one host may hold; 0 = none given,
	// Nova's default of 1.
	MaxServerPerHost int `gorm:"not null;default:0"`
	// ClaimGeneration is bumped by every claim of a member and every
	// member added: the row lock that serialises them, so two concurrent
	// boots of a group cannot both see the other's host as free.
	ClaimGeneration int64 `gorm:"not null;default:0"`
	CreatedAt       time.Time
}

// ServerGroupMember puts an instance in a group; an instance is in at
// most one group. The row goes when the instance is deleted.
type ServerGroupMember struct {
	ID         uint   `gorm:"primaryKey"`
	GroupID    string `gorm:"size:64;index"`
	InstanceID string `gorm:"size:64;uniqueIndex"`
	CreatedAt  time.Time
}

// EphemeralDisk is one of a server's ephemeral disks: a local filesystem
// of SizeGB mounted at /mnt/ephemeral<index> (ext4).
type EphemeralDisk struct {
	SizeGB int    `json:"size_gb"`
	Format string `json:"format,omitempty"`
}

// Ephemerals are inst's ephemeral disks (none when unreadable: they were
// written by the API, which checked them).
func (inst *Instance) Ephemerals() []EphemeralDisk {
	var out []EphemeralDisk
	if inst.EphemeralDisks != "" {
		_ = json.Unmarshal([]byte(inst.EphemeralDisks), &out)
	}
	return out
}

// EphemeralGB is the size of inst's ephemeral disks together: with its
// root disk, what its host's disk claim counts (Nova's DISK_GB is
// root_gb + ephemeral_gb).
func (inst *Instance) EphemeralGB() int {
	n := 0
	for _, d := range inst.Ephemerals() {
		n += d.SizeGB
	}
	return n
}

// ClaimDiskGB is the disk inst claims on its host: its root disk and its
// ephemeral disks.
func (inst *Instance) ClaimDiskGB() int { return inst.RootGB + inst.EphemeralGB() }
