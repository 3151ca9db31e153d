package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/capsule-cloud/capsule/limits"
	"github.com/capsule-cloud/capsule/protocol"
)

// HostReport builds this host's heartbeat: the driver's fingerprint, the
// allocation ratios and placement data from the config, and how many
// servers the driver runs.
func (a *Agent) HostReport(ctx context.Context) (protocol.HostReport, error) {
	info, err := a.drv.Fingerprint(ctx)
	if err != nil {
		return protocol.HostReport{}, fmt.Errorf("agent: fingerprint: %w", err)
	}
	list, err := a.drv.List(ctx)
	if err != nil {
		return protocol.HostReport{}, fmt.Errorf("agent: list instances: %w", err)
	}
	// Nova's split: the dedicated CPUs are the PCPU inventory, the
	// others the shared VCPUs (overcommitted by the allocation ratio).
	pcpus, err := limits.CountCPUs(a.cfg.CPUDedicatedSet)
	if err != nil {
		return protocol.HostReport{}, fmt.Errorf("agent: cpu_dedicated_set: %w", err)
	}
	return protocol.HostReport{
		Host:              a.cfg.Host,
		Zone:              a.cfg.Zone,
		HostIP:            a.cfg.HostIP,
		HypervisorType:    info.HypervisorType,
		HypervisorVersion: info.HypervisorVersion,
		VCPUs:             max(info.VCPUs-pcpus, 0),
		PCPUs:             pcpus,
		MemoryMB:          info.MemoryMB,
		DiskGB:            info.DiskGB,
		CPUModel:          info.CPUModel,
		Arch:              info.Arch,
		RootDisk:          info.RootDisk,
		// Like Nova's running_vms: every server on the host, whatever its
		// power state (a stopped one still holds its allocation).
		RunningVMs:          len(list),
		CPUAllocationRatio:  a.cfg.CPUAllocationRatio,
		RAMAllocationRatio:  a.cfg.RAMAllocationRatio,
		DiskAllocationRatio: a.cfg.DiskAllocationRatio,
		ReservedMemoryMB:    a.cfg.ReservedMemoryMB,
		At:                  a.now().UTC(),
	}, nil
}

// heartbeat publishes one HostReport. A host whose driver cannot
// fingerprint sends nothing rather than a report with zero capacity: the
// scheduler then sees it down, which is the truth.
func (a *Agent) heartbeat(ctx context.Context) error {
	rep, err := a.HostReport(ctx)
	if err != nil {
		return err
	}
	return a.publish(ctx, protocol.KindHostReport, rep)
}

// heartbeatLoop heartbeats at once and every HeartbeatInterval until ctx ends.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, a.cfg.HeartbeatInterval+a.callTimeout)
		err := a.heartbeat(hctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			a.log.Warn("heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
