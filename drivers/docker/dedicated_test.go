package docker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/limits"
)

// newPoolDriver is a driver whose host reserves dedicatedSet for
// dedicated servers.
func newPoolDriver(t *testing.T, dedicatedSet string) (*docker.Driver, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := docker.New(ctx, docker.Options{Host: testenv.DockerHost(t), StopTimeout: 5 * time.Second,
		SandboxImage: testenv.Image(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CPUDedicatedSet: dedicatedSet})
	if err == nil {
		t.Cleanup(func() { d.Close() })
	}
	return d, err
}

// foreignOn reports whether a server this test did not create (another
// test sharing the dockerd) is pinned to cpu: it holds the CPU as much as
// ours would.
func foreignOn(t *testing.T, ctx context.Context, d *docker.Driver, cpu int, ours ...string) bool {
	t.Helper()
	cs, err := d.Client().ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelManaged+"=true"))})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if slices.Contains(ours, c.Labels[docker.LabelInstance]) || c.Labels[docker.LabelRole] == docker.RoleSandbox {
			continue
		}
		in, err := d.Client().ContainerInspect(ctx, c.ID)
		if err != nil || in.HostConfig == nil {
			continue
		}
		if cpus, _ := limits.ParseCPUList(in.HostConfig.CpusetCpus); slices.Contains(cpus, cpu) {
			return true
		}
	}
	return false
}

// TestDedicatedCPUPools, on the 2-CPU test host with cpu_dedicated_set
// "1": a dedicated 1-vCPU server is pinned to CPU 1, a shared one to CPU 0
// (never the dedicated CPU), a second dedicated one is refused and leaves
// nothing behind; a dedicated server cannot grow beyond the free
// dedicated CPUs nor change its policy; the driver refuses a set the host
// cannot honour.
func TestDedicatedCPUPools(t *testing.T) {
	image := testenv.Image(t)
	probe := newDriver(t)
	// Longer than the wait for CPU 1 below (2 min, then a skip), so the
	// wait cannot use up the calls' deadline (as it did while leftovers
	// of a killed run held CPU 1).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	info, err := probe.Client().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NCPU < 2 {
		t.Skipf("cpu pools need 2 host CPUs, dockerd has %d", info.NCPU)
	}
	for _, bad := range []string{fmt.Sprint(info.NCPU), fmt.Sprintf("0-%d", info.NCPU-1)} {
		if _, err := newPoolDriver(t, bad); err == nil || !strings.Contains(err.Error(), "cpu_dedicated_set") {
			t.Errorf("driver with cpu_dedicated_set %q: %v, want refused", bad, err)
		}
	}
	d, err := newPoolDriver(t, "1")
	if err != nil {
		t.Fatalf("driver with cpu_dedicated_set 1: %v", err)
	}
	inspect := func(id string) container.InspectResponse {
		t.Helper()
		c, err := d.Client().ContainerInspect(ctx, docker.ContainerName(id))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	ded := limitedSpec(t, image, 1, map[string]string{"hw:cpu_policy": "dedicated"})
	// Servers of other tests on this dockerd may sit on CPU 1 for a while
	// (their drivers have no dedicated set): wait for them, they hold it
	// exclusively as much as ours would.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err = d.Create(ctx, ded)
		if err == nil || !errors.Is(err, docker.ErrNoFreeCPUs) || !foreignOn(t, ctx, d, 1) {
			break
		}
		if time.Now().After(deadline) {
			t.Skipf("CPU 1 stayed held by other tests' servers: %v", err)
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		t.Fatalf("create dedicated server: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ded.ID) })
	if dc := inspect(ded.ID); dc.HostConfig.CpusetCpus != "1" || dc.Config.Labels[docker.LabelCPUPolicy] != "dedicated" {
		t.Errorf("dedicated server: cpuset %q, labels %v; want CPU 1 and the dedicated label", dc.HostConfig.CpusetCpus, dc.Config.Labels)
	}

	shared := limitedSpec(t, image, 1, nil)
	drivertest.Create(t, d, shared)
	if sc := inspect(shared.ID); sc.HostConfig.CpusetCpus != "0" {
		t.Errorf("shared server pinned to %q, want 0 (the shared pool)", sc.HostConfig.CpusetCpus)
	}
	// Even a shared server as big as the host stays off the dedicated CPU.
	wide := limitedSpec(t, image, info.NCPU, nil)
	drivertest.Create(t, d, wide)
	if wc := inspect(wide.ID); strings.Contains(","+wc.HostConfig.CpusetCpus+",", ",1,") || wc.HostConfig.CpusetCpus == "" {
		t.Errorf("%d-vCPU shared server pinned to %q, want the shared CPUs only", info.NCPU, wc.HostConfig.CpusetCpus)
	}

	second := limitedSpec(t, image, 1, map[string]string{"hw:cpu_policy": "dedicated"})
	err = d.Create(ctx, second)
	if !errors.Is(err, docker.ErrNoFreeCPUs) {
		_ = d.Destroy(context.WithoutCancel(ctx), second.ID)
		t.Fatalf("second dedicated server with the dedicated CPU taken: %v, want ErrNoFreeCPUs", err)
	}
	t.Logf("refused as wanted: %v", err)
	if _, err := d.Status(ctx, second.ID); !errors.Is(err, drivers.ErrNotFound) {
		t.Errorf("a refused create left an instance: %v", err)
	}

	ded2, err := limits.Parse(map[string]string{"hw:cpu_policy": "dedicated"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Resize(ctx, ded.ID, 2, 64, ded2); !errors.Is(err, docker.ErrNoFreeCPUs) {
		t.Errorf("resize of the dedicated server to 2 vCPUs with 1 dedicated CPU: %v, want ErrNoFreeCPUs", err)
	}
	if dc := inspect(ded.ID); dc.HostConfig.CpusetCpus != "1" {
		t.Errorf("refused resize changed the cpuset to %q", dc.HostConfig.CpusetCpus)
	}
	if err := d.Resize(ctx, ded.ID, 1, 64, limits.Limits{}); !errors.Is(err, drivers.ErrNotSupported) {
		t.Errorf("resize dedicated -> shared: %v, want ErrNotSupported", err)
	}
}

// TestDedicatedConcurrentCreates: two dedicated servers created at once on
// a host with one dedicated CPU: one gets it, the other is refused (the
// CPUs picked for a create in flight count, though the container create
// itself runs outside the pinning lock).
func TestDedicatedConcurrentCreates(t *testing.T) {
	image := testenv.Image(t)
	ctx := drivertest.Ctx(t)
	d, err := newPoolDriver(t, "1")
	if err != nil {
		t.Skipf("a host without CPU 1: %v", err)
	}
	if foreignOn(t, ctx, d, 1) {
		t.Skip("another test's server holds CPU 1")
	}
	var specs [2]drivers.Spec
	var errs [2]error
	done := make(chan int, len(specs))
	for i := range specs {
		specs[i] = drivertest.Spec(image)
		specs[i].Limits.CPU.Dedicated = true
		id := specs[i].ID
		t.Cleanup(func() { _ = d.Destroy(context.Background(), id) })
		go func() { errs[i] = d.Create(ctx, specs[i]); done <- i }()
	}
	for range specs {
		<-done
	}
	created := 0
	for i, err := range errs {
		if err == nil {
			created++
		} else if !errors.Is(err, drivers.ErrInvalidState) && !strings.Contains(err.Error(), "dedicated") {
			t.Errorf("create %d: %v", i, err)
		}
	}
	if created != 1 {
		t.Errorf("%d of two concurrent dedicated servers created on one dedicated CPU (errors %v), want 1", created, errs)
	}
}
