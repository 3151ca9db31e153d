package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	cgroups "github.com/containerd/cgroups/v3"

	"github.com/capsule-cloud/capsule/internal/mountinfo"
)

// Limits are the resource limits the kernel enforces on a process, read
// back from its cgroups: what tests and operators use to check that a
// driver's limits took effect. -1 means unlimited.
type Limits struct {
	CgroupVersion int   // 1 or 2 (of the cpu controller)
	CPUQuotaUS    int64 // CFS quota per period, µs
	CPUPeriodUS   int64 // CFS period, µs
	CPUShares     int64 // cgroup v1 cpu.shares; 0 on v2
	CPUWeight     int64 // cgroup v2 cpu.weight (runc maps shares onto 1-10000); 0 on v1
	// Cpuset is the list of CPUs the tasks may run on (e.g. "0-1,4"),
	// as the kernel resolved it: the cpuset's own or its parent's.
	Cpuset      string
	MemoryBytes int64
	PidsMax     int64
	// Disk are the block IO throttles, by device (sorted); nil when none.
	Disk []DiskThrottle
}

// DiskThrottle is the IO throttles of one block device; 0 means none.
type DiskThrottle struct {
	Device    string // major:minor
	ReadBPS   uint64
	WriteBPS  uint64
	ReadIOPS  uint64
	WriteIOPS uint64
}

// LimitsOf reads the limits of process pid from the cgroup file systems
// mounted in this process's mount namespace, preferring a v1 hierarchy
// when the controller is bound to one (a hybrid host).
func LimitsOf(pid int) (Limits, error) {
	p, err := placementOf(pid)
	if err != nil {
		return Limits{}, fmt.Errorf("cgroup limits: %w", err)
	}
	l, err := p.limits()
	if err != nil {
		return Limits{}, fmt.Errorf("cgroup limits of pid %d: %w", pid, err)
	}
	return l, nil
}

// DiskThrottlesOf reads the block IO throttles of process pid's cgroup
// (as LimitsOf's Disk), by device; nil when none.
func DiskThrottlesOf(pid int) ([]DiskThrottle, error) {
	p, err := placementOf(pid)
	if err != nil {
		return nil, fmt.Errorf("cgroup disk throttles: %w", err)
	}
	dir, v2, err := p.blockIO()
	if err != nil {
		return nil, fmt.Errorf("cgroup disk throttles of pid %d: %w", pid, err)
	}
	ts, err := readDiskThrottles(dir, v2)
	if err != nil {
		return nil, fmt.Errorf("cgroup disk throttles of pid %d: %w", pid, err)
	}
	return ts, nil
}

// placementOf finds where process pid sits, from its /proc/<pid>/cgroup
// and this process's mount table.
func placementOf(pid int) (placement, error) {
	if pid <= 0 {
		return placement{}, fmt.Errorf("invalid pid %d", pid)
	}
	v1, unified, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return placement{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		return placement{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return placement{v1: v1, unified: unified, mounts: mounts}, nil
}

// placement is where one process sits in the cgroup hierarchies.
type placement struct {
	v1      map[string]string // v1 controller → cgroup path (/proc/<pid>/cgroup)
	unified string            // the v2 cgroup path; "" when not in one
	mounts  []mountinfo.Mount
}

func (p placement) limits() (Limits, error) {
	var l Limits
	dir, v2, err := p.dir("cpu")
	if err != nil {
		return l, err
	}
	if v2 {
		l.CgroupVersion = 2
		// cpu.max: "<quota|max> <period>"
		f := strings.Fields(readFile(&err, dir, "cpu.max"))
		if err == nil && len(f) != 2 {
			err = fmt.Errorf("parse %s: %q", filepath.Join(dir, "cpu.max"), f)
		}
		if err != nil {
			return l, err
		}
		l.CPUQuotaUS = parseLimit(&err, dir, "cpu.max", f[0])
		l.CPUPeriodUS = parseLimit(&err, dir, "cpu.max", f[1])
		l.CPUWeight = readLimit(&err, dir, "cpu.weight")
	} else {
		l.CgroupVersion = 1
		l.CPUQuotaUS = readLimit(&err, dir, "cpu.cfs_quota_us")
		l.CPUPeriodUS = readLimit(&err, dir, "cpu.cfs_period_us")
		l.CPUShares = readLimit(&err, dir, "cpu.shares")
	}
	if err != nil {
		return l, err
	}

	if dir, v2, err = p.dir("cpuset"); err != nil {
		return l, err
	}
	if v2 {
		l.Cpuset = readFile(&err, dir, "cpuset.cpus.effective")
	} else {
		l.Cpuset = readFile(&err, dir, "cpuset.effective_cpus")
	}

	if dir, v2, err = p.dir("memory"); err != nil {
		return l, err
	}
	if v2 {
		l.MemoryBytes = readLimit(&err, dir, "memory.max")
	} else {
		l.MemoryBytes = readLimit(&err, dir, "memory.limit_in_bytes")
		// cgroup v1 reports "no limit" as a huge page-rounded number.
		if l.MemoryBytes >= unlimited {
			l.MemoryBytes = -1
		}
	}

	if dir, _, err = p.dir("pids"); err != nil {
		return l, err
	}
	l.PidsMax = readLimit(&err, dir, "pids.max")
	if err != nil {
		return l, err
	}

	if dir, v2, err = p.blockIO(); err != nil {
		return l, err
	}
	l.Disk, err = readDiskThrottles(dir, v2)
	return l, err
}

// blockIO finds the cgroup directory of block IO: the blkio controller's
// on v1, the io controller's on v2.
func (p placement) blockIO() (dir string, v2 bool, err error) {
	if dir, v2, err = p.dir("blkio"); err != nil {
		return p.dir("io")
	}
	return dir, v2, nil
}

func readDiskThrottles(dir string, v2 bool) ([]DiskThrottle, error) {
	if v2 {
		return readIOMax(dir)
	}
	return readBlkioThrottles(dir)
}

// dir finds the directory of the process's cgroup for controller ctl,
// and whether it is a v2 (unified) cgroup.
func (p placement) dir(ctl string) (string, bool, error) {
	if path, ok := p.v1[ctl]; ok {
		for _, m := range p.mounts {
			if m.FSType == "cgroup" && slices.Contains(m.Super, ctl) {
				return join(m, path), false, nil
			}
		}
		return "", false, fmt.Errorf("cgroup v1 controller %s is not mounted here", ctl)
	}
	if p.unified != "" {
		for _, m := range p.mounts {
			if m.FSType != "cgroup2" {
				continue
			}
			dir := join(m, p.unified)
			ctls, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
			if err != nil || !slices.Contains(strings.Fields(string(ctls)), ctl) {
				continue // e.g. the controller-less unified mount of a hybrid host
			}
			return dir, true, nil
		}
	}
	return "", false, fmt.Errorf("no cgroup with controller %s", ctl)
}

// join maps a cgroup path onto a mount whose root may be a sub-cgroup
// (as inside a container with a cgroup namespace or a bind mount).
func join(m mountinfo.Mount, path string) string {
	if m.Root != "/" {
		if rel, ok := strings.CutPrefix(path, m.Root); ok {
			path = rel
		}
	}
	return filepath.Join(m.MountPoint, path)
}

// readBlkioThrottles reads cgroup v1's blkio.throttle.* files, a
// "major:minor value" line per throttled device.
func readBlkioThrottles(dir string) ([]DiskThrottle, error) {
	byDev := map[string]*DiskThrottle{}
	for _, f := range []struct {
		file string
		set  func(*DiskThrottle, uint64)
	}{
		{"blkio.throttle.read_bps_device", func(t *DiskThrottle, v uint64) { t.ReadBPS = v }},
		{"blkio.throttle.write_bps_device", func(t *DiskThrottle, v uint64) { t.WriteBPS = v }},
		{"blkio.throttle.read_iops_device", func(t *DiskThrottle, v uint64) { t.ReadIOPS = v }},
		{"blkio.throttle.write_iops_device", func(t *DiskThrottle, v uint64) { t.WriteIOPS = v }},
	} {
		var err error
		s := readFile(&err, dir, f.file)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(s, "\n") {
			fs := strings.Fields(line)
			if len(fs) == 0 {
				continue
			}
			if len(fs) != 2 {
				return nil, fmt.Errorf("parse %s: %q", filepath.Join(dir, f.file), line)
			}
			v, err := strconv.ParseUint(fs[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse %s: %q", filepath.Join(dir, f.file), line)
			}
			f.set(device(byDev, fs[0]), v)
		}
	}
	return sorted(byDev), nil
}

// readIOMax reads cgroup v2's io.max: a line per throttled device,
// "major:minor rbps=N wbps=max riops=max wiops=max".
func readIOMax(dir string) ([]DiskThrottle, error) {
	var err error
	s := readFile(&err, dir, "io.max")
	if err != nil {
		return nil, err
	}
	byDev := map[string]*DiskThrottle{}
	for _, line := range strings.Split(s, "\n") {
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		t := device(byDev, fs[0])
		for _, kv := range fs[1:] {
			k, v, _ := strings.Cut(kv, "=")
			if v == "max" {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse %s: %q", filepath.Join(dir, "io.max"), line)
			}
			switch k {
			case "rbps":
				t.ReadBPS = n
			case "wbps":
				t.WriteBPS = n
			case "riops":
				t.ReadIOPS = n
			case "wiops":
				t.WriteIOPS = n
			}
		}
	}
	return sorted(byDev), nil
}

func device(byDev map[string]*DiskThrottle, dev string) *DiskThrottle {
	t, ok := byDev[dev]
	if !ok {
		t = &DiskThrottle{Device: dev}
		byDev[dev] = t
	}
	return t
}

// sorted lists the devices that have a throttle, by device.
func sorted(byDev map[string]*DiskThrottle) []DiskThrottle {
	var out []DiskThrottle
	for _, t := range byDev {
		if *t != (DiskThrottle{Device: t.Device}) {
			out = append(out, *t)
		}
	}
	slices.SortFunc(out, func(a, b DiskThrottle) int { return strings.Compare(a.Device, b.Device) })
	return out
}

// readFile returns the trimmed content of dir/name; once *errp is set it
// reads nothing, so a sequence of reads checks the error once.
func readFile(errp *error, dir, name string) string {
	if *errp != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		*errp = fmt.Errorf("read cgroup file: %w", err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readLimit reads a number from dir/name where "max" (v2, pids) means -1.
func readLimit(errp *error, dir, name string) int64 {
	s := readFile(errp, dir, name)
	return parseLimit(errp, dir, name, s)
}

func parseLimit(errp *error, dir, name, s string) int64 {
	if *errp != nil {
		return 0
	}
	if s == "max" {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		*errp = fmt.Errorf("parse %s: not a number: %q", filepath.Join(dir, name), s)
		return 0
	}
	return n
}
