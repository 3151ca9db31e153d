package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/store"
)

// The cold-migration proofs of issue 5, on two simulated compute hosts
// (own dockerd and OVS bridge each, joined by a trunk), with a registry
// that requires a login, as deploy/allinone.sh --hosts 2 runs them.

// migrationRepo is where agents push migration commits.
const migrationRepo = "capsule/migrations"

// migrationStepTimeout bounds one migration step in the e2e clouds. A
// step is a commit and push of up to 150 MB, which under the e2e tier's
// load (eight clouds side by side on two cores) has taken over 40 s; the
// test of a dead agent uses deadAgentStepTimeout instead.
const (
	migrationStepTimeout = 3 * time.Minute
	deadAgentStepTimeout = 40 * time.Second
)

// migrationCloud starts a two-host cloud using its own authenticated
// registry.
func migrationCloud(t *testing.T) (*cloud, *authRegistry) {
	t.Helper()
	return migrationCloudWith(t, 20, migrationStepTimeout)
}

// migrationCloudQuota is migrationCloud with a quota of n instances (n
// GB of RAM, 4n cores).
func migrationCloudQuota(t *testing.T, n int) (*cloud, *authRegistry) {
	t.Helper()
	return migrationCloudWith(t, n, migrationStepTimeout)
}

// migrationCloudWith is migrationCloud with a quota of n instances and
// the conductor giving up on a migration step after stepTimeout.
func migrationCloudWith(t *testing.T, n int, stepTimeout time.Duration) (*cloud, *authRegistry) {
	t.Helper()
	reg := startAuthRegistry(t)
	c := startCloud(t, twoHosts, withRegistry(reg), withQuota(n), func(t *testing.T, c *cloud) {
		c.extraConfig += fmt.Sprintf("conductor:\n  migration_step_timeout: %s\n  periodic_interval: 2s\n", stepTimeout)
	})
	return c, reg
}

// serverHost is the server's OS-EXT-SRV-ATTR:host.
func serverHost(t *testing.T, cc *gophercloud.ServiceClient, id string) string {
	t.Helper()
	var ext struct {
		Host string `json:"OS-EXT-SRV-ATTR:host"`
	}
	if err := servers.Get(context.Background(), cc, id).ExtractInto(&ext); err != nil {
		t.Fatal(err)
	}
	return ext.Host
}

// containersPerServer is how many containers a networked server is: its
// workload, and in network mode sandbox its sandbox.
func containersPerServer() int {
	if networkMode() == docker.NetworkNetns {
		return 1
	}
	return 2
}

// networkMode is the docker driver's network mode the test clouds run
// in: CAPSULE_TEST_NETWORK_MODE's, or the driver's default.
func networkMode() string {
	if m := testenv.NetworkMode(); m != "" {
		return m
	}
	return docker.DefaultNetworkMode
}

// containersOn lists the ids of instance id's containers on host h
// (workload and sandbox).
func containersOn(t *testing.T, h *computeHost, id string) []string {
	t.Helper()
	out, err := h.docker("ps", "-aq", "--filter", "label=capsule.instance="+id)
	if err != nil {
		t.Fatalf("docker ps on %s: %v %s", h.name, err, out)
	}
	return strings.Fields(out)
}

// eventually polls cond every 250 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, timeout)
}

// sha256Of is the checksum of a file inside a server.
func sha256Of(t *testing.T, s *netServer, path string) string {
	t.Helper()
	out, err := s.exec("sha256sum", path)
	if err != nil {
		t.Fatalf("sha256sum %s in %s on %s: %v %s", path, s.name, s.host.name, err, out)
	}
	return strings.Fields(out)[0]
}

// writeData writes mb MB of random (incompressible) data to path inside s
// and returns its checksum.
func writeData(t *testing.T, s *netServer, path string, mb int) string {
	t.Helper()
	if out, err := s.exec("sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > %s", mb<<20, path)); err != nil {
		t.Fatalf("write %d MB in %s: %v %s", mb, s.name, err, out)
	}
	return sha256Of(t, s, path)
}

// moved is s as it runs on host h after a migration: same port, address
// and MAC.
func (s *netServer) moved(h *computeHost) *netServer {
	m := *s
	m.host = h
	return &m
}

// migrations lists os-migrations of server id (admin, microversion 2.59).
func migrations(t *testing.T, cc *gophercloud.ServiceClient, id string) []map[string]any {
	t.Helper()
	var body struct {
		Migrations []map[string]any `json:"migrations"`
	}
	_, err := cc.Get(context.Background(), cc.ServiceURL("os-migrations")+"?instance_uuid="+id, &body,
		&gophercloud.RequestOpts{MoreHeaders: map[string]string{"X-OpenStack-Nova-API-Version": "2.59"}})
	if err != nil {
		t.Fatalf("list migrations of %s: %v", id, err)
	}
	return body.Migrations
}

// migrationRow reads the migration's row straight from the cloud's
// database: the bytes the export pushed are bookkeeping the API does not
// show once the migration is finished.
func (c *cloud) migrationRow(t *testing.T, uuid string) store.Migration {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, c.dbDriver, c.dbDSN)
	if err != nil {
		t.Fatalf("open the cloud's database: %v", err)
	}
	defer st.Close()
	var m store.Migration
	if err := st.WithContext(ctx).Where("uuid = ?", uuid).First(&m).Error; err != nil {
		t.Fatalf("migration %s: %v", uuid, err)
	}
	return m
}

// hostClean checks that host h keeps nothing of server s: no container,
// no OVS port of its port on h's bridge, no claim (usage back to 0 when
// nothing else runs there).
func (c *cloud) hostClean(t *testing.T, cc *gophercloud.ServiceClient, h *computeHost, s *netServer, othersOnHost bool) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("containers of %s gone from %s", s.name, h.name), func() bool {
		return len(containersOn(t, h, s.id)) == 0
	})
	o := ovs.New(ovs.Options{})
	out, err := o.Vsctl(context.Background(), "list-ports", h.bridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(out) {
		// The bridge's own ports (uplink, metadata port) serve every server and stay.
		if !bridgePort(h.bridge, p) && !othersOnHost {
			t.Errorf("OVS port %s left on %s after %s moved away", p, h.bridge, s.name)
		}
	}
	if !othersOnHost {
		eventually(t, 30*time.Second, "claims on "+h.name+" released", func() bool {
			v, _ := hostUsage(t, cc, h.name)
			return v == 0
		})
	}
}

// TestColdMigration is issue 5's main proof: a server with 100 MB written
// on top of its image moves to the other host keeping its data, IP and
// MAC, is reached there by TCP from a neighbour, and the source keeps no
// trace after the confirm; the bytes pushed are the changed data, not the
// image. Then it moves back with the openstack CLI and a revert puts it
// where it was, running, with its data. API errors along the way.
func TestColdMigration(t *testing.T) {
	t.Parallel()
	c, reg := migrationCloud(t)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	demo := c.computeClient(t, "demo", c.demoPass, "demo")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "mig-net", 311, "10.31.1.0/24", true)
	aID := c.bootOn(t, cc, "mig-a", ha, netID, "")
	bID := c.bootOn(t, cc, "mig-b", hb, netID, "")
	a := activeServer(t, cc, nc, "mig-a", aID, ha)
	b := activeServer(t, cc, nc, "mig-b", bID, hb)
	sum := writeData(t, a, "/root/data", 100)

	// A member may not migrate (403); an unknown host is a 400; live
	// migration is refused clearly (400).
	if code, body := raw(t, demo, "POST", "servers/"+aID+"/action", `{"migrate": null}`); code != 403 && code != 404 {
		t.Errorf("member migrate: %d %v, want 403 (or 404: not the member's server)", code, body)
	}
	code, body := rawV(t, cc, "2.56", "POST", "servers/"+aID+"/action", `{"migrate": {"host": "no-such-host"}}`)
	novaFault(t, "migrate to an unknown host", code, body, 400, "badRequest")
	code, body = rawV(t, cc, "2.56", "POST", "servers/"+aID+"/action", `{"migrate": {"host": "`+ha.name+`"}}`)
	novaFault(t, "migrate to its own host", code, body, 400, "badRequest")
	code, body = rawV(t, cc, "2.30", "POST", "servers/"+aID+"/action", `{"os-migrateLive": {"host": null, "block_migration": "auto"}}`)
	novaFault(t, "live migration", code, body, 400, "badRequest")

	// The pre-copy: the server is copied while it runs, then only what
	// changed after that moves once it is stopped. The target's agent is
	// down, so the migration waits after the pre-copy (at its pre-pull)
	// with the server still running on its source, where a file is
	// deleted and data written; the agent comes back (an agent restart
	// mid-migration) and the target must see both changes.
	if out, err := a.exec("sh", "-c", "echo doomed > /root/gone"); err != nil {
		t.Fatalf("write /root/gone: %v %s", err, out)
	}
	agentB := c.proc(t, "agent-"+hb.name)
	agentB.kill()
	start := time.Now()
	if err := servers.Migrate(ctx, cc, aID).ExtractErr(); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	eventually(t, 3*time.Minute, "migration pre-copied, waiting for the target's pre-pull", func() bool {
		ms := migrations(t, cc, aID)
		return len(ms) == 1 && c.migrationRow(t, fmt.Sprint(ms[0]["uuid"])).Step == "prepull"
	})
	if srv, err := servers.Get(ctx, cc, aID).Extract(); err != nil || srv.Status != "RESIZE" {
		t.Errorf("server during the pre-copy: %v %v, want RESIZE (running on its source)", srv, err)
	}
	if out, err := a.exec("rm", "/root/gone"); err != nil {
		t.Fatalf("delete /root/gone after the pre-copy: %v %s", err, out)
	}
	lateSum := writeData(t, a, "/root/late", 1)
	agentB.start(t)
	c.waitReady(t)
	waitStatus(t, cc, aID, "VERIFY_RESIZE", 5*time.Minute)
	took := time.Since(start)
	if h := serverHost(t, cc, aID); h != hb.name {
		t.Fatalf("after migrate the server is on %q, want %s", h, hb.name)
	}
	// Migrating a server waiting for its confirm is a state conflict.
	code, body = raw(t, cc, "POST", "servers/"+aID+"/action", `{"migrate": null}`)
	novaFault(t, "migrate in VERIFY_RESIZE", code, body, 409, "conflictingRequest")

	moved := a.moved(hb)
	if got := sha256Of(t, moved, "/root/data"); got != sum {
		t.Fatalf("data after migration: sha256 %s, want %s", got, sum)
	}
	if got := sha256Of(t, moved, "/root/late"); got != lateSum {
		t.Errorf("data written after the pre-copy: sha256 %s on the target, want %s", got, lateSum)
	}
	if out, err := moved.exec("sh", "-c", "test ! -e /root/gone && echo absent"); err != nil || strings.TrimSpace(out) != "absent" {
		t.Errorf("a file deleted after the pre-copy is on the target: %v %s", err, out)
	}
	addrs, mac := moved.eth0(t)
	if !slices.Contains(addrs, a.ip+"/24") || !strings.EqualFold(mac, a.mac) {
		t.Errorf("eth0 after migration: %v %s, want %s/24 %s", addrs, mac, a.ip, a.mac)
	}
	if _, binding := portOf(t, nc, aID); binding != hb.name {
		t.Errorf("port binding after migration: %q, want %s", binding, hb.name)
	}
	moved.serve(t)
	expectTCP(t, b, moved, a.ip, true, "neighbour to the migrated server")

	ms := migrations(t, cc, aID)
	if len(ms) != 1 || ms[0]["migration_type"] != "migration" || ms[0]["status"] != "finished" ||
		ms[0]["source_compute"] != ha.name || ms[0]["dest_compute"] != hb.name {
		t.Fatalf("os-migrations = %v, want one finished migration %s -> %s", ms, ha.name, hb.name)
	}
	row := c.migrationRow(t, fmt.Sprint(ms[0]["uuid"]))
	t.Logf("migration of a server with 100 MB changed: %d bytes pushed (compressed; pre-copy and final pass), %s end to end (the target's agent restarted meanwhile)",
		row.ImageBytes, took.Round(time.Millisecond))
	// The pre-copy moved the 100 MB; the final pass only the 1 MB
	// written after it (a second copy of the 100 MB would be over).
	if row.ImageBytes < 95<<20 || row.ImageBytes > 130<<20 {
		t.Errorf("bytes pushed = %d, want about the 100 MB changed (95-130 MiB)", row.ImageBytes)
	}

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("openstack", args...)
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	cli("server", "resize", "confirm", aID)
	waitStatus(t, cc, aID, "ACTIVE", time.Minute)
	c.hostClean(t, cc, ha, a, false)
	eventually(t, 60*time.Second, "migration tag deleted from the registry", func() bool {
		return len(reg.tags(t, migrationRepo)) == 0
	})
	eventually(t, 30*time.Second, "migration confirmed", func() bool {
		ms := migrations(t, cc, aID)
		return len(ms) == 1 && ms[0]["status"] == "confirmed"
	})

	// Back with the Debian openstack CLI, then revert: it stays on hb.
	cli("server", "migrate", "--wait", aID)
	waitStatus(t, cc, aID, "VERIFY_RESIZE", time.Minute)
	if h := serverHost(t, cc, aID); h != ha.name {
		t.Fatalf("second migration went to %q, want %s", h, ha.name)
	}
	cli("server", "resize", "revert", aID)
	waitStatus(t, cc, aID, "ACTIVE", 2*time.Minute)
	if h := serverHost(t, cc, aID); h != hb.name {
		t.Fatalf("after revert the server is on %q, want %s", h, hb.name)
	}
	if got := sha256Of(t, moved, "/root/data"); got != sum {
		t.Fatalf("data after revert: sha256 %s, want %s", got, sum)
	}
	moved.serve(t)
	expectTCP(t, b, moved, a.ip, true, "neighbour to the reverted server")
	c.hostClean(t, cc, ha, a, false)
	eventually(t, 60*time.Second, "reverted migration's tag deleted", func() bool {
		return len(reg.tags(t, migrationRepo)) == 0
	})

	// A snapshot with the CLI (pushed to the protected registry), and a
	// server booted from it with the CLI has the data.
	cli("server", "image", "create", "--name", "mig-snap", "--wait", aID)
	cli("server", "create", "--image", "mig-snap", "--flavor", "m1.tiny", "--wait", "mig-from-snap")
	var show map[string]any
	if err := json.Unmarshal([]byte(cli("server", "show", "-f", "json", "mig-from-snap")), &show); err != nil {
		t.Fatal(err)
	}
	snapID := fmt.Sprint(show["id"])
	snapHost := hb
	if serverHost(t, cc, snapID) == ha.name {
		snapHost = ha
	}
	fromSnap := &netServer{name: "mig-from-snap", id: snapID, host: snapHost}
	if got := sha256Of(t, fromSnap, "/root/data"); got != sum {
		t.Errorf("server booted from the CLI snapshot: data sha256 %s, want %s", got, sum)
	}
}

// TestMigrationTargetAgentDies: the target's agent dies in the middle of a
// migration. The conductor gives up on it after the step timeout and
// rolls back: the server is ACTIVE on its source with its data, the
// migration in error; when the agent comes back it creates nothing and
// nothing is leaked (container, tag, claim, port binding).
func TestMigrationTargetAgentDies(t *testing.T) {
	t.Parallel()
	// A short step timeout: the conductor gives up on the dead agent.
	c, reg := migrationCloudWith(t, 20, deadAgentStepTimeout)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "kill-net", 312, "10.31.2.0/24", true)
	aID := c.bootOn(t, cc, "kill-a", ha, netID, "")
	a := activeServer(t, cc, nc, "kill-a", aID, ha)
	sum := writeData(t, a, "/root/data", 20)

	if err := servers.Migrate(ctx, cc, aID).ExtractErr(); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	c.proc(t, "agent-"+hb.name).kill()
	waitStatus(t, cc, aID, "ACTIVE", 3*time.Minute)
	if h := serverHost(t, cc, aID); h != ha.name {
		t.Fatalf("after the rollback the server is on %q, want its source %s", h, ha.name)
	}
	// Nova shows "fault" only on ERROR servers; the failure is in the
	// migrate action's events, as Nova records it.
	if ev := failedEvents(t, cc, aID, "migrate"); len(ev) == 0 {
		t.Errorf("the rolled-back migrate action has no failed event")
	} else {
		t.Logf("failed events of the rolled-back migration: %v", ev)
	}
	ms := migrations(t, cc, aID)
	if len(ms) != 1 || ms[0]["status"] != "error" {
		t.Errorf("os-migrations = %v, want one migration in error", ms)
	}
	if got := sha256Of(t, a, "/root/data"); got != sum {
		t.Fatalf("data after the rollback: sha256 %s, want %s", got, sum)
	}
	if _, binding := portOf(t, nc, aID); binding != ha.name {
		t.Errorf("port binding after the rollback: %q, want %s", binding, ha.name)
	}
	a.serve(t)

	agentB := c.proc(t, "agent-"+hb.name)
	n := agentB.logged(t, agentReconciled)
	agentB.start(t)
	c.waitReady(t)
	// Whatever the revived agent finds in its queue, it must leave hb
	// clean: once it has reconciled and handled (acknowledged) every
	// message of its queue, check.
	agentB.waitLogged(t, agentReconciled, n, 60*time.Second)
	eventually(t, 60*time.Second, "queue of "+hb.name+" drained", func() bool {
		return c.queueDepth(t, bus.ComputeQueue(hb.name)) == 0
	})
	c.hostClean(t, cc, hb, a, false)
	eventually(t, 60*time.Second, "rolled-back migration's tag deleted", func() bool {
		return len(reg.tags(t, migrationRepo)) == 0
	})
	if n := len(containersOn(t, ha, aID)); n == 0 {
		t.Errorf("the server's containers vanished from its source %s", ha.name)
	}
}

// TestMigrationRegistryRestart: the registry restarts while a server's
// commit is pushed. The migration either survives (the push retried) or
// rolls back; either way the server ends ACTIVE on exactly one host with
// its data, and no migration tag is left.
func TestMigrationRegistryRestart(t *testing.T) {
	t.Parallel()
	c, reg := migrationCloud(t)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "reg-net", 313, "10.31.3.0/24", true)
	aID := c.bootOn(t, cc, "reg-a", ha, netID, "")
	a := activeServer(t, cc, nc, "reg-a", aID, ha)
	sum := writeData(t, a, "/root/data", 150)

	if err := servers.Migrate(ctx, cc, aID).ExtractErr(); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	eventually(t, 2*time.Minute, "migration reaches its export", func() bool {
		ms := migrations(t, cc, aID)
		return len(ms) == 1 && ms[0]["status"] != "pre-migrating"
	})
	reg.restart(t)

	// Settle: VERIFY_RESIZE (confirm it) or ACTIVE after a rollback.
	var status string
	eventually(t, 4*time.Minute, "migration settles", func() bool {
		s, err := servers.Get(ctx, cc, aID).Extract()
		if err != nil {
			t.Fatal(err)
		}
		status = s.Status
		return s.TaskState == "" && (s.Status == "VERIFY_RESIZE" || s.Status == "ACTIVE")
	})
	t.Logf("after a registry restart mid-push the migration ended in %s (%v)", status, migrations(t, cc, aID))
	if status == "VERIFY_RESIZE" {
		if err := servers.ConfirmResize(ctx, cc, aID).ExtractErr(); err != nil {
			t.Fatalf("confirm: %v", err)
		}
		waitStatus(t, cc, aID, "ACTIVE", time.Minute)
	}
	host := serverHost(t, cc, aID)
	var here, there *computeHost = ha, hb
	if host == hb.name {
		here, there = hb, ha
	}
	if got := sha256Of(t, a.moved(here), "/root/data"); got != sum {
		t.Fatalf("data: sha256 %s, want %s", got, sum)
	}
	c.hostClean(t, cc, there, a, false)
	eventually(t, 90*time.Second, "no migration tag left", func() bool {
		return len(reg.tags(t, migrationRepo)) == 0
	})
}

// failedEvents returns the events with result Error of server id's
// action named action (os-instance-actions, 2.51).
func failedEvents(t *testing.T, cc *gophercloud.ServiceClient, id, action string) []string {
	t.Helper()
	code, body := rawV(t, cc, "2.51", "GET", "servers/"+id+"/os-instance-actions", "")
	if code != 200 {
		t.Fatalf("instance actions of %s: %d %v", id, code, body)
	}
	var failed []string
	list, _ := body["instanceActions"].([]any)
	for _, a := range list {
		am, _ := a.(map[string]any)
		if am["action"] != action {
			continue
		}
		code, one := rawV(t, cc, "2.51", "GET", fmt.Sprintf("servers/%s/os-instance-actions/%s", id, am["request_id"]), "")
		if code != 200 {
			t.Fatalf("instance action %v of %s: %d %v", am["request_id"], id, code, one)
		}
		ia, _ := one["instanceAction"].(map[string]any)
		evs, _ := ia["events"].([]any)
		for _, e := range evs {
			em, _ := e.(map[string]any)
			if em["result"] == "Error" {
				failed = append(failed, fmt.Sprint(em["event"]))
			}
		}
	}
	return failed
}

// rawV is raw with a compute microversion.
func rawV(t *testing.T, cc *gophercloud.ServiceClient, version, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, cc.ServiceURL(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", cc.TokenID)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-OpenStack-Nova-API-Version", version)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: non-JSON body %q", method, path, b)
		}
	}
	return resp.StatusCode, m
}

// TestResizeAcrossHostsWithCapsuleCLI: a resize that does not fit the
// server's host becomes a cold migration (the new flavor's memory limit
// applies on the target), and the operator CLI drives migrations: resize
// --confirm, migrate --wait (a refusal when no host has room, then a move
// and a revert), migration list, host evacuate and enable.
func TestResizeAcrossHostsWithCapsuleCLI(t *testing.T) {
	t.Parallel()
	c, _ := migrationCloudQuota(t, 40)
	ctx := context.Background()
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	bin := buildCapsuleCLI(t)
	capsule := func(wantOK bool, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("capsule %s: error %v (want ok=%v)\n%s", strings.Join(args, " "), err, wantOK, out)
		}
		return string(out)
	}
	// Two "big" servers cannot share a host (each host has the machine's
	// RAM, ~23.5 GB after the reservation); a tiny one and a big one can.
	code, body := raw(t, cc, "POST", "flavors", `{"flavor": {"name": "x.big", "ram": 12000, "vcpus": 1, "disk": 1, "id": "big"}}`)
	if code != 200 {
		t.Fatalf("create flavor: %d %v", code, body)
	}
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	boot := func(name, flavor string, h *computeHost) string {
		t.Helper()
		srv, err := servers.Create(ctx, cc, servers.CreateOpts{Name: name, ImageRef: img, FlavorRef: flavor,
			AvailabilityZone: "nova:" + h.name}, nil).Extract()
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return srv.ID
	}
	fillerID := boot("filler", "big", ha)
	sID := boot("grower", "1", ha)
	waitStatus(t, cc, fillerID, "ACTIVE", 90*time.Second)
	waitStatus(t, cc, sID, "ACTIVE", 90*time.Second)

	if err := servers.Resize(ctx, cc, sID, servers.ResizeOpts{FlavorRef: "big"}).ExtractErr(); err != nil {
		t.Fatalf("resize: %v", err)
	}
	waitStatus(t, cc, sID, "VERIFY_RESIZE", 3*time.Minute)
	if h := serverHost(t, cc, sID); h != hb.name {
		t.Fatalf("a resize that does not fit %s went to %q, want %s", ha.name, h, hb.name)
	}
	if mem, err := hb.docker("inspect", "-f", "{{.HostConfig.Memory}}", "capsule-"+sID); err != nil || mem != fmt.Sprint(12000<<20) {
		t.Errorf("memory limit on the target = %q (%v), want the new flavor's %d", mem, err, 12000<<20)
	}
	capsule(true, "server", "resize", sID, "--confirm", "--wait")
	s := waitStatus(t, cc, sID, "ACTIVE", time.Minute)
	if s.Flavor["original_name"] != "x.big" && s.Flavor["id"] != "big" {
		t.Errorf("flavor after the confirmed resize = %v, want x.big", s.Flavor)
	}
	var migs []map[string]any
	if err := json.Unmarshal([]byte(capsule(true, "-f", "json", "migration", "list", "--server", sID)), &migs); err != nil {
		t.Fatal(err)
	}
	if len(migs) != 1 || fmt.Sprint(migs[0]["Status"], migs[0]["status"]) == "" {
		t.Fatalf("capsule migration list = %v, want one migration", migs)
	}
	t.Logf("capsule migration list: %v", migs)

	// No room back on ha while the filler is there: the CLI says so and
	// the server stays ACTIVE on hb.
	out := capsule(false, "server", "migrate", sID, "--wait")
	t.Logf("migrate with no room: %s", strings.TrimSpace(out))
	waitStatus(t, cc, sID, "ACTIVE", time.Minute)
	if h := serverHost(t, cc, sID); h != hb.name {
		t.Fatalf("after a refused migration the server is on %q, want %s", h, hb.name)
	}
	if err := servers.Delete(ctx, cc, fillerID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, cc, fillerID, time.Minute)

	out = capsule(true, "server", "migrate", sID, "--wait")
	if !strings.Contains(out, "VERIFY_RESIZE") && !strings.Contains(strings.ToLower(out), "confirm") {
		t.Errorf("migrate --wait output = %q", out)
	}
	if h := serverHost(t, cc, sID); h != ha.name {
		t.Fatalf("migrate moved the server to %q, want %s", h, ha.name)
	}
	capsule(true, "server", "resize", sID, "--revert", "--wait")
	waitStatus(t, cc, sID, "ACTIVE", time.Minute)
	if h := serverHost(t, cc, sID); h != hb.name {
		t.Fatalf("after revert the server is on %q, want %s", h, hb.name)
	}

	// Evacuate hb: disabled, its server moved to ha and confirmed.
	out = capsule(true, "host", "evacuate", hb.name, "--wait")
	t.Logf("host evacuate: %s", strings.TrimSpace(out))
	waitStatus(t, cc, sID, "ACTIVE", time.Minute)
	if h := serverHost(t, cc, sID); h != ha.name {
		t.Fatalf("after evacuating %s the server is on %q", hb.name, h)
	}
	var hosts []map[string]any
	if err := json.Unmarshal([]byte(capsule(true, "-f", "json", "host", "list")), &hosts); err != nil {
		t.Fatal(err)
	}
	t.Logf("hosts after the evacuation: %v", hosts)
	capsule(true, "host", "enable", hb.name)
	eventually(t, 60*time.Second, "evacuated host left clean", func() bool {
		return len(containersOn(t, hb, sID)) == 0
	})
}
