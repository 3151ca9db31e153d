package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/vif"
)

// diagnostics answers a diagnostics request: the driver's power state and,
// while the workload runs, its cgroup counters (drivers.StatsReader), plus
// the counters of each NIC's host-side veth. A stopped server gets its
// state and NICs (absent) without counters, as libvirt answers for a
// shut-off domain. It never waits for the instance lock: these are
// reads, and a diagnostics call must not wait behind a build's image pull
// (only the outbound queue counters need the lock, and are skipped when
// an operation holds it).
func (a *Agent) diagnostics(ctx context.Context, req protocol.DiagnosticsRequest) (protocol.DiagnosticsReply, error) {
	id := req.InstanceID
	if id == "" {
		return protocol.DiagnosticsReply{}, errors.New("agent: diagnostics request without an instance id")
	}
	ctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	st, err := a.drv.Status(ctx, id)
	if err != nil {
		return protocol.DiagnosticsReply{}, fmt.Errorf("diagnostics of instance %s on host %s: %w", id, a.cfg.Host, err)
	}
	rep := protocol.DiagnosticsReply{
		PowerState: int(st.Power),
		Running:    st.Power == drivers.PowerRunning || st.Power == drivers.PowerPaused,
		Driver:     a.drv.Name(),
	}
	if rep.Running {
		sr, ok := a.drv.(drivers.StatsReader)
		if !ok {
			return protocol.DiagnosticsReply{}, fmt.Errorf("diagnostics of instance %s: driver %s cannot measure instances: %w",
				id, a.drv.Name(), drivers.ErrNotSupported)
		}
		s, err := sr.InstanceStats(ctx, id)
		switch {
		case errors.Is(err, drivers.ErrInvalidState):
			// Stopped between Status and here: report it so.
			rep.Running = false
			rep.PowerState = int(a.powerOf(ctx, id))
		case err != nil:
			return protocol.DiagnosticsReply{}, fmt.Errorf("diagnostics of instance %s on host %s: %w", id, a.cfg.Host, err)
		default:
			fillStats(&rep, s.Stats)
			started := s.StartedAt
			if started.IsZero() {
				started = st.StartedAt
			}
			if !started.IsZero() {
				rep.UptimeSeconds = max(int64(a.now().Sub(started).Seconds()), 0)
			}
		}
	}
	nics, err := a.nicsOf(ctx, id)
	if err != nil {
		// The counters above are worth more than the NICs: report them
		// with none rather than fail.
		a.log.Warn("diagnostics: NICs of instance unknown", "instance", id, "err", err)
	}
	rep.NICs = make([]protocol.NICDiagnostics, 0, len(nics))
	for _, n := range nics {
		d, err := nicDiagnostics(n)
		if err != nil {
			a.log.Warn("diagnostics: NIC counters", "instance", id, "port", n.PortID, "err", err)
		}
		rep.NICs = append(rep.NICs, d)
	}
	if rep.Running && len(rep.NICs) > 0 {
		if err := a.outboundShaping(ctx, id, rep.NICs); err != nil {
			a.log.Debug("diagnostics: outbound shaping counters not read", "instance", id, "err", err)
		}
	}
	return rep, nil
}

// outboundShaping fills the outbound queue counters of nics (each found
// inside the server's namespace by its veth: after a hot-plug, eth<i> is
// not the i-th port). Only when no operation holds the
// instance: asking the driver for the namespace of an instance being
// stopped could bring its sandbox back. Best effort: the counters stay
// unset when the namespace cannot be entered.
func (a *Agent) outboundShaping(ctx context.Context, id string, nics []protocol.NICDiagnostics) error {
	if !a.drv.Capabilities().Networking {
		return nil
	}
	unlock, ok := a.locks.tryLock(id)
	if !ok {
		return errors.New("an operation on the instance is in flight")
	}
	defer unlock()
	path, err := a.drv.Sandbox(ctx, id)
	if err != nil {
		return fmt.Errorf("namespace of %s: %w", id, err)
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", path, err)
	}
	defer h.Close()
	for i := range nics {
		name, err := vif.PluggedName(h, nics[i].PortID)
		if err != nil || name == "" {
			continue // not plugged (yet): nothing shapes it
		}
		link, err := h.LinkByName(name)
		if err != nil {
			continue
		}
		sh, err := vif.ReadShaping(h, link)
		if err != nil {
			return fmt.Errorf("qdiscs of %s in %s: %w", name, path, err)
		}
		nics[i].OutboundShaped, nics[i].OutboundDrops, nics[i].OutboundOverlimits = sh.Shaped, sh.Drops, sh.Overlimits
	}
	return nil
}

func fillStats(rep *protocol.DiagnosticsReply, s cgroup.Stats) {
	rep.CgroupVersion = s.CgroupVersion
	rep.CPUTimeNS = s.CPUUsageNS
	rep.CPUUserNS = s.CPUUserNS
	rep.CPUSystemNS = s.CPUSystemNS
	rep.CPUPeriods = s.CPUPeriods
	rep.CPUThrottledPeriods = s.CPUThrottledPeriods
	rep.CPUThrottledNS = s.CPUThrottledNS
	rep.MemoryUsageBytes = s.MemoryUsageBytes
	rep.MemoryLimitBytes = s.MemoryLimitBytes
	rep.MemoryCacheBytes = s.MemoryCacheBytes
	rep.MemoryRSSBytes = s.MemoryRSSBytes
	rep.OOMKills = s.OOMKills
	rep.PidsCurrent = s.Pids
	rep.PidsMax = s.PidsLimit
	rep.DiskReadBytes = s.DiskReadBytes
	rep.DiskWriteBytes = s.DiskWriteBytes
	rep.DiskReadOps = s.DiskReadOps
	rep.DiskWriteOps = s.DiskWriteOps
}

// nicDiagnostics reads the counters of n's host-side veth (in this
// process's namespace, the host's). A missing veth is not an error: the
// NIC is reported absent with zero counters.
func nicDiagnostics(n protocol.NIC) (protocol.NICDiagnostics, error) {
	d := protocol.NICDiagnostics{PortID: n.PortID, MAC: n.MAC, Interface: vif.HostIfName(n.PortID)}
	err := linkDiagnostics(&d)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return d, nil
	}
	return d, err
}

// linkDiagnostics fills d from the link named d.Interface: its counters,
// swapped to the server's point of view (the host end receives what the
// server sends), and its root qdisc's drops and overlimits when shaped.
func linkDiagnostics(d *protocol.NICDiagnostics) error {
	link, err := netlink.LinkByName(d.Interface)
	if err != nil {
		return fmt.Errorf("link %s: %w", d.Interface, err)
	}
	d.Present = true
	if s := link.Attrs().Statistics; s != nil {
		d.TxBytes, d.TxPackets, d.TxErrors, d.TxDrops = s.RxBytes, s.RxPackets, s.RxErrors, s.RxDropped
		d.RxBytes, d.RxPackets, d.RxErrors, d.RxDrops = s.TxBytes, s.TxPackets, s.TxErrors, s.TxDropped
	}
	sh, err := vif.ReadShaping(&netlink.Handle{}, link) // the zero Handle is the current namespace
	if err != nil {
		return fmt.Errorf("qdiscs of %s: %w", d.Interface, err)
	}
	d.InboundShaped, d.InboundDrops, d.InboundOverlimits = sh.Shaped, sh.Drops, sh.Overlimits
	return nil
}
