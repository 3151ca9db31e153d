package agent

import (
	"context"
	"errors"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/protocol"
)

// The usage loop: every agent.usage_interval the agent reads each running
// server's counters and sends the conductor one point per server (the
// rates since the previous reading), which keeps them as the server's
// usage history. Best effort: a round the bus does not take is a gap in
// the history, not a backlog.

// usageReading is one server's counters at one time.
type usageReading struct {
	at        time.Time
	startedAt time.Time
	cpuNS     uint64
	diskR     uint64
	diskW     uint64
	netRx     uint64
	netTx     uint64
}

// usageRates turns two readings of a server into a point; ok is false
// when they cannot be compared (a restart in between, counters that went
// back, no time between them).
func usageRates(id string, prev, cur usageReading, memory, limit uint64) (protocol.UsagePoint, bool) {
	secs := cur.at.Sub(prev.at).Seconds()
	if secs <= 0 || !cur.startedAt.Equal(prev.startedAt) || cur.cpuNS < prev.cpuNS || cur.diskR < prev.diskR ||
		cur.diskW < prev.diskW {
		return protocol.UsagePoint{}, false
	}
	p := protocol.UsagePoint{InstanceID: id, At: cur.at.UTC(), CPU: float64(cur.cpuNS-prev.cpuNS) / 1e9 / secs,
		MemoryBytes: float64(memory), MemoryLimitBytes: float64(limit),
		DiskReadBps: float64(cur.diskR-prev.diskR) / secs, DiskWriteBps: float64(cur.diskW-prev.diskW) / secs}
	// A NIC re-plugged in between restarts its counters: that interval
	// shows no traffic rather than a spike.
	if cur.netRx >= prev.netRx && cur.netTx >= prev.netTx {
		p.NetRxBps, p.NetTxBps = float64(cur.netRx-prev.netRx)/secs, float64(cur.netTx-prev.netTx)/secs
	}
	return p, true
}

// usageRound reads every running server and returns the points of those
// read in the previous round too; prev is updated in place (servers no
// longer running are forgotten).
func (a *Agent) usageRound(ctx context.Context, prev map[string]usageReading) []protocol.UsagePoint {
	list, err := a.drv.List(ctx)
	if err != nil {
		a.log.Warn("usage: servers not listed", "err", err)
		return nil
	}
	var out []protocol.UsagePoint
	seen := map[string]bool{}
	for _, st := range list {
		if st.Power != drivers.PowerRunning && st.Power != drivers.PowerPaused {
			continue
		}
		s, err := a.serverStats(ctx, st.ID)
		if err != nil {
			if !errors.Is(err, drivers.ErrInvalidState) && !errors.Is(err, drivers.ErrNotFound) {
				a.log.Debug("usage: server counters not read", "instance", st.ID, "err", err)
			}
			continue
		}
		cur := usageReading{at: a.now(), startedAt: s.StartedAt, cpuNS: s.CPUUsageNS, diskR: s.DiskReadBytes, diskW: s.DiskWriteBytes}
		if nics, ok := a.nics.get(st.ID); ok {
			for _, n := range nics {
				if d, err := nicDiagnostics(n); err == nil && d.Present {
					// The host side of the veth sends what the server
					// receives.
					cur.netRx += d.TxBytes
					cur.netTx += d.RxBytes
				}
			}
		}
		mem := s.MemoryWorkingSetBytes
		if mem == 0 {
			mem = s.MemoryUsageBytes
		}
		seen[st.ID] = true
		if p, ok := prev[st.ID]; ok {
			if pt, ok := usageRates(st.ID, p, cur, mem, s.MemoryLimitBytes); ok {
				out = append(out, pt)
			}
		}
		prev[st.ID] = cur
	}
	for id := range prev {
		if !seen[id] {
			delete(prev, id)
		}
	}
	return out
}

// usageLoop sends a usage round every agent.usage_interval until ctx
// ends (never when it is <= 0).
func (a *Agent) usageLoop(ctx context.Context) {
	interval := a.cfg.UsageInterval
	if interval <= 0 {
		a.log.Info("usage history disabled (agent.usage_interval is 0)")
		return
	}
	prev := map[string]usageReading{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, interval+a.callTimeout)
		if pts := a.usageRound(rctx, prev); len(pts) > 0 {
			m, err := bus.NewMessage(protocol.KindServerUsage, protocol.ServerUsage{Host: a.cfg.Host, Interval: interval, Points: pts})
			if err == nil {
				// One try: the next round sends fresher points anyway.
				err = a.bus.Publish(rctx, bus.ConductorQueue, m)
			}
			if err != nil && ctx.Err() == nil {
				a.log.Warn("usage: points not sent (a gap in the usage history)", "points", len(pts), "err", err)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
