package docker_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/capsule-cloud/capsule/cgroup"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// syncBuffer is a log sink the driver's goroutines may write to while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// pidsMaxFile is the pids.max file of process pid's pids cgroup (v1 or
// v2), found through /proc/<pid>/cgroup.
func pidsMaxFile(t *testing.T, pid int) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, dir := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
			if (parts[1] == "pids") != (dir == "/sys/fs/cgroup/pids") {
				continue
			}
			if p := filepath.Join(dir, parts[2], "pids.max"); fileExists(p) {
				return p
			}
		}
	}
	t.Skipf("no pids.max found for pid %d", pid)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestResizeToTheSameLimitsChangesNothing: resizing a running server to
// the limits it has (what the agent's drift repair asks every reconcile)
// makes no docker update and logs no resize; limits changed behind the
// cloud's back, in Docker's record (docker update) or in the cgroup
// alone, are put back by the same call.
func TestResizeToTheSameLimitsChangesNothing(t *testing.T) {
	image := testenv.Image(t)
	var logs syncBuffer
	ctx0, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := docker.New(ctx0, docker.Options{Host: testenv.DockerHost(t), StopTimeout: 5 * time.Second,
		SandboxImage: image, Logger: slog.New(slog.NewTextHandler(&logs, nil)), NetworkMode: testenv.NetworkMode()})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	spec := limitedSpec(t, image, 1, map[string]string{"quota:cpu_quota": "50000", "capsule:pids_max": "64"})
	drivertest.Boot(t, d, spec)
	ctx := drivertest.Ctx(t)
	pid := pidOf(t, ctx, d, docker.ContainerName(spec.ID))
	resize := func(what string) {
		t.Helper()
		if err := d.Resize(ctx, spec.ID, spec.VCPUs, spec.MemoryMB, spec.Limits); err != nil {
			t.Fatalf("%s: resize: %v", what, err)
		}
	}
	const resized = `msg="container resized"`
	resize("unchanged")
	resize("unchanged again")
	if n := logs.count(resized); n != 0 {
		t.Errorf("resizing to the limits the server has resized it %d times:\n%s", n, logs.b.String())
	}

	// Behind the cloud's back, in Docker's record and the cgroup.
	if _, err := d.Client().ContainerUpdate(ctx, docker.ContainerName(spec.ID),
		container.UpdateConfig{Resources: container.Resources{Memory: 96 << 20, MemorySwap: 96 << 20}}); err != nil {
		t.Fatal(err)
	}
	resize("after a docker update")
	if n := logs.count(resized); n != 1 {
		t.Errorf("after a docker update by hand: %d resizes, want 1", n)
	}
	if lim, err := cgroup.LimitsOf(pid); err != nil || lim.MemoryBytes != int64(spec.MemoryMB)<<20 {
		t.Errorf("memory after the repair: %+v %v, want %d MiB", lim, err, spec.MemoryMB)
	}

	// In the cgroup alone: Docker's record still says 64 pids.
	if !strings.HasPrefix(d.Client().DaemonHost(), "unix://") {
		return
	}
	if err := os.WriteFile(pidsMaxFile(t, pid), []byte("1000"), 0o644); err != nil {
		t.Fatal(err)
	}
	if lim, err := cgroup.LimitsOf(pid); err != nil || lim.PidsMax != 1000 {
		t.Fatalf("pids.max written by hand: %+v %v", lim, err)
	}
	resize("after a cgroup write")
	if n := logs.count(resized); n != 2 {
		t.Errorf("after a cgroup write by hand: %d resizes, want 2", n)
	}
	if lim, err := cgroup.LimitsOf(pid); err != nil || lim.PidsMax != 64 {
		t.Errorf("pids after the repair: %+v %v, want 64", lim, err)
	}
}
