package rescue

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/internal/testenv"
)

// Helpers that build overlay layers the way the kernel and Docker leave
// them on disk.

func mkfile(t *testing.T, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// whiteoutAt makes p an overlay whiteout (char device 0/0): root, or
// Linux >= 5.8 for anyone.
func whiteoutAt(t *testing.T, p string) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
		testenv.Require(t, !errors.Is(err, unix.EPERM), "cannot create an overlay whiteout here: %v", err)
		t.Fatalf("mknod whiteout %s: %v", p, err)
	}
}

// opaqueAt marks directory p opaque (trusted.* needs CAP_SYS_ADMIN; the
// user.* form rootless overlays use works for anyone).
func opaqueAt(t *testing.T, p string) {
	t.Helper()
	mkdir(t, p)
	if err := unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		if err := unix.Setxattr(p, "user.overlay.opaque", []byte("y"), 0); err != nil {
			t.Fatalf("mark %s opaque: %v", p, err)
		}
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMergeOverlaySemantics(t *testing.T) {
	base := t.TempDir()
	img, mid, upper := filepath.Join(base, "img"), filepath.Join(base, "mid"), filepath.Join(base, "upper")
	dst := filepath.Join(base, "dst")
	mkdir(t, dst)

	// Bottom: the image.
	mkfile(t, filepath.Join(img, "bin/busybox"), []byte("busybox"), 0o755)
	symlink(t, "busybox", filepath.Join(img, "bin/sh"))
	mkfile(t, filepath.Join(img, "bin/vi"), []byte("vi"), 0o755)
	mkfile(t, filepath.Join(img, "etc/passwd"), []byte("root:x:0:0\n"), 0o644)
	mkfile(t, filepath.Join(img, "etc/conf.d/a"), []byte("a"), 0o644)
	mkfile(t, filepath.Join(img, "opt/old/x"), []byte("x"), 0o644)
	mkfile(t, filepath.Join(img, "dir-then-file/x"), []byte("x"), 0o644)
	mkfile(t, filepath.Join(img, "file-then-dir"), []byte("f"), 0o644)
	mkfile(t, filepath.Join(img, "hl1"), []byte("linked"), 0o640)
	if err := os.Link(filepath.Join(img, "hl1"), filepath.Join(img, "hl2")); err != nil {
		t.Fatal(err)
	}
	mkfile(t, filepath.Join(img, "usr/bin/su"), []byte("su"), 0o755)
	mkfile(t, filepath.Join(img, "var/lib/kept"), []byte("kept"), 0o600)
	if err := unix.Mkfifo(filepath.Join(img, "var/lib/fifo"), 0o620); err != nil {
		t.Fatal(err)
	}

	// Middle (e.g. Docker's init layer or another image layer).
	opaqueAt(t, filepath.Join(mid, "etc/conf.d"))
	mkfile(t, filepath.Join(mid, "etc/conf.d/b"), []byte("b"), 0o644)
	mkfile(t, filepath.Join(mid, "dir-then-file"), []byte("now a file"), 0o644)
	mkfile(t, filepath.Join(mid, "etc/passwd"), []byte("root:x:0:0\nmid:x:1:1\n"), 0o644)

	// Top: the writable layer.
	whiteoutAt(t, filepath.Join(upper, "bin/vi"))
	whiteoutAt(t, filepath.Join(upper, "opt/old"))
	mkfile(t, filepath.Join(upper, "file-then-dir/child"), []byte("c"), 0o644)
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	mkfile(t, filepath.Join(upper, "root/data.bin"), data, 0o600)
	// A reserved name at the root is reported, not written.
	mkfile(t, filepath.Join(upper, ManifestName), []byte("tenant's"), 0o644)
	old := time.Date(2015, 11, 11, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(upper, "root/data.bin"), old, old); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(filepath.Join(upper, "root/data.bin"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(img, "usr/bin/su"), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	// After the chown (which clears it); os.Chmod would want os.ModeSetuid.
	if err := unix.Chmod(filepath.Join(img, "usr/bin/su"), 0o4755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(upper, "root"), old, old); err != nil {
		t.Fatal(err)
	}

	st, err := Merge(context.Background(), dst, []string{upper, mid, img}, ManifestName)
	if err != nil {
		t.Fatalf("Merge: %v", err)
	}

	// Whiteouts delete, files and subtrees alike.
	for _, gone := range []string{"bin/vi", "opt/old", "opt/old/x", "etc/conf.d/a"} {
		if exists(filepath.Join(dst, gone)) {
			t.Errorf("/%s should be gone", gone)
		}
	}
	if !exists(filepath.Join(dst, "opt")) {
		t.Error("/opt itself should remain")
	}
	// Opaque directory: only the upper layer's contents.
	if got := readString(t, filepath.Join(dst, "etc/conf.d/b")); got != "b" {
		t.Errorf("/etc/conf.d/b = %q", got)
	}
	// Upper layers win, lower ones still show through elsewhere.
	if got := readString(t, filepath.Join(dst, "etc/passwd")); !strings.Contains(got, "mid:") {
		t.Errorf("/etc/passwd = %q, want the middle layer's", got)
	}
	if got := readString(t, filepath.Join(dst, "var/lib/kept")); got != "kept" {
		t.Errorf("/var/lib/kept = %q", got)
	}
	if got := readString(t, filepath.Join(dst, "dir-then-file")); got != "now a file" {
		t.Errorf("/dir-then-file = %q", got)
	}
	if got := readString(t, filepath.Join(dst, "file-then-dir/child")); got != "c" {
		t.Errorf("/file-then-dir/child = %q", got)
	}
	// Data, byte for byte, with its metadata.
	got, err := os.ReadFile(filepath.Join(dst, "root/data.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("/root/data.bin differs (err %v)", err)
	}
	var s unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "root/data.bin"), &s); err != nil {
		t.Fatal(err)
	}
	if s.Mode&0o7777 != 0o600 || s.Mtim.Sec != old.Unix() {
		t.Errorf("/root/data.bin mode %o mtime %d, want 600 and %d", s.Mode&0o7777, s.Mtim.Sec, old.Unix())
	}
	if os.Geteuid() == 0 && (s.Uid != 1234 || s.Gid != 5678) {
		t.Errorf("/root/data.bin owner %d:%d, want 1234:5678", s.Uid, s.Gid)
	}
	if err := unix.Lstat(filepath.Join(dst, "root"), &s); err != nil || s.Mtim.Sec != old.Unix() || s.Mode&0o777 != 0o755 {
		t.Errorf("/root: mode %o mtime %d (err %v), want 755 and the layer's mtime", s.Mode&0o777, s.Mtim.Sec, err)
	}
	if err := unix.Lstat(filepath.Join(dst, "usr/bin/su"), &s); err != nil || s.Mode&0o7777 != 0o4755 {
		t.Errorf("/usr/bin/su mode %o (err %v), want setuid 4755", s.Mode&0o7777, err)
	}
	if err := unix.Lstat(filepath.Join(dst, "var/lib/fifo"), &s); err != nil || s.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("/var/lib/fifo: not a FIFO (err %v)", err)
	}
	// Symlinks are copied as symlinks.
	if l, err := os.Readlink(filepath.Join(dst, "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("/bin/sh -> %q (err %v)", l, err)
	}
	// Hardlinks within a layer stay hardlinks.
	var a, b unix.Stat_t
	if unix.Lstat(filepath.Join(dst, "hl1"), &a) != nil || unix.Lstat(filepath.Join(dst, "hl2"), &b) != nil || a.Ino != b.Ino {
		t.Errorf("hl1/hl2 are no longer one file")
	}
	if exists(filepath.Join(dst, ManifestName)) {
		t.Errorf("reserved name %s was written", ManifestName)
	}
	if st.Skipped != 1 || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], ManifestName) {
		t.Errorf("warnings %q (skipped %d), want one about %s", st.Warnings, st.Skipped, ManifestName)
	}
	if st.Bytes < int64(len(data)) || st.Hardlinks != 1 || st.Symlinks != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestMergeNeverWritesOutside: a tenant controls every name and symlink in
// its layers; none may make the copy write (or read) outside the trees.
func TestMergeNeverWritesOutside(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	mkdir(t, outside)
	secret := filepath.Join(base, "secret")
	mkfile(t, secret, []byte("host secret"), 0o600)
	img, upper, dst := filepath.Join(base, "img"), filepath.Join(base, "upper"), filepath.Join(base, "dst")
	mkdir(t, dst)
	mkdir(t, img)

	// A symlink to a host directory, with files "below" it in layers that
	// lie under it: the symlink wins, nothing goes through it.
	symlink(t, outside, filepath.Join(upper, "etc"))
	mkfile(t, filepath.Join(img, "etc/passwd"), []byte("pwned"), 0o644)
	// A directory over a symlink in a lower layer: a real directory.
	symlink(t, outside, filepath.Join(img, "var"))
	mkfile(t, filepath.Join(upper, "var/pwned"), []byte("pwned"), 0o644)
	// Relative escapes and a symlink to a host file, kept as symlinks.
	symlink(t, "../../../../../../"+outside, filepath.Join(upper, "up"))
	symlink(t, secret, filepath.Join(upper, "root/secret"))
	symlink(t, "/etc", filepath.Join(upper, "root/etc"))

	if _, err := Merge(context.Background(), dst, []string{upper, img}); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("the copy wrote outside its destination: %v", ents)
	}
	if l, err := os.Readlink(filepath.Join(dst, "etc")); err != nil || l != outside {
		t.Errorf("/etc -> %q (err %v), want the symlink itself", l, err)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "var")); err != nil || !fi.IsDir() {
		t.Errorf("/var should be a real directory (err %v)", err)
	}
	if got := readString(t, filepath.Join(dst, "var/pwned")); got != "pwned" {
		t.Errorf("/var/pwned = %q", got)
	}
	if l, err := os.Readlink(filepath.Join(dst, "root/secret")); err != nil || l != secret {
		t.Errorf("/root/secret -> %q (err %v), want the symlink, not the host file", l, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "root/etc")); err != nil || l != "/etc" {
		t.Errorf("/root/etc -> %q (err %v)", l, err)
	}
	// Writing Docker's files through a tenant's /etc symlink must not
	// touch the host either: openPath refuses symlinked components.
	root, err := openDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	src := filepath.Join(base, "hosts")
	mkfile(t, src, []byte("127.0.0.1 x\n"), 0o644)
	var st Stats
	if err := replaceFile(root, src, "etc/hosts", &st); err == nil {
		t.Errorf("replaceFile went through the /etc symlink")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("replaceFile wrote outside its destination: %v", ents)
	}
	if d, err := openPath(root, "etc/x", true); err == nil {
		d.Close()
		t.Errorf("openPath went through the /etc symlink")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("openPath wrote outside its destination: %v", ents)
	}
}

func TestMergeHonoursContext(t *testing.T) {
	base := t.TempDir()
	mkfile(t, filepath.Join(base, "l/a"), []byte("a"), 0o644)
	mkdir(t, filepath.Join(base, "dst"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Merge(ctx, filepath.Join(base, "dst"), []string{filepath.Join(base, "l")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Merge with a cancelled context: %v", err)
	}
}

func TestSplitPathStaysBelow(t *testing.T) {
	for in, want := range map[string]string{
		"/data": "data", "../../etc": "etc", "/a/../../b/./c": "b/c", "": "", "/": "",
	} {
		if got := strings.Join(splitPath(in), "/"); got != want {
			t.Errorf("splitPath(%q) = %q, want %q", in, got, want)
		}
	}
}
