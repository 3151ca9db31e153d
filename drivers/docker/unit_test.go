package docker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionInt(t *testing.T) {
	for in, want := range map[string]int{
		"28.5.2":         28005002,
		"20.10.24+dfsg1": 20010024,
		"v1.2":           1002000,
		"19.03.5-ce":     19003005,
		"":               0,
	} {
		if got := VersionInt(in); got != want {
			t.Errorf("VersionInt(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestCleanConsole(t *testing.T) {
	in := "\x1b[1;32mok\x1b[0m\r\nbell\a tab\there\x00\nbad\xffutf8\n"
	want := "ok\nbell tab\there\nbad\uFFFDutf8\n"
	if got := CleanConsole(in); got != want {
		t.Errorf("CleanConsole = %q, want %q", got, want)
	}
}

func TestLastLines(t *testing.T) {
	s := "a\nb\nc\n"
	for n, want := range map[int]string{0: "", 1: "c\n", 2: "b\nc\n", 5: s} {
		if got := lastLines(s, n); got != want {
			t.Errorf("lastLines(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDrainPull(t *testing.T) {
	ok := `{"status":"Pulling"}` + "\n" + `{"status":"Done"}`
	if err := drainPull(strings.NewReader(ok)); err != nil {
		t.Errorf("ok stream: %v", err)
	}
	bad := `{"status":"Pulling"}{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}`
	if err := drainPull(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("error stream: %v", err)
	}
}

// TestCgroupParsing runs the v1 (co-mounted, namespaced root) and v2
// lookups on a synthetic cgroup tree.
func TestCgroupParsing(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("v1/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "150000\n")
	write("v1/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
	write("v1/memory/abc/memory.limit_in_bytes", "9223372036854771712\n")
	write("v1/pids/docker/abc/pids.max", "max\n")
	write("v2/sys/fs/cgroup/kubepods/x/cgroup.controllers", "cpu memory pids\n")
	write("v2/sys/fs/cgroup/kubepods/x/cpu.max", "max 100000\n")
	write("v2/sys/fs/cgroup/kubepods/x/memory.max", "1048576\n")
	write("v2/sys/fs/cgroup/kubepods/x/pids.max", "42\n")
	write("unified/cgroup.controllers", "\n")

	procs := []procCgroup{
		{controllers: []string{"cpu", "cpuacct"}, path: "/docker/abc"},
		{controllers: []string{"memory"}, path: "/docker/abc"},
		{controllers: []string{"pids"}, path: "/docker/abc"},
		{path: "/"},
	}
	mounts := []cgroupMount{
		{root: "/", mountpoint: filepath.Join(dir, "v1/cpu,cpuacct"), controllers: []string{"rw", "cpu", "cpuacct"}},
		{root: "/docker", mountpoint: filepath.Join(dir, "v1/memory"), controllers: []string{"rw", "memory"}},
		{root: "/", mountpoint: filepath.Join(dir, "v1/pids"), controllers: []string{"rw", "pids"}},
		{v2: true, root: "/", mountpoint: filepath.Join(dir, "unified")},
	}
	got, _, err := controllerDir(procs, mounts, "memory")
	if err != nil || got != filepath.Join(dir, "v1/memory/abc") {
		t.Errorf("memory dir = %q, %v", got, err)
	}
	got, v2, err := controllerDir(procs, mounts, "cpu")
	if err != nil || v2 || got != filepath.Join(dir, "v1/cpu,cpuacct/docker/abc") {
		t.Errorf("cpu dir = %q, %v, %v", got, v2, err)
	}

	procs2 := []procCgroup{{path: "/kubepods/x"}}
	mounts2 := []cgroupMount{{v2: true, root: "/", mountpoint: filepath.Join(dir, "v2/sys/fs/cgroup")}}
	got, v2, err = controllerDir(procs2, mounts2, "pids")
	if err != nil || !v2 || got != filepath.Join(dir, "v2/sys/fs/cgroup/kubepods/x") {
		t.Errorf("v2 pids dir = %q, %v, %v", got, v2, err)
	}
	if n, err := readLimit(filepath.Join(got, "pids.max")); err != nil || n != 42 {
		t.Errorf("pids.max = %d, %v", n, err)
	}
	if _, _, err := controllerDir([]procCgroup{{path: "/"}}, mounts, "cpu"); err == nil {
		t.Error("controller-less unified mount accepted for cpu")
	}
	if got := unescapeMount(`/a\040b`); got != "/a b" {
		t.Errorf("unescapeMount = %q", got)
	}
}
