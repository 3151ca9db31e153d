package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// haClient is a client of a control plane with several API processes: it
// alternates between them and, when one does not answer (connection
// refused or cut) or answers 5xx, retries the request on the next, as a
// load balancer in front of the API replicas does.
type haClient struct {
	t       *testing.T
	clients []*gophercloud.ServiceClient // one per API process, authenticated there
	next    atomic.Uint64
	retried atomic.Int64 // requests answered by a retry on another API
}

// newHAClient authenticates user at every API process of c.
func (c *cloud) newHAClient(t *testing.T, user, pass, project string) *haClient {
	t.Helper()
	h := &haClient{t: t}
	for _, identity := range c.apis {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		pc, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
			IdentityEndpoint: fmt.Sprintf("http://127.0.0.1:%d/v3", identity), Username: user, Password: pass,
			DomainName: "Default", TenantName: project,
		})
		cancel()
		if err != nil {
			t.Fatalf("authenticate %s at the API on port %d: %v", user, identity, err)
		}
		cc, err := openstack.NewComputeV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
		if err != nil {
			t.Fatal(err)
		}
		h.clients = append(h.clients, cc)
	}
	return h
}

// retryable reports whether err is one a client retries on another API:
// no answer at all (the process is gone), or a 5xx.
func retryable(err error) bool {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		return code.Actual >= 500
	}
	return err != nil
}

// do runs call against the next API, then the others, until one answers
// with anything but a retryable error or 30 s passed.
func (h *haClient) do(call func(cc *gophercloud.ServiceClient) error) error {
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		cc := h.clients[h.next.Add(1)%uint64(len(h.clients))]
		err := call(cc)
		if !retryable(err) || time.Now().After(deadline) {
			if attempt > 0 && err == nil {
				h.retried.Add(1)
			}
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestControlPlaneReplicasSurviveLosingOne is the scale-out proof: two
// API, two scheduler and two conductor processes (one PostgreSQL, quorum
// queues on a three-node RabbitMQ cluster of the test's own behind a TCP
// proxy) and one agent run a boot-and-delete loop at concurrency 8
// through a client that alternates between the two APIs (a load
// balancer's job). Mid-loop one process of each role is SIGKILLed, and so
// is the RabbitMQ node that leads the conductor queue. Every create is
// answered (a retryable error is retried on the other API) and its server
// ends ACTIVE, then deleted; no server is left stuck in a state or task;
// the host's claims in the database never exceed its capacity and match
// its servers exactly once the loop is quiet. The time from the kill to
// the first server created after it going ACTIVE is logged as the
// recovery time, with the publishes the broker refused meanwhile.
//
// Serial: it measures a recovery time.
func TestControlPlaneReplicasSurviveLosingOne(t *testing.T) {
	const (
		concurrency = 8
		killAfter   = 8 * time.Second
		loopFor     = 25 * time.Second
		cpuRatio    = 6 // the host's capacity in vCPUs: 6 per host CPU
	)
	rabbit := startRabbitCluster(t)
	c := startCloud(t, onPostgres, withQuota(64), func(t *testing.T, c *cloud) {
		c.ownAgent, c.replicas = true, 2
		c.amqp, c.queueType = rabbit.url(), "quorum"
		c.agentExtra = fmt.Sprintf("  cpu_allocation_ratio: %d\n", cpuRatio)
	})
	ctx := context.Background()
	demo := c.newHAClient(t, "demo", c.demoPass, "demo")
	admin := c.newHAClient(t, "admin", c.adminPass, "admin")
	img := c.imageIDs(t, "demo", c.demoPass, "demo")["busybox"]
	host := c.hosts[0].name
	capVCPUs := capacityVCPUs(t, admin, host) * cpuRatio

	var (
		mu        sync.Mutex
		created   = map[string]string{} // server id -> name, every create answered
		deleted   = map[string]bool{}
		failures  []string
		recovered time.Duration // kill -> first post-kill create ACTIVE
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	start := time.Now()
	var killedAt atomic.Int64 // unix nanoseconds; 0 before the kill

	// Over-commit watch: the host's claimed vCPUs in the database (the
	// scheduler's claims, what os-hypervisors reports as vcpus_used),
	// sampled all along.
	stopWatch := make(chan struct{})
	var maxUsed, samples atomic.Int64
	var watchDone sync.WaitGroup
	watchDone.Add(1)
	go func() {
		defer watchDone.Done()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if used, err := claimedVCPUs(c.dbDSN, host); err == nil {
				samples.Add(1)
				if int64(used) > maxUsed.Load() {
					maxUsed.Store(int64(used))
				}
			}
		}
	}()

	waitActive := func(id string, timeout time.Duration) error {
		deadline := time.Now().Add(timeout)
		var last *servers.Server
		for time.Now().Before(deadline) {
			var s *servers.Server
			err := demo.do(func(cc *gophercloud.ServiceClient) error {
				var err error
				s, err = servers.Get(ctx, cc, id).Extract()
				return err
			})
			if err != nil {
				return fmt.Errorf("get %s: %w", id, err)
			}
			last = s
			if s.Status == "ACTIVE" && s.TaskState == "" {
				return nil
			}
			if s.Status == "ERROR" {
				return fmt.Errorf("server %s went to ERROR: %+v", id, s.Fault)
			}
			time.Sleep(250 * time.Millisecond)
		}
		return fmt.Errorf("server %s stuck: not ACTIVE within %s (status %s task %q)", id, timeout, last.Status, last.TaskState)
	}
	deleteAndWait := func(id string) error {
		err := demo.do(func(cc *gophercloud.ServiceClient) error {
			err := servers.Delete(ctx, cc, id).ExtractErr()
			if gophercloud.ResponseCodeIs(err, 404) {
				return nil // a retried delete whose first try was carried out
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("delete %s: %w", id, err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			err := demo.do(func(cc *gophercloud.ServiceClient) error {
				_, err := servers.Get(ctx, cc, id).Extract()
				return err
			})
			if gophercloud.ResponseCodeIs(err, 404) {
				mu.Lock()
				deleted[id] = true
				mu.Unlock()
				return nil
			}
			time.Sleep(250 * time.Millisecond)
		}
		return fmt.Errorf("server %s stuck: still there 60 s after its delete", id)
	}

	var cycles atomic.Int64
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < loopFor; i++ {
				name := fmt.Sprintf("ha-%d-%d", w, i)
				asked := time.Now()
				var srv *servers.Server
				err := demo.do(func(cc *gophercloud.ServiceClient) error {
					var err error
					srv, err = servers.Create(ctx, cc, servers.CreateOpts{Name: name, ImageRef: img, FlavorRef: "1"}, nil).Extract()
					return err
				})
				if err != nil {
					fail("create %s: lost (%v)", name, err)
					return
				}
				mu.Lock()
				created[srv.ID] = name
				mu.Unlock()
				if err := waitActive(srv.ID, 60*time.Second); err != nil {
					fail("%s: %v", name, err)
					return
				}
				if k := killedAt.Load(); k != 0 && asked.UnixNano() > k {
					mu.Lock()
					if recovered == 0 {
						recovered = time.Since(time.Unix(0, k))
					}
					mu.Unlock()
				}
				if err := deleteAndWait(srv.ID); err != nil {
					fail("%s: %v", name, err)
					return
				}
				cycles.Add(1)
			}
		}()
	}

	time.Sleep(killAfter)
	t.Logf("queues before the kill:\n%s", rabbit.ctl(t, rabbit.nodes[0], "list_queues", "-q", "name", "type", "leader", "members"))
	lost := rabbit.leaderOf(t, "conductor")
	before := cycles.Load()
	killedAt.Store(time.Now().UnixNano())
	for _, name := range []string{"api-1", "conductor-1", "scheduler-1"} {
		c.proc(t, name).kill()
	}
	lost.kill()
	t.Logf("SIGKILLed api-1, conductor-1, scheduler-1 and RabbitMQ node %s (the conductor queue's leader) after %d boot-and-delete cycles",
		lost.name, before)
	alive := rabbit.nodes[0]
	if alive == lost {
		alive = rabbit.nodes[1]
	}
	t.Logf("queues after the kill:\n%s", rabbit.ctl(t, alive, "list_queues", "-q", "name", "type", "leader", "online"))
	wg.Wait()
	close(stopWatch)
	watchDone.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	if t.Failed() {
		return
	}
	// Servers the client never heard of (a create cut off with the API
	// that took it) must not be stuck either: each ends ACTIVE, then is
	// deleted.
	var left []servers.Server
	err := admin.do(func(cc *gophercloud.ServiceClient) error {
		pages, err := servers.List(cc, servers.ListOpts{AllTenants: true}).AllPages(ctx)
		if err != nil {
			return err
		}
		left, err = servers.ExtractServers(pages)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	orphans := 0
	for _, s := range left {
		if _, ok := created[s.ID]; !ok {
			orphans++
		}
		if err := waitActive(s.ID, 60*time.Second); err != nil {
			t.Errorf("left after the loop: %v", err)
		}
	}
	// Quiet: the host's claims are its servers', exactly.
	if used, _, err := usageOf(admin, host); err != nil {
		t.Fatal(err)
	} else if used != len(left) {
		t.Errorf("host %s claims %d vCPUs for %d one-vCPU servers: claims doubled or lost", host, used, len(left))
	}
	for _, s := range left {
		if err := deleteAndWait(s.ID); err != nil {
			t.Error(err)
		}
	}
	eventually(t, 30*time.Second, "the host's claims are released", func() bool {
		used, _, err := usageOf(admin, host)
		return err == nil && used == 0
	})
	if samples.Load() == 0 {
		t.Errorf("the host's claims were never read from the database")
	}
	if m := maxUsed.Load(); m > int64(capVCPUs) {
		t.Errorf("host %s over-committed: %d vCPUs claimed, capacity %d", host, m, capVCPUs)
	}
	if recovered == 0 {
		t.Errorf("no server created after the kill went ACTIVE")
	}
	// What the broker did not take (bus: "publish not confirmed ...
	// publishing again on a fresh channel"), by reason.
	nacked, unconfirmed := 0, 0
	for _, p := range c.procs {
		nacked += p.logged(t, "broker refused the message (nack)")
		unconfirmed += p.logged(t, "bus: publish not confirmed")
		if lines := p.logLines(t, "bus: publish not confirmed"); len(lines) > 0 {
			t.Logf("%s (kill at %s):\n%s", p.name, time.Unix(0, killedAt.Load()).Format("15:04:05.000"),
				strings.Join(lines[:min(len(lines), 10)], "\n"))
		}
	}
	t.Logf("MEASURED %d boot-and-delete cycles in %s at concurrency %d (%d before the kill), %d requests answered on the other API after a failure, %d servers created by cut-off requests (ACTIVE, deleted), peak claim %d/%d vCPUs (%d samples of the database's claims); %d publishes not confirmed at first (%d refused with a nack), each published again on a fresh channel; recovery time (kill -> first server created after it ACTIVE): %s",
		cycles.Load(), loopFor, concurrency, before, demo.retried.Load(), orphans, maxUsed.Load(), capVCPUs, samples.Load(),
		unconfirmed, nacked, recovered.Round(10*time.Millisecond))
}

// claimedVCPUs is the sum of the shared-CPU vCPUs claimed on host, read
// from the cloud's PostgreSQL database.
func claimedVCPUs(dsn, host string) (int, error) {
	out, err := exec.Command("psql", dsn, "-tAc",
		"SELECT COALESCE(SUM(vcpus),0) FROM claims WHERE host = '"+host+"' AND NOT dedicated").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("psql: %v: %s", err, out)
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}

// usageOf is the host's claimed vCPUs and its physical vCPUs.
func usageOf(h *haClient, host string) (used, vcpus int, err error) {
	err = h.do(func(cc *gophercloud.ServiceClient) error {
		var err error
		used, vcpus, err = usageAt(cc, host)
		return err
	})
	return used, vcpus, err
}

func usageAt(cc *gophercloud.ServiceClient, host string) (used, vcpus int, err error) {
	var body struct {
		Hypervisors []struct {
			Name  string `json:"hypervisor_hostname"`
			VCPUs int    `json:"vcpus"`
			Used  int    `json:"vcpus_used"`
		} `json:"hypervisors"`
	}
	if _, err := cc.Get(context.Background(), cc.ServiceURL("os-hypervisors", "detail"), &body, nil); err != nil {
		return 0, 0, err
	}
	for _, h := range body.Hypervisors {
		if h.Name == host {
			return h.Used, h.VCPUs, nil
		}
	}
	return 0, 0, fmt.Errorf("hypervisor %s not listed", host)
}

func capacityVCPUs(t *testing.T, cc *haClient, host string) int {
	t.Helper()
	_, vcpus, err := usageOf(cc, host)
	if err != nil {
		t.Fatal(err)
	}
	return vcpus
}
