package docker

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestLXCFSView: the mounts follow what this LXCFS provides, and an
// LXCFS that does not answer (no meminfo, or one that cannot be read) is
// refused rather than mounted into servers.
func TestLXCFSView(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lxcfsView(dir); err == nil {
		t.Fatal("an empty directory taken for an LXCFS")
	}
	write("proc/meminfo")
	write("proc/loadavg")
	write(sysCPUOnline)
	v, err := lxcfsView(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range v.mounts {
		if !m.ReadOnly || m.Type != "bind" || m.Source != filepath.Join(dir, m.Target) {
			t.Errorf("mount %+v: want a read-only bind of the same file under %s", m, dir)
		}
		got = append(got, m.Target)
	}
	want := []string{"/proc/loadavg", "/proc/meminfo", "/sys/devices/system/cpu/online"}
	if !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}

	// A meminfo that cannot be read (here a directory; a dead LXCFS
	// gives ENOTCONN) is no LXCFS.
	bad := t.TempDir()
	if err := os.MkdirAll(filepath.Join(bad, "proc", "meminfo"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := lxcfsView(bad); err == nil {
		t.Error("an unreadable meminfo taken for an LXCFS")
	}
}
