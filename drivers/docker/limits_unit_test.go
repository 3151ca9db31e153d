package docker

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/docker/api/types/blkiodev"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/limits"
)

func TestResourcesFromLimits(t *testing.T) {
	spec := drivers.Spec{VCPUs: 2, MemoryMB: 64, PidsLimit: 100}
	r := resources(spec, "")
	if r.CPUPeriod != 100000 || r.CPUQuota != 200000 || r.CPUShares != 2048 || *r.PidsLimit != 100 || r.Memory != 64<<20 || r.MemorySwap != r.Memory {
		t.Errorf("default resources = %+v", r)
	}
	if r.BlkioDeviceReadBps != nil || r.BlkioDeviceWriteIOps != nil {
		t.Errorf("throttles without a device: %+v", r)
	}

	lim, err := limits.Parse(map[string]string{
		"quota:cpu_quota": "25000", "quota:cpu_period": "50000", "quota:cpu_shares": "300",
		"quota:disk_total_bytes_sec": "1000", "quota:disk_write_iops_sec": "7", "capsule:pids_max": "40",
	}, 2)
	if err != nil {
		t.Fatal(err)
	}
	spec.Limits = lim
	r = resources(spec, "/dev/vdz")
	// Nova's quota is per vCPU: 2 × 25 ms per 50 ms = 1 CPU.
	if r.CPUPeriod != 50000 || r.CPUQuota != 50000 || r.CPUShares != 300 || *r.PidsLimit != 40 {
		t.Errorf("cpu/pids = %d/%d shares %d pids %d", r.CPUQuota, r.CPUPeriod, r.CPUShares, *r.PidsLimit)
	}
	one := func(name string, got []*blkiodev.ThrottleDevice, want uint64) {
		t.Helper()
		if want == 0 {
			if len(got) != 0 {
				t.Errorf("%s = %v, want none", name, got)
			}
			return
		}
		if len(got) != 1 || got[0].Path != "/dev/vdz" || got[0].Rate != want {
			t.Errorf("%s = %v, want /dev/vdz:%d", name, got, want)
		}
	}
	// total applies to both directions.
	one("read bps", r.BlkioDeviceReadBps, 1000)
	one("write bps", r.BlkioDeviceWriteBps, 1000)
	one("read iops", r.BlkioDeviceReadIOps, 0)
	one("write iops", r.BlkioDeviceWriteIOps, 7)
}

func TestBlockDeviceOf(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, rel string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	// sda is a disk, sda2 its partition, vdb a whole disk.
	write("sys/devices/pci/block/sda/uevent", "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n")
	write("sys/devices/pci/block/sda/sda2/uevent", "MAJOR=8\nMINOR=2\nDEVNAME=sda2\nDEVTYPE=partition\n")
	write("sys/devices/pci/block/sda/sda2/partition", "2\n")
	write("sys/devices/virtio/block/vdb/uevent", "MAJOR=254\nMINOR=16\nDEVNAME=vdb\nDEVTYPE=disk\n")
	link("../../devices/pci/block/sda/sda2", "sys/dev/block/8:2")
	link("../../devices/virtio/block/vdb", "sys/dev/block/254:16")
	write("mountinfo", `27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw
42 27 254:16 / /var/lib/docker rw,relatime shared:1 - xfs /dev/vdb rw
43 27 0:45 / /var/lib/docker/tmpfs rw - tmpfs tmpfs rw
44 42 0:50 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw,lowerdir=/x
`)
	sys, mi := filepath.Join(dir, "sys"), filepath.Join(dir, "mountinfo")
	for _, tc := range []struct{ dir, want string }{
		{"/srv/docker", "/dev/sda"},      // on the root partition: its disk
		{"/var/lib/docker", "/dev/vdb"},  // its own disk
		{"/var/lib/dockerx", "/dev/sda"}, // a prefix of a name is not a parent
		{"/var/lib/docker/sub", "/dev/vdb"},
	} {
		got, err := blockDeviceOf(tc.dir, mi, sys)
		if err != nil || got != tc.want {
			t.Errorf("blockDeviceOf(%s) = %q, %v; want %s", tc.dir, got, err, tc.want)
		}
	}
	if _, err := blockDeviceOf("/var/lib/docker/tmpfs", mi, sys); err == nil {
		t.Error("a tmpfs root dir has a block device")
	}
}
