package protocol

import "time"

// KindServerUsage (conductor queue, best effort) carries one usage point
// per running server of a host, measured over the agent's usage interval:
// the conductor keeps them as the servers' usage history (store/usage.go).
const KindServerUsage = "server_usage"

// ServerUsage is one round of a host's usage points.
type ServerUsage struct {
	Host string `json:"host"`
	// Interval is the agent's usage interval: the points' resolution.
	Interval time.Duration `json:"interval"`
	Points   []UsagePoint  `json:"points"`
}

// UsagePoint is one server's usage over the interval ending At: rates
// from the counters' increase (a server that restarted in between sends
// no point for that interval), memory as read at At.
type UsagePoint struct {
	InstanceID string    `json:"instance_id"`
	At         time.Time `json:"at"`
	// CPU is CPU time used per second of wall time (1.0 = one vCPU busy).
	CPU float64 `json:"cpu"`
	// MemoryBytes is the working set (or the usage when the driver cannot
	// tell it), MemoryLimitBytes the cgroup limit (0: none).
	MemoryBytes      float64 `json:"memory_bytes"`
	MemoryLimitBytes float64 `json:"memory_limit_bytes"`
	// Disk and network bytes per second.
	DiskReadBps  float64 `json:"disk_read_bps"`
	DiskWriteBps float64 `json:"disk_write_bps"`
	NetRxBps     float64 `json:"net_rx_bps"`
	NetTxBps     float64 `json:"net_tx_bps"`
}
