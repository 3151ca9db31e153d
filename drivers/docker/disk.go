package docker

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// diskGB is the size of the filesystem holding dir, in GiB.
func diskGB(dir string) (int, error) {
	if dir == "" {
		return 0, fmt.Errorf("statfs: empty docker root dir")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int(st.Blocks * uint64(st.Bsize) / (1 << 30)), nil
}
