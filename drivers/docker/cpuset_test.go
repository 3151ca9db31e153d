package docker

import (
	"errors"
	"slices"
	"testing"

	"github.com/capsule-cloud/capsule/limits"
)

// TestPickCPUs: servers spread over the least-used CPUs of their pool,
// keep their CPUs across resizes; dedicated ones get CPUs of the
// dedicated pool nobody else is pinned to, shared ones never go there.
func TestPickCPUs(t *testing.T) {
	noSet := limits.CPUPools{Shared: []int{0, 1, 2, 3}}
	split := limits.CPUPools{Shared: []int{0, 1}, Dedicated: []int{2, 3}}
	use := func(load map[int]int, dedicated ...int) cpuUse {
		u := cpuUse{load: load, dedicated: map[int]bool{}}
		if u.load == nil {
			u.load = map[int]int{}
		}
		for _, c := range dedicated {
			u.dedicated[c] = true
		}
		return u
	}
	for _, tc := range []struct {
		name      string
		pools     limits.CPUPools
		use       cpuUse
		vcpus     int
		dedicated bool
		keep      []int
		want      []int
		err       bool
	}{
		{name: "idle host: lowest CPU", pools: noSet, use: use(nil), vcpus: 1, want: []int{0}},
		{name: "spread to the least used", pools: noSet, use: use(map[int]int{0: 2, 1: 1, 2: 0, 3: 1}), vcpus: 1, want: []int{2}},
		{name: "two least used", pools: noSet, use: use(map[int]int{0: 2, 1: 1, 2: 0, 3: 1}), vcpus: 2, want: []int{1, 2}},
		{name: "whole host: no pinning", pools: noSet, use: use(map[int]int{0: 3}), vcpus: 4, want: nil},
		{name: "more than the host: no pinning", pools: noSet, use: use(nil), vcpus: 8, want: nil},
		{name: "shared avoids CPUs a dedicated server holds", pools: noSet, use: use(nil, 0, 1), vcpus: 1, want: []int{2}},
		{name: "shared bigger than what dedicated servers leave", pools: noSet, use: use(nil, 0), vcpus: 4, want: []int{1, 2, 3}},
		{name: "resize keeps current CPUs when widening", pools: noSet, use: use(map[int]int{3: 5}), vcpus: 2, keep: []int{3}, want: []int{0, 3}},
		{name: "resize narrows to a current CPU, the least used", pools: noSet, use: use(map[int]int{1: 2, 2: 1}), vcpus: 1, keep: []int{1, 2}, want: []int{2}},
		{name: "no dedicated set: dedicated refused", pools: noSet, use: use(nil), vcpus: 1, dedicated: true, err: true},

		{name: "shared stays in the shared pool", pools: split, use: use(map[int]int{0: 1}), vcpus: 1, want: []int{1}},
		{name: "shared bigger than the shared pool gets all of it", pools: split, use: use(nil), vcpus: 4, want: []int{0, 1}},
		{name: "shared pool full of legacy dedicated servers", pools: split, use: use(nil, 0, 1), vcpus: 1, err: true},
		{name: "dedicated in the dedicated pool", pools: split, use: use(map[int]int{0: 3, 1: 3}), vcpus: 1, dedicated: true, want: []int{2}},
		{name: "dedicated takes the free one", pools: split, use: use(nil, 2), vcpus: 1, dedicated: true, want: []int{3}},
		{name: "dedicated avoids a shared server pinned there", pools: split, use: use(map[int]int{2: 1}), vcpus: 1, dedicated: true, want: []int{3}},
		{name: "dedicated pool exhausted", pools: split, use: use(nil, 2), vcpus: 2, dedicated: true, err: true},
		{name: "dedicated resize grows onto a free CPU", pools: split, use: use(nil), vcpus: 2, dedicated: true, keep: []int{3}, want: []int{2, 3}},
		{name: "dedicated resize keeps its CPU", pools: split, use: use(nil), vcpus: 1, dedicated: true, keep: []int{3}, want: []int{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickCPUs(tc.pools, tc.use, tc.vcpus, tc.dedicated, tc.keep)
			if tc.err {
				if !errors.Is(err, ErrNoFreeCPUs) {
					t.Fatalf("got %v, %v; want ErrNoFreeCPUs", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
