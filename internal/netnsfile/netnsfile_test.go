package netnsfile

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestCreateArgs(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		bundle, id string
		ok         bool
	}{
		// As containerd's runc shim v2 calls it.
		{[]string{"--root", "/run/containerd/runc/capsule", "--log", "/x/log.json", "--log-format", "json", "create",
			"--bundle", "/run/b", "--pid-file", "/run/b/init.pid", "abc"}, "/run/b", "abc", true},
		{[]string{"--systemd-cgroup", "--root=/r", "create", "-b=/b2", "--no-pivot", "id2"}, "/b2", "id2", true},
		{[]string{"run", "id3"}, ".", "id3", true},
		{[]string{"--root", "/r", "start", "abc"}, "", "", false},
		{[]string{"--root", "create", "start", "abc"}, "", "", false}, // "create" is --root's value
		{[]string{"--root", "/r", "delete", "create"}, "", "", false},
		{[]string{"create"}, "", "", false},
	} {
		b, id, ok := CreateArgs(tc.args)
		if ok != tc.ok || (ok && (b != tc.bundle || id != tc.id)) {
			t.Errorf("CreateArgs(%q) = %q, %q, %v; want %q, %q, %v", tc.args, b, id, ok, tc.bundle, tc.id, tc.ok)
		}
	}
}

func TestSetNetworkNamespace(t *testing.T) {
	dir := t.TempDir()
	in := `{"ociVersion":"1.0.2","process":{"rlimits":[{"type":"RLIMIT_NOFILE","hard":18446744073709551615,"soft":1048576}]},` +
		`"linux":{"namespaces":[{"type":"mount"},{"type":"network","path":"/var/run/docker/netns/x"},{"type":"pid"}]}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetNetworkNamespace(dir, "/run/capsule/netns/h/s1"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "18446744073709551615") {
		t.Errorf("a large number was not kept: %s", b)
	}
	var spec struct {
		Linux struct {
			Namespaces []struct{ Type, Path string }
		}
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range spec.Linux.Namespaces {
		got[n.Type] = n.Path
	}
	if len(spec.Linux.Namespaces) != 3 || got["network"] != "/run/capsule/netns/h/s1" || got["mount"] != "" {
		t.Errorf("namespaces after the rewrite: %+v", spec.Linux.Namespaces)
	}
	// Docker's libnetwork-setkey hook goes, other hooks stay.
	withHooks := `{"linux":{"namespaces":[{"type":"network"}]},"hooks":{"prestart":[` +
		`{"path":"/proc/42/exe","args":["libnetwork-setkey","-exec-root=/run/docker","c1","d8289"]},` +
		`{"path":"/usr/bin/nvidia-hook","args":["nvidia-hook","prestart"]}],` +
		`"createRuntime":[{"path":"/proc/42/exe","args":["libnetwork-setkey","c1","d8289"]}]}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(withHooks), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetNetworkNamespace(dir, "/ns"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "config.json"))
	var hooked struct {
		Hooks map[string][]struct{ Args []string }
	}
	if err := json.Unmarshal(b, &hooked); err != nil {
		t.Fatal(err)
	}
	if len(hooked.Hooks) != 1 || len(hooked.Hooks["prestart"]) != 1 || hooked.Hooks["prestart"][0].Args[0] != "nvidia-hook" {
		t.Errorf("hooks after the rewrite: %s", b)
	}
	// A spec without a network namespace gets one.
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"linux":{"namespaces":[{"type":"pid"}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetNetworkNamespace(dir, "/ns"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "config.json")); !strings.Contains(string(b), `{"path":"/ns","type":"network"}`) {
		t.Errorf("no network namespace added: %s", b)
	}
}

func TestMap(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "map")
	if _, err := ReadMap(dir, "c1"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing entry: %v", err)
	}
	if err := WriteMap(dir, "c1", "/ns/a"); err != nil {
		t.Fatal(err)
	}
	if err := WriteMap(dir, "c2", "/ns/b"); err != nil {
		t.Fatal(err)
	}
	if p, err := ReadMap(dir, "c1"); err != nil || p != "/ns/a" {
		t.Fatalf("ReadMap = %q, %v", p, err)
	}
	if m, err := Maps(dir); err != nil || len(m) != 2 || m["c2"] != "/ns/b" {
		t.Fatalf("Maps = %v, %v", m, err)
	}
	if err := RemoveMap(dir, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveMap(dir, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := WriteMap(dir, "../x", "/ns"); err == nil {
		t.Fatal("a container id with a slash was accepted")
	}
}

func TestMakeRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount, unshare)")
	}
	path := filepath.Join(t.TempDir(), "ns", "s1")
	if err := Make(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(path) })
	if !IsNamespace(path) {
		t.Fatal("not a namespace after Make")
	}
	h1, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	self, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if h1.Equal(self) {
		t.Fatal("Make bound the caller's own namespace")
	}
	nh, err := netlink.NewHandleAt(h1)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := nh.LinkByName("lo")
	nh.Close()
	if err != nil || lo.Attrs().Flags&1 == 0 { // net.FlagUp
		t.Fatalf("loopback not up: %v %v", lo, err)
	}
	// Idempotent: the same namespace.
	if err := Make(path); err != nil {
		t.Fatal(err)
	}
	h2, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if !h1.Equal(h2) {
		t.Fatal("a second Make replaced the namespace")
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file left after Remove: %v", err)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	// A stale file (a host reboot took the mount) is replaced.
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if IsNamespace(path) {
		t.Fatal("a plain file taken for a namespace")
	}
	if err := Make(path); err != nil || !IsNamespace(path) {
		t.Fatalf("stale file not replaced: %v", err)
	}
}
