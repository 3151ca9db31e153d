package docker

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/docker/docker/api/types/mount"
)

// Boot from volume. A volume-backed server's root filesystem is its boot
// volume (drivers.Spec.RootVolume, the host directory where it is
// mounted): what the server writes must land there, so it survives the
// server and can boot another. Docker takes a container's root from its
// image's layers only (a bind mount at "/" is refused), so the workload
// is created from the image the volume was filled from (for its config:
// command, environment, user, working directory) and every top-level
// directory of the volume is bind-mounted over the image's at the same
// path. Docker's own mounts (/proc, /sys, /dev, the /etc files it
// manages) go on top, as in any container; a top-level symlink
// (bin -> usr/bin) is the image's and resolves into a bound directory.
// A new top-level directory made at run time is in the container's
// writable layer and does not outlive the server.

// LabelRootVolume is on a volume-backed server's workload: the host
// directory of its boot volume, whose bind mounts (rootVolumeMounts) are
// the server's root, not tenant data a migration's commit would miss
// (the boot volume moves as the server's other volumes do).
const LabelRootVolume = "capsule.root_volume"

// underRootVolume reports whether a bind of host path src is one of
// rootVolumeMounts' for the boot volume at dir.
func underRootVolume(dir, src string) bool {
	if dir == "" {
		return false
	}
	dir = filepath.Clean(dir)
	return filepath.Dir(filepath.Clean(src)) == dir
}

// kernelDirs are the top-level directories Docker mounts itself.
var kernelDirs = []string{"proc", "sys", "dev"}

// rootVolumeMounts are the bind mounts that put the boot volume mounted
// at dir under the workload's root.
func rootVolumeMounts(dir string) ([]mount.Mount, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("boot volume at %s: %w", dir, err)
	}
	var out []mount.Mount
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || slices.Contains(kernelDirs, name) || name == "lost+found" {
			continue
		}
		out = append(out, mount.Mount{Type: mount.TypeBind, Source: filepath.Join(dir, name), Target: "/" + name,
			BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate}})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("boot volume at %s has no directories: it holds no root filesystem", dir)
	}
	return out, nil
}
