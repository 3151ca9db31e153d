package conductor

import (
	"context"

	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// onServerUsage keeps a host's usage points as its servers' usage
// history. Points about servers the cloud does not place on that host
// (another host's, a purged one's) are dropped: a host reports its own
// servers only.
func (c *Conductor) onServerUsage(ctx context.Context, r protocol.ServerUsage) error {
	if r.Host == "" || len(r.Points) == 0 {
		return nil
	}
	ids := make([]string, 0, len(r.Points))
	for _, p := range r.Points {
		ids = append(ids, p.InstanceID)
	}
	db := c.st.WithContext(ctx)
	var own []string
	if err := db.Model(&store.Instance{}).Where("id IN ? AND host = ?", ids, r.Host).Pluck("id", &own).Error; err != nil {
		return err
	}
	ok := make(map[string]bool, len(own))
	for _, id := range own {
		ok[id] = true
	}
	samples := make([]store.UsageSample, 0, len(r.Points))
	for _, p := range r.Points {
		if !ok[p.InstanceID] {
			continue
		}
		samples = append(samples, store.UsageSample{InstanceID: p.InstanceID, At: p.At, CPU: p.CPU, Memory: p.MemoryBytes,
			MemLimit: p.MemoryLimitBytes, DiskRead: p.DiskReadBps, DiskWrite: p.DiskWriteBps, NetRx: p.NetRxBps, NetTx: p.NetTxBps})
	}
	return store.RecordUsage(db, samples, r.Interval, c.now())
}
