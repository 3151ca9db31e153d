package ctlbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/scheduler"
	"github.com/capsule-cloud/capsule/store"
)

// SchedOptions sizes a scheduler run.
type SchedOptions struct {
	Hosts       int    // simulated compute hosts
	Servers     int    // placements to make
	Concurrency int    // placers running at once (as the scheduler's bus consumers do)
	Weigher     string // spread (default) or pack
}

// SchedResult is what a scheduler run measured.
type SchedResult struct {
	Hosts, Servers, Concurrency int
	Placed, NoValidHost         int
	Wall                        time.Duration
	PerSecond                   float64
	P50, P99                    time.Duration // one placement (filters, weighers, claim)
	// OverCommitted counts hosts whose claims exceed their capacity after
	// the run: it must be 0.
	OverCommitted int
}

// The simulated hosts: 16 shared CPUs at ratio 4, 64 GiB, 1 TB; every
// 10th host disabled and every 7th in another zone, so the filters have
// work to do. A server is 2 vCPU / 2 GiB / 20 GB in zone "nova".
var benchFlavor = store.Resources{VCPUs: 2, MemoryMB: 2048, DiskGB: 20}

func benchHost(i int, now time.Time) store.Service {
	name := fmt.Sprintf("sim-%05d", i)
	z := "nova"
	if i%7 == 3 {
		z = "az2"
	}
	return store.Service{UUID: "svc-" + name, Host: name, Binary: store.ComputeBinary, Zone: z, LastHeartbeat: &now,
		Disabled: i%10 == 9, VCPUs: 16, MemoryMB: 65536, DiskGB: 1000, CPUAllocationRatio: 4, RAMAllocationRatio: 1,
		DiskAllocationRatio: 1, HypervisorType: "docker"}
}

// SeedHosts registers n live simulated compute hosts.
func SeedHosts(ctx context.Context, st *store.Store, n int) error {
	now := time.Now().UTC()
	rows := make([]store.Service, 0, n)
	for i := 0; i < n; i++ {
		rows = append(rows, benchHost(i, now))
	}
	if err := st.WithContext(ctx).CreateInBatches(rows, 500).Error; err != nil {
		return fmt.Errorf("bench: seed %d hosts: %w", n, err)
	}
	return nil
}

// seedBuilding adds n instances waiting for a host and returns their ids.
func seedBuilding(ctx context.Context, st *store.Store, n int) ([]string, error) {
	ids := make([]string, n)
	rows := make([]store.Instance, n)
	now := time.Now().UTC()
	for i := range rows {
		ids[i] = uuid.NewString()
		rows[i] = store.Instance{ID: ids[i], Name: fmt.Sprintf("sched-%d", i), ProjectID: "p-bench", UserID: "u-bench",
			VCPUs: benchFlavor.VCPUs, MemoryMB: benchFlavor.MemoryMB, RootGB: benchFlavor.DiskGB, AvailabilityZone: "nova",
			VMState: lifecycle.Building, TaskState: lifecycle.Scheduling, Metadata: "{}", ExtraSpecs: "{}",
			CreatedAt: now, UpdatedAt: now}
	}
	if err := st.WithContext(ctx).CreateInBatches(rows, 500).Error; err != nil {
		return nil, fmt.Errorf("bench: seed %d instances: %w", n, err)
	}
	return ids, nil
}

// Sched seeds o.Hosts hosts and o.Servers building instances on st (a
// scratch store) and places every instance with the real scheduler
// (filters, weigher, atomic claim), o.Concurrency at a time; then checks
// that no host holds more than its capacity.
func Sched(ctx context.Context, st *store.Store, o SchedOptions) (SchedResult, error) {
	o.Concurrency = max(o.Concurrency, 1)
	res := SchedResult{Hosts: o.Hosts, Servers: o.Servers, Concurrency: o.Concurrency}
	if err := SeedHosts(ctx, st, o.Hosts); err != nil {
		return res, err
	}
	ids, err := seedBuilding(ctx, st, o.Servers)
	if err != nil {
		return res, err
	}
	cfg := config.Default().Scheduler
	cfg.Weigher = o.Weigher
	cfg.ServiceDownTime = time.Hour // a long run must not see its hosts go down
	s := scheduler.New(st, nil, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))

	lat := make([]time.Duration, len(ids))
	var next atomic.Int64
	var noHost atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				_, err := s.Select(ctx, scheduler.Request{InstanceID: ids[i], Resources: benchFlavor, AvailabilityZone: "nova"})
				lat[i] = time.Since(t0)
				switch {
				case scheduler.IsNoValidHost(err):
					noHost.Add(1)
				case err != nil:
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	res.Wall = time.Since(start)
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.NoValidHost = int(noHost.Load())
	res.Placed = len(ids) - res.NoValidHost
	res.PerSecond = float64(res.Placed) / res.Wall.Seconds()
	res.P50, res.P99 = percentile(lat, .5), percentile(lat, .99)
	res.OverCommitted, err = overCommitted(ctx, st)
	return res, err
}

// overCommitted counts the hosts whose claims exceed their capacity.
func overCommitted(ctx context.Context, st *store.Store) (int, error) {
	used, err := st.Usage(ctx)
	if err != nil {
		return 0, err
	}
	var svcs []store.Service
	if err := st.WithContext(ctx).Where("binary_name = ?", store.ComputeBinary).Find(&svcs).Error; err != nil {
		return 0, fmt.Errorf("bench: list hosts: %w", err)
	}
	n := 0
	for i := range svcs {
		u := used[svcs[i].Host]
		if u != (store.Resources{}) && !store.Fits(store.Capacity(&svcs[i]), u, store.Resources{}) {
			n++
		}
	}
	return n, nil
}
