package mountinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRead(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mountinfo")
	table := `27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw
42 27 254:16 / /var/lib/docker rw,relatime shared:1 - xfs /dev/vdb rw
43 27 0:45 / /var/lib/docker/tmpfs rw - tmpfs tmpfs rw
32 31 0:29 /docker /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 0:51 / /mnt/with\040space rw - tmpfs none rw
not a mount line
51 27 8:3 / /srv rw - ext4 /dev/sda3 rw
`
	if err := os.WriteFile(file, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := Read(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 7 {
		t.Fatalf("%d mounts: %+v", len(ms), ms)
	}
	cg := ms[3]
	if cg.Device != "0:29" || cg.Root != "/docker" || cg.MountPoint != "/sys/fs/cgroup/cpu,cpuacct" || cg.FSType != "cgroup" ||
		cg.Source != "cgroup" || len(cg.Super) != 3 || cg.Super[1] != "cpu" || cg.Super[2] != "cpuacct" {
		t.Errorf("cgroup mount = %+v", cg)
	}
	if ms[5].MountPoint != "/mnt/with space" {
		t.Errorf("escaped mount point = %q", ms[5].MountPoint)
	}
	for path, want := range map[string]string{
		"/var/lib/docker/x": "/var/lib/docker",
		"/var/lib/dockerx":  "/", // a prefix of a name is not a parent
		"/var/lib/docker":   "/var/lib/docker",
		"/srv":              "/srv",
	} {
		if m, ok := Holding(ms, path); !ok || m.MountPoint != want {
			t.Errorf("Holding(%s) = %+v, %v; want %s", path, m, ok, want)
		}
	}
	if _, ok := Holding(nil, "/x"); ok {
		t.Error("a mount holds /x in an empty table")
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file read")
	}
	// This process's own table parses and holds its root.
	self, err := Read(Self)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Holding(self, "/"); !ok {
		t.Errorf("no mount holds / in %s", Self)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/tab\011`: "/tab\t", `/bad\9`: `/bad\9`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
