package docker_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/internal/testenv"
)

// BenchmarkBootNetworked is the driver's share of a networked boot
// (issue 15): Create (sandbox + workload), Sandbox (the namespace the
// agent plumbs), Start; then Destroy, untimed. "early" starts the sandbox
// during Create (Spec.StartSandbox, what a build does); "raw" is docker
// create + start of the same image with --net=none, the floor;
// "sandbox-prestarted" boots with the sandbox already running (what a
// pool of pre-started sandboxes would leave on the path); "netns" is one
// container per server (network mode netns).
// go test ./drivers/docker -run X -bench BootNetworked -benchtime 10x
func BenchmarkBootNetworked(b *testing.B) {
	host, image := testenv.DockerHost(b), testenv.Image(b)
	ctx := context.Background()
	d, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, SandboxImage: image,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	for _, early := range []bool{false, true} {
		name := "sandbox-at-plumb"
		if early {
			name = "sandbox-early"
		}
		b.Run(name, func(b *testing.B) {
			var create, sandbox, start time.Duration
			for i := 0; i < b.N; i++ {
				spec := drivertest.Spec(image)
				spec.Networked, spec.StartSandbox = true, early
				t0 := time.Now()
				if err := d.Create(ctx, spec); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := d.Sandbox(ctx, spec.ID); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := d.Start(ctx, spec.ID); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				create, sandbox, start = create+t1.Sub(t0), sandbox+t2.Sub(t1), start+t3.Sub(t2)
				b.StopTimer()
				if err := d.Destroy(ctx, spec.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			n := float64(b.N) * float64(time.Millisecond)
			b.ReportMetric(float64(create)/n, "create-ms")
			b.ReportMetric(float64(sandbox)/n, "sandbox-ms")
			b.ReportMetric(float64(start)/n, "start-ms")
		})
	}
	// A build's adminPass (every Nova build has one): "at-create" is
	// Spec.AdminPassHash (the shadow cache: for the base image, which has
	// no /etc/shadow, no archive call once known; for "-shadow", the base
	// image with one, a copy into the container), "after-create" the
	// agent's path before it, SetAdminPassword between Create and Start
	// (a copy of /etc/shadow out of each new container, and in when it
	// has one), timed as password-ms.
	shadowRef := "capsuletest-shadow-bench:" + uuid.NewString()[:8]
	shadowImage(b, d, image, shadowRef, "root:*:19000:0:99999:7:::\n")
	for _, v := range []struct {
		atCreate bool
		image    string
	}{{true, image}, {false, image}, {true, shadowRef}, {false, shadowRef}} {
		atCreate, image := v.atCreate, v.image
		name := "password-after-create"
		if atCreate {
			name = "password-at-create"
		}
		if image == shadowRef {
			name += "-shadow"
		}
		b.Run(name, func(b *testing.B) {
			var create, password, sandbox, start time.Duration
			for i := 0; i < b.N; i++ {
				spec := drivertest.Spec(image)
				spec.Networked, spec.StartSandbox = true, true
				if atCreate {
					spec.AdminPassHash = "$6$bench$hash"
				}
				t0 := time.Now()
				if err := d.Create(ctx, spec); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if !atCreate {
					// Without /etc/shadow NotSupported, as the agent
					// logged it.
					err := d.SetAdminPassword(ctx, spec.ID, "$6$bench$hash")
					if (image == shadowRef) != (err == nil) || (err != nil && !errdefs.IsNotSupported(err)) {
						b.Fatal(err)
					}
				}
				t2 := time.Now()
				if _, err := d.Sandbox(ctx, spec.ID); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				if err := d.Start(ctx, spec.ID); err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				create, password, sandbox, start = create+t1.Sub(t0), password+t2.Sub(t1), sandbox+t3.Sub(t2), start+t4.Sub(t3)
				b.StopTimer()
				if err := d.Destroy(ctx, spec.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			n := float64(b.N) * float64(time.Millisecond)
			b.ReportMetric(float64(create)/n, "create-ms")
			b.ReportMetric(float64(password)/n, "password-ms")
			b.ReportMetric(float64(sandbox)/n, "sandbox-ms")
			b.ReportMetric(float64(start)/n, "start-ms")
		})
	}
	// What a pool of pre-started sandboxes would leave on the path (issue
	// 15, docs/benchmarks.md): the sandbox is created and started untimed
	// (its workload removed), then renamed from a pool-style name to the
	// server's (the claim, timed as rename-ms), and the boot is Create
	// (finds the sandbox, creates the workload), Sandbox, Start. An upper
	// bound on the gain: no per-server fix-ups are made (the hostname of a
	// pre-made sandbox cannot be changed, see docs/benchmarks.md).
	b.Run("sandbox-prestarted", func(b *testing.B) {
		cli := d.Client()
		var rename, create, sandbox, start time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			spec := drivertest.Spec(image)
			spec.Networked, spec.StartSandbox = true, true
			if err := d.Create(ctx, spec); err != nil {
				b.Fatal(err)
			}
			if _, err := d.Sandbox(ctx, spec.ID); err != nil {
				b.Fatal(err)
			}
			if err := cli.ContainerRemove(ctx, docker.ContainerName(spec.ID), container.RemoveOptions{Force: true}); err != nil {
				b.Fatal(err)
			}
			pooled := "capsule-pool-bench-" + spec.ID
			if err := cli.ContainerRename(ctx, docker.SandboxName(spec.ID), pooled); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			t0 := time.Now()
			if err := cli.ContainerRename(ctx, pooled, docker.SandboxName(spec.ID)); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := d.Create(ctx, spec); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			if _, err := d.Sandbox(ctx, spec.ID); err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			if err := d.Start(ctx, spec.ID); err != nil {
				b.Fatal(err)
			}
			t4 := time.Now()
			rename, create, sandbox, start = rename+t1.Sub(t0), create+t2.Sub(t1), sandbox+t3.Sub(t2), start+t4.Sub(t3)
			b.StopTimer()
			if err := d.Destroy(ctx, spec.ID); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		n := float64(b.N) * float64(time.Millisecond)
		b.ReportMetric(float64(rename)/n, "rename-ms")
		b.ReportMetric(float64(create)/n, "create-ms")
		b.ReportMetric(float64(sandbox)/n, "sandbox-ms")
		b.ReportMetric(float64(start)/n, "start-ms")
	})
	// One container per server (network mode netns, netns.go): Create
	// (workload, namespace made meanwhile), Sandbox, Start. Needs a
	// dockerd with Capsule's runtime.
	b.Run("netns", func(b *testing.B) {
		dn, err := docker.New(ctx, docker.Options{Host: host, StopTimeout: 5 * time.Second, SandboxImage: image,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NetworkMode: docker.NetworkNetns, NetnsDir: "/run/capsule/netns/bench"})
		if err != nil {
			b.Skip(err)
		}
		defer dn.Close()
		var create, sandbox, start time.Duration
		for i := 0; i < b.N; i++ {
			spec := drivertest.Spec(image)
			spec.Networked, spec.StartSandbox = true, true
			t0 := time.Now()
			if err := dn.Create(ctx, spec); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := dn.Sandbox(ctx, spec.ID); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			if err := dn.Start(ctx, spec.ID); err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			create, sandbox, start = create+t1.Sub(t0), sandbox+t2.Sub(t1), start+t3.Sub(t2)
			b.StopTimer()
			if err := dn.Destroy(ctx, spec.ID); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		n := float64(b.N) * float64(time.Millisecond)
		b.ReportMetric(float64(create)/n, "create-ms")
		b.ReportMetric(float64(sandbox)/n, "sandbox-ms")
		b.ReportMetric(float64(start)/n, "start-ms")
	})
	b.Run("raw", func(b *testing.B) {
		cli := d.Client()
		for i := 0; i < b.N; i++ {
			resp, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Labels: map[string]string{"capsule.bench": "raw"}},
				&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
			if err != nil {
				b.Fatal(err)
			}
			if err := cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := cli.ContainerRemove(ctx, resp.ID, container.RemoveOptions{Force: true}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}
