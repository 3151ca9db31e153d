package docker

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Limits are the resource limits the kernel actually enforces on a process,
// read from its cgroups: what tests (and operators) use to check that the
// driver's limits took effect. -1 means unlimited.
type Limits struct {
	CgroupVersion int   // 1 or 2 (for the cpu controller)
	CPUQuotaUS    int64 // cfs quota per period, µs
	CPUPeriodUS   int64 // cfs period, µs
	MemoryBytes   int64 // memory limit
	PidsMax       int64 // pid (task) limit
}

// CgroupLimits reads the cpu, memory and pids limits of process pid from
// the cgroup filesystem mounted in this process's mount namespace. It
// handles cgroup v1 (controllers mounted separately or co-mounted such as
// cpu,cpuacct), v2 (unified) and hybrid hosts, preferring a v1 hierarchy
// when the controller is bound to one.
func CgroupLimits(pid int) (Limits, error) {
	procs, err := parseProcCgroup(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return Limits{}, err
	}
	mounts, err := parseCgroupMounts("/proc/self/mountinfo")
	if err != nil {
		return Limits{}, err
	}
	var l Limits

	dir, v2, err := controllerDir(procs, mounts, "cpu")
	if err != nil {
		return l, err
	}
	if v2 {
		l.CgroupVersion = 2
		// cpu.max: "<quota|max> <period>"
		s, err := readString(filepath.Join(dir, "cpu.max"))
		if err != nil {
			return l, err
		}
		f := strings.Fields(s)
		if len(f) != 2 {
			return l, fmt.Errorf("parse %s: %q", filepath.Join(dir, "cpu.max"), s)
		}
		if l.CPUQuotaUS, err = parseLimit(f[0]); err != nil {
			return l, fmt.Errorf("parse cpu.max quota: %w", err)
		}
		if l.CPUPeriodUS, err = parseLimit(f[1]); err != nil {
			return l, fmt.Errorf("parse cpu.max period: %w", err)
		}
	} else {
		l.CgroupVersion = 1
		if l.CPUQuotaUS, err = readLimit(filepath.Join(dir, "cpu.cfs_quota_us")); err != nil {
			return l, err
		}
		if l.CPUPeriodUS, err = readLimit(filepath.Join(dir, "cpu.cfs_period_us")); err != nil {
			return l, err
		}
	}

	if dir, v2, err = controllerDir(procs, mounts, "memory"); err != nil {
		return l, err
	}
	file := "memory.limit_in_bytes"
	if v2 {
		file = "memory.max"
	}
	if l.MemoryBytes, err = readLimit(filepath.Join(dir, file)); err != nil {
		return l, err
	}
	// cgroup v1 reports "no limit" as a huge page-rounded number.
	if l.MemoryBytes >= 1<<62 {
		l.MemoryBytes = -1
	}

	if dir, _, err = controllerDir(procs, mounts, "pids"); err != nil {
		return l, err
	}
	if l.PidsMax, err = readLimit(filepath.Join(dir, "pids.max")); err != nil {
		return l, err
	}
	return l, nil
}

// procCgroup is one line of /proc/<pid>/cgroup.
type procCgroup struct {
	controllers []string // empty for the v2 unified line
	path        string
}

func parseProcCgroup(file string) ([]procCgroup, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read cgroups: %w", err)
	}
	defer f.Close()
	var out []procCgroup
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		pc := procCgroup{path: parts[2]}
		if parts[1] != "" {
			pc.controllers = strings.Split(parts[1], ",")
		}
		out = append(out, pc)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return out, nil
}

// cgroupMount is one cgroup filesystem from mountinfo.
type cgroupMount struct {
	v2          bool
	root        string // root of the hierarchy seen at the mount point
	mountpoint  string
	controllers []string // v1 super options naming controllers
}

func parseCgroupMounts(file string) ([]cgroupMount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 3 {
			continue
		}
		m := cgroupMount{root: unescapeMount(pf[3]), mountpoint: unescapeMount(pf[4])}
		switch sf[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			m.controllers = strings.Split(sf[2], ",")
		default:
			continue
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// controllerDir finds the directory of the cgroup of procs for controller
// ctl, and whether it is a v2 (unified) cgroup.
func controllerDir(procs []procCgroup, mounts []cgroupMount, ctl string) (string, bool, error) {
	for _, pc := range procs {
		if !contains(pc.controllers, ctl) {
			continue
		}
		for _, m := range mounts {
			if !m.v2 && contains(m.controllers, ctl) {
				return join(m, pc.path), false, nil
			}
		}
		return "", false, fmt.Errorf("cgroup v1 controller %s is not mounted here", ctl)
	}
	for _, pc := range procs {
		if len(pc.controllers) != 0 {
			continue
		}
		for _, m := range mounts {
			if m.v2 {
				dir := join(m, pc.path)
				ctls, err := readString(filepath.Join(dir, "cgroup.controllers"))
				if err != nil || !contains(strings.Fields(ctls), ctl) {
					continue // e.g. the controller-less unified mount of a hybrid host
				}
				return dir, true, nil
			}
		}
	}
	return "", false, fmt.Errorf("no cgroup with controller %s", ctl)
}

// join maps a cgroup path onto a mount whose root may be a sub-cgroup
// (as inside a container with a cgroup namespace or a bind mount).
func join(m cgroupMount, path string) string {
	if m.root != "/" {
		if rel, ok := strings.CutPrefix(path, m.root); ok {
			path = rel
		}
	}
	return filepath.Join(m.mountpoint, path)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func readString(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read cgroup file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func readLimit(file string) (int64, error) {
	s, err := readString(file)
	if err != nil {
		return 0, err
	}
	n, err := parseLimit(s)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", file, err)
	}
	return n, nil
}

// parseLimit parses a cgroup number where "max" (v2, pids) means -1.
func parseLimit(s string) (int64, error) {
	if s == "max" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("not a number: " + strconv.Quote(s))
	}
	return n, nil
}
