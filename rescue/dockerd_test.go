package rescue_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/capsule-cloud/capsule/internal/mountinfo"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/rescue"
)

// privateDockerd is a dockerd of the test's own, with its own data root,
// so the test can stop it without disturbing anyone.
type privateDockerd struct {
	dir, dataRoot, execRoot, sock string
	cmd                           *exec.Cmd
	done                          chan error
	cli                           *client.Client
}

func startDockerd(t *testing.T, ctx context.Context) *privateDockerd {
	bin, err := exec.LookPath("dockerd")
	testenv.Require(t, err == nil, "no dockerd binary on PATH")
	testenv.Require(t, os.Geteuid() == 0, "dockerd needs root")
	// Short paths: unix sockets (ours and containerd's below exec-root)
	// are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "rsq")
	if err != nil {
		t.Fatal(err)
	}
	d := &privateDockerd{dir: dir, dataRoot: filepath.Join(dir, "data"), execRoot: filepath.Join(dir, "x"), sock: filepath.Join(dir, "d.sock")}
	t.Cleanup(func() { d.cleanup(t) })
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ns := "capsule-rescue-" + strconv.Itoa(os.Getpid())
	d.cmd = exec.Command(bin,
		"--host", "unix://"+d.sock, "--data-root", d.dataRoot, "--exec-root", d.execRoot,
		"--pidfile", filepath.Join(dir, "d.pid"), "--config-file", writeFile(t, filepath.Join(dir, "daemon.json"), "{}"),
		"--storage-driver=overlay2", "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
		"--containerd-namespace", ns, "--containerd-plugins-namespace", ns+"-plugins")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group: a ^C to the test must not stop it before
	// the cleanup does, in order.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	d.done = make(chan error, 1)
	go func() { d.done <- d.cmd.Wait() }()
	d.cli, err = client.NewClientWithOpts(client.WithHost("unix://"+d.sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second) // 2 shared cores
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := d.cli.Ping(pctx)
		cancel()
		if err == nil {
			return d
		}
		select {
		case werr := <-d.done:
			d.done <- werr
			t.Fatalf("dockerd exited: %v\n%s", werr, tail(filepath.Join(dir, "dockerd.log")))
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer: %v\n%s", err, tail(filepath.Join(dir, "dockerd.log")))
		}
	}
}

// stop stops dockerd as an operator would (SIGTERM) and waits for it.
func (d *privateDockerd) stop(t *testing.T) {
	t.Helper()
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("dockerd did not stop on SIGTERM\n%s", tail(filepath.Join(d.dir, "dockerd.log")))
	}
}

func (d *privateDockerd) cleanup(t *testing.T) {
	if d.cli != nil {
		d.cli.Close()
	}
	if d.cmd != nil && d.cmd.Process != nil && d.cmd.ProcessState == nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	// dockerd's own containerd, should it have outlived dockerd.
	if b, err := os.ReadFile(filepath.Join(d.execRoot, "containerd", "containerd.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			if syscall.Kill(pid, 0) == nil {
				_ = syscall.Kill(pid, syscall.SIGTERM)
				time.Sleep(2 * time.Second)
			}
		}
	}
	// Overlay, shm and netns mounts left under our directory: deepest
	// first, lazily, before removing it.
	for _, m := range mountsUnder(d.dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Logf("umount %s: %v", m, err)
		}
	}
	if err := os.RemoveAll(d.dir); err != nil {
		t.Errorf("remove %s: %v", d.dir, err)
	}
}

func mountsUnder(dir string) []string {
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range mounts {
		if strings.HasPrefix(m.MountPoint, dir+"/") {
			out = append(out, m.MountPoint)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func writeFile(t *testing.T, p, s string) string {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tail(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func execIn(ctx context.Context, cli *client.Client, ctr string, cmd ...string) (string, error) {
	ex, err := cli.ContainerExecCreate(ctx, ctr, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", fmt.Errorf("exec create: %w", err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", fmt.Errorf("exec attach: %w", err)
	}
	defer att.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, att.Reader); err != nil {
		return "", fmt.Errorf("exec output: %w", err)
	}
	ins, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return "", fmt.Errorf("exec inspect: %w", err)
	}
	if ins.ExitCode != 0 {
		return buf.String(), fmt.Errorf("%v exited %d: %s", cmd, ins.ExitCode, buf.String())
	}
	return buf.String(), nil
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestRescueWithDockerdStopped is the acceptance test of issue 7: with
// dockerd stopped, rescue-data recovers a file written inside a server,
// byte for byte.
func TestRescueWithDockerdStopped(t *testing.T) {
	img := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := startDockerd(t, ctx)

	rc, err := d.cli.ImagePull(ctx, img, image.PullOptions{})
	if err != nil {
		t.Fatalf("pull %s: %v", img, err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil {
		t.Fatalf("pull %s: %v", img, err)
	}

	id := uuid.NewString()
	name := "rescue-me-" + id[:8]
	labels := map[string]string{rescue.LabelInstance: id, rescue.LabelName: name, "capsule.managed": "true"}
	// Its sandbox carries the same instance label: the rescue must pick
	// the workload.
	sbLabels := map[string]string{rescue.LabelInstance: id, rescue.LabelName: name, rescue.LabelRole: rescue.RoleSandbox}
	if _, err := d.cli.ContainerCreate(ctx, &container.Config{Image: img, Labels: sbLabels, Cmd: []string{"sleep", "inf"}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "capsule-"+id+"-sandbox"); err != nil {
		t.Fatalf("create sandbox: %v", err)
	}
	c, err := d.cli.ContainerCreate(ctx, &container.Config{Image: img, Labels: labels},
		&container.HostConfig{NetworkMode: "none", Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: "rescuevol", Target: "/data"}}},
		nil, nil, "capsule-"+id)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := d.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start: %v", err)
	}
	if _, err := execIn(ctx, d.cli, c.ID, "ls", "/bin/vi", "/bin/busybox", "/usr/sbin"); err != nil {
		t.Fatalf("the image lacks what the test deletes: %v", err)
	}
	hostHad := map[string]bool{}
	for _, p := range []string{"/etc/sbin", "/etc/bin"} {
		_, err := os.Lstat(p)
		hostHad[p] = err == nil
	}
	// A 5 MB file, a deleted image file (a whiteout), data in a volume,
	// and an image directory (/usr) replaced by a symlink to /etc: its
	// image files must not land in the host's /etc.
	out, err := execIn(ctx, d.cli, c.ID, "sh", "-c",
		"head -c 5242880 /dev/urandom > /root/blob && sha256sum /root/blob && rm /bin/vi && "+
			"echo vol > /data/v.txt && ln -s /etc /root/etclink && rm -rf /usr && ln -s /etc /usr && sync")
	if err != nil {
		t.Fatalf("write inside the server: %v", err)
	}
	want := strings.Fields(out)[0]

	d.stop(t)
	if _, err := os.Stat(d.sock); err == nil {
		if _, err := d.cli.Ping(ctx); err == nil {
			t.Fatal("dockerd still answers after SIGTERM")
		}
	}

	// The package.
	to := filepath.Join(d.dir, "out1")
	m, err := rescue.Rescue(ctx, rescue.Options{DataRoot: d.dataRoot, Server: id, To: to})
	if err != nil {
		t.Fatalf("Rescue: %v", err)
	}
	if got := fileSHA(t, filepath.Join(to, "root/blob")); got != want {
		t.Errorf("rescued /root/blob sha256 %s, want %s", got, want)
	}
	if fi, err := os.Stat(filepath.Join(to, "root/blob")); err != nil || fi.Size() != 5<<20 {
		t.Errorf("rescued /root/blob: %v, %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(to, "bin/vi")); err == nil {
		t.Error("/bin/vi was deleted inside the server but is in the rescue")
	}
	for _, p := range []string{"bin/busybox", "bin/sh", "bin/ls", "etc/passwd", "sbin/capsule-init"} {
		if _, err := os.Lstat(filepath.Join(to, p)); err != nil {
			t.Errorf("image file /%s missing from the rescue: %v", p, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(to, "usr")); err != nil || l != "/etc" {
		t.Errorf("/usr -> %q (%v), want the tenant's symlink", l, err)
	}
	if l, err := os.Readlink(filepath.Join(to, "root/etclink")); err != nil || l != "/etc" {
		t.Errorf("/root/etclink -> %q (%v)", l, err)
	}
	for p, had := range hostHad {
		if _, err := os.Lstat(p); (err == nil) != had {
			t.Errorf("the rescue changed the host's %s", p)
		}
	}
	if b, err := os.ReadFile(filepath.Join(to, rescue.VolumesDir, "data/v.txt")); err != nil || string(b) != "vol\n" {
		t.Errorf("volume file: %q, %v", b, err)
	}
	if m.ContainerID != c.ID || m.Server != id || m.Name != name || len(m.Volumes) != 1 || m.Volumes[0].Name != "rescuevol" ||
		len(m.Layers) < 3 || m.Layers[0].Role != "writable" || m.BytesCopied < 5<<20 {
		t.Errorf("manifest %+v", m)
	}

	// The CLI, as an operator runs it: by name, from --list.
	bin := filepath.Join(d.dir, "capsule")
	// "go test" puts its own GOROOT/bin first on the PATH of the tests.
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/capsule")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build capsule: %v\n%s", err, out)
	}
	lout, err := exec.CommandContext(ctx, bin, "rescue-data", "--list", "--data-root", d.dataRoot).CombinedOutput()
	if err != nil || !strings.Contains(string(lout), id) || !strings.Contains(string(lout), name) || strings.Count(string(lout), id) != 1 {
		t.Fatalf("rescue-data --list: %v\n%s", err, lout)
	}
	to2 := filepath.Join(d.dir, "out2")
	cout, err := exec.CommandContext(ctx, bin, "rescue-data", name, "--to", to2, "--data-root", d.dataRoot).CombinedOutput()
	if err != nil {
		t.Fatalf("capsule rescue-data: %v\n%s", err, cout)
	}
	if got := fileSHA(t, filepath.Join(to2, "root/blob")); got != want {
		t.Errorf("CLI-rescued /root/blob sha256 %s, want %s", got, want)
	}
	if mm, err := rescue.ReadManifest(to2); err != nil || mm.ContainerID != c.ID {
		t.Errorf("CLI manifest: %+v, %v", mm, err)
	}
	t.Logf("capsule rescue-data: %s", cout)
}
