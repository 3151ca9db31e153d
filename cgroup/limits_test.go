package cgroup

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/capsule-cloud/capsule/internal/mountinfo"
)

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, s := range files {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A v1 host with co-mounted cpu,cpuacct, a memory hierarchy seen from a
// sub-cgroup (a cgroup namespace or bind mount) and a controller-less
// unified mount (hybrid): each controller is found in its hierarchy and
// every limit read, "no limit" as -1.
func TestLimitsV1(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"cpu,cpuacct/docker/abc/cpu.cfs_quota_us":           "150000\n",
		"cpu,cpuacct/docker/abc/cpu.cfs_period_us":          "100000\n",
		"cpu,cpuacct/docker/abc/cpu.shares":                 "2048\n",
		"cpuset/docker/abc/cpuset.effective_cpus":           "0-1,4\n",
		"memory/abc/memory.limit_in_bytes":                  "9223372036854771712\n",
		"pids/docker/abc/pids.max":                          "max\n",
		"blkio/docker/abc/blkio.throttle.read_bps_device":   "",
		"blkio/docker/abc/blkio.throttle.write_bps_device":  "254:0 10000000\n8:0 5\n",
		"blkio/docker/abc/blkio.throttle.read_iops_device":  "",
		"blkio/docker/abc/blkio.throttle.write_iops_device": "254:0 100\n",
		"unified/cgroup.controllers":                        "\n",
	})
	mnt := func(root, sub, fstype string, super ...string) mountinfo.Mount {
		return mountinfo.Mount{Root: root, MountPoint: filepath.Join(dir, sub), FSType: fstype, Super: append([]string{"rw"}, super...)}
	}
	p := placement{
		v1: map[string]string{"cpu": "/docker/abc", "cpuacct": "/docker/abc", "cpuset": "/docker/abc", "memory": "/docker/abc",
			"pids": "/docker/abc", "blkio": "/docker/abc"},
		unified: "/",
		mounts: []mountinfo.Mount{
			mnt("/", "cpuset", "cgroup", "cpuset"), // before cpu: "cpuset" is not "cpu"
			mnt("/", "cpu,cpuacct", "cgroup", "cpu", "cpuacct"),
			mnt("/docker", "memory", "cgroup", "memory"),
			mnt("/", "pids", "cgroup", "pids"),
			mnt("/", "blkio", "cgroup", "blkio"),
			mnt("/", "unified", "cgroup2"),
		},
	}
	got, err := p.limits()
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{CgroupVersion: 1, CPUQuotaUS: 150000, CPUPeriodUS: 100000, CPUShares: 2048, Cpuset: "0-1,4",
		MemoryBytes: -1, PidsMax: -1, Disk: []DiskThrottle{{Device: "254:0", WriteBPS: 10000000, WriteIOPS: 100}, {Device: "8:0", WriteBPS: 5}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("limits = %+v\nwant     %+v", got, want)
	}

	// The controller-less unified mount does not stand in for a missing
	// v1 controller.
	if _, _, err := (placement{unified: "/", mounts: p.mounts}).dir("cpu"); err == nil {
		t.Error("controller-less unified mount accepted for cpu")
	}
	delete(p.v1, "blkio")
	if _, err := p.limits(); err == nil {
		t.Error("limits read without a block IO controller")
	}
}

// A v2 (unified) host: the cgroup's files under the one mount, cpu.max's
// two fields, io.max's per-device keys.
func TestLimitsV2(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"kubepods/x/cgroup.controllers":    "cpuset cpu io memory pids\n",
		"kubepods/x/cpu.max":               "max 100000\n",
		"kubepods/x/cpu.weight":            "79\n",
		"kubepods/x/cpuset.cpus.effective": "2\n",
		"kubepods/x/memory.max":            "1048576\n",
		"kubepods/x/pids.max":              "42\n",
		"kubepods/x/io.max":                "254:0 rbps=20000000 wbps=max riops=max wiops=100\n8:16 rbps=max wbps=max riops=max wiops=max\n",
	})
	p := placement{unified: "/kubepods/x", mounts: []mountinfo.Mount{{Root: "/", MountPoint: dir, FSType: "cgroup2"}}}
	got, err := p.limits()
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{CgroupVersion: 2, CPUQuotaUS: -1, CPUPeriodUS: 100000, CPUWeight: 79, Cpuset: "2", MemoryBytes: 1048576, PidsMax: 42,
		Disk: []DiskThrottle{{Device: "254:0", ReadBPS: 20000000, WriteIOPS: 100}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("limits = %+v\nwant     %+v", got, want)
	}

	writeTree(t, dir, map[string]string{"kubepods/x/pids.max": "lots\n"})
	if _, err := p.limits(); err == nil {
		t.Error("a malformed pids.max read")
	}
}

func TestLimitsOfErrors(t *testing.T) {
	if _, err := LimitsOf(0); err == nil {
		t.Error("pid 0 accepted")
	}
	if _, err := LimitsOf(1 << 23); err == nil {
		t.Error("missing pid accepted")
	}
}
