package scheduler

import (
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

func hostsForWeighing() []HostState {
	c := store.Resources{VCPUs: 8, MemoryMB: 8192, DiskGB: 80}
	return []HostState{
		{Host: "half", Capacity: c, Used: store.Resources{VCPUs: 4, MemoryMB: 4096}},
		{Host: "empty-b", Capacity: c},
		{Host: "full-ish", Capacity: c, Used: store.Resources{VCPUs: 2, MemoryMB: 7168}},
		{Host: "empty-a", Capacity: c},
		{Host: "cpu-busy", Capacity: c, Used: store.Resources{VCPUs: 7, MemoryMB: 4096}},
	}
}

func names(hs []HostState) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Host
	}
	return out
}

func TestSpreadPrefersMostFreeRAMThenCPU(t *testing.T) {
	hs := hostsForWeighing()
	weigh(Spread{}, hs)
	got := names(hs)
	want := []string{"empty-a", "empty-b", "half", "cpu-busy", "full-ish"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("spread order = %v, want %v", got, want)
		}
	}
}

func TestPackPrefersLeastFree(t *testing.T) {
	hs := hostsForWeighing()
	weigh(Pack{}, hs)
	got := names(hs)
	want := []string{"full-ish", "cpu-busy", "half", "empty-a", "empty-b"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pack order = %v, want %v", got, want)
		}
	}
}

func TestWeigherByName(t *testing.T) {
	for name, want := range map[string]string{"": "spread", "spread": "spread", "pack": "pack"} {
		w, err := WeigherByName(name)
		if err != nil || w.Name() != want {
			t.Errorf("WeigherByName(%q) = %v, %v; want %s", name, w, err, want)
		}
	}
	if _, err := WeigherByName("random"); err == nil {
		t.Error("unknown weigher accepted")
	}
	if s := New(nil, nil, configWithWeigher("bogus"), quietLog()); s.weigher.Name() != "spread" {
		t.Errorf("unknown weigher in config: got %s, want the spread fallback", s.weigher.Name())
	}
}
