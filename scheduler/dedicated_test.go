package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/store"
)

func pcpus(n int) hostOpt { return func(s *store.Service) { s.PCPUs = n } }

func dedicatedSpecs(i *store.Instance) { i.ExtraSpecs = `{"hw:cpu_policy":"dedicated"}` }

func dedicatedReq(id string, vcpus int) Request {
	return Request{InstanceID: id, Dedicated: true, Resources: store.Resources{VCPUs: vcpus, MemoryMB: 256, DiskGB: 1}}
}

func TestDedicatedCPUsFilter(t *testing.T) {
	h := hostStateOf(&store.Service{VCPUs: 2, PCPUs: 2, MemoryMB: 4096, DiskGB: 40, CPUAllocationRatio: 4},
		store.Resources{VCPUs: 8, PCPUs: 1})
	if !(DedicatedCPUs{}).Pass(h, dedicatedReq("d", 1)) {
		t.Error("1 dedicated vCPU refused with 1 PCPU free")
	}
	if (DedicatedCPUs{}).Pass(h, dedicatedReq("d", 2)) {
		t.Error("2 dedicated vCPUs passed with 1 PCPU free")
	}
	if !(Resources{}).Pass(h, dedicatedReq("d", 1)) {
		t.Error("Resources refused a dedicated request because the shared vCPUs are full")
	}
	if (Resources{}).Pass(h, small("s")) {
		t.Error("Resources passed a shared request with the shared vCPUs full")
	}
	if !(DedicatedCPUs{}).Pass(hostStateOf(&store.Service{}, store.Resources{}), small("s")) {
		t.Error("DedicatedCPUs refused a shared request")
	}
}

// TestSelectDedicatedLandsOnFreePCPUs: a dedicated request goes only to a
// host with free PCPUs (the roomier hosts have none or too few), shared
// requests are unaffected, and without any room NoValidHost names the
// filter.
func TestSelectDedicatedLandsOnFreePCPUs(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addHost(t, st, "big", capacity(16, 16384, 100))         // no PCPUs
		addHost(t, st, "one", capacity(4, 8192, 100), pcpus(1)) // 1 PCPU
		addHost(t, st, "ded", capacity(1, 2048, 40), pcpus(2))  // 2 PCPUs, least RAM
		s := newTestScheduler(st, nil, "spread")

		host, err := s.Select(ctx, dedicatedReq("d1", 2))
		if err != nil || host != "ded" {
			t.Fatalf("2-vCPU dedicated request on %q, %v; want ded, the only host with 2 PCPUs", host, err)
		}
		host, err = s.Select(ctx, dedicatedReq("d2", 1))
		if err != nil || host != "one" {
			t.Fatalf("1-vCPU dedicated request on %q, %v; want one", host, err)
		}
		// Shared requests: spread by RAM as ever, on the shared vCPUs.
		if host, err := s.Select(ctx, small("s1")); err != nil || host != "big" {
			t.Fatalf("shared request on %q, %v; want big", host, err)
		}
		_, err = s.Select(ctx, dedicatedReq("d3", 1))
		nv, ok := err.(*NoValidHostError)
		if !ok {
			t.Fatalf("dedicated request with every PCPU taken: %v, want NoValidHost", err)
		}
		if ex := nv.Explain(); !strings.Contains(ex, "DedicatedCPUs removed 3 of 3") {
			t.Errorf("explanation %q does not blame DedicatedCPUs", ex)
		}
		used, _ := st.Usage(ctx)
		if used["ded"].PCPUs != 2 || used["ded"].VCPUs != 0 || used["one"].PCPUs != 1 || used["big"].VCPUs != 1 {
			t.Errorf("usage = %+v", used)
		}
	})
}

// TestSelectDedicatedConcurrent: 10 dedicated requests at once on a host
// with 2 PCPUs (and room for everything else): exactly 2 are placed.
func TestSelectDedicatedConcurrent(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		addHost(t, st, "h1", capacity(16, 16384, 100), pcpus(2))
		s := newTestScheduler(st, nil, "spread")
		var wg sync.WaitGroup
		var mu sync.Mutex
		placed, noHost := 0, 0
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Select(ctx, dedicatedReq(fmt.Sprintf("d%d", i), 1))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					placed++
				case IsNoValidHost(err):
					noHost++
				default:
					t.Errorf("select %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if placed != 2 || noHost != 8 {
			t.Errorf("placed %d, no valid host %d; want 2 and 8", placed, noHost)
		}
		used, _ := st.Usage(ctx)
		if u := used["h1"]; u.PCPUs != 2 || u.VCPUs != 0 {
			t.Errorf("usage = %+v, want exactly the 2 PCPUs", u)
		}
	})
}

// TestRunSchedulesDedicatedInstance: the instance's extra specs make the
// request dedicated, and a caller that only sizes from the flavor (a
// migration's target) gets the policy from the instance too.
func TestRunSchedulesDedicatedInstance(t *testing.T) {
	forEachDB(t, func(t *testing.T, st *store.Store) {
		mem := bus.NewMem()
		defer mem.Close()
		addHost(t, st, "big", capacity(16, 16384, 100))
		addHost(t, st, "ded", capacity(1, 2048, 40), pcpus(2))
		newInstance(t, st, "d1", dedicatedSpecs)
		runScheduler(t, newTestScheduler(st, mem, "spread"))
		publishAndWait(t, mem, scheduleMsg(t, "d1", 1))
		if inst := reload(t, st, "d1"); inst.Host != "ded" {
			t.Fatalf("dedicated instance on %q, want ded", inst.Host)
		}
		if cs := claimsOf(t, st, "d1"); len(cs) != 1 || !cs[0].Dedicated || cs[0].VCPUs != 1 {
			t.Errorf("claims = %+v, want one dedicated claim of 1 vCPU", cs)
		}

		newInstance(t, st, "d2", dedicatedSpecs)
		s := newTestScheduler(st, nil, "spread")
		host, err := s.Select(context.Background(), Request{InstanceID: "d2",
			Resources: store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}})
		if err != nil || host != "ded" {
			t.Fatalf("flavor-sized request of a dedicated instance on %q, %v; want ded", host, err)
		}
	})
}
