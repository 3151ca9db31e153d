package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/blkiodev"
	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/internal/mountinfo"
)

// pidsLimit is the effective pid cap of spec: the flavor's
// capsule:pids_max when set, else the agent's default in PidsLimit.
func pidsLimit(spec drivers.Spec) int64 {
	if spec.Limits.PidsMax > 0 {
		return spec.Limits.PidsMax
	}
	return spec.PidsLimit
}

// resources maps the flavor and its limits to the container's cgroup
// settings. CPU: CFS period and a hard quota of the flavor's vCPUs (or
// less, quota:cpu_quota being per vCPU as libvirt has it), shares. Disk:
// throttles on diskDev, the block device holding Docker's data (the
// containers' writable layers and volumes), empty when no throttle is
// asked for.
func resources(spec drivers.Spec, diskDev string) container.Resources {
	mem := int64(spec.MemoryMB) * 1024 * 1024
	pids := pidsLimit(spec)
	period, quota := spec.Limits.CPU.CFS(spec.VCPUs)
	r := container.Resources{
		CPUPeriod:  period,
		CPUQuota:   quota,
		CPUShares:  spec.Limits.CPU.EffectiveShares(spec.VCPUs),
		Memory:     mem,
		MemorySwap: mem, // equal to Memory: no swap
		PidsLimit:  &pids,
	}
	if diskDev == "" {
		return r
	}
	throttle := func(rate int64) []*blkiodev.ThrottleDevice {
		if rate <= 0 {
			return nil
		}
		return []*blkiodev.ThrottleDevice{{Path: diskDev, Rate: uint64(rate)}}
	}
	rb, wb, ri, wi := spec.Limits.Disk.Throttles()
	r.BlkioDeviceReadBps = throttle(rb)
	r.BlkioDeviceWriteBps = throttle(wb)
	r.BlkioDeviceReadIOps = throttle(ri)
	r.BlkioDeviceWriteIOps = throttle(wi)
	return r
}

// diskDevice finds, once per driver, the whole-disk block device that
// holds Docker's root dir, e.g. /dev/vda: the kernel throttles IO per
// device, and only on whole disks. Options.DiskDevice overrides the
// discovery (needed for a remote daemon, whose disks this host cannot
// see).
type diskDevice struct {
	mu  sync.Mutex
	dev string
}

func (d *Driver) diskDevice(ctx context.Context) (string, error) {
	if d.opts.DiskDevice != "" {
		return d.opts.DiskDevice, nil
	}
	d.disk.mu.Lock()
	defer d.disk.mu.Unlock()
	if d.disk.dev != "" {
		return d.disk.dev, nil
	}
	if !d.local() {
		return "", fmt.Errorf("find the disk of a remote dockerd (%s): set the driver's disk device", d.cli.DaemonHost())
	}
	info, err := d.cli.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("docker info: %w", err)
	}
	dev, err := blockDeviceOf(info.DockerRootDir, mountinfo.Self, "/sys")
	if err != nil {
		return "", err
	}
	d.log.Info("disk throttles apply to the device holding docker's data", "dir", info.DockerRootDir, "device", dev)
	d.disk.dev = dev
	return dev, nil
}

// blockDeviceOf returns the /dev path of the whole disk holding dir: the
// device number of the mount holding it (from mountinfo), resolved from a
// partition to its disk through sysfs.
func blockDeviceOf(dir, mounttable, sysfs string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("find the disk of docker's root dir: empty root dir")
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	mounts, err := mountinfo.Read(mounttable)
	if err != nil {
		return "", err
	}
	m, ok := mountinfo.Holding(mounts, dir)
	if !ok {
		return "", fmt.Errorf("no mount holds %s", dir)
	}
	majmin, fstype := m.Device, m.FSType
	if strings.HasPrefix(majmin, "0:") {
		// Device 0 is anonymous: tmpfs, overlay, btrfs subvolumes, NFS...
		return "", fmt.Errorf("docker's root dir %s is on %s (device %s), not on a block device: disk IO cannot be throttled", dir, fstype, majmin)
	}
	sys := filepath.Join(sysfs, "dev/block", majmin)
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return "", fmt.Errorf("block device %s of %s: %w", majmin, dir, err)
	}
	if _, err := os.Stat(filepath.Join(real, "partition")); err == nil {
		// A partition's sysfs directory sits inside its disk's.
		real = filepath.Dir(real)
	}
	name, err := devName(filepath.Join(real, "uevent"))
	if err != nil {
		return "", fmt.Errorf("block device %s of %s: %w", majmin, dir, err)
	}
	return "/dev/" + name, nil
}

// devName reads DEVNAME from a sysfs uevent file.
func devName(uevent string) (string, error) {
	b, err := os.ReadFile(uevent)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "DEVNAME="); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("no DEVNAME in %s", uevent)
}
