package scheduler

import (
	"cmp"
	"fmt"
	"slices"
)

// Weigher orders the hosts that passed the filters, best first.
type Weigher interface {
	Name() string
	// Less reports whether a should be tried before b.
	Less(a, b HostState) bool
}

// Spread prefers the host with the most free RAM, then the most free
// vCPUs: load spreads evenly (Nova's default RAM weigher, multiplier 1).
type Spread struct{}

func (Spread) Name() string { return "spread" }

func (Spread) Less(a, b HostState) bool {
	fa, fb := a.Free(), b.Free()
	if fa.MemoryMB != fb.MemoryMB {
		return fa.MemoryMB > fb.MemoryMB
	}
	return fa.VCPUs > fb.VCPUs
}

// Pack prefers the host with the least free RAM, then the least free
// vCPUs: hosts fill up one after the other, leaving others empty.
type Pack struct{}

func (Pack) Name() string { return "pack" }

func (Pack) Less(a, b HostState) bool {
	fa, fb := a.Free(), b.Free()
	if fa.MemoryMB != fb.MemoryMB {
		return fa.MemoryMB < fb.MemoryMB
	}
	return fa.VCPUs < fb.VCPUs
}

// WeigherByName returns the weigher config.Scheduler.Weigher names ("" =
// spread).
func WeigherByName(name string) (Weigher, error) {
	switch name {
	case "", "spread":
		return Spread{}, nil
	case "pack":
		return Pack{}, nil
	}
	return nil, fmt.Errorf("scheduler: unknown weigher %q (want spread or pack)", name)
}

// weigh sorts hosts best first; equal hosts are ordered by name so the
// choice is reproducible.
func weigh(w Weigher, hosts []HostState) {
	slices.SortStableFunc(hosts, func(a, b HostState) int {
		switch {
		case w.Less(a, b):
			return -1
		case w.Less(b, a):
			return 1
		}
		return cmp.Compare(a.Host, b.Host)
	})
}
