package limits

import (
	"slices"
	"strings"
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
		got, err := ParseCPUList(tc.in)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.in, err)
		}
		if !slices.Equal(got, tc.cpus) {
			t.Errorf("parse %q = %v, want %v", tc.in, got, tc.cpus)
		}
		if s := FormatCPUList(got); s != tc.out {
			t.Errorf("format %v = %q, want %q", got, s, tc.out)
		}
	}
	for _, bad := range []string{"a", "1-", "3-1", "-2", "1,,2"} {
		if _, err := ParseCPUList(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
}

// TestSplitCPUs: the dedicated set is taken out of the host's CPUs; it
// must exist and leave at least one shared CPU.
func TestSplitCPUs(t *testing.T) {
	host := []int{0, 1, 2, 3, 6}
	for _, tc := range []struct {
		set               string
		shared, dedicated []int
		err               string
	}{
		{set: "", shared: host},
		{set: "1", shared: []int{0, 2, 3, 6}, dedicated: []int{1}},
		{set: "2-3,6", shared: []int{0, 1}, dedicated: []int{2, 3, 6}},
		{set: "4", err: "not one of the host's CPUs"},
		{set: "0-3,6", err: "at least one must stay shared"},
		{set: "x", err: "bad cpu"},
	} {
		p, err := SplitCPUs(host, tc.set)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("split %q: %v, want an error saying %q", tc.set, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(p.Shared, tc.shared) || !slices.Equal(p.Dedicated, tc.dedicated) {
			t.Errorf("split %q = %+v, %v; want shared %v, dedicated %v", tc.set, p, err, tc.shared, tc.dedicated)
		}
	}
	if n, err := CountCPUs("2-3,6"); n != 3 || err != nil {
		t.Errorf("CountCPUs(2-3,6) = %d, %v", n, err)
	}
}
