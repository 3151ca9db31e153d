package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
)

// benchResult summarises one series of boots.
type benchResult struct {
	Name               string
	Count, Concurrency int
	P50, P95, P99, Max time.Duration
	Wall               time.Duration
	BootsPerSecond     float64
	Failures           int
	// HostCPU is the CPU this machine spent (every process, all cores)
	// during the series, per completed boot; 0 when unknown. Meaningful
	// when the cloud runs here (the all-in-one): at concurrency the boots
	// keep the cores busy, so the rate follows it more steadily than the
	// wall clock on a shared machine.
	HostCPU time.Duration
}

// hostBusy returns the CPU time this machine has spent outside idle and
// iowait since boot (/proc/stat, all cores); ok is false where it cannot
// be read.
func hostBusy() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is in user already
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		busy += n
	}
	// USER_HZ is 100 on every Linux architecture Go runs on.
	return time.Duration(busy) * 10 * time.Millisecond, true
}

// measured runs series and sets its result's HostCPU.
func measured(series func() benchResult) benchResult {
	before, ok := hostBusy()
	r := series()
	after, ok2 := hostBusy()
	if done := r.Count - r.Failures; ok && ok2 && done > 0 {
		r.HostCPU = (after - before) / time.Duration(done)
	}
	return r
}

func summarise(name string, d []time.Duration, wall time.Duration, conc, failures int) benchResult {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	pct := func(p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		i := int(float64(len(d))*p+0.5) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	r := benchResult{Name: name, Count: len(d) + failures, Concurrency: conc, P50: pct(.5), P95: pct(.95), P99: pct(.99), Wall: wall, Failures: failures}
	if len(d) > 0 {
		r.Max = d[len(d)-1]
	}
	if wall > 0 {
		r.BootsPerSecond = float64(len(d)) / wall.Seconds()
	}
	return r
}

// parallel runs n jobs, at most conc at a time, and returns each job's
// duration (failed jobs are counted, not timed).
func parallel(ctx context.Context, n, conc int, job func(ctx context.Context, i int) (time.Duration, error)) ([]time.Duration, int, time.Duration) {
	var mu sync.Mutex
	var out []time.Duration
	failures := 0
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := job(ctx, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				failures++
				return
			}
			out = append(out, d)
		}(i)
	}
	wg.Wait()
	return out, failures, time.Since(start)
}

func (c *cli) benchBoot(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench boot", flag.ContinueOnError)
	count := fs.Int("count", 10, "servers to boot")
	conc := fs.Int("concurrency", 1, "boots in flight at once")
	imageName := fs.String("image", "busybox", "image name")
	flavorName := fs.String("flavor", "m1.tiny", "flavor name")
	dockerHost := fs.String("docker-host", "unix:///run/capsule/docker.sock", "dockerd of the compute host, for the raw docker baseline (empty: skip)")
	timeout := fs.Duration("timeout", 3*time.Minute, "per-boot timeout")
	rawRef := fs.String("raw-image", "", "image for the raw docker baseline (default: the image's capsule_registry_ref property, else what the first server's container ran on --docker-host)")
	network := fs.String("network", "", "network (name or id) every server gets a NIC on; empty: servers without a network")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *count < 1 || *conc < 1 {
		return fmt.Errorf("--count and --concurrency must be >= 1")
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	ic, err := openstack.NewImageV2(c.pc, gophercloud.EndpointOpts{Region: c.region})
	if err != nil {
		return err
	}
	imgID, imgRef, err := findImage(ctx, ic, *imageName)
	if err != nil {
		return err
	}
	if *rawRef != "" {
		imgRef = *rawRef
	}
	flv, err := findFlavor(ctx, cc, *flavorName)
	if err != nil {
		return err
	}
	var nets []servers.Network
	name := "capsule (API to ACTIVE)"
	if *network != "" {
		netID, err := c.findNetwork(ctx, *network)
		if err != nil {
			return err
		}
		nets = []servers.Network{{UUID: netID}}
		name = "capsule, networked (API to ACTIVE)"
	}
	prefix := "bench-" + uuid.NewString()[:6]
	var created sync.Map
	// Without --raw-image or the image's capsule_registry_ref, the raw
	// baseline runs the image the first ACTIVE server's container runs
	// (read from --docker-host): the same bytes, the same dockerd.
	var ranImage sync.Once
	var ran string // set once, read after the series
	seenRef := func(ctx context.Context, id string) {
		if imgRef != "" || *dockerHost == "" {
			return
		}
		ranImage.Do(func() { ran = containerImage(ctx, *dockerHost, docker.ContainerName(id)) })
	}
	boot := func(ctx context.Context, i int) (time.Duration, error) {
		start := time.Now()
		s, err := servers.Create(ctx, cc, servers.CreateOpts{Name: fmt.Sprintf("%s-%d", prefix, i), ImageRef: imgID, FlavorRef: flv.ID, Networks: nets}, nil).Extract()
		if err != nil {
			return 0, fmt.Errorf("create: %w", err)
		}
		created.Store(s.ID, true)
		deadline := time.Now().Add(*timeout)
		for time.Now().Before(deadline) {
			cur, err := servers.Get(ctx, cc, s.ID).Extract()
			if err == nil && cur.Status == "ACTIVE" {
				took := time.Since(start)
				seenRef(ctx, s.ID)
				// Boot-and-delete, as Rally's scenario: the host holds at
				// most "concurrency" servers at a time.
				if err := deleteAndWait(ctx, cc, s.ID); err != nil {
					return 0, err
				}
				created.Delete(s.ID)
				return took, nil
			}
			if err == nil && cur.Status == "ERROR" {
				return 0, fmt.Errorf("server %s ERROR: %s", s.ID, cur.Fault.Message)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return 0, fmt.Errorf("server %s not ACTIVE after %s", s.ID, *timeout)
	}
	results := []benchResult{measured(func() benchResult {
		d, failures, wall := parallel(ctx, *count, *conc, boot)
		return summarise(name, d, wall, *conc, failures)
	})}
	// Clean up what failed half-way, so the raw run does not compete.
	created.Range(func(k, _ any) bool {
		_ = deleteAndWait(ctx, cc, k.(string))
		return true
	})
	if imgRef == "" {
		imgRef = ran
	}
	if *dockerHost != "" && imgRef == "" {
		fmt.Fprintln(os.Stderr, "bench: raw docker baseline skipped: pass --raw-image REGISTRY_REF")
	}
	if *dockerHost != "" && imgRef != "" {
		var err error
		raw := measured(func() benchResult {
			var r benchResult
			r, err = rawDockerBench(ctx, *dockerHost, imgRef, flv, *count, *conc)
			return r
		})
		if err != nil {
			return err
		}
		results = append(results, raw)
	}
	rows := [][]string{}
	for _, r := range results {
		rows = append(rows, []string{r.Name, fmt.Sprint(r.Count), fmt.Sprint(r.Concurrency), ms(r.P50), ms(r.P95), ms(r.P99),
			ms(r.Max), fmt.Sprintf("%.2f", r.BootsPerSecond), ms(r.HostCPU), fmt.Sprint(r.Failures)})
	}
	if len(results) == 2 && results[1].P50 > 0 && results[1].BootsPerSecond > 0 {
		cpu := ""
		if results[0].HostCPU > 0 && results[1].HostCPU > 0 {
			cpu = fmt.Sprintf(", host CPU per boot %.2fx raw docker", float64(results[0].HostCPU)/float64(results[1].HostCPU))
		}
		fmt.Fprintf(os.Stderr, "ratio: p50 %.2fx raw docker, throughput %.2fx raw docker%s\n",
			float64(results[0].P50)/float64(results[1].P50), results[0].BootsPerSecond/results[1].BootsPerSecond, cpu)
	}
	return c.table([]string{"Series", "N", "Conc", "p50 ms", "p95 ms", "p99 ms", "max ms", "boots/s", "host cpu ms/boot", "failed"}, rows)
}

func deleteAndWait(ctx context.Context, cc *gophercloud.ServiceClient, id string) error {
	if err := servers.Delete(ctx, cc, id).ExtractErr(); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	for i := 0; i < 3000; i++ {
		if _, err := servers.Get(ctx, cc, id).Extract(); gophercloud.ResponseCodeIs(err, 404) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("server %s not gone after 60s", id)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }

func findImage(ctx context.Context, ic *gophercloud.ServiceClient, name string) (id, ref string, err error) {
	pages, err := images.List(ic, images.ListOpts{Name: name}).AllPages(ctx)
	if err != nil {
		return "", "", fmt.Errorf("find image %s: %w", name, err)
	}
	list, err := images.ExtractImages(pages)
	if err != nil || len(list) == 0 {
		return "", "", fmt.Errorf("image %q not found", name)
	}
	ref, _ = list[0].Properties["capsule_registry_ref"].(string)
	return list[0].ID, ref, nil
}

func findFlavor(ctx context.Context, cc *gophercloud.ServiceClient, name string) (*flavors.Flavor, error) {
	pages, err := flavors.ListDetail(cc, nil).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list flavors: %w", err)
	}
	list, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return nil, err
	}
	for i := range list {
		if list[i].Name == name || list[i].ID == name {
			return &list[i], nil
		}
	}
	return nil, fmt.Errorf("flavor %q not found", name)
}

// findNetwork returns the id of the network named or numbered ref.
func (c *cli) findNetwork(ctx context.Context, ref string) (string, error) {
	nc, err := openstack.NewNetworkV2(c.pc, gophercloud.EndpointOpts{Region: c.region})
	if err != nil {
		return "", err
	}
	if n, err := networks.Get(ctx, nc, ref).Extract(); err == nil {
		return n.ID, nil
	}
	pages, err := networks.List(nc, networks.ListOpts{Name: ref}).AllPages(ctx)
	if err != nil {
		return "", fmt.Errorf("find network %s: %w", ref, err)
	}
	list, err := networks.ExtractNetworks(pages)
	if err != nil {
		return "", fmt.Errorf("find network %s: %w", ref, err)
	}
	if len(list) != 1 {
		return "", fmt.Errorf("network %q: %d networks have that name or id", ref, len(list))
	}
	return list[0].ID, nil
}

// containerImage returns the image container name runs on the dockerd at
// host ("" when it cannot tell).
func containerImage(ctx context.Context, host, name string) string {
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return ""
	}
	defer cli.Close()
	c, err := cli.ContainerInspect(ctx, name)
	if err != nil || c.Config == nil {
		return ""
	}
	return c.Config.Image
}

// rawDockerBench times plain "docker run -d" (create+start) of the same
// image with the same limits on the same dockerd: the floor Capsule's
// boot path is compared against.
func rawDockerBench(ctx context.Context, host, ref string, flv *flavors.Flavor, n, conc int) (benchResult, error) {
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return benchResult{}, err
	}
	defer cli.Close()
	var ids sync.Map
	job := func(ctx context.Context, i int) (time.Duration, error) {
		start := time.Now()
		pids := int64(1024)
		resp, err := cli.ContainerCreate(ctx, &container.Config{Image: ref, Labels: map[string]string{"capsule.bench": "raw"}},
			&container.HostConfig{NetworkMode: "none", Resources: container.Resources{CPUPeriod: 100000,
				CPUQuota: int64(flv.VCPUs) * 100000, Memory: int64(flv.RAM) << 20, PidsLimit: &pids}}, nil, nil, "")
		if err != nil {
			return 0, fmt.Errorf("raw create: %w", err)
		}
		ids.Store(resp.ID, true)
		if err := cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
			return 0, fmt.Errorf("raw start: %w", err)
		}
		took := time.Since(start)
		if err := cli.ContainerRemove(ctx, resp.ID, container.RemoveOptions{Force: true}); err != nil {
			return 0, fmt.Errorf("raw remove: %w", err)
		}
		ids.Delete(resp.ID)
		return took, nil
	}
	d, failures, wall := parallel(ctx, n, conc, job)
	ids.Range(func(k, _ any) bool {
		_ = cli.ContainerRemove(ctx, k.(string), container.RemoveOptions{Force: true})
		return true
	})
	return summarise("raw docker run", d, wall, conc, failures), nil
}
