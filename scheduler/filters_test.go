package scheduler

import (
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/store"
)

func ptr[T any](v T) *T { return &v }

func TestComputeAlive(t *testing.T) {
	f := ComputeAlive{DownTime: time.Minute, Now: func() time.Time { return testNow }}
	cases := []struct {
		name string
		h    HostState
		want bool
	}{
		{"recent heartbeat", HostState{LastHeartbeat: ptr(testNow.Add(-10 * time.Second))}, true},
		{"heartbeat exactly at the limit", HostState{LastHeartbeat: ptr(testNow.Add(-time.Minute))}, true},
		{"heartbeat too old", HostState{LastHeartbeat: ptr(testNow.Add(-61 * time.Second))}, false},
		{"never reported", HostState{}, false},
		{"forced down despite heartbeat", HostState{ForcedDown: true, LastHeartbeat: ptr(testNow)}, false},
	}
	for _, c := range cases {
		if got := f.Pass(c.h, Request{}); got != c.want {
			t.Errorf("%s: Pass = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestEnabled(t *testing.T) {
	if !(Enabled{}).Pass(HostState{}, Request{}) {
		t.Error("enabled host removed")
	}
	if (Enabled{}).Pass(HostState{Disabled: true}, Request{}) {
		t.Error("disabled host kept")
	}
}

func TestAvailabilityZone(t *testing.T) {
	cases := []struct {
		req, host string
		want      bool
	}{
		{"", "az1", true},
		{"nova", "az1", true}, // the default zone places anywhere
		{"nova", "nova", true},
		{"az1", "az1", true},
		{"az1", "az2", false},
		{"az1", "nova", false},
		{"az1", "", false},
	}
	for _, c := range cases {
		if got := (AvailabilityZone{}).Pass(HostState{Zone: c.host}, Request{AvailabilityZone: c.req}); got != c.want {
			t.Errorf("request zone %q on host zone %q: Pass = %v, want %v", c.req, c.host, got, c.want)
		}
	}
}

func TestResourcesFilter(t *testing.T) {
	// 2 physical vCPUs at ratio 4 = 8; 4096 MB − 512 reserved; 40 GB.
	h := hostStateOf(&store.Service{VCPUs: 2, MemoryMB: 4096, DiskGB: 40, CPUAllocationRatio: 4,
		RAMAllocationRatio: 1, DiskAllocationRatio: 1, ReservedMemoryMB: 512},
		store.Resources{VCPUs: 6, MemoryMB: 3000, DiskGB: 30})
	cases := []struct {
		want store.Resources
		ok   bool
	}{
		{store.Resources{VCPUs: 2, MemoryMB: 584, DiskGB: 10}, true}, // exactly the rest
		{store.Resources{VCPUs: 3, MemoryMB: 1, DiskGB: 1}, false},   // vCPU over ratio×physical
		{store.Resources{VCPUs: 1, MemoryMB: 585, DiskGB: 1}, false}, // RAM: reservation counts
		{store.Resources{VCPUs: 1, MemoryMB: 1, DiskGB: 11}, false},  // disk
	}
	for _, c := range cases {
		if got := (Resources{}).Pass(h, Request{Resources: c.want}); got != c.ok {
			t.Errorf("%+v on free %+v: Pass = %v, want %v", c.want, h.Free(), got, c.ok)
		}
	}
}

func TestExcluded(t *testing.T) {
	req := Request{Excluded: []string{"h1", "h3"}}
	if (Excluded{}).Pass(HostState{Host: "h1"}, req) || (Excluded{}).Pass(HostState{Host: "h3"}, req) {
		t.Error("excluded host kept")
	}
	if !(Excluded{}).Pass(HostState{Host: "h2"}, req) {
		t.Error("other host removed")
	}
}

func TestForcedHost(t *testing.T) {
	if !(ForcedHost{}).Pass(HostState{Host: "h1"}, Request{}) {
		t.Error("no forced host: every host must pass")
	}
	if !(ForcedHost{}).Pass(HostState{Host: "h2"}, Request{ForceHost: "h2"}) {
		t.Error("forced host removed")
	}
	if (ForcedHost{}).Pass(HostState{Host: "h1"}, Request{ForceHost: "h2"}) {
		t.Error("other host kept although h2 is forced")
	}
}

func TestApplyFiltersCountsRemovals(t *testing.T) {
	alive := ptr(testNow)
	hosts := []HostState{
		{Host: "dead", LastHeartbeat: ptr(testNow.Add(-time.Hour)), Capacity: store.Resources{VCPUs: 8, MemoryMB: 8192, DiskGB: 80}},
		{Host: "off", Disabled: true, LastHeartbeat: alive, Capacity: store.Resources{VCPUs: 8, MemoryMB: 8192, DiskGB: 80}},
		{Host: "small", LastHeartbeat: alive, Capacity: store.Resources{VCPUs: 1, MemoryMB: 256, DiskGB: 1}},
		{Host: "ok", LastHeartbeat: alive, Capacity: store.Resources{VCPUs: 8, MemoryMB: 8192, DiskGB: 80}},
	}
	left, results := applyFilters(DefaultFilters(time.Minute, func() time.Time { return testNow }), hosts,
		Request{Resources: store.Resources{VCPUs: 2, MemoryMB: 1024, DiskGB: 10}})
	if len(left) != 1 || left[0].Host != "ok" {
		t.Fatalf("left = %+v, want only ok", left)
	}
	removed := map[string]int{}
	for _, r := range results {
		removed[r.Filter] = r.Removed
	}
	want := map[string]int{"ForcedHost": 0, "Excluded": 0, "ComputeAlive": 1, "Enabled": 1, "AvailabilityZone": 0, "Resources": 1}
	for k, v := range want {
		if removed[k] != v {
			t.Errorf("filter %s removed %d, want %d (all: %+v)", k, removed[k], v, results)
		}
	}
	// The input slice must not be reordered or overwritten.
	if hosts[0].Host != "dead" || hosts[3].Host != "ok" {
		t.Errorf("applyFilters modified its input: %+v", hosts)
	}
}
