// Package protocol holds the message bodies exchanged on the bus between
// the API, scheduler, conductor and agents: the wire contract of the
// control plane. Kinds are constants so a typo is a compile error.
package protocol

import (
	"time"

	"github.com/capsule-cloud/capsule/lifecycle"
)

// Message kinds, by the queue that receives them.
const (
	// scheduler queue
	KindScheduleInstance = "schedule_instance"

	// compute.<host> queues
	KindBuildInstance  = "build_instance"
	KindInstanceAction = "instance_action"
	KindConsoleOutput  = "console_output" // request/reply

	// conductor queue
	KindHostReport      = "host_report"
	KindInstanceReport  = "instance_report"
	KindPowerSync       = "power_sync"
	KindInstancesOnHost = "instances_on_host" // request/reply
)

// ScheduleInstance asks the scheduler to place an instance.
type ScheduleInstance struct {
	InstanceID string   `json:"instance_id"`
	RequestID  string   `json:"request_id"`
	Attempt    int      `json:"attempt"`  // 1 for the first try
	Excluded   []string `json:"excluded"` // hosts a build already failed on
	// Host is the only host an unshelve may place the server on (2.91's
	// unshelve to a host, admins'); "" lets the scheduler choose.
	Host string `json:"host,omitempty"`
	// Evacuate asks for a host for the evacuation of a server whose host
	// is down (it stays on its dead host until one is chosen); Host is
	// then the one an admin named ("" lets the scheduler choose).
	Evacuate bool `json:"evacuate,omitempty"`
}

// InstanceSpec is everything an agent needs to build an instance; agents
// have no database, so the spec travels with the message.
type InstanceSpec struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Hostname   string            `json:"hostname"`
	ProjectID  string            `json:"project_id"`
	ImageRef   string            `json:"image_ref"` // registry reference
	VCPUs      int               `json:"vcpus"`
	MemoryMB   int               `json:"memory_mb"`
	DiskGB     int               `json:"disk_gb"`
	ExtraSpecs map[string]string `json:"extra_specs,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// NICs are plumbed, in order (eth0, eth1, ...), before the workload
	// starts; none means the server has no network.
	NICs []NIC `json:"nics,omitempty"`
	// AuthorizedKeys is the public key of the server's keypair, written
	// to /root/.ssh/authorized_keys before the first boot ("" = none).
	AuthorizedKeys string `json:"authorized_keys,omitempty"`
	// UserData is the server's user data as stored (base64; "" = none):
	// the agent writes what Capsule's base image runs of it at first boot
	// (package userdata), and takes a cloud-config's hostname.
	UserData string `json:"user_data,omitempty"`
	// ConfigDrive: the agent writes the server's metadata tree (package
	// metadata) into it before its first boot.
	ConfigDrive bool `json:"config_drive,omitempty"`
	// Volumes are the server's attached volumes (protocol/volumes.go):
	// the agent mounts them before the workload starts (build, start,
	// migration import, unshelve, rebuild) and reconcile re-mounts them.
	Volumes []VolumeMount `json:"volumes,omitempty"`
	// AdminPassHash is the crypt(3) hash of the create's or rebuild's
	// adminPass ("" = none): the agent puts it in root's /etc/shadow line
	// of a new disk before its first boot, where the image has one.
	AdminPassHash string `json:"admin_pass_hash,omitempty"`
}

// NIC is one network interface of a server: a Neutron port bound to the
// server's host, with a static address on a VLAN (or flat) network.
type NIC struct {
	PortID          string   `json:"port_id"`
	NetworkID       string   `json:"network_id"`
	MAC             string   `json:"mac"`
	IPs             []IP     `json:"ips"`
	Gateway         string   `json:"gateway,omitempty"` // default route via it (first NIC with one)
	DNS             []string `json:"dns,omitempty"`
	MTU             int      `json:"mtu"`
	PhysicalNetwork string   `json:"physical_network"`
	NetworkType     string   `json:"network_type"`    // vlan | flat
	SegmentationID  int      `json:"segmentation_id"` // VLAN id; 0 for flat
	PortSecurity    bool     `json:"port_security"`   // anti-spoofing flows on
	// Firewall is the port's security groups resolved to rules (remote
	// groups to their members' addresses), enforced on top of the
	// anti-spoofing flows: default deny, allowed by rule, established
	// and related traffic allowed. nil: no filtering (no port security,
	// or a control plane from before security groups).
	Firewall *Firewall `json:"firewall,omitempty"`
	// Bandwidth shapes the NIC (Nova's quota:vif_* extra specs); nil or
	// zero values mean unlimited.
	Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
	// AllowedAddressPairs are the other sources the port may send from
	// (Neutron's allowed address pairs): the anti-spoofing flows allow
	// each address or prefix with its MAC, and a firewall applies to
	// traffic to those MACs too.
	AllowedAddressPairs []AddressPair `json:"allowed_address_pairs,omitempty"`
}

// AddressPair is an address or CIDR prefix and the MAC it is sent with.
type AddressPair struct {
	IP  string `json:"ip"`
	MAC string `json:"mac"`
}

// Bandwidth is a NIC's traffic shaping in Nova's units: averages and peaks
// in KB/s (1000 bytes per second), bursts in KB (1024 bytes), as libvirt
// hands them to tc. Zero means not set; a direction without an average is
// not shaped.
type Bandwidth struct {
	InboundAverageKBps  int `json:"inbound_average_kbps,omitempty"` // into the server
	InboundPeakKBps     int `json:"inbound_peak_kbps,omitempty"`
	InboundBurstKB      int `json:"inbound_burst_kb,omitempty"`
	OutboundAverageKBps int `json:"outbound_average_kbps,omitempty"` // out of the server
	OutboundPeakKBps    int `json:"outbound_peak_kbps,omitempty"`
	OutboundBurstKB     int `json:"outbound_burst_kb,omitempty"`
}

// Firewall is what a port's security groups allow. No rule allows
// nothing (in or out) but the replies of what was allowed.
type Firewall struct {
	Rules []FirewallRule `json:"rules"`
}

// FirewallRule allows one kind of traffic in (from Remotes) or out (to
// Remotes) of the port.
type FirewallRule struct {
	Direction string `json:"direction"` // ingress | egress
	EtherType string `json:"ethertype"` // IPv4 | IPv6
	Protocol  int    `json:"protocol"`  // IP protocol number; -1 any
	// PortMin/PortMax: the destination port range (TCP, UDP, SCTP); for
	// ICMP the type (min) and code (max). nil: any.
	PortMin *int `json:"port_min,omitempty"`
	PortMax *int `json:"port_max,omitempty"`
	// RemoteAny: from/to anywhere; else only from/to Remotes (CIDRs; a
	// remote group's members' addresses, possibly none).
	RemoteAny bool     `json:"remote_any,omitempty"`
	Remotes   []string `json:"remotes,omitempty"`
	// Stateful: allowed connections are tracked, so their replies pass
	// (a stateless group's rules allow only what they match).
	Stateful bool `json:"stateful"`
}

// IP is one fixed address of a NIC.
type IP struct {
	Address   string `json:"address"`
	PrefixLen int    `json:"prefix_len"`
	SubnetID  string `json:"subnet_id"`
}

// BuildInstance asks an agent to create and start an instance.
type BuildInstance struct {
	RequestID string       `json:"request_id"`
	Attempt   int          `json:"attempt"`
	Spec      InstanceSpec `json:"spec"`
	// Unshelve is set when the build spawns a shelved-offloaded server
	// from its shelve image (Spec.ImageRef): the agent reports it as an
	// unshelve (lifecycle.ActUnshelve), not a create.
	Unshelve bool `json:"unshelve,omitempty"`
	// VolumeRefs (unshelve): the offloaded server's local volumes whose
	// data its offload pushed to the registry (volume id -> reference,
	// instance.ShelvedVolumeRef); the host pulls each into a fresh copy
	// before the server is created, and deletes those copies again when
	// the unshelve fails (the registry keeps the data).
	VolumeRefs map[string]string `json:"volume_refs,omitempty"`
	// Evacuate is set when the build rebuilds, from its image, a server
	// evacuated from a dead host: the agent reports it as an evacuation
	// (lifecycle.ActEvacuate), not a create.
	Evacuate bool `json:"evacuate,omitempty"`
	// Stopped (evacuate): the server is created but left stopped (it was
	// SHUTOFF, or the evacuation asked for it, Nova's 2.95).
	Stopped bool `json:"stopped,omitempty"`
}

// InstanceAction asks an agent to run a lifecycle action.
type InstanceAction struct {
	RequestID  string           `json:"request_id"`
	InstanceID string           `json:"instance_id"`
	Action     lifecycle.Action `json:"action"`
	// RescueImage is a rescue's image (registry reference): the rescue
	// system that gets the server's disk at /mnt.
	RescueImage string `json:"rescue_image,omitempty"`
	// RescuePassHash is the crypt(3) hash of a rescue's adminPass ("" =
	// none): root's password of the rescue system, where its image has
	// an /etc/shadow.
	RescuePassHash string `json:"rescue_pass_hash,omitempty"`
	// VolumeRefs (shelve offload): the shelved server's local volumes
	// (volume id -> reference, instance.ShelvedVolumeRef): the host pushes
	// each there before it removes the server, and deletes its copy only
	// once every push succeeded.
	VolumeRefs map[string]string `json:"volume_refs,omitempty"`
}

// ConsoleOutputRequest asks an agent for the tail of a console log.
type ConsoleOutputRequest struct {
	InstanceID string `json:"instance_id"`
	Lines      int    `json:"lines"` // < 0 = all
}

// ConsoleOutputReply carries the console log.
type ConsoleOutputReply struct {
	Output string `json:"output"`
}

// HostReport is an agent's heartbeat with its capacity.
type HostReport struct {
	Host                string    `json:"host"`
	Zone                string    `json:"zone"`
	HostIP              string    `json:"host_ip"`
	HypervisorType      string    `json:"hypervisor_type"`
	HypervisorVersion   int       `json:"hypervisor_version"`
	VCPUs               int       `json:"vcpus"`
	MemoryMB            int       `json:"memory_mb"`
	DiskGB              int       `json:"disk_gb"`
	CPUModel            string    `json:"cpu_model"`
	Arch                string    `json:"arch"`
	RunningVMs          int       `json:"running_vms"`
	CPUAllocationRatio  float64   `json:"cpu_allocation_ratio"`
	RAMAllocationRatio  float64   `json:"ram_allocation_ratio"`
	DiskAllocationRatio float64   `json:"disk_allocation_ratio"`
	ReservedMemoryMB    int       `json:"reserved_memory_mb"`
	PCPUs               int       `json:"pcpus"`               // size of cpu_dedicated_set; VCPUs counts the other CPUs
	RootDisk            string    `json:"root_disk,omitempty"` // drivers.HostInfo.RootDisk: is a flavor's disk enforced here
	At                  time.Time `json:"at"`
}

// InstanceReport is an agent's account of an action it ran (or of a
// build), recorded by the conductor as the instance's new state and as an
// instance-action event.
type InstanceReport struct {
	RequestID  string           `json:"request_id"`
	InstanceID string           `json:"instance_id"`
	Host       string           `json:"host"`
	Action     lifecycle.Action `json:"action"`
	Attempt    int              `json:"attempt,omitempty"`
	OK         bool             `json:"ok"`
	Error      string           `json:"error,omitempty"`
	// ErrorMessage is the failure's safe message (errdefs.Message of the
	// error), what the user may be shown as the server's fault; empty
	// when the error carries none (Error, the whole chain, is for
	// admins and logs).
	ErrorMessage string `json:"error_message,omitempty"`
	// ErrorKind is the failure's errdefs kind ("" when unclassified):
	// NotFound says nothing of the instance is left on the host.
	ErrorKind  string    `json:"error_kind,omitempty"`
	PowerState int       `json:"power_state"`
	Event      string    `json:"event"` // e.g. compute_build_and_run_instance
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
}

// PowerSync carries the power states an agent observed (reconciliation).
type PowerSync struct {
	Host    string         `json:"host"`
	States  map[string]int `json:"states"`  // instance id -> power state
	Orphans []string       `json:"orphans"` // instances running here the cloud does not place here
	// ResumeFailed holds, per instance, why the agent could not start
	// again a server the cloud records as running after the host (or its
	// dockerd) came back with its containers stopped; the conductor puts
	// it in ERROR with that reason as its fault. Such instances are not
	// in States.
	ResumeFailed map[string]string `json:"resume_failed,omitempty"`
	// Evacuated lists the servers evacuated from this host whose leftovers
	// (container, sandbox, ephemeral disks) the agent removed; the
	// conductor completes their evacuations.
	Evacuated []string `json:"evacuated,omitempty"`
}

// InstancesOnHostRequest asks the conductor what should run on a host.
type InstancesOnHostRequest struct {
	Host string `json:"host"`
}

// ExpectedInstance is one instance the control plane places on a host.
type ExpectedInstance struct {
	Spec      InstanceSpec        `json:"spec"`
	VMState   lifecycle.VMState   `json:"vm_state"`
	TaskState lifecycle.TaskState `json:"task_state"`
	// PowerState is the power state the cloud last recorded
	// (lifecycle.PowerState): a server waiting in VERIFY_RESIZE was
	// running when it is Running, which is how a host boot knows to
	// resume it (Nova's resume_guests_state_on_host_boot looks at the
	// recorded power state too). 0 (an older conductor): unknown.
	PowerState int `json:"power_state,omitempty"`
}

// InstancesOnHostReply lists the instances placed on a host.
type InstancesOnHostReply struct {
	Instances []ExpectedInstance `json:"instances"`
	// Migrating lists the servers placed elsewhere whose unfinished cold
	// migration has this host as its source or target: copies of their
	// disks here are the migration's. nil (a conductor that does not
	// list them): the agent removes no stray server data.
	Migrating []string `json:"migrating"`
	// Evacuated are the servers evacuated from this host (rebuilt on
	// another while it was down) whose leftovers here the agent removes.
	Evacuated []string `json:"evacuated,omitempty"`
}
