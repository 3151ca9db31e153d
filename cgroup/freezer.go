package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
)

// FrozenOf reports whether the cgroup freezer holds process pid (a
// paused server): the v1 freezer's state FROZEN, or cgroup.freeze 1 on
// v2, where freezing is in every cgroup rather than a controller.
func FrozenOf(pid int) (bool, error) {
	p, err := placementOf(pid)
	if err != nil {
		return false, fmt.Errorf("cgroup freezer: %w", err)
	}
	frozen, err := p.frozen()
	if err != nil {
		return false, fmt.Errorf("cgroup freezer of pid %d: %w", pid, err)
	}
	return frozen, nil
}

func (p placement) frozen() (bool, error) {
	if _, ok := p.v1["freezer"]; ok {
		dir, _, err := p.dir("freezer")
		state := readFile(&err, dir, "freezer.state")
		return state == "FROZEN", err
	}
	if p.unified != "" {
		for _, m := range p.mounts {
			dir := join(m, p.unified)
			if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); m.FSType != "cgroup2" || err != nil {
				continue // e.g. the unified root of a hybrid host, which cannot freeze
			}
			var err error
			return readFile(&err, dir, "cgroup.freeze") == "1", err
		}
	}
	return false, fmt.Errorf("no cgroup freezer")
}
