package docker

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/docker/docker/api/types/mount"
)

// procFiles are the /proc files LXCFS computes from the reading process's
// cgroups (memory limit, cpuset and CFS quota, the cgroup's own load and
// start time), so that free, top, uptime and nproc inside a server show
// the server and not the host (the tenants-saw-the-host lesson).
var procFiles = []string{"cpuinfo", "diskstats", "loadavg", "meminfo", "stat", "swaps", "uptime"}

// sysCPUOnline is LXCFS's view of the online CPUs (the server's cpuset),
// which nproc --all, glibc's get_nprocs_conf and the JVM read.
const sysCPUOnline = "sys/devices/system/cpu/online"

// procView is the set of read-only bind mounts that put LXCFS's files over
// a server's own /proc and /sys files; empty when LXCFS is off or absent.
type procView struct {
	dir    string
	mounts []mount.Mount
}

// lxcfsView finds what the LXCFS mounted at dir provides. It fails when
// LXCFS does not answer there: its meminfo must be readable, not merely
// present (a dead LXCFS leaves a mount point whose reads fail with
// "transport endpoint is not connected", which would fail every boot).
func lxcfsView(dir string) (procView, error) {
	f, err := os.Open(filepath.Join(dir, "proc", "meminfo"))
	if err != nil {
		return procView{}, fmt.Errorf("lxcfs at %s: %w", dir, err)
	}
	_, err = f.Read(make([]byte, 1))
	f.Close()
	if err != nil && err != io.EOF {
		return procView{}, fmt.Errorf("lxcfs at %s: read meminfo: %w", dir, err)
	}
	v := procView{dir: dir}
	for _, name := range procFiles {
		src := filepath.Join(dir, "proc", name)
		if _, err := os.Stat(src); err != nil {
			continue // an older LXCFS without this file
		}
		v.mounts = append(v.mounts, roBind(src, "/proc/"+name))
	}
	if src := filepath.Join(dir, sysCPUOnline); fileExists(src) {
		v.mounts = append(v.mounts, roBind(src, "/"+sysCPUOnline))
	}
	return v, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// roBind is a read-only bind mount. Docker lets these sit on top of its own
// /proc and /sys mounts; private propagation (the default) keeps them from
// leaking anywhere.
func roBind(src, dst string) mount.Mount {
	return mount.Mount{Type: mount.TypeBind, Source: src, Target: dst, ReadOnly: true}
}

// initProcView sets up the LXCFS view of Options.LXCFS at driver start: one
// warning when it is configured but does not answer, and servers then run
// with the host's view rather than failing to boot.
func (d *Driver) initProcView() {
	dir := d.opts.LXCFS
	if dir == "" {
		d.log.Info("lxcfs disabled: servers see the host's /proc figures")
		return
	}
	if !d.local() {
		d.log.Warn("lxcfs not used: dockerd is remote and its host's lxcfs cannot be checked from here; servers see the host's /proc figures",
			"lxcfs", dir, "docker_host", d.cli.DaemonHost())
		return
	}
	v, err := lxcfsView(dir)
	if err != nil {
		d.log.Warn("lxcfs not available: servers see the host's /proc figures (free, uptime, top)", "lxcfs", dir, "err", err)
		return
	}
	d.proc = v
	targets := make([]string, len(v.mounts))
	for i, m := range v.mounts {
		targets[i] = m.Target
	}
	d.log.Info("lxcfs view mounted into every server", "lxcfs", dir, "files", targets)
}
