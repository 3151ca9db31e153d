package cgroup

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/internal/mountinfo"
)

// TestSetDiskThrottles: the lines written to the kernel for the trees of
// TestLimits. v1: every limit file of a wanted device gets its value (0
// removes that rule), and a device throttled now but not wanted has all
// four rules removed. v2: one io.max line per device, "max" for none.
func TestSetDiskThrottles(t *testing.T) {
	v1 := placement{v1: map[string]string{"blkio": "/docker/abc"}, mounts: []mountinfo.Mount{v1Mount("/", "v1/blkio", "blkio")}}
	v2 := placement{unified: "/kubepods/x", mounts: []mountinfo.Mount{{Root: "/", MountPoint: "v2", FSType: "cgroup2"}}}
	want := []DiskThrottle{{Device: "254:0", WriteBPS: 20000000}}
	for _, c := range []struct {
		name string
		p    placement
		want []string // file base name: line
	}{
		{name: "v1", p: v1, want: []string{
			"blkio.throttle.read_bps_device: 254:0 0",
			"blkio.throttle.write_bps_device: 254:0 20000000",
			"blkio.throttle.read_iops_device: 254:0 0",
			"blkio.throttle.write_iops_device: 254:0 0",
			"blkio.throttle.read_bps_device: 8:0 0",
			"blkio.throttle.write_bps_device: 8:0 0",
			"blkio.throttle.read_iops_device: 8:0 0",
			"blkio.throttle.write_iops_device: 8:0 0",
		}},
		// 8:16 has no limit now: nothing to lift.
		{name: "v2", p: v2, want: []string{"io.max: 254:0 rbps=max wbps=20000000 riops=max wiops=max"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := inTree(t, limitsTree, c.p)
			var got []string
			err := p.setDiskThrottles(want, func(file, line string) error {
				if !strings.Contains(file, "/blkio/docker/abc/") && !strings.Contains(file, "/kubepods/x/") {
					t.Errorf("wrote %s, outside the process's cgroup", file)
				}
				got = append(got, filepath.Base(file)+": "+line)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("wrote\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
	if err := inTree(t, limitsTree, v2).setDiskThrottles([]DiskThrottle{{Device: "/dev/vda"}}, func(string, string) error { return nil }); err == nil {
		t.Error("a device path instead of major:minor accepted")
	}
	if err := SetDiskThrottles(0, want); err == nil {
		t.Error("pid 0 accepted")
	}
}
