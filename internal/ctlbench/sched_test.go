package ctlbench

import (
	"context"
	"fmt"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// BenchmarkSchedule places b.N servers over 100, 1,000 and 5,000
// simulated hosts with 8 placers, on SQLite and PostgreSQL, and fails on
// any over-commit. Reported: placements/s and the p99 of one placement.
func BenchmarkSchedule(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, hosts := range []int{100, 1000, 5000} {
			b.Run(fmt.Sprintf("%s/hosts=%d", db, hosts), func(b *testing.B) {
				var st *store.Store
				if db == "sqlite" {
					st = storetest.SQLite(b)
				} else {
					st = storetest.Postgres(b)
				}
				b.StopTimer()
				// Sched seeds before it times; the benchmark's own clock
				// is not used, the result's rate is reported instead.
				r, err := Sched(context.Background(), st, SchedOptions{Hosts: hosts, Servers: max(b.N, 200), Concurrency: 8})
				if err != nil {
					b.Fatal(err)
				}
				if r.OverCommitted > 0 || r.NoValidHost > 0 {
					b.Fatalf("%d host(s) over-committed, %d no valid host", r.OverCommitted, r.NoValidHost)
				}
				b.ReportMetric(r.PerSecond, "placements/s")
				b.ReportMetric(float64(r.P99.Microseconds())/1000, "p99-ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
