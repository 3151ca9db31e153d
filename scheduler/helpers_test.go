package scheduler

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// testNow is the fixed clock of the tests' schedulers.
var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// hostOpt adjusts a compute service row before it is stored.
type hostOpt func(*store.Service)

func zone(z string) hostOpt           { return func(s *store.Service) { s.Zone = z } }
func disabled() hostOpt               { return func(s *store.Service) { s.Disabled = true } }
func forcedDown() hostOpt             { return func(s *store.Service) { s.ForcedDown = true } }
func heartbeat(at *time.Time) hostOpt { return func(s *store.Service) { s.LastHeartbeat = at } }
func cpuRatio(r float64) hostOpt      { return func(s *store.Service) { s.CPUAllocationRatio = r } }
func binaryName(b string) hostOpt     { return func(s *store.Service) { s.Binary = b } }
func reservedMemory(mb int) hostOpt   { return func(s *store.Service) { s.ReservedMemoryMB = mb } }
func capacity(v, m, d int) hostOpt {
	return func(s *store.Service) { s.VCPUs, s.MemoryMB, s.DiskGB = v, m, d }
}

// addHost registers a live compute host (4 vCPU, 4096 MB, 40 GB, ratios 1).
func addHost(t *testing.T, st *store.Store, host string, opts ...hostOpt) {
	t.Helper()
	hb := testNow.Add(-5 * time.Second)
	svc := store.Service{UUID: "svc-" + host, Host: host, Binary: store.ComputeBinary, Zone: "nova",
		LastHeartbeat: &hb, VCPUs: 4, MemoryMB: 4096, DiskGB: 40,
		CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}
	for _, o := range opts {
		o(&svc)
	}
	if err := st.DB.Create(&svc).Error; err != nil {
		t.Fatalf("add host %s: %v", host, err)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestScheduler returns a scheduler on st and b with the test clock.
func newTestScheduler(st *store.Store, b bus.Bus, weigher string) *Scheduler {
	cfg := config.Default().Scheduler
	cfg.Weigher = weigher
	s := New(st, b, cfg, quietLog())
	s.now = func() time.Time { return testNow }
	return s
}

func configWithWeigher(w string) config.Scheduler {
	cfg := config.Default().Scheduler
	cfg.Weigher = w
	return cfg
}

func openSQLite(t *testing.T) *store.Store { return storetest.SQLite(t) }

func forEachDB(t *testing.T, f func(t *testing.T, st *store.Store)) { storetest.ForEach(t, f) }
