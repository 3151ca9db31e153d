package ctlbench

import (
	"context"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// BenchmarkListServersDetail times GET /v2.1/servers/detail?limit=1000
// with 10,000 servers in the database, on SQLite and PostgreSQL, as the
// project's member and as an admin listing all projects. b.N requests are
// timed; p50/p99 are reported.
func BenchmarkListServersDetail(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, admin := range []bool{false, true} {
			name := db + "/member"
			if admin {
				name = db + "/admin-all-tenants"
			}
			b.Run(name, func(b *testing.B) {
				var st *store.Store
				if db == "sqlite" {
					st = storetest.SQLite(b)
				} else {
					st = storetest.Postgres(b)
				}
				r, err := List(context.Background(), st, ListOptions{Servers: 10000, Limit: 1000, Requests: max(b.N, 20), Admin: admin})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(r.P50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(r.P99.Microseconds())/1000, "p99-ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkListImages times GET /v2/images?limit=1000 with 10,000 images
// in the database, on SQLite and PostgreSQL, as the project's member (its
// own, public and shared images) and as an admin.
func BenchmarkListImages(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, admin := range []bool{false, true} {
			name := db + "/member"
			if admin {
				name = db + "/admin"
			}
			b.Run(name, func(b *testing.B) {
				var st *store.Store
				if db == "sqlite" {
					st = storetest.SQLite(b)
				} else {
					st = storetest.Postgres(b)
				}
				r, err := ListImages(context.Background(), st, ListOptions{Images: 10000, Limit: 1000, Requests: max(b.N, 20), Admin: admin})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(r.P50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(r.P99.Microseconds())/1000, "p99-ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
