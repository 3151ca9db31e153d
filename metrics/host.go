package metrics

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// HostPids returns the tasks in use on the host and kernel.pid_max, read
// under procDir (/proc). The count is /proc/loadavg's total of
// scheduling entities (threads included: pid_max bounds threads too).
func HostPids(procDir string) (inUse, pidMax uint64, err error) {
	b, err := os.ReadFile(filepath.Join(procDir, "loadavg"))
	if err != nil {
		return 0, 0, fmt.Errorf("host pids: %w", err)
	}
	// "0.20 0.18 0.12 1/80 11206": the 4th field is running/total.
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("host pids: malformed loadavg %q", b)
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, 0, fmt.Errorf("host pids: malformed loadavg %q", b)
	}
	if inUse, err = strconv.ParseUint(total, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("host pids: loadavg: %w", err)
	}
	if pidMax, err = readUint(filepath.Join(procDir, "sys/kernel/pid_max")); err != nil {
		return 0, 0, fmt.Errorf("host pids: %w", err)
	}
	return inUse, pidMax, nil
}

// Conntrack returns the host's connection tracking entries and table size
// read under procDir; ok is false (and err nil) when nf_conntrack is not
// loaded, a normal state for a host that does no NAT.
func Conntrack(procDir string) (count, max uint64, ok bool, err error) {
	dir := filepath.Join(procDir, "sys/net/netfilter")
	count, err = readUint(filepath.Join(dir, "nf_conntrack_count"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("conntrack: %w", err)
	}
	if max, err = readUint(filepath.Join(dir, "nf_conntrack_max")); err != nil {
		return 0, 0, false, fmt.Errorf("conntrack: %w", err)
	}
	return count, max, true, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}
