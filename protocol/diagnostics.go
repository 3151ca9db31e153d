package protocol

// KindDiagnostics asks an agent (compute.<host> queue) for the measured
// counters of one of its servers: request/reply, DiagnosticsRequest in,
// DiagnosticsReply out.
const KindDiagnostics = "diagnostics"

// DiagnosticsRequest asks for the diagnostics of one server.
type DiagnosticsRequest struct {
	InstanceID string `json:"instance_id"`
}

// DiagnosticsReply is what the kernel accounts to a server: cgroup
// counters of its workload and netlink/tc counters of its NICs. Counters
// only grow (rates come from two samples); limits of 0 mean none. The
// cgroup fields are zero when Running is false (a stopped server has no
// cgroup).
type DiagnosticsReply struct {
	// PowerState is the driver's power state (Nova's integers).
	PowerState int  `json:"power_state"`
	Running    bool `json:"running"`
	// UptimeSeconds since the workload last started (0 when not running).
	UptimeSeconds int64  `json:"uptime_seconds"`
	NumCPUs       int    `json:"num_cpus"` // 0: unknown here (the API has the flavor)
	Driver        string `json:"driver"`   // the agent's driver name, e.g. docker

	// CgroupVersion is 1 or 2 (0: no counters were read).
	CgroupVersion       int    `json:"cgroup_version,omitempty"`
	CPUTimeNS           uint64 `json:"cpu_time_ns"`
	CPUUserNS           uint64 `json:"cpu_user_ns"`
	CPUSystemNS         uint64 `json:"cpu_system_ns"`
	CPUPeriods          uint64 `json:"cpu_periods"`
	CPUThrottledPeriods uint64 `json:"cpu_throttled_periods"`
	CPUThrottledNS      uint64 `json:"cpu_throttled_ns"`

	MemoryUsageBytes uint64 `json:"memory_usage_bytes"`
	MemoryLimitBytes uint64 `json:"memory_limit_bytes"`
	MemoryCacheBytes uint64 `json:"memory_cache_bytes,omitempty"` // page cache (v1 cache, v2 file)
	MemoryRSSBytes   uint64 `json:"memory_rss_bytes,omitempty"`   // anonymous memory (v1 rss, v2 anon)
	OOMKills         uint64 `json:"oom_kills"`

	PidsCurrent uint64 `json:"pids_current"`
	PidsMax     uint64 `json:"pids_max"`

	DiskReadBytes  uint64 `json:"disk_read_bytes"`
	DiskWriteBytes uint64 `json:"disk_write_bytes"`
	DiskReadOps    uint64 `json:"disk_read_ops"`
	DiskWriteOps   uint64 `json:"disk_write_ops"`

	NICs []NICDiagnostics `json:"nics"`
}

// NICDiagnostics are one NIC's counters seen from the server: read on the
// host end of its veth and swapped (what the host end receives is what
// the server transmits).
type NICDiagnostics struct {
	PortID    string `json:"port_id"`
	MAC       string `json:"mac"`
	Interface string `json:"interface"` // host-side veth, e.g. tap3f2a1c9e-7b
	// Present is false when the veth is missing (server stopped, or not
	// plugged yet): the counters are then zero.
	Present bool `json:"present"`

	RxBytes   uint64 `json:"rx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxErrors  uint64 `json:"rx_errors"`
	RxDrops   uint64 `json:"rx_drops"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxErrors  uint64 `json:"tx_errors"`
	TxDrops   uint64 `json:"tx_drops"`

	// Shaping of traffic into the server (the host end's root qdisc), when
	// one is installed.
	InboundShaped     bool   `json:"inbound_shaped,omitempty"`
	InboundDrops      uint64 `json:"inbound_qdisc_drops,omitempty"`
	InboundOverlimits uint64 `json:"inbound_qdisc_overlimits,omitempty"`
	// Shaping of traffic out of the server (the root qdisc of eth<i>
	// inside its namespace), when one is installed and could be read.
	OutboundShaped     bool   `json:"outbound_shaped,omitempty"`
	OutboundDrops      uint64 `json:"outbound_qdisc_drops,omitempty"`
	OutboundOverlimits uint64 `json:"outbound_qdisc_overlimits,omitempty"`
}
