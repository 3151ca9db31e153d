package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/store"
	"github.com/capsule-cloud/capsule/vif"
)

// fence cuts host h off the VLANs (its uplink to the trunk), as a dead
// host is: its containers keep running (its agent is killed, its dockerd
// is not), but nothing of it reaches the network. unfence joins it again.
func (c *cloud) fence(t *testing.T, h *computeHost) {
	t.Helper()
	o := ovs.New(ovs.Options{})
	for _, p := range []string{uplinkPort(h.bridge), "tk" + h.bridge} {
		if err := o.DeletePort(context.Background(), p); err != nil {
			t.Fatalf("fence %s: %v", h.name, err)
		}
	}
}

func (c *cloud) unfence(t *testing.T, h *computeHost) {
	t.Helper()
	if err := ovs.New(ovs.Options{}).AddPatchPair(context.Background(), h.bridge, uplinkPort(h.bridge), c.trunk, "tk"+h.bridge); err != nil {
		t.Errorf("unfence %s: %v", h.name, err)
	}
}

// setVolumeLocal records volume id as a local volume on host: what a
// volume made by a cloud whose volume backend was "local" is. (The test
// cloud makes shared volumes; the refusal only reads the row.)
func (c *cloud) setVolumeLocal(t *testing.T, id, host string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, c.dbDriver, c.dbDSN)
	if err != nil {
		t.Fatalf("open the cloud's database: %v", err)
	}
	defer st.Close()
	if err := st.WithContext(ctx).Model(&store.Volume{}).Where("id = ?", id).
		Updates(map[string]any{"backend": "local", "host": host}).Error; err != nil {
		t.Fatal(err)
	}
}

// TestEvacuate is issue 17's evacuation proof, on two hosts with shared
// volumes. Host a dies (its agent killed, its uplink cut; its containers
// keep running, as a dead host's would): evacuating before its service
// is down is refused (400); forced down through os-services (2.53), a
// server with a local volume is refused (409, the volume named), and the
// openstack CLI evacuates a networked server with a shared volume to
// host b: ACTIVE there with the same IP and MAC, reached over the VLAN
// by a neighbour, the shared volume's data there, the migration an
// evacuation. A second server evacuated at 2.95 ends SHUTOFF on b. Then
// host a comes back: its agent removes the leftovers of both (containers,
// OVS ports), the evacuations complete, and the server on b runs on
// untouched (same PID, still reached, once a is on the VLAN again).
func TestEvacuate(t *testing.T) {
	t.Parallel()
	c := startCloud(t, twoHosts, withQuota(20), func(t *testing.T, c *cloud) {
		c.extraConfig += "conductor:\n  periodic_interval: 2s\nvolume:\n  backend: shared\n"
	})
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "evac-net", 319, "10.31.9.0/24", true)
	cli := func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command("openstack", args...)
		cmd.Env = c.env("admin", c.adminPass, "admin")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	volStatus := func(id, want string) {
		t.Helper()
		eventually(t, 3*time.Minute, "volume "+id+" "+want, func() bool {
			out, _ := cli("volume", "show", id, "-f", "value", "-c", "status")
			return out == want
		})
	}
	aID := c.bootOn(t, cc, "evac-a", ha, netID, "")
	sID := c.bootOn(t, cc, "evac-s", ha, netID, "")
	lID := c.bootOn(t, cc, "evac-l", ha, netID, "")
	cID := c.bootOn(t, cc, "evac-c", ha, netID, "")
	pID := c.bootOn(t, cc, "evac-p", hb, netID, "")
	a := activeServer(t, cc, nc, "evac-a", aID, ha)
	activeServer(t, cc, nc, "evac-s", sID, ha)
	activeServer(t, cc, nc, "evac-l", lID, ha)
	activeServer(t, cc, nc, "evac-c", cID, ha)
	p := activeServer(t, cc, nc, "evac-p", pID, hb)

	// A shared volume on a, with data (synced: a's page cache dies with a).
	vol := must("volume", "create", "--size", "1", "evac-shared", "-f", "value", "-c", "id")
	volStatus(vol, "available")
	must("server", "add", "volume", aID, vol)
	volStatus(vol, "in-use")
	mnt := "/mnt/" + vol
	sum := writeData(t, a, mnt+"/data", 5)
	if out, err := a.exec("sync"); err != nil {
		t.Fatalf("sync: %v %s", err, out)
	}
	// A volume of l made local to a (see setVolumeLocal).
	lvol := must("volume", "create", "--size", "1", "evac-local", "-f", "value", "-c", "id")
	volStatus(lvol, "available")
	must("server", "add", "volume", lID, lvol)
	volStatus(lvol, "in-use")
	c.setVolumeLocal(t, lvol, ha.name)
	if !p.ping(t, a.ip) {
		t.Fatalf("%s cannot reach %s before the evacuation", p.name, a.ip)
	}

	// Host a dies.
	agentA := c.proc(t, "agent-"+ha.name)
	agentA.kill()
	c.fence(t, ha)
	t.Cleanup(func() { c.unfence(t, ha) })
	if len(containersOn(t, ha, aID)) == 0 {
		t.Fatal("the dead host's containers are gone: the test must leave them running")
	}
	action := "servers/" + aID + "/action"
	code, body := rawV(t, cc, "2.14", "POST", action, `{"evacuate":{}}`)
	novaFault(t, "evacuate while the host's service is up", code, body, 400, "badRequest")
	if msg := faultMessage(body); msg != "Compute service of "+ha.name+" is still in use." {
		t.Errorf("host up: %q", msg)
	}
	// As docs/operations.md says: the openstack CLI forces the service down.
	must("--os-compute-api-version", "2.11", "compute", "service", "set", "--down", ha.name, "nova-compute")
	code, svc := rawV(t, cc, "2.53", "GET", "os-services?binary=nova-compute&host="+ha.name, "")
	svcs, _ := svc["services"].([]any)
	if code != 200 || len(svcs) != 1 {
		t.Fatalf("os-services of %s: %d %v", ha.name, code, svc)
	}
	if s := svcs[0].(map[string]any); s["forced_down"] != true || s["state"] != "down" {
		t.Fatalf("%s after compute service set --down: %v", ha.name, s)
	}
	svcID := fmt.Sprint(svcs[0].(map[string]any)["id"])

	// The server with a local volume cannot follow.
	code, body = rawV(t, cc, "2.14", "POST", "servers/"+lID+"/action", `{"evacuate":{}}`)
	novaFault(t, "evacuate with a local volume", code, body, 409, "conflictingRequest")
	if msg := faultMessage(body); !strings.Contains(msg, lvol) {
		t.Errorf("local volume refusal does not name %s: %q", lvol, msg)
	}

	// The openstack CLI evacuates a to b.
	start := time.Now()
	if out, err := cli("--os-compute-api-version", "2.29", "server", "evacuate", "--host", hb.name, aID); err != nil {
		// OSC 6.0 sends the evacuation, then fails to print the server
		// (its novaclient call returns a tuple where it expects a
		// server); anything else is a real failure.
		if !strings.Contains(out, "'TupleWithMeta' object has no attribute 'to_dict'") {
			t.Fatalf("openstack server evacuate: %v\n%s", err, out)
		}
		t.Logf("openstack server evacuate (OSC 6.0 fails printing the server after the request): %s", out)
	}
	waitStatus(t, cc, aID, "ACTIVE", 3*time.Minute)
	t.Logf("evacuation to %s (schedule, pull, create, start): %s", hb.name, time.Since(start).Round(time.Millisecond))
	if h := serverHost(t, cc, aID); h != hb.name {
		t.Fatalf("evacuated to %q, want %s", h, hb.name)
	}
	moved := a.moved(hb)
	addrs, mac := moved.eth0(t)
	if !slices.Contains(addrs, a.ip+"/24") || !strings.EqualFold(mac, a.mac) {
		t.Errorf("eth0 after the evacuation: %v %s, want %s/24 %s", addrs, mac, a.ip, a.mac)
	}
	if _, binding := portOf(t, nc, aID); binding != hb.name {
		t.Errorf("port binding after the evacuation: %q, want %s", binding, hb.name)
	}
	if got := sha256Of(t, moved, mnt+"/data"); got != sum {
		t.Errorf("shared volume data after the evacuation: sha256 %s, want %s", got, sum)
	}
	eventually(t, 30*time.Second, p.name+" reaches the evacuated server", func() bool { return p.ping(t, a.ip) })
	code, migs := rawV(t, cc, "2.23", "GET", "os-migrations?instance_uuid="+aID, "")
	ml, _ := migs["migrations"].([]any)
	if code != 200 || len(ml) != 1 {
		t.Fatalf("os-migrations of %s: %d %v", aID, code, migs)
	}
	m := ml[0].(map[string]any)
	if m["migration_type"] != "evacuation" || m["status"] != "done" || m["source_compute"] != ha.name || m["dest_compute"] != hb.name {
		t.Errorf("evacuation record %v", m)
	}
	if _, acts := raw(t, cc, "GET", "servers/"+aID+"/os-instance-actions", ""); !strings.Contains(fmt.Sprint(acts), "evacuate") {
		t.Errorf("instance actions lack the evacuation: %v", acts)
	}

	// 2.95: the evacuated server ends SHUTOFF.
	code, body = rawV(t, cc, "2.95", "POST", "servers/"+sID+"/action", `{"evacuate":{}}`)
	if code != 200 || len(body) != 0 {
		t.Fatalf("evacuate at 2.95: %d %v, want 200 and no body", code, body)
	}
	waitStatus(t, cc, sID, "SHUTOFF", 3*time.Minute)
	if h := serverHost(t, cc, sID); h != hb.name {
		t.Errorf("2.95 evacuation to %q, want %s", h, hb.name)
	}

	// capsule host evacuate of the dead host evacuates what is left on
	// it (c) and reports l's refusal, naming its local volume.
	capsule := exec.Command(buildCapsuleCLI(t), "host", "evacuate", ha.name, "--wait")
	capsule.Env = c.env("admin", c.adminPass, "admin")
	out, err := capsule.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is down and disabled; evacuating 2 server(s)") ||
		!strings.Contains(string(out), lvol) || !strings.Contains(string(out), "1 of 2 server(s) could not be evacuated") {
		t.Errorf("capsule host evacuate %s: %v\n%s", ha.name, err, out)
	}
	t.Logf("capsule host evacuate %s: %s", ha.name, strings.TrimSpace(string(out)))
	waitStatus(t, cc, cID, "ACTIVE", time.Minute)
	if h := serverHost(t, cc, cID); h != hb.name {
		t.Errorf("capsule host evacuate moved evac-c to %q, want %s", h, hb.name)
	}

	// Host a comes back: what is left of a, s and c there goes; l stays.
	pid := moved.pid(t)
	code, body = rawV(t, cc, "2.53", "PUT", "os-services/"+svcID, `{"forced_down": false}`)
	if code != 200 {
		t.Fatalf("unset forced_down: %d %v", code, body)
	}
	agentA.start(t)
	for _, id := range []string{aID, sID, cID} {
		eventually(t, 2*time.Minute, "leftover containers of "+id+" removed from "+ha.name, func() bool {
			return len(containersOn(t, ha, id)) == 0
		})
	}
	if len(containersOn(t, ha, lID)) == 0 {
		t.Errorf("the server left on %s lost its containers", ha.name)
	}
	eventually(t, time.Minute, "evacuations completed", func() bool {
		_, migs := rawV(t, cc, "2.23", "GET", "os-migrations?instance_uuid="+aID, "")
		ml, _ := migs["migrations"].([]any)
		return len(ml) == 1 && ml[0].(map[string]any)["status"] == "completed"
	})
	ports, err := ovs.New(ovs.Options{}).Vsctl(context.Background(), "list-ports", ha.bridge)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(strings.Fields(ports), vif.HostIfName(a.portID)) {
		t.Errorf("OVS port %s of the evacuated server left on %s", vif.HostIfName(a.portID), ha.bridge)
	}
	c.unfence(t, ha)
	if got := moved.pid(t); got != pid {
		t.Errorf("the evacuated server on %s restarted when %s came back: pid %d -> %d", hb.name, ha.name, pid, got)
	}
	if st := waitStatus(t, cc, aID, "ACTIVE", 10*time.Second); st == nil {
		t.Error("evacuated server not active")
	}
	eventually(t, 30*time.Second, p.name+" reaches the evacuated server with "+ha.name+" back on the VLAN", func() bool {
		return p.ping(t, a.ip)
	})
	if got := sha256Of(t, moved, mnt+"/data"); got != sum {
		t.Errorf("shared volume data after %s came back: sha256 %s, want %s", ha.name, got, sum)
	}
}

// faultMessage is the message of a Nova fault body, whatever its name.
func faultMessage(body map[string]any) string {
	for _, v := range body {
		if f, ok := v.(map[string]any); ok {
			s, _ := f["message"].(string)
			return s
		}
	}
	return ""
}
