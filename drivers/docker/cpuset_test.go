package docker

import (
	"errors"
	"slices"
	"testing"
)

func TestCPUListRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		cpus []int
		out  string
	}{
		{"", nil, ""},
		{"0", []int{0}, "0"},
		{"0-3", []int{0, 1, 2, 3}, "0-3"},
		{"0,2-3,7\n", []int{0, 2, 3, 7}, "0,2-3,7"},
		{"3,1,2,1", []int{1, 2, 3}, "1-3"},
	} {
		got, err := parseCPUList(tc.in)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.in, err)
		}
		if !slices.Equal(got, tc.cpus) {
			t.Errorf("parse %q = %v, want %v", tc.in, got, tc.cpus)
		}
		if s := formatCPUList(got); s != tc.out {
			t.Errorf("format %v = %q, want %q", got, s, tc.out)
		}
	}
	for _, bad := range []string{"a", "1-", "3-1", "-2", "1,,2"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
}

// TestPickCPUs: servers spread over the least-used CPUs, keep their CPUs
// across resizes, and dedicated ones get CPUs nobody else is pinned to.
func TestPickCPUs(t *testing.T) {
	host := []int{0, 1, 2, 3}
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
		use       cpuUse
		vcpus     int
		dedicated bool
		keep      []int
		want      []int
		err       bool
	}{
		{name: "idle host: lowest CPU", use: use(nil), vcpus: 1, want: []int{0}},
		{name: "spread to the least used", use: use(map[int]int{0: 2, 1: 1, 2: 0, 3: 1}), vcpus: 1, want: []int{2}},
		{name: "two least used", use: use(map[int]int{0: 2, 1: 1, 2: 0, 3: 1}), vcpus: 2, want: []int{1, 2}},
		{name: "whole host: no pinning", use: use(map[int]int{0: 3}), vcpus: 4, want: nil},
		{name: "more than the host: no pinning", use: use(nil), vcpus: 8, want: nil},
		{name: "shared avoids dedicated CPUs", use: use(nil, 0, 1), vcpus: 1, want: []int{2}},
		{name: "shared as big as what dedicated leave", use: use(nil, 0), vcpus: 3, want: []int{1, 2, 3}},
		{name: "shared bigger than the host keeps off dedicated CPUs", use: use(nil, 0), vcpus: 4, want: []int{1, 2, 3}},
		{name: "resize keeps current CPUs when widening", use: use(map[int]int{3: 5}), vcpus: 2, keep: []int{3}, want: []int{0, 3}},
		{name: "resize narrows to a current CPU, the least used", use: use(map[int]int{1: 2, 2: 1}), vcpus: 1, keep: []int{1, 2}, want: []int{2}},
		{name: "dedicated gets unused CPUs", use: use(map[int]int{0: 1, 2: 1}, 1), vcpus: 1, dedicated: true, want: []int{3}},
		{name: "dedicated refused when none is free", use: use(map[int]int{0: 1, 2: 1}, 1), vcpus: 2, dedicated: true, err: true},
		{name: "every CPU dedicated", use: use(nil, 0, 1, 2, 3), vcpus: 1, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickCPUs(host, tc.use, tc.vcpus, tc.dedicated, tc.keep)
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
