package cgroup

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/capsule-cloud/capsule/internal/mountinfo"
)

// inTree moves p's mounts under a temporary directory holding files.
func inTree(t *testing.T, files map[string]string, p placement) placement {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		name = filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.mounts = slices.Clone(p.mounts)
	for i := range p.mounts {
		p.mounts[i].MountPoint = filepath.Join(dir, p.mounts[i].MountPoint)
	}
	return p
}

func v1Mount(root, at string, controllers ...string) mountinfo.Mount {
	return mountinfo.Mount{Root: root, MountPoint: at, FSType: "cgroup", Super: append([]string{"rw"}, controllers...)}
}

// Two hosts' trees. v1: co-mounted cpu,cpuacct, a memory hierarchy seen
// from a sub-cgroup (a cgroup namespace or bind mount) and a
// controller-less unified mount (hybrid). v2 (unified): the cgroup's
// files under the one mount, cpu.max's two fields, io.max's per-device
// keys. Each controller is found in its hierarchy and every limit read,
// "no limit" as -1.
var limitsTree = map[string]string{
	"v1/cpu,cpuacct/docker/abc/cpu.cfs_quota_us":           "150000\n",
	"v1/cpu,cpuacct/docker/abc/cpu.cfs_period_us":          "100000\n",
	"v1/cpu,cpuacct/docker/abc/cpu.shares":                 "2048\n",
	"v1/cpuset/docker/abc/cpuset.effective_cpus":           "0-1,4\n",
	"v1/memory/abc/memory.limit_in_bytes":                  "9223372036854771712\n",
	"v1/pids/docker/abc/pids.max":                          "max\n",
	"v1/blkio/docker/abc/blkio.throttle.read_bps_device":   "",
	"v1/blkio/docker/abc/blkio.throttle.write_bps_device":  "254:0 10000000\n8:0 5\n",
	"v1/blkio/docker/abc/blkio.throttle.read_iops_device":  "",
	"v1/blkio/docker/abc/blkio.throttle.write_iops_device": "254:0 100\n",
	"v1/unified/cgroup.controllers":                        "\n",
	"v1/freezer/docker/abc/freezer.state":                  "FROZEN\n",
	"v2/kubepods/x/cgroup.controllers":                     "cpuset cpu io memory pids\n",
	"v2/kubepods/x/cpu.max":                                "max 100000\n",
	"v2/kubepods/x/cpu.weight":                             "79\n",
	"v2/kubepods/x/cpuset.cpus.effective":                  "2\n",
	"v2/kubepods/x/memory.max":                             "1048576\n",
	"v2/kubepods/x/pids.max":                               "42\n",
	"v2/kubepods/x/cgroup.freeze":                          "0\n",
	"v2/kubepods/x/io.max":                                 "254:0 rbps=20000000 wbps=max riops=max wiops=100\n8:16 rbps=max wbps=max riops=max wiops=max\n",
}

// v1Placement is a process in /docker/abc of the v1 tree's hierarchies
// of ctls.
func v1Placement(ctls ...string) placement {
	p := placement{v1: map[string]string{}, unified: "/", mounts: []mountinfo.Mount{
		v1Mount("/", "v1/cpuset", "cpuset"), // before cpu: "cpuset" is not "cpu"
		v1Mount("/", "v1/cpu,cpuacct", "cpu", "cpuacct"),
		v1Mount("/docker", "v1/memory", "memory"),
		v1Mount("/", "v1/pids", "pids"),
		v1Mount("/", "v1/blkio", "blkio"),
		v1Mount("/", "v1/freezer", "freezer"),
		{Root: "/", MountPoint: "v1/unified", FSType: "cgroup2"},
	}}
	for _, c := range ctls {
		p.v1[c] = "/docker/abc"
	}
	return p
}

var v2Placement = placement{unified: "/kubepods/x", mounts: []mountinfo.Mount{{Root: "/", MountPoint: "v2", FSType: "cgroup2"}}}

func TestLimits(t *testing.T) {
	v1, v2 := v1Placement, v2Placement
	for _, c := range []struct {
		name  string
		p     placement
		patch map[string]string // files changed from limitsTree
		want  *Limits           // nil: an error
	}{
		{name: "v1", p: v1("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio"), want: &Limits{CgroupVersion: 1,
			CPUQuotaUS: 150000, CPUPeriodUS: 100000, CPUShares: 2048, Cpuset: "0-1,4", MemoryBytes: -1, PidsMax: -1,
			Disk: []DiskThrottle{{Device: "254:0", WriteBPS: 10000000, WriteIOPS: 100}, {Device: "8:0", WriteBPS: 5}}}},
		// The controller-less unified mount does not stand in for a
		// missing v1 controller.
		{name: "v1 without blkio", p: v1("cpu", "cpuacct", "cpuset", "memory", "pids")},
		{name: "v2", p: v2, want: &Limits{CgroupVersion: 2,
			CPUQuotaUS: -1, CPUPeriodUS: 100000, CPUWeight: 79, Cpuset: "2", MemoryBytes: 1048576, PidsMax: 42,
			Disk: []DiskThrottle{{Device: "254:0", ReadBPS: 20000000, WriteIOPS: 100}}}},
		{name: "v2 malformed pids.max", p: v2, patch: map[string]string{"v2/kubepods/x/pids.max": "lots\n"}},
		{name: "v2 without cpu", p: v2, patch: map[string]string{"v2/kubepods/x/cgroup.controllers": "memory pids\n"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := maps.Clone(limitsTree)
			maps.Copy(files, c.patch)
			got, err := inTree(t, files, c.p).limits()
			switch {
			case c.want == nil && err == nil:
				t.Errorf("limits read: %+v", got)
			case c.want != nil && err != nil:
				t.Fatal(err)
			case c.want != nil && !reflect.DeepEqual(got, *c.want):
				t.Errorf("limits = %+v\nwant     %+v", got, *c.want)
			}
		})
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

// The v1 freezer's state, v2's cgroup.freeze; a hybrid host's unified
// mount does not stand in for a v1 freezer it lacks.
func TestFrozen(t *testing.T) {
	for name, c := range map[string]struct {
		p      placement
		frozen bool
		err    bool
	}{
		"v1 frozen":          {p: v1Placement("freezer"), frozen: true},
		"v2 thawed":          {p: v2Placement},
		"v1 without freezer": {p: v1Placement("cpu"), err: true},
	} {
		got, err := inTree(t, limitsTree, c.p).frozen()
		if got != c.frozen || (err != nil) != c.err {
			t.Errorf("%s: frozen %v, %v; want %v (error %v)", name, got, err, c.frozen, c.err)
		}
	}
	if _, err := FrozenOf(0); err == nil {
		t.Error("pid 0 accepted")
	}
}
