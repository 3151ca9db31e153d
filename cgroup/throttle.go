package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SetDiskThrottles makes want the block IO throttles of process pid's
// cgroup, live: each device of want gets its four limits (0: none), and
// a throttle on any other device is lifted. It writes the cgroup files
// itself (v1 blkio.throttle.*, v2 io.max), as the container runtime did
// at create: the Docker Engine's update cannot change them, and the
// cgroups library cannot lift a v2 limit (that takes "max").
func SetDiskThrottles(pid int, want []DiskThrottle) error {
	p, err := placementOf(pid)
	if err != nil {
		return fmt.Errorf("set disk throttles: %w", err)
	}
	if err := p.setDiskThrottles(want, writeControl); err != nil {
		return fmt.Errorf("set disk throttles of pid %d: %w", pid, err)
	}
	return nil
}

// setDiskThrottles writes want through write(file, line), one line per
// device and limit file, the way the kernel takes them: on v1 a line
// "major:minor N" sets (N > 0) or removes (N = 0) one device's rule in
// one file; on v2 "major:minor rbps=N wbps=max ..." sets all four limits
// of a device.
func (p placement) setDiskThrottles(want []DiskThrottle, write func(file, line string) error) error {
	dir, v2, err := p.blockIO()
	if err != nil {
		return err
	}
	cur, err := readDiskThrottles(dir, v2)
	if err != nil {
		return err
	}
	set := make([]DiskThrottle, 0, len(want)+len(cur))
	listed := map[string]bool{}
	for _, t := range want {
		if _, _, ok := strings.Cut(t.Device, ":"); !ok {
			return fmt.Errorf("disk throttle: device %q is not major:minor", t.Device)
		}
		listed[t.Device] = true
		set = append(set, t)
	}
	for _, t := range cur {
		if !listed[t.Device] {
			set = append(set, DiskThrottle{Device: t.Device}) // lifted
		}
	}
	for _, t := range set {
		if v2 {
			line := fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s", t.Device,
				ioMax(t.ReadBPS), ioMax(t.WriteBPS), ioMax(t.ReadIOPS), ioMax(t.WriteIOPS))
			if err := write(filepath.Join(dir, "io.max"), line); err != nil {
				return err
			}
			continue
		}
		for _, f := range []struct {
			file string
			v    uint64
		}{
			{"blkio.throttle.read_bps_device", t.ReadBPS},
			{"blkio.throttle.write_bps_device", t.WriteBPS},
			{"blkio.throttle.read_iops_device", t.ReadIOPS},
			{"blkio.throttle.write_iops_device", t.WriteIOPS},
		} {
			if err := write(filepath.Join(dir, f.file), t.Device+" "+strconv.FormatUint(f.v, 10)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ioMax is a v2 io.max value: "max" for none.
func ioMax(v uint64) string {
	if v == 0 {
		return "max"
	}
	return strconv.FormatUint(v, 10)
}

// writeControl writes one line to a cgroup control file, which the
// kernel takes as one command.
func writeControl(file, line string) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write cgroup file: %w", err)
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", line, file, err)
	}
	return nil
}
