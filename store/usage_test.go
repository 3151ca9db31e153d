package store_test

import (
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// TestUsageHistoryDownsamplesAndStaysBounded: a day and a half of 1-minute
// samples leaves a day of fine points and their 10-minute averages; a
// redelivered sample is not counted twice; after more than a week every
// point of a server that stopped reporting is gone.
func TestUsageHistoryDownsamplesAndStaysBounded(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		db := st.DB
		start := time.Unix(1_700_000_400, 0).UTC() // a multiple of 600 s
		const id = "11111111-0000-4000-8000-0000000000aa"
		n := 36 * 60
		var now time.Time
		// An hour's samples per transaction (the test's speed only: each
		// call records and prunes as a round from an agent does).
		for h := 0; h < n; h += 60 {
			err := db.Transaction(func(tx *gorm.DB) error {
				for i := h; i < h+60; i++ {
					now = start.Add(time.Duration(i) * time.Minute)
					s := store.UsageSample{InstanceID: id, At: now, CPU: float64(i % 10), Memory: 100, NetRx: 10}
					if err := store.RecordUsage(tx, []store.UsageSample{s}, time.Minute, now); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		// The last sample again (a redelivered message).
		last := store.UsageSample{InstanceID: id, At: now, CPU: 9, Memory: 100, NetRx: 10}
		if err := store.RecordUsage(db, []store.UsageSample{last}, time.Minute, now); err != nil {
			t.Fatal(err)
		}
		fine, err := store.UsageSince(db, id, store.UsageFine, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if len(fine) > store.UsageFinePoints || len(fine) < store.UsageFinePoints-1 {
			t.Errorf("fine points: %d, want a day's %d", len(fine), store.UsageFinePoints)
		}
		if got := fine[len(fine)-1].TS; got != now.Unix() {
			t.Errorf("newest fine point at %d, want %d", got, now.Unix())
		}
		coarse, err := store.UsageSince(db, id, store.UsageCoarse, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if len(coarse) != n/10 {
			t.Errorf("coarse points: %d, want %d (36 h of 10 min)", len(coarse), n/10)
		}
		for _, c := range coarse[:len(coarse)-1] {
			// Samples 0..9 of CPU averaged: 4.5; memory 100.
			if c.N != 10 || c.CPU/float64(c.N) != 4.5 || c.Memory/float64(c.N) != 100 || c.Res != 600 || c.TS%600 != 0 {
				t.Fatalf("coarse point %+v: want 10 samples averaging CPU 4.5, memory 100", c)
			}
		}
		if c := coarse[len(coarse)-1]; c.N != 10 {
			t.Errorf("the newest coarse point counts %d samples (the redelivered one twice?), want 10", c.N)
		}
		// Eight days later, with no new sample: nothing is left.
		if err := store.PruneUsage(db, now.Add(8*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		var left int64
		if err := db.Model(&store.UsagePoint{}).Where("instance_id = ?", id).Count(&left).Error; err != nil {
			t.Fatal(err)
		}
		if left != 0 {
			t.Errorf("%d points left a week after the server's last sample", left)
		}
	})
}
