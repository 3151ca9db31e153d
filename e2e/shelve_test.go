package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/store"
)

// shelveCloud is a two-host cloud whose conductor offloads a shelved
// server at once (shelved_offload_time 0, Nova's default) and runs its
// periodic pass often.
func shelveCloud(t *testing.T) *cloud {
	t.Helper()
	return startCloud(t, twoHosts, withQuota(20), func(t *testing.T, c *cloud) {
		c.extraConfig += "conductor:\n  periodic_interval: 2s\n  shelved_offload_time: 0s\n"
	})
}

// instanceRow reads server id's row from the cloud's database (the
// shelve columns are Nova's system metadata, which the API does not show).
func (c *cloud) instanceRow(t *testing.T, id string) store.Instance {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, c.dbDriver, c.dbDSN)
	if err != nil {
		t.Fatalf("open the cloud's database: %v", err)
	}
	defer st.Close()
	var inst store.Instance
	if err := st.WithContext(ctx).Where("id = ?", id).First(&inst).Error; err != nil {
		t.Fatalf("instance %s: %v", id, err)
	}
	return inst
}

// TestShelveUnshelveAcrossHosts is issue 17's shelve proof: a server with
// a file written and a keypair is shelved with the openstack CLI, offloaded
// at once (its host keeps no container, sandbox, OVS port or claim; its
// port and address stay, unbound), unshelved onto the other host (its
// first host disabled) with the same IP, MAC, file and authorized key, and
// its shelve image is gone from the image API and the registry.
func TestShelveUnshelveAcrossHosts(t *testing.T) {
	t.Parallel()
	registry := testenv.Registry(t)
	c := shelveCloud(t)
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha, hb := c.hosts[0], c.hosts[1]
	netID, _ := vlanNetwork(t, nc, "shv-net", 317, "10.31.7.0/24", true)
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
	code, kp := raw(t, cc, "POST", "os-keypairs", `{"keypair":{"name":"shv-key"}}`)
	if code != 200 {
		t.Fatalf("create keypair: %d %v", code, kp)
	}
	pub := strings.TrimSpace(fmt.Sprint(kp["keypair"].(map[string]any)["public_key"]))
	img := c.imageIDs(t, "admin", c.adminPass, "admin")["busybox"]
	code, body := raw(t, cc, "POST", "servers", fmt.Sprintf(`{"server":{"name":"shv","imageRef":%q,"flavorRef":"1",`+
		`"key_name":"shv-key","availability_zone":"nova:%s","networks":[{"uuid":%q}]}}`, img, ha.name, netID))
	if code != 202 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := fmt.Sprint(body["server"].(map[string]any)["id"])
	a := activeServer(t, cc, nc, "shv", id, ha)
	sum := writeData(t, a, "/root/data", 20)

	start := time.Now()
	cli("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 3*time.Minute)
	shelveTook := time.Since(start)
	row := c.instanceRow(t, id)
	if row.Host != "" || row.ShelvedImageID == "" || row.ShelvedHost != ha.name {
		t.Fatalf("offloaded row: host %q image %q shelved on %q", row.Host, row.ShelvedImageID, row.ShelvedHost)
	}
	shelveImage := row.ShelvedImageID
	if !snapshotTagged(t, registry, shelveImage) {
		t.Errorf("shelve image %s not in the registry", shelveImage)
	}
	if !strings.Contains(cli("image", "list", "-f", "value", "-c", "Name"), "shv-shelved") {
		t.Error("image list lacks shv-shelved")
	}
	// The host keeps nothing: containers, sandbox, OVS port, claim.
	c.hostClean(t, cc, ha, a, false)
	if p, binding := portOf(t, nc, id); binding != "" || p.FixedIPs[0].IPAddress != a.ip || !strings.EqualFold(p.MACAddress, a.mac) {
		t.Errorf("port of the offloaded server: binding %q, %v %s; want unbound, %s %s", binding, p.FixedIPs, p.MACAddress, a.ip, a.mac)
	}
	var actions map[string]any
	if code, actions = raw(t, cc, "GET", "servers/"+id+"/os-instance-actions", ""); code != 200 ||
		!strings.Contains(fmt.Sprint(actions), "shelve") {
		t.Errorf("instance actions: %d %v", code, actions)
	}

	// ha disabled: the unshelve goes to hb.
	st, svc := rawV(t, cc, "2.53", "GET", "os-services?binary=nova-compute&host="+ha.name, "")
	svcs, _ := svc["services"].([]any)
	if st != 200 || len(svcs) != 1 {
		t.Fatalf("os-services of %s: %d %v", ha.name, st, svc)
	}
	svcID := fmt.Sprint(svcs[0].(map[string]any)["id"])
	if code, body := rawV(t, cc, "2.53", "PUT", "os-services/"+svcID, `{"status":"disabled","disabled_reason":"shelve test"}`); code != 200 {
		t.Fatalf("disable %s: %d %v", ha.name, code, body)
	}
	start = time.Now()
	cli("server", "unshelve", id)
	waitStatus(t, cc, id, "ACTIVE", 3*time.Minute)
	unshelveTook := time.Since(start)
	t.Logf("shelve (stop, commit, push 20 MB, offload): %s; unshelve onto the other host (schedule, pull, start): %s",
		shelveTook.Round(time.Millisecond), unshelveTook.Round(time.Millisecond))
	if h := serverHost(t, cc, id); h != hb.name {
		t.Fatalf("unshelved on %q, want %s", h, hb.name)
	}
	moved := a.moved(hb)
	if got := sha256Of(t, moved, "/root/data"); got != sum {
		t.Errorf("data after unshelve: sha256 %s, want %s", got, sum)
	}
	addrs, mac := moved.eth0(t)
	if !slices.Contains(addrs, a.ip+"/24") || !strings.EqualFold(mac, a.mac) {
		t.Errorf("eth0 after unshelve: %v %s, want %s/24 %s", addrs, mac, a.ip, a.mac)
	}
	if _, binding := portOf(t, nc, id); binding != hb.name {
		t.Errorf("port binding after unshelve: %q, want %s", binding, hb.name)
	}
	if out, err := moved.exec("cat", "/root/.ssh/authorized_keys"); err != nil || strings.TrimSpace(out) != pub {
		t.Errorf("authorized_keys after unshelve = %q (%v), want %q", out, err, pub)
	}
	if row := c.instanceRow(t, id); row.ShelvedImageID != "" {
		t.Errorf("shelve image still recorded after unshelve: %q", row.ShelvedImageID)
	}
	eventually(t, 30*time.Second, "shelve image tag deleted", func() bool { return !snapshotTagged(t, registry, shelveImage) })
	if strings.Contains(cli("image", "list", "-f", "value", "-c", "Name"), "shv-shelved") {
		t.Error("shelve image still listed after unshelve")
	}

	// Shelved again, and deleted while offloaded: the image goes too.
	cli("server", "shelve", id)
	waitStatus(t, cc, id, "SHELVED_OFFLOADED", 3*time.Minute)
	again := c.instanceRow(t, id).ShelvedImageID
	c.hostClean(t, cc, hb, moved, false)
	cli("server", "delete", "--wait", id)
	eventually(t, 30*time.Second, "shelve image of the deleted server untagged", func() bool { return !snapshotTagged(t, registry, again) })
	if strings.Contains(cli("image", "list", "-f", "value", "-c", "Name"), "shv-shelved") {
		t.Error("shelve image still listed after deleting the server")
	}
}

// TestRescueUnrescue is issue 17's rescue proof: a server with a broken
// file is rescued with the openstack CLI; the rescue system runs in the
// server's network namespace (same address and MAC) with the server's
// disk at /mnt, the file is fixed from there, and after the unrescue the
// server runs its own workload again with the fix, same address, and
// nothing of the rescue is left (container, volume).
func TestRescueUnrescue(t *testing.T) {
	t.Parallel()
	c := shelveCloud(t)
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	ha := c.hosts[0]
	netID, _ := vlanNetwork(t, nc, "rsc-net", 318, "10.31.8.0/24", true)
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
	id := c.bootOn(t, cc, "rsc", ha, netID, "")
	s := activeServer(t, cc, nc, "rsc", id, ha)
	if out, err := s.exec("sh", "-c", "echo broken > /root/config"); err != nil {
		t.Fatalf("write: %v %s", err, out)
	}

	start := time.Now()
	cli("server", "rescue", id)
	waitStatus(t, cc, id, "RESCUE", 2*time.Minute)
	t.Logf("rescue took %s", time.Since(start).Round(time.Millisecond))
	rexec := func(args ...string) (string, error) {
		return ha.docker(append([]string{"exec", "capsule-" + id + "-rescue"}, args...)...)
	}
	if out, err := rexec("cat", "/mnt/root/config"); err != nil || strings.TrimSpace(out) != "broken" {
		t.Fatalf("the server's file from the rescue system: %q %v", out, err)
	}
	if out, err := rexec("ip", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, s.ip+"/24") ||
		!strings.Contains(strings.ToLower(out), strings.ToLower(s.mac)) {
		t.Errorf("rescue system's eth0 = %q (%v), want %s %s", out, err, s.ip, s.mac)
	}
	if out, err := s.host.docker("inspect", "-f", "{{.State.Running}}", s.workload()); err != nil || strings.TrimSpace(out) != "false" {
		t.Errorf("workload running during rescue: %q %v", out, err)
	}
	if out, err := rexec("sh", "-c", "echo fixed > /mnt/root/config && mkdir -p /mnt/root/new && echo x > /mnt/root/new/f"); err != nil {
		t.Fatalf("fix from the rescue system: %v %s", err, out)
	}
	// Rescuing a rescued server is a conflict.
	code, body := raw(t, cc, "POST", "servers/"+id+"/action", `{"rescue":null}`)
	novaFault(t, "rescue in RESCUE", code, body, 409, "conflictingRequest")

	cli("server", "unrescue", id)
	waitStatus(t, cc, id, "ACTIVE", 2*time.Minute)
	if out, err := s.exec("cat", "/root/config", "/root/new/f"); err != nil || out != "fixed\nx" {
		t.Errorf("after unrescue: %q %v, want the fix", out, err)
	}
	addrs, mac := s.eth0(t)
	if !slices.Contains(addrs, s.ip+"/24") || !strings.EqualFold(mac, s.mac) {
		t.Errorf("eth0 after unrescue: %v %s, want %s/24 %s", addrs, mac, s.ip, s.mac)
	}
	if n, want := len(containersOn(t, ha, id)), containersPerServer(); n != want {
		t.Errorf("%d containers of the server after unrescue, want %d (the workload, and in network mode sandbox its sandbox)", n, want)
	}
	if out, _ := ha.docker("volume", "ls", "-q", "--filter", "name=capsule-"+id+"-rescue"); strings.TrimSpace(out) != "" {
		t.Errorf("rescue volume left: %q", out)
	}
	// Rescued again, then deleted: nothing left.
	cli("server", "rescue", id)
	waitStatus(t, cc, id, "RESCUE", 2*time.Minute)
	cli("server", "delete", "--wait", id)
	eventually(t, 30*time.Second, "rescue container gone", func() bool {
		out, _ := ha.docker("ps", "-a", "--filter", "label=capsule.instance="+id, "--format", "{{.Names}} {{.Status}}")
		if strings.TrimSpace(out) != "" {
			t.Logf("left: %s", out)
		}
		return strings.TrimSpace(out) == ""
	})
	c.hostClean(t, cc, ha, s, false)
	if out, _ := ha.docker("volume", "ls", "-q", "--filter", "name=capsule-"+id+"-rescue"); strings.TrimSpace(out) != "" {
		t.Errorf("rescue volume left after delete: %q", out)
	}
}
