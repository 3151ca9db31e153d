package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/volume"
)

// volumeEnv is an agent on the test dockerd with volumes in the test's
// own directories.
func volumeEnv(t *testing.T, ctx context.Context) (*env, *docker.Driver, *volume.Manager, string) {
	t.Helper()
	_, err := exec.LookPath("mkfs.ext4")
	testenv.Require(t, os.Geteuid() == 0 && err == nil, "needs root and mkfs.ext4")
	host := testenv.DockerHost(t)
	drv, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, Logger: testLogger(t),
		SandboxImage: testenv.Image(t), NetworkMode: testenv.NetworkMode()})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { drv.Close() })
	drv.Client().NegotiateAPIVersion(ctx)
	dir := t.TempDir()
	vols, err := volume.New(volume.Config{LocalDir: filepath.Join(dir, "local"), MountDir: filepath.Join(dir, "mnt")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	id := "agvol-" + uuid.NewString()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := drv.Destroy(cctx, id); err != nil {
			t.Errorf("cleanup: destroy %s: %v", id, err)
		}
		if ids, _ := vols.HostMounted(); len(ids) > 0 {
			t.Errorf("volumes left mounted on the host: %v", ids)
			for _, v := range ids {
				_ = vols.Unmount(cctx, v)
			}
		}
	})
	cfg := testConfig()
	cfg.StopTimeout = 5 * time.Second
	e := newEnv(t, drv, cfg, WithVolumes(vols, nil))
	e.serveConductor()
	e.start()
	return e, drv, vols, id
}

// call hands one message to the agent as the bus would and returns its
// volume report.
func (e *env) volumeCall(kind string, body any) protocol.VolumeReport {
	e.t.Helper()
	m, err := bus.NewMessage(kind, body)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := e.agent.Handle(context.Background(), m)
	if err != nil {
		e.t.Fatalf("%s: %v", kind, err)
	}
	return out.(protocol.VolumeReport)
}

func dockerExec(t *testing.T, id string, script string) (string, error) {
	t.Helper()
	out, err := exec.Command("docker", "-H", testenv.DockerHost(t), "exec", docker.ContainerName(id), "sh", "-c", script).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func containerPID(t *testing.T, drv *docker.Driver, id string) int {
	t.Helper()
	pid, err := drv.InitPID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// A volume attached to a running server through the agent appears live
// (same PID 1), comes back after a stop/start and after the agent's
// restart (reconcile), and leaves nothing behind once detached and
// deleted.
func TestVolumeAttachSurvivesRestartsAndReconcile(t *testing.T) {
	image := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e, drv, vols, id := volumeEnv(t, ctx)

	e.build(id, "req-v1", image)
	if r := e.waitReport(id, 1, 2*time.Minute); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	vol := protocol.VolumeSpec{ID: "vol-" + uuid.NewString()[:8], ProjectID: "proj-1", SizeGB: 1, Backend: protocol.BackendLocal, Host: testHost}
	if r := e.volumeCall(protocol.KindVolumeCreate, protocol.VolumeCreate{RequestID: "c1", Volume: vol}); !r.OK || r.SizeGB != 1 {
		t.Fatalf("create: %+v", r)
	}
	// Redelivered create: done already.
	if r := e.volumeCall(protocol.KindVolumeCreate, protocol.VolumeCreate{RequestID: "c1", Volume: vol}); !r.OK {
		t.Fatalf("second create: %+v", r)
	}
	mount := protocol.VolumeMount{AttachmentID: "att-1", Volume: vol, MountPath: "/mnt/" + vol.ID}
	pid := containerPID(t, drv, id)
	r := e.volumeCall(protocol.KindVolumeAttach, protocol.VolumeAttach{RequestID: "a1", InstanceID: id, Mount: mount})
	if !r.OK || !r.Live || r.AttachmentID != "att-1" || r.Host != testHost {
		t.Fatalf("attach: %+v", r)
	}
	if r := e.volumeCall(protocol.KindVolumeAttach, protocol.VolumeAttach{RequestID: "a1", InstanceID: id, Mount: mount}); !r.OK {
		t.Fatalf("redelivered attach: %+v", r)
	}
	if out, err := dockerExec(t, id, "echo kept > "+mount.MountPath+"/f && cat "+mount.MountPath+"/f"); err != nil || out != "kept" {
		t.Fatalf("write in the server: %v %s", err, out)
	}
	if p := containerPID(t, drv, id); p != pid {
		t.Fatalf("the server restarted during attach: pid %d -> %d", pid, p)
	}

	// Stop and start: a new mount namespace gets the volume again.
	e.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: id, Volumes: []protocol.VolumeMount{mount}},
		VMState: lifecycle.Active})
	e.action(id, "stop-1", lifecycle.ActStop)
	e.waitReport(id, 2, time.Minute)
	e.action(id, "start-1", lifecycle.ActStart)
	if r := e.waitReport(id, 3, time.Minute); !r.OK {
		t.Fatalf("start: %+v", r)
	}
	if out, err := dockerExec(t, id, "cat "+mount.MountPath+"/f"); err != nil || out != "kept" {
		t.Fatalf("after stop/start the server reads %q (%v)", out, err)
	}
	// Rebuild: a new disk, the same volume mounted with its data.
	e.publish(protocol.KindRebuildInstance, protocol.RebuildInstance{RequestID: "rebuild-1", Start: true,
		Spec: protocol.InstanceSpec{ID: id, Name: "vm", ImageRef: image, VCPUs: 1, MemoryMB: 256, Volumes: []protocol.VolumeMount{mount}}})
	if r := e.waitReport(id, 4, 2*time.Minute); !r.OK || r.Action != lifecycle.ActRebuild {
		t.Fatalf("rebuild: %+v", r)
	}
	if out, err := dockerExec(t, id, "cat "+mount.MountPath+"/f"); err != nil || out != "kept" {
		t.Fatalf("after a rebuild the server reads %q (%v)", out, err)
	}

	// Agent restart, and the mount lost meanwhile: reconcile puts it back.
	e.stop()
	pid = containerPID(t, drv, id)
	if err := vols.Detach(ctx, vol.ID, pid, mount.MountPath); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, drv, e.cfg, WithVolumes(vols, nil))
	e2.cond.setExpected(protocol.ExpectedInstance{Spec: protocol.InstanceSpec{ID: id, Volumes: []protocol.VolumeMount{mount}},
		VMState: lifecycle.Active})
	e2.serveConductor()
	e2.start()
	waitFor(t, 20*time.Second, "reconcile to mount the volume again", func() bool {
		ok, _ := vols.AttachedIn(vol.ID, pid, mount.MountPath)
		return ok
	})
	// A mount of the volume the cloud does not list is removed.
	if err := vols.Attach(ctx, volume.Local, vol.ID, pid, "/srv/stray"); err != nil {
		t.Fatal(err)
	}
	if err := e2.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if out, _ := dockerExec(t, id, "grep -c ' /srv/stray ' /proc/mounts"); out != "0" {
		t.Errorf("stray mount left by reconcile: %s", out)
	}
	if ok, _ := vols.AttachedIn(vol.ID, pid, mount.MountPath); !ok {
		t.Error("reconcile removed the attached mount")
	}

	// Busy: refused with a conflict naming the path, the volume stays.
	if out, err := exec.Command("docker", "-H", testenv.DockerHost(t), "exec", "-d", docker.ContainerName(id), "sh", "-c",
		"cd "+mount.MountPath+" && exec sleep 120").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// docker exec -d answers before the sleeper is in the mount: a detach
	// sent earlier would succeed, and the sleeper would then sit in the
	// empty mount point, never making the volume busy.
	waitFor(t, time.Minute, "the sleeper's working directory in the volume", func() bool {
		out, _ := dockerExec(t, id, "for p in /proc/[0-9]*; do [ \"$(readlink $p/cwd)\" = "+mount.MountPath+" ] && echo sleeper-in-volume; done; true")
		return strings.Contains(out, "sleeper-in-volume")
	})
	busy := e2.volumeCall(protocol.KindVolumeDetach, protocol.VolumeDetach{RequestID: "d0", InstanceID: id, Mount: mount})
	if busy.ErrorKind != "Conflict" || !strings.Contains(busy.ErrorMessage, mount.MountPath) {
		t.Errorf("busy detach: %+v", busy)
	}
	if _, err := dockerExec(t, id, "for p in /proc/[0-9]*; do [ \"$(readlink $p/cwd)\" = "+mount.MountPath+" ] && kill ${p#/proc/}; done; true"); err != nil {
		t.Fatal(err)
	}
	var det protocol.VolumeReport
	waitFor(t, 10*time.Second, "the detach", func() bool {
		det = e2.volumeCall(protocol.KindVolumeDetach, protocol.VolumeDetach{RequestID: "d1", InstanceID: id, Mount: mount})
		return det.OK
	})
	if !det.Live {
		t.Errorf("detach of a running server's volume not live: %+v", det)
	}
	if out, _ := dockerExec(t, id, "grep -c ' "+mount.MountPath+" ' /proc/mounts"); out != "0" {
		t.Errorf("still mounted in the server after detach: %s", out)
	}
	if ids, _ := vols.HostMounted(); len(ids) > 0 {
		t.Errorf("still mounted on the host after detach: %v", ids)
	}
	img, _ := vols.ImagePath(volume.Local, vol.ID)
	if out, _ := exec.Command("losetup", "-j", img).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("loop device left: %s", out)
	}
	if p := containerPID(t, drv, id); p != pid {
		t.Errorf("the server restarted: pid %d -> %d", pid, p)
	}
	if r := e2.volumeCall(protocol.KindVolumeDetach, protocol.VolumeDetach{RequestID: "d1", InstanceID: id, Mount: mount}); !r.OK {
		t.Errorf("redelivered detach: %+v", r)
	}
	if r := e2.volumeCall(protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: "x1", Volume: vol}); !r.OK {
		t.Fatalf("delete: %+v", r)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("image left after delete: %v", err)
	}
	if r := e2.volumeCall(protocol.KindVolumeDelete, protocol.VolumeDelete{RequestID: "x1", Volume: vol}); !r.OK {
		t.Errorf("redelivered delete: %+v", r)
	}
}

// Boot from volume on a real dockerd: the build makes the boot volume
// from the image on this host, the server's root directories are the
// volume's (a file written in /root is in the volume's filesystem), and
// a server built again from the same volume (not made again) finds it.
func TestBootFromVolume(t *testing.T) {
	image := testenv.Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e, drv, vols, id := volumeEnv(t, ctx)
	vol := protocol.VolumeSpec{ID: "bfv-" + uuid.NewString()[:8], ProjectID: "proj-1", SizeGB: 1, Backend: protocol.BackendLocal, Host: testHost}
	root := protocol.VolumeMount{AttachmentID: "att-root", Volume: vol, MountPath: protocol.RootMountPath,
		Create: &protocol.VolumeSource{ImageRef: image}}
	build := func(req string, n int, m protocol.VolumeMount) {
		t.Helper()
		e.publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: req, Attempt: 1,
			Spec: protocol.InstanceSpec{ID: id, Name: "srv-" + id, ProjectID: "proj-1", ImageRef: image,
				VCPUs: 1, MemoryMB: 64, DiskGB: 1, Volumes: []protocol.VolumeMount{m}}})
		if r := e.waitReport(id, n, 2*time.Minute); !r.OK {
			t.Fatalf("build %s: %+v", req, r)
		}
	}
	build("req-bfv1", 1, root)
	if out, err := dockerExec(t, id, "echo on-the-volume > /root/bfv && sync && cat /root/bfv"); err != nil || out != "on-the-volume" {
		t.Fatalf("write in the volume-backed server: %v %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(vols.MountPoint(vol.ID), "root", "bfv"))
	if err != nil || strings.TrimSpace(string(b)) != "on-the-volume" {
		t.Fatalf("the file is not on the boot volume: %v %q", err, b)
	}
	// The server goes (its host mount with it), the volume stays.
	if err := drv.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := vols.Unmount(ctx, vol.ID); err != nil {
		t.Fatal(err)
	}
	root.Create = nil
	build("req-bfv2", 2, root)
	if out, err := dockerExec(t, id, "cat /root/bfv"); err != nil || out != "on-the-volume" {
		t.Fatalf("the second server does not see the first one's file: %v %q", err, out)
	}
	if err := drv.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := vols.Unmount(ctx, vol.ID); err != nil {
		t.Fatal(err)
	}
	if err := vols.Delete(ctx, volume.Local, vol.ID); err != nil {
		t.Fatal(err)
	}
}
