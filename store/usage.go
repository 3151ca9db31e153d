package store

import (
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Usage history: the points agents send (protocol.KindServerUsage) kept
// per server in two tiers, each a ring of bounded length pruned by age:
//
//   - fine: one point per agent usage interval (1 min by default), the
//     last UsageFinePoints of them (a day at 1 min);
//   - coarse: each UsageCoarseFactor fine intervals averaged into one
//     point (10 min by default), the last UsageCoarsePoints (a week).
//
// So a server holds at most UsageFinePoints + UsageCoarsePoints + 2 rows
// whatever the interval, and a deleted server's rows age out within the
// coarse tier's span.
const (
	UsageFinePoints   = 1440
	UsageCoarsePoints = 1008
	UsageCoarseFactor = 10
)

// Usage tiers.
const (
	UsageFine   = 0
	UsageCoarse = 1
)

// UsagePoint is one server's usage over [TS, TS+Res) seconds: sums of N
// samples (the mean is Sum/N).
type UsagePoint struct {
	InstanceID string `gorm:"primaryKey;size:36"`
	Tier       int    `gorm:"primaryKey;autoIncrement:false;index:ix_usage_tier_ts,priority:1"`
	TS         int64  `gorm:"primaryKey;autoIncrement:false;index:ix_usage_tier_ts,priority:2"` // unix seconds, a multiple of Res
	Res        int64  `gorm:"not null"`                                                         // seconds
	N          int    `gorm:"not null"`
	CPU        float64
	Memory     float64
	MemLimit   float64
	DiskRead   float64
	DiskWrite  float64
	NetRx      float64
	NetTx      float64
}

// TableName keeps the table's name stable.
func (UsagePoint) TableName() string { return "server_usage" }

// UsageSample is one measured point, as an agent sends it.
type UsageSample struct {
	InstanceID                        string
	At                                time.Time
	CPU, Memory, MemLimit             float64
	DiskRead, DiskWrite, NetRx, NetTx float64
}

// RecordUsage stores samples measured every interval: each as its fine
// point (a sample already stored, e.g. a redelivered message, is not
// counted twice) and into its coarse point; then prunes both tiers to
// their length as of now.
func RecordUsage(db *gorm.DB, samples []UsageSample, interval time.Duration, now time.Time) error {
	res := max(int64(interval/time.Second), 1)
	coarse := res * UsageCoarseFactor
	for _, s := range samples {
		ts := s.At.Unix()
		fine := UsagePoint{InstanceID: s.InstanceID, Tier: UsageFine, TS: ts - ts%res, Res: res, N: 1, CPU: s.CPU, Memory: s.Memory,
			MemLimit: s.MemLimit, DiskRead: s.DiskRead, DiskWrite: s.DiskWrite, NetRx: s.NetRx, NetTx: s.NetTx}
		r := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&fine)
		if r.Error != nil {
			return fmt.Errorf("record usage of %s: %w", s.InstanceID, r.Error)
		}
		if r.RowsAffected == 0 {
			continue
		}
		c := fine
		c.Tier, c.TS, c.Res = UsageCoarse, ts-ts%coarse, coarse
		sum := func(col string) clause.Expr { return gorm.Expr("server_usage." + col + " + excluded." + col) }
		err := db.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "instance_id"}, {Name: "tier"}, {Name: "ts"}},
			DoUpdates: clause.Assignments(map[string]any{"n": sum("n"), "cpu": sum("cpu"), "memory": sum("memory"),
				"mem_limit": sum("mem_limit"), "disk_read": sum("disk_read"), "disk_write": sum("disk_write"),
				"net_rx": sum("net_rx"), "net_tx": sum("net_tx")}),
		}).Create(&c).Error
		if err != nil {
			return fmt.Errorf("record coarse usage of %s: %w", s.InstanceID, err)
		}
	}
	return PruneUsage(db, now)
}

// PruneUsage deletes the points past each tier's length: a fine point
// older than UsageFinePoints intervals, a coarse one older than
// UsageCoarsePoints.
func PruneUsage(db *gorm.DB, now time.Time) error {
	t := now.Unix()
	err := db.Where("tier = ? AND ts + res * ? <= ?", UsageFine, UsageFinePoints, t).Delete(&UsagePoint{}).Error
	if err == nil {
		err = db.Where("tier = ? AND ts + res * ? <= ?", UsageCoarse, UsageCoarsePoints, t).Delete(&UsagePoint{}).Error
	}
	if err != nil {
		return fmt.Errorf("prune usage history: %w", err)
	}
	return nil
}

// UsageSince lists a server's points of tier from since on, oldest first.
func UsageSince(db *gorm.DB, instanceID string, tier int, since time.Time) ([]UsagePoint, error) {
	var out []UsagePoint
	err := db.Where("instance_id = ? AND tier = ? AND ts >= ?", instanceID, tier, since.Unix()).Order("ts").Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("usage history of %s: %w", instanceID, err)
	}
	return out, nil
}
