package protocol

import "time"

// KindHostEvent (conductor queue) carries an event an agent raised: an
// alarm threshold crossed or an OOM kill. The conductor stores it as a
// host event and, for a server, as an instance action of that server.
const KindHostEvent = "host_event"

// EventKind names what happened.
type EventKind string

const (
	EventOOMKill     EventKind = "oom_kill"     // a server's memory cgroup killed a process (always raised)
	EventPidsAlarm   EventKind = "pids_alarm"   // a server's pids near its cap
	EventMemoryAlarm EventKind = "memory_alarm" // a server's non-reclaimable memory near its limit
	EventCPUAlarm    EventKind = "cpu_alarm"    // a server throttled most of the time
	EventHostPids    EventKind = "host_pids_alarm"
	EventConntrack   EventKind = "host_conntrack_alarm"
	EventDaemonDown  EventKind = "daemon_down" // dockerd or Open vSwitch not answering
	// EventRootDisk: the host's data root cannot cap servers' root disks
	// at their flavor's disk (drivers.HostInfo.RootDisk), raised once.
	EventRootDisk EventKind = "root_disk_not_enforced"
)

// Severities of an event.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// HostEvent is one event; ID is the agent's (a UUID), so a redelivered
// message records nothing twice.
type HostEvent struct {
	ID         string    `json:"id"`
	Host       string    `json:"host"`
	InstanceID string    `json:"instance_id,omitempty"`
	ProjectID  string    `json:"project_id,omitempty"`
	Kind       EventKind `json:"kind"`
	Severity   string    `json:"severity"`
	Message    string    `json:"message"`
	Value      float64   `json:"value"`
	Threshold  float64   `json:"threshold"`
	At         time.Time `json:"at"`
}
