package volume

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// testContainer runs a container on the test dockerd and returns a docker
// command runner for it and its init's host PID.
func testContainer(t *testing.T) (func(args ...string) (string, error), string) {
	t.Helper()
	host := testenv.DockerHost(t)
	img := testenv.Image(t)
	_, err := exec.LookPath("nsenter")
	testenv.Require(t, err == nil, "needs nsenter (util-linux)")
	docker := func(args ...string) (string, error) {
		out, err := exec.Command("docker", append([]string{"-H", host}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	name := "capsule-volume-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if out, err := docker("run", "-d", "--name", name, img, "sleep", "3600"); err != nil {
		t.Fatalf("docker run: %v: %s", err, out)
	}
	t.Cleanup(func() { _, _ = docker("rm", "-f", name) })
	return docker, name
}

func initPID(t *testing.T, docker func(args ...string) (string, error), name string) (int, string) {
	t.Helper()
	out, err := docker("inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}", name)
	if err != nil {
		t.Fatalf("docker inspect: %v: %s", err, out)
	}
	pid, started, _ := strings.Cut(out, " ")
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		t.Fatalf("container pid %q", pid)
	}
	return n, started
}

func TestLiveAttachDetachKeepsTheServerRunning(t *testing.T) {
	needRoot(t)
	docker, name := testContainer(t)
	m := newManager(t)
	ctx := context.Background()
	pid, started := initPID(t, docker, name)
	if err := m.Create(ctx, Local, "live", 1, Source{}); err != nil {
		t.Fatal(err)
	}
	img, _ := m.ImagePath(Local, "live")

	if err := m.Attach(ctx, Local, "live", pid, "/mnt/live"); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(ctx, Local, "live", pid, "/mnt/live"); err != nil {
		t.Fatalf("a redelivered attach: %v", err)
	}
	if ok, err := m.AttachedIn("live", pid, "/mnt/live"); err != nil || !ok {
		t.Fatalf("AttachedIn after attach: %v %v", ok, err)
	}
	if out, err := docker("exec", name, "sh", "-c", "dd if=/dev/urandom of=/mnt/live/data bs=1M count=8 2>/dev/null && md5sum /mnt/live/data && grep ' /mnt/live ' /proc/mounts"); err != nil {
		t.Fatalf("write in the server: %v: %s", err, out)
	} else if !strings.Contains(out, "nosuid,nodev") {
		t.Errorf("the server's mount is not nosuid,nodev: %s", out)
	}
	sum, _ := docker("exec", name, "md5sum", "/mnt/live/data")

	// Busy: a process of the server sits in the volume.
	if out, err := docker("exec", "-d", name, "sh", "-c", "cd /mnt/live && exec sleep 300"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for {
		err = m.Detach(ctx, "live", pid, "/mnt/live")
		if err != nil || time.Now().After(deadline) {
			break
		}
		// the sleeper may not have reached the directory yet: attach again
		if err := m.Attach(ctx, Local, "live", pid, "/mnt/live"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "/mnt/live") {
		t.Fatalf("detach of a busy volume: %v, want a Conflict naming /mnt/live", err)
	}
	if ok, _ := m.AttachedIn("live", pid, "/mnt/live"); !ok {
		t.Fatal("a refused detach detached the volume")
	}
	if out, err := docker("exec", name, "sh", "-c", "for p in /proc/[0-9]*; do [ \"$(readlink $p/cwd)\" = /mnt/live ] && kill ${p#/proc/}; done; true"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		err = m.Detach(ctx, "live", pid, "/mnt/live")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("detach: %v", err)
	}
	if ok, _ := m.AttachedIn("live", pid, "/mnt/live"); ok {
		t.Fatal("still attached after detach")
	}
	if err := m.Detach(ctx, "live", pid, "/mnt/live"); err != nil {
		t.Errorf("a redelivered detach: %v", err)
	}
	if out, _ := docker("exec", name, "sh", "-c", "grep ' /mnt/live ' /proc/mounts; ls /mnt/live"); strings.Contains(out, "data") {
		t.Errorf("the server still sees the volume: %s", out)
	}
	// The host mount kept the data.
	if b, err := os.ReadFile(filepath.Join(m.MountPoint("live"), "data")); err != nil || len(b) != 8<<20 {
		t.Errorf("data on the host: %d bytes, %v", len(b), err)
	}

	// Re-attach at another path: same data, same server.
	if err := m.Attach(ctx, Local, "live", pid, "/srv/again/live"); err != nil {
		t.Fatal(err)
	}
	if again, _ := docker("exec", name, "md5sum", "/srv/again/live/data"); strings.Fields(again)[0] != strings.Fields(sum)[0] {
		t.Errorf("checksum after re-attach %q, want %q", again, sum)
	}
	if pid2, started2 := initPID(t, docker, name); pid2 != pid || started2 != started {
		t.Errorf("the server restarted: pid %d→%d, started %s→%s", pid, pid2, started, started2)
	}
	if err := m.Detach(ctx, "live", pid, "/srv/again/live"); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(ctx, "live"); err != nil {
		t.Fatal(err)
	}
	if devs := loopDevicesLeft(t, img); len(devs) > 0 {
		t.Errorf("loop devices left: %v", devs)
	}
	if err := m.Delete(ctx, Local, "live"); err != nil {
		t.Fatal(err)
	}
}

func TestAttachStaysInsideTheServer(t *testing.T) {
	needRoot(t)
	docker, name := testContainer(t)
	m := newManager(t)
	ctx := context.Background()
	pid, _ := initPID(t, docker, name)
	if err := m.Create(ctx, Local, "esc", 1, Source{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = m.Unmount(ctx, "esc")
		_ = m.Delete(ctx, Local, "esc")
	}()
	// A tenant's symlink pointing at an absolute path must resolve in
	// the server's root, not the host's.
	hostDir := t.TempDir()
	if out, err := docker("exec", name, "sh", "-c", "mkdir -p /mnt "+hostDir+" && ln -s "+hostDir+" /mnt/evil"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := m.Attach(ctx, Local, "esc", pid, "/mnt/evil/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("attach through a symlink made %s on the host: %v", filepath.Join(hostDir, "x"), err)
	}
	if out, err := docker("exec", name, "sh", "-c", "grep -c ' "+hostDir+"/x ' /proc/mounts"); err != nil || out != "1" {
		t.Errorf("the volume is not at %s/x inside the server: %v %s", hostDir, err, out)
	}
	if err := m.Detach(ctx, "esc", pid, "/mnt/evil/x"); err != nil {
		t.Fatal(err)
	}
	if out, _ := docker("exec", name, "sh", "-c", "grep -c ' "+hostDir+"/x ' /proc/mounts"); out != "0" {
		t.Errorf("still mounted after detach: %s", out)
	}
}
