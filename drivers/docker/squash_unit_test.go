package docker

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	"golang.org/x/sys/unix"
)

// TestWriteSquash: the union of overlay2 layer directories (top first) by
// overlay's rules. Whiteouts (0/0 character devices) and opaque
// directories need root (mknod, trusted xattrs).
func TestWriteSquash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: overlay whiteouts are device nodes, opaque markers trusted xattrs")
	}
	root := t.TempDir()
	top, mid, low := filepath.Join(root, "top"), filepath.Join(root, "mid"), filepath.Join(root, "low")
	file := func(p, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := func(p string, opaque bool) {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if opaque {
			if err := unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				t.Skipf("cannot mark a directory opaque here: %v", err)
			}
		}
	}
	whiteout := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, 0); err != nil {
			t.Fatal(err)
		}
	}
	// low: the oldest migration layer.
	file(low+"/root/old", "deleted above")
	file(low+"/root/kept", "low")
	file(low+"/root/shadowed", "low")
	dir(low+"/root/gone/deep", false)
	file(low+"/root/gone/deep/f", "under a whiteout above")
	whiteout(low + "/etc/group") // a base file deleted
	file(low+"/root/sub/a", "low a")
	// mid: the delta over it.
	whiteout(mid + "/root/old")
	file(mid+"/root/shadowed", "mid")
	whiteout(mid + "/root/gone")
	dir(mid+"/root/sub", true) // replaced: low's sub/a hidden
	file(mid+"/root/sub/b", "mid b")
	// top: the container's writable layer.
	file(top+"/root/shadowed", "top")
	dir(top+"/root/gone", false) // made again over mid's whiteout: opaque in the union
	file(top+"/root/gone/new", "new")
	dir(top+"/etc", false)
	file(top+"/root/sub/c", "top c")

	var buf bytes.Buffer
	var fromTop []string
	if _, err := writeSquash(&buf, []string{top, mid, low}, func(rel string, _ bool) { fromTop = append(fromTop, rel) }); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[strings.TrimSuffix(h.Name, "/")] = string(b)
	}
	want := map[string]string{
		"root": "", "etc": "", "etc/.wh.group": "",
		"root/.wh.old": "", "root/kept": "low", "root/shadowed": "top",
		"root/gone": "", "root/gone/.wh..wh..opq": "", "root/gone/new": "new",
		"root/sub": "", "root/sub/.wh..wh..opq": "", "root/sub/b": "mid b", "root/sub/c": "top c",
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: got %q (present %v), want %q", k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected entry %s", k)
		}
	}
	slices.Sort(fromTop)
	if wantTop := []string{"etc", "root", "root/gone", "root/gone/new", "root/shadowed", "root/sub", "root/sub/c"}; !slices.Equal(fromTop, wantTop) {
		t.Errorf("paths from the top layer %v, want %v", fromTop, wantTop)
	}
}

// TestBaseHistory: the original layers' history from docker history
// (newest first): sized entries are layers, a "#(nop)" one without size
// is not, and a history that cannot match the layers is replaced.
func TestBaseHistory(t *testing.T) {
	items := []image.HistoryResponseItem{
		{CreatedBy: `/bin/sh -c #(nop)  CMD ["sh"]`, Created: 2},
		{CreatedBy: "/bin/sh -c #(nop) ADD file:abc in / ", Size: 4000, Created: 1},
	}
	h := baseHistory(items, 1)
	if len(h) != 2 || h[0]["empty_layer"] != nil || h[1]["empty_layer"] != true || h[0]["created_by"] != items[1].CreatedBy {
		t.Errorf("baseHistory = %v", h)
	}
	// An empty layer that is a RUN (no size) still counts as one.
	items = append([]image.HistoryResponseItem{{CreatedBy: "/bin/sh -c true"}}, items...)
	if h := baseHistory(items, 2); len(h) != 3 || h[2]["empty_layer"] != nil || h[1]["empty_layer"] != true {
		t.Errorf("baseHistory with a RUN = %v", h)
	}
	if h := baseHistory(items[2:], 3); len(h) != 3 || h[0]["created_by"] == items[2].CreatedBy {
		t.Errorf("baseHistory that cannot match = %v", h)
	}
}

// TestWriteEntryNotThroughSwappedLink: a running server that swaps a
// directory of its writable layer for a symbolic link after the walk
// does not get the host's file under it read into its image.
func TestWriteEntryNotThroughSwappedLink(t *testing.T) {
	root := t.TempDir()
	upper, host := filepath.Join(root, "upper"), filepath.Join(root, "host")
	for _, d := range []string{upper + "/d", host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(upper+"/d/f", []byte("tenant"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(host+"/f", []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	var entries []deltaEntry
	if err := walkUpper(upper, func(rel, full string, st fileStat) error {
		entries = append(entries, deltaEntry{rel: rel, full: full, st: st})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The swap, after the walk.
	if err := os.Rename(upper+"/d", upper+"/d.old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, upper+"/d"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if _, err := writeEntry(tw, e, map[uint64]string{}); err != nil {
			t.Fatalf("%s: %v", e.rel, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("host secret")) {
		t.Fatal("the host's file was read through the swapped link")
	}
}
