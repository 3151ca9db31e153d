package limits

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// CPU pools, Nova's model: a host's cpu_dedicated_set is the PCPU
// inventory, handed out whole and exclusively to hw:cpu_policy=dedicated
// servers; the other CPUs are the shared pool (VCPU inventory, overcommitted
// by the CPU allocation ratio) where every other server is pinned.

// CPUPools is a host's CPUs split into the shared and dedicated pools.
type CPUPools struct {
	Shared    []int // CPUs shared servers are pinned within
	Dedicated []int // CPUs each given whole to one dedicated server
}

// SplitCPUs splits host (the host's CPUs) by dedicatedSet, a CPU list
// ("" = no dedicated CPUs). Every dedicated CPU must exist on the host and
// at least one CPU must stay shared: the host's own processes and every
// shared server run there.
func SplitCPUs(host []int, dedicatedSet string) (CPUPools, error) {
	ded, err := ParseCPUList(dedicatedSet)
	if err != nil {
		return CPUPools{}, fmt.Errorf("cpu_dedicated_set: %w", err)
	}
	for _, c := range ded {
		if !slices.Contains(host, c) {
			return CPUPools{}, fmt.Errorf("cpu_dedicated_set %q: CPU %d is not one of the host's CPUs (%s)",
				dedicatedSet, c, FormatCPUList(host))
		}
	}
	p := CPUPools{Dedicated: ded}
	for _, c := range host {
		if !slices.Contains(ded, c) {
			p.Shared = append(p.Shared, c)
		}
	}
	if len(p.Shared) == 0 {
		return CPUPools{}, fmt.Errorf("cpu_dedicated_set %q takes every host CPU: at least one must stay shared", dedicatedSet)
	}
	return p, nil
}

// CountCPUs returns how many CPUs a CPU list names (for the PCPU count an
// agent reports); an unreadable list is an error.
func CountCPUs(list string) (int, error) {
	cpus, err := ParseCPUList(list)
	return len(cpus), err
}

// ParseCPUList parses the kernel's CPU list format ("0-3,6,8-9"), sorted
// and without duplicates; "" is no CPUs.
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("parse cpu list %q: bad cpu %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("parse cpu list %q: bad range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// FormatCPUList writes cpus (sorted) in the kernel's list format; nil is "".
func FormatCPUList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}
