package compute

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// Server diagnostics (admin): measured on the server's host by its agent
// (cgroup counters of the workload, netlink counters of the host ends of
// its NICs), rendered as Nova's libvirt driver does: flat libvirt-style
// keys below 2.48 (plus Capsule's own counters, which only that free-form
// body can carry), the standard body from 2.48.

// diagnosticStates maps power_state to the 2.48 "state" enum.
var diagnosticStates = map[int]string{0: "pending", 1: "running", 3: "paused", 4: "shutdown", 6: "crashed", 7: "suspended"}

const mib = 1 << 20

func (s *Service) serverDiagnostics(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.loadServer(w, r)
	if !ok {
		return
	}
	// No host, or not built yet: there is nothing to measure. A stopped
	// server is answered (state shutdown, no counters), as libvirt
	// answers for a shut-off domain.
	if inst.Host == "" || inst.VMState == lifecycle.Building {
		writeFault(w, errdefs.Conflictf("Cannot 'get_diagnostics' instance %s while it is in vm_state %s", inst.ID, inst.VMState))
		return
	}
	rep, err := s.callDiagnostics(r.Context(), inst)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !versionOf(r.Context()).AtLeast(48) {
		writeJSON(w, http.StatusOK, legacyDiagnostics(inst, rep))
		return
	}
	writeJSON(w, http.StatusOK, standardDiagnostics(inst, rep))
}

// callDiagnostics asks the server's agent for its counters. A driver that
// cannot measure is NotSupported (Nova's 501), a host that does not hold
// or cannot read the server a conflict, a host that did not answer
// unavailable.
func (s *Service) callDiagnostics(ctx context.Context, inst *store.Instance) (protocol.DiagnosticsReply, error) {
	msg, err := bus.NewMessage(protocol.KindDiagnostics, protocol.DiagnosticsRequest{InstanceID: inst.ID})
	if err != nil {
		return protocol.DiagnosticsReply{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	var rep protocol.DiagnosticsReply
	err = s.bus.Call(ctx, bus.ComputeQueue(inst.Host), msg, &rep)
	if err == nil {
		return rep, nil
	}
	var remote *bus.RemoteError
	if errors.As(err, &remote) {
		if errdefs.IsNotSupported(remote) {
			return rep, errdefs.NotSupported("Unable to get diagnostics, functionality not implemented: " + remote.Message)
		}
		// The host does not hold the server (yet, or any more), or
		// could not read it: the server is not in a state to measure.
		return rep, errdefs.Conflictf("Instance %s is not ready: %s", inst.ID, remote.Message)
	}
	s.log.Warn("diagnostics call", "instance", inst.ID, "host", inst.Host, "error", err)
	return rep, errdefs.Unavailablef("The compute host %s did not answer in time.", inst.Host)
}

// cpuTimes splits the server's CPU time over its vCPUs. A container's
// cgroup accounts CPU time to the server as a whole, not per vCPU; an
// even split keeps the sum exact, which is what clients add up.
func cpuTimes(vcpus int, total uint64) []uint64 {
	n := max(vcpus, 1)
	out := make([]uint64, n)
	for i := range out {
		out[i] = total / uint64(n)
	}
	out[0] += total % uint64(n)
	return out
}

// utilisation is the server's average CPU use since it started, in
// percent of its vCPUs (nil when it is not running or just started).
func utilisation(vcpus int, rep protocol.DiagnosticsReply) any {
	if !rep.Running || rep.UptimeSeconds <= 0 {
		return nil
	}
	pct := float64(rep.CPUTimeNS) / (float64(rep.UptimeSeconds) * 1e9 * float64(max(vcpus, 1))) * 100
	return int(min(pct+0.5, 100))
}

func numCPUs(inst *store.Instance, rep protocol.DiagnosticsReply) int {
	if rep.NumCPUs > 0 {
		return rep.NumCPUs
	}
	return inst.VCPUs
}

func stateOf(inst *store.Instance, rep protocol.DiagnosticsReply) string {
	if st, ok := diagnosticStates[rep.PowerState]; ok {
		return st
	}
	if st, ok := diagnosticStates[inst.PowerState]; ok {
		return st
	}
	return "pending"
}

// legacyDiagnostics is the body below 2.48: libvirt's keys (memory in
// KiB, per-vCPU times in ns, vda_* for the root disk, tap<port>_* per
// NIC from the server's point of view) and capsule_* extras.
func legacyDiagnostics(inst *store.Instance, rep protocol.DiagnosticsReply) map[string]any {
	limit := rep.MemoryLimitBytes
	if limit == 0 {
		limit = uint64(inst.MemoryMB) * mib
	}
	out := map[string]any{
		"memory":        uint64(inst.MemoryMB) * 1024,
		"memory-actual": limit / 1024,
		"memory-rss":    rep.MemoryRSSBytes / 1024,
		"vda_read":      rep.DiskReadBytes,
		"vda_write":     rep.DiskWriteBytes,
		"vda_read_req":  rep.DiskReadOps,
		"vda_write_req": rep.DiskWriteOps,
		"vda_errors":    -1, // not counted, as libvirt says when it does not know

		"capsule_state":                 stateOf(inst, rep),
		"capsule_uptime":                rep.UptimeSeconds,
		"capsule_cgroup_version":        rep.CgroupVersion,
		"capsule_cpu_time":              rep.CPUTimeNS,
		"capsule_cpu_user_time":         rep.CPUUserNS,
		"capsule_cpu_system_time":       rep.CPUSystemNS,
		"capsule_cpu_periods":           rep.CPUPeriods,
		"capsule_cpu_throttled_periods": rep.CPUThrottledPeriods,
		"capsule_cpu_throttled_time":    rep.CPUThrottledNS,
		"capsule_memory_usage":          rep.MemoryUsageBytes,
		"capsule_memory_limit":          rep.MemoryLimitBytes,
		"capsule_memory_cache":          rep.MemoryCacheBytes,
		"capsule_memory_rss":            rep.MemoryRSSBytes,
		"capsule_oom_kills":             rep.OOMKills,
		"capsule_pids":                  rep.PidsCurrent,
		"capsule_pids_max":              rep.PidsMax,
	}
	for i, t := range cpuTimes(numCPUs(inst, rep), rep.CPUTimeNS) {
		out[fmt.Sprintf("cpu%d_time", i)] = t
	}
	for _, n := range rep.NICs {
		p := n.Interface
		out[p+"_rx"] = n.RxBytes
		out[p+"_rx_packets"] = n.RxPackets
		out[p+"_rx_errors"] = n.RxErrors
		out[p+"_rx_drop"] = n.RxDrops
		out[p+"_tx"] = n.TxBytes
		out[p+"_tx_packets"] = n.TxPackets
		out[p+"_tx_errors"] = n.TxErrors
		out[p+"_tx_drop"] = n.TxDrops
		if n.InboundShaped {
			out[p+"_rx_shaping_drop"] = n.InboundDrops
			out[p+"_rx_shaping_overlimits"] = n.InboundOverlimits
		}
		if n.OutboundShaped {
			out[p+"_tx_shaping_drop"] = n.OutboundDrops
			out[p+"_tx_shaping_overlimits"] = n.OutboundOverlimits
		}
	}
	return out
}

// standardDiagnostics is the 2.48 body, exactly Tempest's schema (no
// extra keys allowed). "driver" is an enum of Nova's drivers with no
// value for containers; "libvirt" is the one whose fields Capsule fills
// the same way.
func standardDiagnostics(inst *store.Instance, rep protocol.DiagnosticsReply) map[string]any {
	state := stateOf(inst, rep)
	vcpus := numCPUs(inst, rep)
	var uptime, used any
	if rep.Running {
		uptime = rep.UptimeSeconds
		// Rounded up: a server using anything shows some use.
		used = (rep.MemoryUsageBytes + mib - 1) / mib
	}
	maximum := inst.MemoryMB
	if rep.MemoryLimitBytes > 0 {
		maximum = int(rep.MemoryLimitBytes / mib)
	}
	util := utilisation(vcpus, rep)
	cpus := make([]map[string]any, 0, vcpus)
	for i, t := range cpuTimes(vcpus, rep.CPUTimeNS) {
		var tm any
		if rep.Running {
			tm = t
		}
		cpus = append(cpus, map[string]any{"id": i, "time": tm, "utilisation": util})
	}
	nics := make([]map[string]any, 0, len(rep.NICs))
	for _, n := range rep.NICs {
		var mac any
		if n.MAC != "" {
			mac = strings.ToLower(n.MAC)
		}
		d := map[string]any{"mac_address": mac, "rx_rate": nil, "tx_rate": nil}
		for _, k := range []string{"rx_octets", "rx_errors", "rx_drop", "rx_packets", "tx_octets", "tx_errors", "tx_drop", "tx_packets"} {
			d[k] = nil
		}
		if n.Present {
			d["rx_octets"], d["rx_errors"], d["rx_drop"], d["rx_packets"] = n.RxBytes, n.RxErrors, n.RxDrops, n.RxPackets
			d["tx_octets"], d["tx_errors"], d["tx_drop"], d["tx_packets"] = n.TxBytes, n.TxErrors, n.TxDrops, n.TxPackets
		}
		nics = append(nics, d)
	}
	disk := map[string]any{"read_bytes": nil, "read_requests": nil, "write_bytes": nil, "write_requests": nil, "errors_count": nil}
	if rep.Running {
		disk["read_bytes"], disk["read_requests"] = rep.DiskReadBytes, rep.DiskReadOps
		disk["write_bytes"], disk["write_requests"] = rep.DiskWriteBytes, rep.DiskWriteOps
	}
	return map[string]any{
		"state": state, "driver": "libvirt", "hypervisor": "docker", "hypervisor_os": "linux", "uptime": uptime,
		"config_drive": false, "num_cpus": vcpus, "num_nics": len(nics), "num_disks": 1,
		"memory_details": map[string]any{"maximum": maximum, "used": used},
		"cpu_details":    cpus, "nic_details": nics, "disk_details": []any{disk},
	}
}
