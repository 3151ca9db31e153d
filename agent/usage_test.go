package agent

import (
	"testing"
	"time"
)

// usageRates: rates over the interval; no point across a restart or
// counters that went back; a NIC whose counters restarted shows no
// traffic rather than a spike.
func TestUsageRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	start := time.Unix(500, 0)
	prev := usageReading{at: t0, startedAt: start, cpuNS: 1e9, diskR: 100, diskW: 0, netRx: 1000, netTx: 50}
	cur := usageReading{at: t0.Add(2 * time.Second), startedAt: start, cpuNS: 2e9, diskR: 300, diskW: 4000, netRx: 3000, netTx: 50}
	p, ok := usageRates("i", prev, cur, 64<<20, 128<<20)
	if !ok || p.CPU != 0.5 || p.DiskReadBps != 100 || p.DiskWriteBps != 2000 || p.NetRxBps != 1000 || p.NetTxBps != 0 ||
		p.MemoryBytes != 64<<20 || p.MemoryLimitBytes != 128<<20 {
		t.Errorf("rates %+v %v", p, ok)
	}
	restarted := cur
	restarted.startedAt = start.Add(time.Second)
	if _, ok := usageRates("i", prev, restarted, 0, 0); ok {
		t.Errorf("a point across a restart")
	}
	back := cur
	back.cpuNS = 0
	if _, ok := usageRates("i", prev, back, 0, 0); ok {
		t.Errorf("a point from counters that went back")
	}
	replug := cur
	replug.netRx = 10
	if p, ok := usageRates("i", prev, replug, 0, 0); !ok || p.NetRxBps != 0 || p.NetTxBps != 0 || p.CPU != 0.5 {
		t.Errorf("re-plugged NIC: %+v %v", p, ok)
	}
}
